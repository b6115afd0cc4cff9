"""Realized vs predicted: matured outcomes of past scores, rates per tier and band, the
capacity each run handed over, and the check against the cutoffs' targets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from leadscore.data.contract import utc_timestamp
from leadscore.modeling.metrics import (
    lead_bootstrap_sums,
    percentile_interval,
    wilson_interval,
)
from leadscore.monitoring.result import US_PER_DAY, MonitorConfig


def lead_bootstrap_interval(y, lead_ids, draws: int, confidence: float, seed: int) -> tuple[float, float]:
    """Interval of the mean of ``y`` resampling *leads*: rows of one lead in several runs are
    not independent, so resampling rows would be too narrow."""
    y = np.asarray(y, dtype="float64")
    if not len(y) or draws < 1:
        return math.nan, math.nan
    codes, uniques = pd.factorize(pd.Series(lead_ids).astype(str))
    sums = lead_bootstrap_sums(codes, len(uniques), np.column_stack([y, np.ones_like(y)]), draws, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        return percentile_interval(sums[:, 0] / sums[:, 1], confidence)


# ---------------------------------------------------------------------------
# Outcomes of scored rows
# ---------------------------------------------------------------------------

def outcomes(con, scores: pd.DataFrame, horizon_days: int, won_horizon_days: int,
             observed_until: pd.Timestamp, disqualified_horizon_days: int | None = None) -> pd.DataFrame:
    """Per scored row: ``became_sql`` and ``won`` (pd.NA while the window is open, from
    :func:`leadscore.labels.examples.label_examples`), ``disqualified`` (a ``disqualified`` event in
    (as_of, as_of + disqualified_horizon_days], default ``horizon_days``; NA while open), and
    the maturity flags ``sql_matured`` and ``won_matured``."""
    from leadscore.features.builder import _pairs_frame
    from leadscore.labels.examples import ExampleConfig, label_examples

    pairs = scores[["lead_id", "as_of"]].reset_index(drop=True)
    labels = label_examples(con, pairs, ExampleConfig(horizon_days=int(horizon_days),
                                                      won_horizon_days=int(won_horizon_days)), observed_until)
    frame = _pairs_frame(pairs)
    con.register("_monitor_pairs", frame)
    try:
        dq = con.execute("""
            SELECT p.lead_id, p.as_of_us, min(epoch_us(e.occurred_at)) AS next_dq_us
            FROM _monitor_pairs p
            JOIN lifecycle e ON e.lead_id = p.lead_id AND e.stage = 'disqualified'
                             AND epoch_us(e.occurred_at) >= p.as_of_us
            GROUP BY p.lead_id, p.as_of_us
        """).df()
    finally:
        con.unregister("_monitor_pairs")
    merged = frame.merge(dq, on=["lead_id", "as_of_us"], how="left", validate="many_to_one")
    dq_us = int(disqualified_horizon_days or horizon_days) * US_PER_DAY
    end_us = int(utc_timestamp(observed_until).value // 1000)
    as_of_us = merged["as_of_us"].to_numpy()
    out = pd.DataFrame(index=pairs.index)
    out["sql_matured"] = as_of_us + int(horizon_days) * US_PER_DAY <= end_us
    out["won_matured"] = as_of_us + int(won_horizon_days) * US_PER_DAY <= end_us
    out["became_sql"] = labels["became_sql"].to_numpy()
    out["won"] = labels["won"].to_numpy()
    hit = merged["next_dq_us"].to_numpy(dtype="float64", na_value=np.inf) <= as_of_us + dq_us
    dq_values = pd.array(hit, dtype="boolean")
    dq_values[~(as_of_us + dq_us <= end_us)] = pd.NA
    out["disqualified"] = dq_values
    return out


# ---------------------------------------------------------------------------
# Realized vs predicted
# ---------------------------------------------------------------------------

def score_band(score) -> pd.Series:
    """'1-10', '11-20', ..., '91-99' from the 1-99 score."""
    s = pd.Series(score).astype("float64")
    idx = np.clip(((s - 1) // 10).fillna(-1).astype(int), -1, 9)
    labels = np.array([f"{10 * i + 1}-{min(10 * i + 10, 99)}" for i in range(10)] + ["?"], dtype=object)
    return pd.Series(labels[np.where(idx < 0, 10, idx)], index=s.index)


def rate_table(rows: pd.DataFrame, by: str, order, config: MonitorConfig, with_prediction: bool = True,
               funnel: bool = False) -> pd.DataFrame:
    """Per value of ``by`` (and 'all'): matured rows, positives (``y``, the primary label)
    and the realized rate with its Wilson interval, the mean predicted probability (``p``);
    with ``funnel`` (the primary label is ``became_sql``) also won on the rows whose won window
    matured, and SQL->won (won among the rows that became SQL). ``rows`` carry ``matured``,
    ``y`` and ``p``."""
    out = []
    groups = [(str(v), rows[rows[by] == v]) for v in order] + [("all", rows)]
    for name, g in groups:
        m = g[g["matured"]]
        y = m["y"].astype("float64")
        rec = {by: name, "scored": len(g), "matured": len(m), "immature": int(len(g) - len(m)),
               "positives": int(y.sum()), "realized_rate": y.mean() if len(m) else math.nan}
        lo, hi = wilson_interval(y.sum(), len(m), config.confidence)
        rec["realized_low"], rec["realized_high"] = float(lo), float(hi)
        if with_prediction:
            rec["predicted_rate"] = m["p"].mean() if len(m) else math.nan
        if funnel:
            w = g[g["won_matured"]]
            won = w["won"].astype("float64")
            sql_w = w[w["became_sql"].astype("boolean").fillna(False)]
            rec["won_matured"] = len(w)
            rec["realized_won_rate"] = won.mean() if len(w) else math.nan
            if with_prediction:
                rec["predicted_won_rate"] = w["p_won"].mean() if len(w) else math.nan
            rec["sql_with_won_window"] = len(sql_w)
            rec["realized_sql_to_won"] = sql_w["won"].astype("float64").mean() if len(sql_w) else math.nan
            lo, hi = wilson_interval(sql_w["won"].astype("float64").sum(), len(sql_w), config.confidence)
            rec["sql_to_won_low"], rec["sql_to_won_high"] = float(lo), float(hi)
        out.append(rec)
    return pd.DataFrame(out)


CAPACITY_FIELDS = ("as_of", "days_since_previous", "open_mql_or_better", "open_sql", "new_mql_or_better", "new_sql",
                    "new_mql_or_better_per_week", "new_sql_per_week")


def capacity_table(scores: pd.DataFrame) -> pd.DataFrame:
    """What each scoring run handed over, in the units sales plans in: per run (as_of), the open
    leads in the MQL-or-better and SQL tiers (the stock) and the leads *new* there since the run
    before (the flow: in the tier now, not in it - or not scored - then), also per week (new x 7
    / days since the run before). The first run has no run before: its flow is empty. Whole leads."""
    if scores.empty:
        return pd.DataFrame(columns=list(CAPACITY_FIELDS))
    rows = scores[["lead_id", "as_of", "tier"]].copy()
    rows["mql_or_better"] = rows["tier"].isin(["MQL", "SQL"])
    rows["sql"] = rows["tier"] == "SQL"
    out, before = [], None
    for as_of, run in rows.groupby("as_of", sort=True):
        now = run.set_index("lead_id")
        entry = {"as_of": as_of, "open_mql_or_better": int(now["mql_or_better"].sum()), "open_sql": int(now["sql"].sum())}
        if before is None:
            entry.update(days_since_previous=math.nan, new_mql_or_better=math.nan, new_sql=math.nan,
                         new_mql_or_better_per_week=math.nan, new_sql_per_week=math.nan)
        else:
            prev_as_of, prev = before
            days = (as_of - prev_as_of) / pd.Timedelta(days=1)
            entry["days_since_previous"] = days
            for tier in ("mql_or_better", "sql"):
                was = prev[tier].reindex(now.index, fill_value=False).to_numpy(dtype=bool)
                new = int((now[tier].to_numpy(dtype=bool) & ~was).sum())
                entry[f"new_{tier}"] = new
                entry[f"new_{tier}_per_week"] = new * 7.0 / days if days > 0 else math.nan
        out.append(entry)
        before = (as_of, now)
    return pd.DataFrame(out, columns=list(CAPACITY_FIELDS))


def target_checks(rows: pd.DataFrame, cutoffs, config: MonitorConfig) -> tuple[pd.DataFrame, str]:
    """The MQL-or-better population and the SQL tier against the conversion targets the
    cutoffs were chosen for (rates of the primary label, ``y``); (table, a sentence on where
    targets come from)."""
    policy = cutoffs.policy
    if policy.policy != "conversion_rate":
        return pd.DataFrame(columns=["population", "target", "realized", "low", "high", "matured", "status"]), (
            f"cutoffs were chosen by policy {policy.policy}, which sets no conversion-rate target; "
            "realized conversion is reported but not checked against a target")
    m = rows[rows["matured"]]
    out = []
    fell_back = set(getattr(cutoffs, "fell_back", ()))
    for cut, name, mask, target in (("mql", "MQL or better", m["tier"].isin(["MQL", "SQL"]), policy.target("mql")),
                                    ("sql", "SQL tier", m["tier"] == "SQL", policy.target("sql"))):
        g = m[mask.to_numpy()]
        y = g["y"].astype("float64").to_numpy()
        realized = float(y.mean()) if len(y) else math.nan
        low, high = lead_bootstrap_interval(y, g["lead_id"], config.bootstrap, config.confidence, config.seed)
        floor = target * (1 - config.target_tolerance)
        if len(y) < config.min_rows:
            status = "too few rows"
        elif cut in fell_back:  # training could not meet it either: the cutoff is the best rate reachable
            status = "target unreachable at training (best-rate cutoff)"
        elif high < floor:
            status = "off target"
        elif high < target:
            status = "below target (within tolerance)"
        elif realized < target:
            status = "on target (below, not significant)"
        else:
            status = "on target"
        out.append({"population": name, "target": target, "realized": realized, "low": low, "high": high,
                    "matured": len(y), "leads": int(g["lead_id"].nunique()), "status": status})
    outcome = rows.attrs.get("noun", "convert")
    return pd.DataFrame(out), (f"targets from the cutoff policy conversion_rate: leads at or above the MQL cutoff "
                               f"should have {outcome} at >= {policy.target('mql'):.1%}, at or above the SQL cutoff at >= "
                               f"{policy.target('sql'):.1%}; off target = the {config.confidence:.0%} interval "
                               f"(resampling leads) lies below target x {1 - config.target_tolerance:g}")


# ---------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------
