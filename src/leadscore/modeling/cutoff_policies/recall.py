"""``recall``: the cutoffs keep a share of all positives at or above them.

The target is a share of positives in (0, 1]: the cutoff is the highest candidate with at
least that share of all positives at or above it.
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


class Recall(Policy):
    name = "recall"

    def check(self, cfg) -> None:
        no_value_fields(cfg)
        both_targets(cfg)
        for name in ("mql", "sql"):
            t = getattr(cfg, name)
            if not 0 < t <= 1:
                hint = f" (for {t:g} % write {t / 100:g})" if 1 < t <= 100 else ""
                raise CutoffError(f"{name} must be a share of positives in (0, 1] for policy recall, got {t!r}{hint}")
        if cfg.mql < cfg.sql:
            raise CutoffError(f"mql ({cfg.mql!r}) must be at least sql ({cfg.sql!r}) for policy recall: the MQL "
                              "cutoff is the lower one, so it holds the larger share of positives")

    def choose(self, cfg, choice: Choice) -> dict[str, float]:
        s = choice.sorted
        if s.positives == 0:
            raise CutoffError("policy recall needs positives, but y has none on the frame the cutoffs are chosen on")
        values, _, pos_ge = s.candidates()
        out = {}
        for name in ("mql", "sql"):
            ok = np.flatnonzero(pos_ge / s.positives >= getattr(cfg, name))  # a prefix: recall falls as t rises
            out[name] = float(values[ok[-1]])
        return out
