"""``expected_value``: work a lead when it pays for itself in expectation.

With calibrated probabilities, working a lead at cost ``c`` is worth ``p x value_per_sql - c``
in expectation, positive exactly when ``p >= c / value_per_sql``. Working every lead at or above
that threshold, and none below, therefore maximises the total expected value: ``sql = sql_cost
/ value_per_sql`` (a sales touch) and ``mql = mql_cost / value_per_sql`` (a nurture touch), each
clipped into ``[EPS, 1]`` (``EPS`` is the floor the calibrators clip probabilities to). This
needs no data and takes each tier's action as paying for itself; it assumes the probabilities
are calibrated on the population scored.
"""

from __future__ import annotations

import numpy as np

from leadscore.modeling.cutoff_policies import EV_FIELDS, CutoffError, Policy

EPS = 1e-6  # the calibrators clip probabilities to [EPS, 1 - EPS]


class ExpectedValue(Policy):
    name = "expected_value"
    needs_data = False

    def check(self, cfg) -> None:
        given = [name for name in ("mql", "sql") if getattr(cfg, name) is not None]
        if given:
            raise CutoffError(f"{' and '.join(given)} target(s) are not used by policy expected_value (its cutoffs "
                              "come from value_per_sql, mql_cost and sql_cost); remove them")
        missing = [name for name in EV_FIELDS if getattr(cfg, name) is None]
        if missing:
            raise CutoffError(f"policy expected_value needs {', '.join(EV_FIELDS)}; missing: {', '.join(missing)}")
        if cfg.value_per_sql <= 0:
            raise CutoffError(f"value_per_sql must be > 0 (deal value x win rate), got {cfg.value_per_sql!r}")
        for name in ("mql_cost", "sql_cost"):
            if getattr(cfg, name) < 0:
                raise CutoffError(f"{name} must be >= 0, got {getattr(cfg, name)!r}")
        if cfg.mql_cost > cfg.sql_cost:
            raise CutoffError(f"mql_cost ({cfg.mql_cost!r}) must not exceed sql_cost ({cfg.sql_cost!r}): "
                              "a dearer nurture touch would put the MQL cutoff above the SQL cutoff")

    def choose(self, cfg, choice=None) -> dict[str, float]:
        return {"mql": float(np.clip(cfg.mql_cost / cfg.value_per_sql, EPS, 1.0)),
                "sql": float(np.clip(cfg.sql_cost / cfg.value_per_sql, EPS, 1.0))}
