"""``capacity``: as many leads as sales and nurture can take.

A target ``>= 1`` is a number of *new leads per week*: the leads that cross the cutoff each
week and reach sales or nurture (a flow, the unit capacity is planned in). The cutoff is the
lowest candidate ``t`` such that it, and every stricter candidate, send at most that many new
leads per week (the flow is not monotone in ``t``: at a low cutoff most leads are already above
it when they appear). A target ``< 1`` is a share of examples (of their summed sampling weight,
when weighted): the lowest candidate with at most that share at or above it. Ties at a
candidate move together, so the realised load can be below the target.
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


class Capacity(Policy):
    name = "capacity"

    def check(self, cfg) -> None:
        no_value_fields(cfg)
        both_targets(cfg)
        for name in ("mql", "sql"):
            t = getattr(cfg, name)
            if not t > 0:
                raise CutoffError(f"{name} must be > 0 for policy capacity (>= 1: new leads per week, < 1: share of "
                                  f"examples), got {t!r}")
        if (cfg.mql >= 1) == (cfg.sql >= 1) and cfg.mql < cfg.sql:
            raise CutoffError(f"mql ({cfg.mql!r}) must be at least sql ({cfg.sql!r}) for policy capacity: "
                              "everything at or above the SQL cutoff is also at or above the MQL cutoff")

    def choose(self, cfg, choice: Choice) -> dict[str, float]:
        return {name: cutoff(choice, getattr(cfg, name), name) for name in ("mql", "sql")}


def cutoff(choice: Choice, target: float, name: str) -> float:
    s = choice.sorted
    values, n_ge, _ = s.candidates()
    if target >= 1:
        arrivals = choice.arrivals
        if not arrivals.weeks > 0:
            raise CutoffError(f"policy capacity with {name}={target:g} new leads per week needs examples on at least "
                              "two as-of dates to measure how many leads cross a cutoff per week; this frame has one")
        load, what = arrivals.per_week(arrivals.count(values), choice.scale), f"{target:g} new leads per week"
        top_load = f"{load[-1]:.4g} new leads per week"
    else:
        load, what = n_ge / s.n, f"{target:.2%} of examples"
        top_load = f"{load[-1]:.2%} of examples"
    over = np.flatnonzero(load > target)  # the cutoff must keep to the target, and so must every stricter one
    if over.size and over[-1] == len(values) - 1:
        raise CutoffError(f"no p_sql cutoff keeps to {what} ({name} target): the {n_ge[-1]:,.0f} examples tied at "
                          f"the highest p_sql ({values[-1]:.4g}) already make {top_load}; raise the {name} target")
    return float(values[over[-1] + 1 if over.size else 0])
