"""``conversion_rate``: the leads handed over convert at the target rate.

The target is a rate in (0, 1]. Candidate thresholds are the distinct ``p`` values; a
candidate is *supported* when at least ``min_rows`` examples (their summed sampling weight, when
weighted) are at or above it. The cutoff is
the smallest supported candidate ``t`` such that the examples at or above every supported
candidate ``t' >= t`` (``t`` included) convert at >= the target. So the leads handed over
convert at the target, and so would any stricter cut with enough rows; the few highest-scored
rows (under ``min_rows``), whose rate is noise, are never used on their own. Consequently the
next lower candidate converts below the target. When no cutoff meets that (a low base rate, or
scores poorly ranked at the top), ``unreachable`` decides: ``best`` (default) takes the lowest
supported candidate whose leads at or above convert at the target, or, when none does, the one
with the best rate reachable, and says so in ``Cutoffs.notes``; ``refuse`` raises
:class:`CutoffError` with the best rate reachable. Without either target it uses
:data:`DEFAULT_TARGETS`.
"""

from __future__ import annotations

import numpy as np

from leadscore.modeling.cutoff_policies import (
    Choice,
    CutoffError,
    Policy,
    both_targets,
    no_value_fields,
)

DEFAULT_TARGETS = {"mql": 0.04, "sql": 0.13}  # when the config gives neither


class ConversionRate(Policy):
    name = "conversion_rate"

    def check(self, cfg) -> None:
        no_value_fields(cfg)
        if cfg.mql is None and cfg.sql is None:
            cfg._set("mql", DEFAULT_TARGETS["mql"])
            cfg._set("sql", DEFAULT_TARGETS["sql"])
        both_targets(cfg)
        for name in ("mql", "sql"):
            t = getattr(cfg, name)
            if not 0 < t <= 1:
                hint = f" (for {t:g} % write {t / 100:g})" if 1 < t <= 100 else ""
                raise CutoffError(f"{name} must be a conversion rate in (0, 1] for policy conversion_rate, "
                                  f"got {t!r}{hint}")
        if cfg.mql > cfg.sql:
            raise CutoffError(f"mql ({cfg.mql!r}) must not exceed sql ({cfg.sql!r}) for policy conversion_rate: "
                              "the MQL cutoff lets in more leads, so it converts at a lower rate")

    def choose(self, cfg, choice: Choice) -> dict[str, float]:
        out = {}
        for name in ("mql", "sql"):
            before = len(choice.notes)
            out[name] = cutoff(choice, getattr(cfg, name), name, cfg.min_rows, cfg.unreachable == "best")
            if len(choice.notes) > before:
                choice.fell_back.append(name)
        return out


def cutoff(choice: Choice, target: float, name: str, min_rows: int, fallback: bool) -> float:
    s, p_name, notes = choice.sorted, choice.probability, choice.notes
    values, n_ge, pos_ge = s.candidates()
    supported = np.flatnonzero(n_ge >= min_rows)  # a prefix: n_ge falls as the threshold rises
    if supported.size == 0:
        raise CutoffError(f"the frame has {s.n:,.0f} examples; policy conversion_rate needs at least min_rows="
                          f"{min_rows} at or above a cutoff")
    top = supported[-1]
    rate = pos_ge[: top + 1] / n_ge[: top + 1]
    if rate[top] < target:
        best = int(np.argmax(rate))
        meets = np.flatnonzero(rate >= target)
        if rate[best] < target:
            problem = (f"no {p_name} cutoff converts at >= {target:.1%} ({name} target): the best rate with at least "
                       f"{min_rows} examples at or above is {rate[best]:.1%} ({p_name} >= {values[best]:.4g}, "
                       f"{n_ge[best]:,.0f} examples)")
            if not fallback:
                raise CutoffError(f"{problem}; lower the {name} target or choose on more data "
                                  "(or set cutoffs.unreachable: best)")
            notes.append(f"{problem}; using that cutoff (cutoffs.unreachable: best) - lower the {name} target to one "
                         "the data can meet")
            return float(values[best])
        problem = (f"no {p_name} cutoff keeps the conversion rate at >= {target:.1%} ({name} target) for every "
                   f"stricter cut: {p_name} >= {values[best]:.4g} reaches {rate[best]:.1%}, but the top "
                   f"{n_ge[top]:,.0f} examples ({p_name} >= {values[top]:.4g}) convert at only {rate[top]:.1%}; "
                   "the scores are poorly ranked at the top")
        if not fallback:
            raise CutoffError(f"{problem} - lower the {name} target, raise min_rows or choose on more data "
                              "(or set cutoffs.unreachable: best)")
        notes.append(f"{problem}; using the lowest cutoff whose leads at or above convert at >= {target:.1%}: "
                     f"{p_name} >= {values[meets[0]]:.4g} (cutoffs.unreachable: best)")
        return float(values[meets[0]])
    below = np.flatnonzero(rate < target)
    return float(values[below[-1] + 1 if below.size else 0])
