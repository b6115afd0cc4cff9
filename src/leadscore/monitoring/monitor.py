"""Closing the loop: how past scores performed, whether the population or the model drifted,
and what the leads sales disqualified have in common.

:func:`monitor` takes the model (scorer and manifest), the contract tables (a DuckDB
connection from :func:`leadscore.features.builder.connect`) and the concatenated output of past
scoring runs, and returns a :class:`MonitorResult`; :func:`render_monitor_report` turns it
into one self-contained HTML page (images as data URIs, no scripts, no network references),
:meth:`MonitorResult.to_json` into plain JSON and :meth:`MonitorResult.metrics` into flat
``monitor_*`` numbers for MLflow. Everything here is pure computation; the command line
(``leadscore monitor``) only reads inputs and writes outputs.

Everything is about the model's *primary label* (``became_sql``, or ``won`` for a CRM
without an SQL stage): its probability (``p_sql`` / ``p_won``), its horizon, its outcome.

1. **Realized vs predicted.** A scored row's outcome window is ``(as_of, as_of +
   horizon]`` (the primary label's horizon, from the manifest). Only rows whose window has
   closed by the end of the observed data are *matured*; the others are left out and
   counted, never taken as negatives. Per model tier, per rule-baseline tier and per score
   band (1-10, ..., 91-99), the realized rate with a 95 % Wilson interval sits next to
   the mean predicted probability; for an SQL model, closed-won too where its longer window
   has matured, with SQL->won (won among the rows that became SQL). The MQL-or-better population (tier
   MQL or SQL) and the SQL tier are checked against the conversion targets the cutoffs were
   chosen for (policy ``conversion_rate`` only; other policies have no conversion target).
   Because one lead appears in many weekly runs, these two rates get a bootstrap interval
   that resamples *leads*; a rate is **off target** when that interval's upper end lies
   below ``target x (1 - target_tolerance)`` - materially and clearly below, not within
   the noise of the slice the cutoffs were set on.
2. **Calibration drift.** Reliability table (equal-width bins) and ECE of the matured
   rows; flagged when ECE exceeds ``ece_limit`` *and* what a perfectly calibrated model
   would show by chance on the same rows (95th percentile of ECE with outcomes drawn from
   the probability itself).
3. **Population drift.** PSI of every feature and of the probability and ``score`` between a
   training-window reference and the latest scoring run. The reference is recomputed with
   :func:`leadscore.features.builder.features_as_of` for the leads open at the last
   ``reference_dates`` cadence dates of the shipped model's training window (up to its
   ``train_until``), sampled deterministically. Both sides are restricted to the
   model's domain, leads at most ``max_lead_age_days`` old (training leaves older leads
   out); the share of scored leads outside it is reported on its own. Numeric features are
   binned at reference quantiles, missing values are a bin of their own, categoricals are
   binned by value, and empty bins get ``psi_epsilon``. For categoricals, the share of
   values the model never saw in training (``primary_model.levels``). PSI >= ``psi_watch`` is
   *watch*, >= ``psi_act`` is *act*.
4. **Disqualified leads.** Among the scored leads with a matured window, those sales
   disqualified (a ``disqualified`` event in the window, not converted) against those that
   converted (the primary label's outcome), each on its latest scored row before the
   outcome: for every fit and engagement characteristic (categorical values; numeric
   features in quantile bands, missing its own band), counts, its share among disqualified
   and among converted leads, the over-representation
   (difference of the shares, the ranking key), the lift (ratio of the shares) and the
   share disqualified among the leads with it. Then the features whose SHAP contributions
   pushed disqualified leads' probability up the most (mean positive contribution).
5. **Verdict.** ``retrain`` when any PSI is at or above ``psi_act`` or ECE is flagged;
   else ``review cutoffs`` when realized conversion is off target; else ``no action``.
   Exit codes for the command line: :data:`EXIT_NO_ACTION` 0, :data:`EXIT_RETRAIN` 4,
   :data:`EXIT_REVIEW_CUTOFFS` 5 (1-3 are taken: contract violations, unusable input,
   undelivered alerts).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leadscore.data.contract import utc_timestamp
from leadscore.io import jsonable
from leadscore.labels.examples import LABEL_SPECS, label_spec
from leadscore.modeling.cutoffs import TIERS
from leadscore.modeling.metrics import (
    expected_calibration_error,
    lead_bootstrap_sums,
    percentile_interval,
    reliability_table,
    wilson_interval,
)

NO_ACTION, REVIEW_CUTOFFS, RETRAIN = "no action", "review cutoffs", "retrain"
EXIT_NO_ACTION = 0
EXIT_RETRAIN = 4          # drift or calibration beyond limits: a scheduler can chain `leadscore retrain`
EXIT_REVIEW_CUTOFFS = 5   # realized conversion off the cutoffs' targets
EXIT_CODES = {NO_ACTION: EXIT_NO_ACTION, RETRAIN: EXIT_RETRAIN, REVIEW_CUTOFFS: EXIT_REVIEW_CUTOFFS}

MISSING_BIN = "missing"
US_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class MonitorConfig:
    """Limits and sample sizes of the monitor.

    ``ece_limit`` 0.01: ECE is in probability units. Open leads convert at a few per cent
    in 42 days, so an ECE of 0.01 means the probabilities are off on average by roughly a
    third to all of the base rate - enough to move the leads a conversion-rate cutoff lets
    through - while a well calibrated model shows a few thousandths (0.001 on the 50k demo
    test weeks, about 0.004 on the 8k test setup). The flag also requires ECE above what
    perfect calibration shows by chance on the same rows (``chance_draws`` simulations).
    ``psi_watch`` / ``psi_act``: the customary 0.1 / 0.25. ``target_tolerance`` 0.2: a
    realized rate counts as off target only if its interval lies wholly below target x 0.8;
    cutoffs are set on a calibration slice of a few thousand rows, and the training
    report's own test-slice intervals for the cutoffs are that wide. ``min_rows``: a cell
    (tier, band, bin) with fewer matured rows is shown but never flagged.
    ``reference_dates`` / ``reference_size``: the training-window reference population.
    ``max_lead_age_days``: the model's domain (training's ``examples.max_lead_age_days``;
    the manifest's value wins when it carries one; None: no restriction).
    """

    ece_limit: float = 0.01
    ece_bins: int = 10
    chance_draws: int = 200
    psi_watch: float = 0.1
    psi_act: float = 0.25
    psi_bins: int = 10
    psi_epsilon: float = 1e-4
    unseen_watch: float = 0.01
    target_tolerance: float = 0.2
    confidence: float = 0.95
    bootstrap: int = 1000
    min_rows: int = 30
    reference_dates: int = 5
    reference_size: int = 10_000
    max_lead_age_days: int | None = 365
    observed_until: str | None = None
    persona_bands: int = 5
    persona_min_leads: int = 10
    persona_top: int = 20
    seed: int = 0

    def __post_init__(self):
        for name in ("ece_limit", "psi_watch", "psi_act", "psi_epsilon"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.psi_watch > self.psi_act:
            raise ValueError(f"psi_watch ({self.psi_watch}) must not exceed psi_act ({self.psi_act})")
        if not 0 <= self.target_tolerance < 1:
            raise ValueError(f"target_tolerance must be in [0, 1), got {self.target_tolerance!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence!r}")
        for name in ("ece_bins", "psi_bins", "persona_bands", "reference_dates", "reference_size", "min_rows",
                     "persona_min_leads", "persona_top"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.bootstrap < 0 or self.chance_draws < 0:
            raise ValueError("bootstrap and chance_draws must be >= 0")
        if self.max_lead_age_days is not None and self.max_lead_age_days < 1:
            raise ValueError(f"max_lead_age_days must be >= 1 or None, got {self.max_lead_age_days!r}")


@dataclass
class MonitorResult:
    verdict: str
    reasons: list[str]                   # what triggered the verdict, with the numbers
    notes: list[str]                     # everything else worth a sentence
    facts: dict                          # model, windows, row counts
    runs: pd.DataFrame                   # per scoring run: rows, matured, immature
    by_tier: pd.DataFrame
    by_baseline_tier: pd.DataFrame
    by_band: pd.DataFrame
    targets: pd.DataFrame                # MQL-or-better and SQL tier vs the cutoffs' targets
    reliability: pd.DataFrame
    ece: float
    ece_chance: float
    psi: pd.DataFrame                    # one row per feature and for the probability / score
    persona: pd.DataFrame                # characteristics over-represented among disqualified leads
    misleading: pd.DataFrame             # SHAP contributions that pushed disqualified leads up
    capacity: pd.DataFrame = field(default_factory=pd.DataFrame)  # per run: open leads and new arrivals per tier
    config: MonitorConfig = field(default_factory=MonitorConfig)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def ece_flag(self) -> bool:
        return _ece_flag(self.ece, self.ece_chance, self.config)

    def psi_of(self, name: str) -> float:
        row = self.psi[self.psi["feature"] == name]
        return float(row["psi"].iloc[0]) if len(row) else float("nan")

    def metrics(self) -> dict[str, float]:
        """Flat ``monitor_*`` numbers for MLflow (NaN where a figure could not be computed)."""
        feats = self.psi[self.psi["kind"] != "score"]
        top = feats.sort_values("psi", ascending=False).head(1)
        target = self.targets.set_index("population") if len(self.targets) else pd.DataFrame()

        def tgt(pop: str, col: str) -> float:
            return float(target.loc[pop, col]) if pop in target.index and pd.notna(target.loc[pop, col]) else math.nan

        total = self.by_tier[self.by_tier["tier"] == "all"]
        label = label_spec(self.facts["primary_label"])
        p = label.short

        def rate(col: str) -> float:
            return float(total[col].iloc[0]) if len(total) and col in total else math.nan

        out = {
            "monitor_verdict_code": float(self.exit_code),
            "monitor_scored_rows": float(self.facts["scored_rows"]),
            "monitor_matured_rows": float(self.facts["matured_rows"]),
            "monitor_immature_rows": float(self.facts["immature_rows"]),
            "monitor_runs": float(self.facts["runs"]),
            f"monitor_realized_{p}_rate": rate("realized_rate"),
            f"monitor_predicted_{p}_rate": rate("predicted_rate"),
            f"monitor_realized_mql_{p}_rate": tgt("MQL or better", "realized"),
            f"monitor_target_mql_{p}_rate": tgt("MQL or better", "target"),
            "monitor_realized_sql_tier_rate": tgt("SQL tier", "realized"),
            "monitor_target_sql_tier_rate": tgt("SQL tier", "target"),
            "monitor_ece": self.ece,
            "monitor_ece_chance": self.ece_chance,
            "monitor_ece_limit": self.config.ece_limit,
            "monitor_ece_score_bands": float(self.facts.get("ece_score_bands", math.nan)),
            "monitor_psi_score": self.psi_of(label.probability),
            "monitor_psi_score_points": self.psi_of("score"),
            "monitor_psi_max_feature": float(top["psi"].iloc[0]) if len(top) else math.nan,
            "monitor_psi_features_watch": float((feats["status"] == "watch").sum()),
            "monitor_psi_features_act": float((feats["status"] == "act").sum()),
            "monitor_unseen_share_max": float(feats["unseen_share"].max()) if feats["unseen_share"].notna().any()
            else math.nan,
            "monitor_out_of_domain_share": float(self.facts.get("out_of_domain_share", math.nan)),
            "monitor_disqualified_leads": float(self.facts.get("disqualified_leads", 0)),
            "monitor_converted_leads": float(self.facts.get("converted_leads", 0)),
        }
        newest = self.capacity.dropna(subset=["new_mql_or_better_per_week"]).tail(1)
        out["monitor_new_mql_or_better_per_week"] = (float(newest["new_mql_or_better_per_week"].iloc[0])
                                                     if len(newest) else math.nan)
        out["monitor_new_sql_per_week"] = float(newest["new_sql_per_week"].iloc[0]) if len(newest) else math.nan
        if label.name == "became_sql":  # the funnel's next step, where its window has matured
            out["monitor_realized_won_rate"] = rate("realized_won_rate")
            out["monitor_realized_sql_won_rate"] = rate("realized_sql_to_won")
        return {k: (float(v) if v is not None else math.nan) for k, v in out.items()}

    def to_json(self) -> dict:
        """Everything in the report as plain JSON types (NaN as null, timestamps as ISO text)."""
        def records(frame: pd.DataFrame) -> list[dict]:
            return json.loads(frame.to_json(orient="records", date_format="iso")) if len(frame) else []

        return jsonable({
            "verdict": self.verdict, "exit_code": self.exit_code, "reasons": list(self.reasons),
            "notes": list(self.notes), "facts": self.facts, "config": dataclasses.asdict(self.config),
            "metrics": self.metrics(), "runs": records(self.runs), "by_tier": records(self.by_tier),
            "by_baseline_tier": records(self.by_baseline_tier), "by_band": records(self.by_band),
            "targets": records(self.targets),
            "calibration": {"ece": self.ece, "ece_chance": self.ece_chance, "ece_limit": self.config.ece_limit,
                            "flag": self.ece_flag, "reliability": records(self.reliability)},
            "psi": records(self.psi), "persona": records(self.persona), "misleading": records(self.misleading),
            "capacity": records(self.capacity),
        })


# ---------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------

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

def ece_by_chance(p, n_bins: int, draws: int, seed: int, quantile: float = 0.95) -> float:
    """The ``quantile`` of ECE that a perfectly calibrated model shows on these predictions
    (outcomes drawn from ``p``): the noise floor an observed ECE must clear."""
    p = np.asarray(p, dtype="float64")
    if not len(p) or draws < 1:
        return math.nan
    rng = np.random.default_rng(seed)
    values = [expected_calibration_error(rng.random(len(p)) < p, p, n_bins) for _ in range(draws)]
    return float(np.quantile(values, quantile))


def _ece_flag(ece: float, chance: float, config: MonitorConfig) -> bool:
    if not math.isfinite(ece):
        return False
    return ece > config.ece_limit and (not math.isfinite(chance) or ece > chance)


# ---------------------------------------------------------------------------
# Population stability
# ---------------------------------------------------------------------------

def psi_from_shares(ref, cur, epsilon: float = 1e-4) -> float:
    """sum((cur - ref) x ln(cur / ref)) with empty bins set to ``epsilon``."""
    a = np.maximum(np.asarray(ref, dtype="float64"), epsilon)
    b = np.maximum(np.asarray(cur, dtype="float64"), epsilon)
    return float(np.sum((b - a) * np.log(b / a)))


def numeric_bins(ref, cur, bins: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Shares of reference and current values in bins cut at the reference's quantiles
    (ties merged), with a last bin for missing values."""
    r = pd.to_numeric(pd.Series(ref), errors="coerce").astype("float64").to_numpy()
    c = pd.to_numeric(pd.Series(cur), errors="coerce").astype("float64").to_numpy()
    finite = r[~np.isnan(r)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])) if len(finite) else np.array([])

    def shares(x):
        nan = np.isnan(x)
        counts = np.bincount(np.searchsorted(edges, x[~nan], side="right"), minlength=len(edges) + 1)
        counts = np.append(counts, nan.sum()).astype("float64")
        return counts / max(len(x), 1)

    labels = ([f"< {edges[0]:.4g}"] if len(edges) else ["all"]) + \
        [f"[{lo:.4g}, {hi:.4g})" for lo, hi in itertools.pairwise(edges)] + \
        ([f">= {edges[-1]:.4g}"] if len(edges) else []) + [MISSING_BIN]
    return shares(r), shares(c), labels


def categorical_bins(ref, cur) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Shares by value over the union of both sides' values (missing as its own value)."""
    r = pd.Series(ref).astype("object").where(pd.Series(ref).notna(), MISSING_BIN).astype(str)
    c = pd.Series(cur).astype("object").where(pd.Series(cur).notna(), MISSING_BIN).astype(str)
    values = sorted(set(r.unique()) | set(c.unique()))
    a = r.value_counts(normalize=True).reindex(values, fill_value=0.0).to_numpy() if len(r) else np.zeros(len(values))
    b = c.value_counts(normalize=True).reindex(values, fill_value=0.0).to_numpy() if len(c) else np.zeros(len(values))
    return a, b, values


def psi(ref, cur, categorical: bool, bins: int = 10, epsilon: float = 1e-4) -> float:
    a, b, _ = categorical_bins(ref, cur) if categorical else numeric_bins(ref, cur, bins)
    return psi_from_shares(a, b, epsilon)


def psi_status(value: float, config: MonitorConfig) -> str:
    if not math.isfinite(value):
        return "n/a"
    return "act" if value >= config.psi_act else "watch" if value >= config.psi_watch else "stable"


def reference_population(con, scorer, manifest: dict, config: MonitorConfig,
                         max_age: int | None) -> tuple[pd.DataFrame, list[pd.Timestamp]]:
    """Feature rows of leads open at the last ``reference_dates`` cadence dates of the shipped
    model's training window (up to its newest as-of date, ``train_until``), inside the model's
    domain, sampled deterministically to ``reference_size``."""
    from leadscore.features.builder import features_as_of, open_leads

    params = manifest.get("params", {})
    if params.get("train_until"):  # the newest as-of date the shipped model was fitted on
        end = utc_timestamp(params["train_until"])
    else:  # a bundle from before the walk-forward backtest
        label = LABEL_SPECS[scorer.primary]
        horizon = int(params.get(label.horizon_field, 42 if label.name == "became_sql" else 120))
        end = utc_timestamp(params["calibration_start"]) - pd.Timedelta(days=horizon)
    cadence = pd.Timedelta(days=int(params.get("cadence_days", 7)))
    dates = [end - i * cadence for i in reversed(range(config.reference_dates))]
    pairs = open_leads(con, dates)
    pairs = _within_age(con, pairs, max_age)
    if len(pairs) > config.reference_size:
        pairs = pairs.sample(n=config.reference_size, random_state=config.seed)
    pairs = pairs.sort_values(["as_of", "lead_id"], kind="stable").reset_index(drop=True)
    return features_as_of(con, pairs, config=scorer.feature_config), dates


def _within_age(con, pairs: pd.DataFrame, max_age: int | None) -> pd.DataFrame:
    """The pairs whose lead is at most ``max_age`` days old at as_of (lead_age_days <= max_age)."""
    if max_age is None or not len(pairs):
        return pairs.reset_index(drop=True)
    created = con.execute("SELECT lead_id, created_at FROM leads").df()
    created["created_at"] = pd.to_datetime(created["created_at"], utc=True)
    merged = pairs.merge(created.drop_duplicates("lead_id"), on="lead_id", how="left")
    age = (pd.to_datetime(merged["as_of"], utc=True) - merged["created_at"]) / pd.Timedelta(days=1)
    return pairs[(age <= max_age).to_numpy()].reset_index(drop=True)


def population_drift(scorer, reference: pd.DataFrame, current: pd.DataFrame, current_scores: pd.DataFrame,
                     config: MonitorConfig) -> pd.DataFrame:
    """PSI per feature and for the primary probability and score; for categoricals the share of
    current values the model never saw in training."""
    levels = scorer.primary_model.levels
    group = scorer.catalogue.set_index("name")["group"]
    rows = []
    for f in scorer.primary_model.features:
        categorical = f in levels
        value = psi(reference[f], current[f], categorical, config.psi_bins, config.psi_epsilon)
        unseen = math.nan
        if categorical and len(current):
            unseen = float((~current[f].astype(str).isin(set(levels[f]))).mean())
        rows.append({"feature": f, "group": group.get(f, "other"), "kind": "categorical" if categorical else "numeric",
                     "psi": value, "unseen_share": unseen})
    prob = scorer.probability
    ref_pred = scorer.predict(reference) if len(reference) else pd.DataFrame({prob: [], "score": []})
    for name in (prob, "score"):
        value = psi(ref_pred[name], current_scores[name], False, config.psi_bins, config.psi_epsilon)
        rows.append({"feature": name, "group": "score", "kind": "score", "psi": value, "unseen_share": math.nan})
    out = pd.DataFrame(rows)
    out["status"] = [psi_status(v, config) for v in out["psi"]]
    out["reference_rows"], out["current_rows"] = len(reference), len(current)
    return out.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------
# Disqualified leads: the negative persona
# ---------------------------------------------------------------------------

def resolved_leads(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per lead that was resolved within a matured window: ``outcome`` 'converted' (the
    primary label, ``y``, within the horizon of a run) or 'disqualified' (disqualified within
    the horizon of a run, never converted in one), with its latest scored row before that outcome."""
    m = rows[rows["matured"]].copy()
    m["_sql"] = m["y"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    m["_dq"] = m["disqualified"].astype("boolean").fillna(False).to_numpy(dtype=bool) & ~m["_sql"]
    sql_leads = set(m.loc[m["_sql"], "lead_id"])
    sql = m[m["_sql"]].sort_values("as_of").groupby("lead_id", sort=True).tail(1)
    dq = m[m["_dq"] & ~m["lead_id"].isin(sql_leads)].sort_values("as_of").groupby("lead_id", sort=True).tail(1)
    out = pd.concat([sql.assign(outcome="converted"), dq.assign(outcome="disqualified")], ignore_index=True)
    return out.drop(columns=["_sql", "_dq"]).sort_values(["outcome", "lead_id"], kind="stable").reset_index(drop=True)


def _bands(values: pd.Series, n_bands: int) -> pd.Series:
    """Quantile bands of a numeric column as labels; missing values are their own band."""
    x = pd.to_numeric(values, errors="coerce").astype("float64")
    finite = x.dropna()
    labels = pd.Series(MISSING_BIN, index=x.index, dtype=object)
    if not len(finite):
        return labels
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, n_bands + 1)))
    if len(edges) == 1:
        labels[x.notna()] = f"= {edges[0]:.4g}"
        return labels
    idx = np.clip(np.searchsorted(edges, x[x.notna()], side="right") - 1, 0, len(edges) - 2)
    names = [f"[{lo:.4g}, {hi:.4g}" + ("]" if i == len(edges) - 2 else ")")
             for i, (lo, hi) in enumerate(itertools.pairwise(edges))]
    # a band whose both ends are the same value (a spike, e.g. many zeros) reads "= v"
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        if i < len(edges) - 2 and np.sum(finite == lo) >= np.sum((finite >= lo) & (finite < hi)):
            names[i] = f"= {lo:.4g}"
    labels[x.notna()] = np.asarray(names, dtype=object)[idx]
    return labels


def negative_persona(features: pd.DataFrame, outcome: pd.Series, scorer, config: MonitorConfig) -> pd.DataFrame:
    """Per characteristic (feature = value or band): disqualified and converted leads with it, its
    share among each group, over-representation among the disqualified (share difference,
    the ranking key), lift (ratio of shares, smoothed) and the share disqualified among the
    resolved leads with it. Characteristics held by fewer than ``persona_min_leads``
    disqualified leads are left out."""
    outcome = pd.Series(outcome).to_numpy()
    is_dq = outcome == "disqualified"
    n_dq, n_sql = int(is_dq.sum()), int((~is_dq).sum())
    cols = ["feature", "group", "value", "disqualified", "converted", "disqualified_share", "converted_share",
            "over_representation", "lift", "disqualified_rate"]
    if n_dq == 0 or n_sql == 0:
        return pd.DataFrame(columns=cols)
    levels = scorer.primary_model.levels
    group = scorer.catalogue.set_index("name")["group"]
    parts = []
    for f in scorer.primary_model.features:
        if f in levels:
            v = features[f].astype("object").where(features[f].notna(), MISSING_BIN).astype(str)
        else:
            v = _bands(features[f], config.persona_bands)
        table = pd.crosstab(v.to_numpy(), is_dq).reindex(columns=[False, True], fill_value=0)
        parts.append(pd.DataFrame({"feature": f, "group": group.get(f, "other"), "value": table.index.astype(str),
                                   "disqualified": table[True].to_numpy(), "converted": table[False].to_numpy()}))
    out = pd.concat(parts, ignore_index=True)
    out["disqualified_share"] = out["disqualified"] / n_dq
    out["converted_share"] = out["converted"] / n_sql
    out["over_representation"] = out["disqualified_share"] - out["converted_share"]
    # add-half smoothing: a value no SQL lead had gets a finite lift
    out["lift"] = ((out["disqualified"] + 0.5) / (n_dq + 1)) / ((out["converted"] + 0.5) / (n_sql + 1))
    out["disqualified_rate"] = out["disqualified"] / (out["disqualified"] + out["converted"])
    out = out[(out["disqualified"] >= config.persona_min_leads) & (out["over_representation"] > 0)]
    return out.sort_values(["over_representation", "lift"], ascending=False, kind="stable").reset_index(drop=True)[cols]


def misleading_contributions(scorer, features: pd.DataFrame, outcome: pd.Series) -> pd.DataFrame:
    """Per feature: mean positive SHAP contribution (log-odds) among disqualified leads - what
    pushed their probability up wrongly - with the mean contribution among disqualified and
    among converted leads, and how often it was a disqualified lead's strongest push. Largest first."""
    from leadscore.serving.explain import contributions

    outcome = pd.Series(outcome).to_numpy()
    cols = ["feature", "group", "mean_positive_disqualified", "mean_disqualified", "mean_converted", "top_push_share"]
    if not len(features) or not (outcome == "disqualified").any():
        return pd.DataFrame(columns=cols)
    c = contributions(scorer.primary_model, features.reset_index(drop=True)).values
    dq = c[outcome == "disqualified"]
    sql = c[outcome == "converted"]
    group = scorer.catalogue.set_index("name")["group"]
    top = dq.to_numpy().argmax(axis=1)
    top_share = np.bincount(top[dq.to_numpy().max(axis=1) > 0], minlength=c.shape[1]) / len(dq)
    out = pd.DataFrame({"feature": c.columns, "group": [group.get(f, "other") for f in c.columns],
                        "mean_positive_disqualified": dq.clip(lower=0).mean().to_numpy(),
                        "mean_disqualified": dq.mean().to_numpy(),
                        "mean_converted": sql.mean().to_numpy() if len(sql) else np.nan,
                        "top_push_share": top_share})
    return out.sort_values("mean_positive_disqualified", ascending=False, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------
# The monitor
# ---------------------------------------------------------------------------

def _required(scores: pd.DataFrame, probability: str) -> None:
    needed = {"lead_id", "as_of", probability, "score", "tier"}
    missing = sorted(needed - set(scores.columns))
    if missing:
        raise ValueError(f"scores lack column(s) {', '.join(missing)}; give the output of `leadscore score`")
    if not len(scores):
        raise ValueError("no scored rows: give the output of at least one `leadscore score` run")


class EventOutcomes:
    """What monitoring reads from event data (leads, activities, lifecycle): each scored row's
    outcome, the features of scored leads, and the training window's population."""

    def __init__(self, con, scorer, manifest: dict, config: MonitorConfig):
        from leadscore.labels.examples import ExampleConfig, observed_end

        params = manifest.get("params", {})
        self.con, self.scorer, self.manifest, self.config = con, scorer, manifest, config
        self.label = LABEL_SPECS[scorer.primary]
        self.funnel = self.label.name == "became_sql"  # the next step (won) is recorded too
        self.sql_horizon = int(params.get("horizon_days", 42))
        self.won_horizon = int(params.get("won_horizon_days", 120))
        self.horizon = self.sql_horizon if self.label.name == "became_sql" else self.won_horizon
        max_age = params.get("max_lead_age_days", config.max_lead_age_days)
        self.max_age = None if max_age is None else int(max_age)
        if config.observed_until:
            self.observed_until = utc_timestamp(config.observed_until)
        else:  # as training reads it: the newest lifecycle event minus the model's label latency
            self.observed_until = observed_end(con, ExampleConfig(
                label_latency_days=float(params.get("label_latency_days") or 0)))

    def outcomes(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Per row: ``matured``, ``y`` (the primary label), ``won_matured``, ``disqualified``."""
        o = outcomes(self.con, rows, self.sql_horizon, self.won_horizon, self.observed_until, self.horizon)
        o["matured"] = o["sql_matured" if self.label.name == "became_sql" else "won_matured"]
        o["y"] = o[self.label.name]
        return o

    def features(self, pairs: pd.DataFrame) -> pd.DataFrame:
        from leadscore.features.builder import features_as_of

        return features_as_of(self.con, pairs, config=self.scorer.feature_config)

    def lead_age_days(self, frame: pd.DataFrame) -> np.ndarray:
        return frame["lead_age_days"].to_numpy(dtype="float64")

    def reference(self) -> tuple[pd.DataFrame, list[pd.Timestamp]]:
        return reference_population(self.con, self.scorer, self.manifest, self.config, self.max_age)


class FlatOutcomes:
    """What monitoring reads from a one-row-per-lead export: its outcome column (matured once
    the label's horizon has passed since the lead's date, when it has dates), its columns, and
    the training export's rows as the reference population."""

    def __init__(self, scorer, export, reference, config: MonitorConfig):
        from leadscore.training.flat_pipeline import scoring_rows

        self.scorer, self.config = scorer, config
        self.label = label_spec(scorer.primary)
        self.funnel = False  # an export's one outcome column
        self.horizon = export.horizon_days or 0
        self.max_age = None
        self.observed_until = export.observed_until or pd.Timestamp.now(tz="UTC")
        matured = np.ones(len(export.ids), dtype=bool) if export.dates is None else \
            (export.dates + pd.Timedelta(days=self.horizon) <= self.observed_until).to_numpy()
        self.known = pd.DataFrame({"lead_id": pd.Series(export.ids).astype(str).to_numpy(), "y": export.y,
                                   "matured": matured}).drop_duplicates("lead_id")
        self.rows = scoring_rows(export).drop(columns=["as_of"]).drop_duplicates("lead_id")
        ref = scoring_rows(reference)
        self.reference_rows = ref.sample(n=min(len(ref), config.reference_size), random_state=config.seed)

    def outcomes(self, rows: pd.DataFrame) -> pd.DataFrame:
        o = rows[["lead_id"]].merge(self.known, on="lead_id", how="left", validate="many_to_one")
        matured = o["matured"].fillna(False).to_numpy(dtype=bool)   # a lead not in the export: unknown
        y = pd.array(o["y"].fillna(False).to_numpy(dtype=bool), dtype="boolean")
        y[~matured] = pd.NA
        return pd.DataFrame({"matured": matured, "y": y, "won_matured": False,
                             "disqualified": pd.array([pd.NA] * len(o), dtype="boolean")}, index=rows.index)

    def features(self, pairs: pd.DataFrame) -> pd.DataFrame:
        return pairs[["lead_id", "as_of"]].merge(self.rows, on="lead_id", how="inner", validate="many_to_one")

    def lead_age_days(self, frame: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(frame))

    def reference(self) -> tuple[pd.DataFrame, list[pd.Timestamp]]:
        return self.reference_rows.reset_index(drop=True), []


def monitor(scorer, manifest: dict, con, scores: pd.DataFrame, *, config: MonitorConfig | None = None,
            data=None) -> MonitorResult:
    """Realized vs predicted, calibration, population drift, the negative persona and the
    verdict for past scoring runs ``scores`` (concatenated ``leadscore score`` outputs).
    ``data``: where outcomes and features come from - event tables through ``con`` (the
    default, :class:`EventOutcomes`), or a flat export (:class:`FlatOutcomes`)."""
    config = config or MonitorConfig()
    data = data or EventOutcomes(con, scorer, manifest, config)
    _required(scores, scorer.probability)
    params = manifest.get("params", {})
    label, horizon, max_age, observed_until = data.label, data.horizon, data.max_age, data.observed_until
    sql_horizon, won_horizon = int(params.get("horizon_days") or 42), int(params.get("won_horizon_days") or 120)

    rows = scores.copy()
    rows["as_of"] = pd.to_datetime(rows["as_of"], utc=True)
    rows["lead_id"] = rows["lead_id"].astype(str)
    rows = rows.drop_duplicates(["lead_id", "as_of"], keep="last").sort_values(["as_of", "lead_id"], kind="stable")
    rows = rows.reset_index(drop=True)
    for col in ("baseline_tier", "model_version"):
        if col not in rows:
            rows[col] = None
    rows = pd.concat([rows, data.outcomes(rows)], axis=1)
    # The primary label's outcome (y), maturity and probability (p): what every check reads.
    rows["p"] = pd.to_numeric(rows[label.probability], errors="coerce")
    rows.attrs["noun"] = label.noun
    rows["band"] = score_band(rows["score"])

    runs = rows.groupby("as_of", sort=True).agg(
        scored=("lead_id", "size"), matured=("matured", "sum"), won_matured=("won_matured", "sum"),
        model_version=("model_version", lambda s: ", ".join(sorted({str(v) for v in s.dropna()})))).reset_index()
    runs["immature"] = runs["scored"] - runs["matured"]
    runs["window_closes"] = runs["as_of"] + pd.Timedelta(days=horizon)
    matured = rows[rows["matured"]]
    notes: list[str] = []
    reasons: list[str] = []
    n_immature = int((~rows["matured"]).sum())
    if n_immature:
        notes.append(f"{n_immature:,} scored rows of {int((runs['immature'] > 0).sum())} run(s) are immature (their "
                     f"{horizon}-day window closes after the data ends {observed_until:%Y-%m-%d %H:%M}): left out of "
                     "realized rates and calibration, never counted as negatives")

    # 1. realized vs predicted
    funnel = data.funnel
    by_tier = rate_table(rows, "tier", TIERS, config, funnel=funnel)
    by_baseline = rate_table(rows.assign(baseline_tier=rows["baseline_tier"].astype("object")), "baseline_tier",
                             TIERS, config, with_prediction=False, funnel=funnel)
    bands = [f"{10 * i + 1}-{min(10 * i + 10, 99)}" for i in range(10)]
    by_band = rate_table(rows, "band", bands, config, funnel=funnel)
    by_band = by_band[(by_band["band"] == "all") | (by_band["scored"] > 0)].reset_index(drop=True)
    targets, target_note = target_checks(rows, scorer.cutoffs, config)
    b = by_band[(by_band["band"] != "all") & (by_band["matured"] > 0)]
    ece_bands = float((b["matured"] * (b["predicted_rate"] - b["realized_rate"]).abs()).sum()
                      / b["matured"].sum()) if len(b) else math.nan

    # 2. calibration
    y = matured["y"].astype("float64").to_numpy()
    p = matured["p"].astype("float64").to_numpy()
    if len(y):
        ece = expected_calibration_error(y, p, config.ece_bins)
        chance = ece_by_chance(p, config.ece_bins, config.chance_draws, config.seed)
        reliability = reliability_table(y, p, config.ece_bins)
        lo, hi = wilson_interval(reliability["observed"] * reliability["rows"], reliability["rows"], config.confidence)
        reliability["observed_low"], reliability["observed_high"] = lo, hi
    else:
        ece = chance = math.nan
        reliability = pd.DataFrame(columns=["bin", "rows", "predicted", "observed", "bin_low"])
        notes.append("no scored row has a matured outcome window yet: no realized rates and no calibration check")

    # 3. population drift: reference vs the latest run, both inside the model's domain
    latest_as_of = rows["as_of"].max()
    latest = rows[rows["as_of"] == latest_as_of].reset_index(drop=True)
    current = data.features(latest[["lead_id", "as_of"]])
    current = latest[["lead_id", "as_of", label.probability, "score"]].merge(
        current, on=["lead_id", "as_of"], how="inner", validate="one_to_one")
    in_domain = np.ones(len(current), dtype=bool) if max_age is None else (data.lead_age_days(current) <= max_age)
    out_of_domain = float(1 - in_domain.mean()) if len(current) else math.nan
    reference, ref_dates = data.reference()
    drift = population_drift(scorer, reference, current[in_domain], current[in_domain], config)
    if max_age is not None and out_of_domain > 0:
        notes.append(f"{out_of_domain:.1%} of the leads scored on {latest_as_of:%Y-%m-%d} are older than "
                     f"{max_age} days, older than any training example; drift is measured on the others")

    # 4. disqualified leads
    resolved = resolved_leads(rows)
    persona = misleading = pd.DataFrame()
    if len(resolved):
        feats = data.features(resolved[["lead_id", "as_of"]])
        feats = resolved[["lead_id", "as_of", "outcome"]].merge(feats, on=["lead_id", "as_of"], how="inner",
                                                                validate="one_to_one")
        persona = negative_persona(feats, feats["outcome"], scorer, config)
        misleading = misleading_contributions(scorer, feats, feats["outcome"])
    n_dq = int((resolved["outcome"] == "disqualified").sum()) if len(resolved) else 0
    n_converted = int((resolved["outcome"] == "converted").sum()) if len(resolved) else 0

    # 5. verdict
    acting = drift[drift["status"] == "act"]
    if len(acting):
        shown = ", ".join(f"{r.feature} {r.psi:.3f}" for r in acting.head(8).itertuples())
        more = f" and {len(acting) - 8} more" if len(acting) > 8 else ""
        reasons.append(f"population drift: PSI >= {config.psi_act:g} (act) for {shown}{more} "
                       f"(latest run {latest_as_of:%Y-%m-%d} vs the training window)")
    if _ece_flag(ece, chance, config):
        reasons.append(f"calibration drift: ECE {ece:.4f} > limit {config.ece_limit:g} on {len(y):,} matured rows "
                       f"(a calibrated model would show <= {chance:.4f} by chance); realized {label.name} rate "
                       f"{y.mean():.1%} vs predicted {p.mean():.1%}")
    off = targets[targets["status"] == "off target"] if len(targets) else targets
    if reasons:
        verdict = RETRAIN
    elif len(off):
        verdict = REVIEW_CUTOFFS
        for r in off.itertuples():
            reasons.append(f"realized conversion off target: {r.population} {label.noun} at {r.realized:.1%} "
                           f"({r.low:.1%}-{r.high:.1%}) vs target {r.target:.1%} on {r.matured:,} matured rows")
    else:
        verdict = NO_ACTION
        top = drift[drift["kind"] != "score"].head(1)
        parts = [f"largest feature PSI {top['psi'].iloc[0]:.3f} ({top['feature'].iloc[0]}) < {config.psi_act:g}"
                 if len(top) else "no feature PSI",
                 f"{label.probability} PSI {drift.loc[drift['feature'] == label.probability, 'psi'].iloc[0]:.3f}"]
        parts.append(f"ECE {ece:.4f} <= limit {config.ece_limit:g}" if math.isfinite(ece) else "no matured rows for ECE")
        for r in targets.itertuples():
            parts.append(f"{r.population} realized {r.realized:.1%} vs target {r.target:.1%} ({r.status})")
        reasons.append("; ".join(parts))
    if verdict == RETRAIN:
        for r in off.itertuples():
            notes.append(f"also off target: {r.population} {label.noun} at {r.realized:.1%} ({r.low:.1%}-{r.high:.1%}) "
                         f"vs target {r.target:.1%}; retraining sets new cutoffs")
    watch = drift[(drift["status"] == "watch")]
    if len(watch):
        notes.append(f"PSI watch (>= {config.psi_watch:g}): "
                     + ", ".join(f"{r.feature} {r.psi:.3f}" for r in watch.head(10).itertuples()))
    unseen = drift[drift["unseen_share"].fillna(0) >= config.unseen_watch]
    if len(unseen):
        notes.append("values never seen in training (the model reads them as missing): "
                     + ", ".join(f"{r.feature} {r.unseen_share:.1%}" for r in unseen.itertuples()))

    facts = {
        "model_versions": sorted({str(v) for v in rows["model_version"].dropna()}),
        "trained_until": params.get("train_until") or params.get("calibration_start"),
        "observed_until_at_training": params.get("observed_until"),
        "primary_label": label.name, "probability": label.probability, "horizon": horizon,
        "horizon_days": sql_horizon, "won_horizon_days": won_horizon, "max_lead_age_days": max_age,
        "observed_until": observed_until.isoformat(), "runs": len(runs),
        "first_run": rows["as_of"].min().isoformat(), "latest_run": latest_as_of.isoformat(),
        "scored_rows": len(rows), "matured_rows": len(matured), "immature_rows": n_immature,
        "won_matured_rows": int(rows["won_matured"].sum()), "scored_leads": int(rows["lead_id"].nunique()),
        "reference_dates": [d.isoformat() for d in ref_dates], "reference_rows": len(reference),
        "current_rows": int(in_domain.sum()), "out_of_domain_share": out_of_domain,
        "cutoff_policy": scorer.cutoffs.policy.policy, "mql_cutoff": float(scorer.cutoffs.mql),
        "sql_cutoff": float(scorer.cutoffs.sql), "target_note": target_note, "ece_score_bands": ece_bands,
        "disqualified_leads": n_dq, "converted_leads": n_converted, "flat": isinstance(data, FlatOutcomes),
    }
    return MonitorResult(verdict=verdict, reasons=reasons, notes=notes, facts=facts, runs=runs, by_tier=by_tier,
                         by_baseline_tier=by_baseline, by_band=by_band, targets=targets, reliability=reliability,
                         ece=float(ece), ece_chance=float(chance), psi=drift, persona=persona, misleading=misleading,
                         capacity=capacity_table(rows), config=config)


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------

PSI_SHOWN = 0.01  # features with a smaller PSI are counted, not listed: nothing moved
VERDICT_STATUS = {NO_ACTION: "ok", REVIEW_CUTOFFS: "review", RETRAIN: "alert"}  # green, amber, red


def _outcome(result: MonitorResult) -> tuple[str, str]:
    """(probability column, outcome word) of the result's primary label: ("p_sql", "SQL")."""
    return result.facts["probability"], "SQL" if result.facts["primary_label"] == "became_sql" else "won"


def _shown_psi(result: MonitorResult) -> tuple[pd.DataFrame, int]:
    """The PSI rows worth a line - the probability and score rows, every feature with PSI >=
    :data:`PSI_SHOWN` or without a PSI - and the number of features left out."""
    psi = result.psi
    quiet = (psi["kind"] != "score") & (psi["psi"] < PSI_SHOWN)
    return psi[~quiet].reset_index(drop=True), int(quiet.sum())


def _realized_figure(result: MonitorResult):
    from leadscore.reporting.report import (
        logit_axis,
        logit_limits,
        new_figure,
        reliability_points,
    )

    prob, outcome = _outcome(result)
    fig = new_figure(12, 4.8)
    ax1, ax2 = fig.subplots(1, 2)
    for ax, table, key, title in ((ax1, result.by_band, "band", "by score band"),
                                  (ax2, result.by_tier, "tier", "by model tier")):
        t = table[(table[key] != "all") & (table["matured"] > 0)].reset_index(drop=True)
        values = t[["predicted_rate", "realized_rate", "realized_low", "realized_high"]].to_numpy(dtype="float64")
        lo, hi = logit_limits(values)
        x = np.arange(len(t))
        ax.plot(x, np.clip(t["predicted_rate"].to_numpy(dtype="float64"), lo, hi), ls="none", marker="D", ms=6,
                color="tab:blue", label=f"predicted (mean {prob})")
        reliability_points(ax, x + 0.12, t["realized_rate"], t["realized_low"], t["realized_high"], t["matured"],
                           label="realized (95 % Wilson)", min_rows=1, limits=(lo, hi), clip_x=False,
                           color="tab:orange", ls="none")
        logit_axis(ax, "y", lo, hi)
        ax.set_xticks(x, t[key].astype(str), rotation=45 if key == "band" else 0)
        ax.set_xlim(-0.5, max(len(t) - 0.5, 0.5))
        ax.set(ylabel=f"{outcome} rate within the horizon (log-odds scale)",
               title=f"Realized vs predicted {title} (matured rows)")
        if len(result.targets) and key == "tier":
            for r in result.targets.itertuples():
                if r.population == "SQL tier" and lo < r.target < hi:
                    ax.axhline(r.target, ls=":", color="tab:red", lw=1.2)
                    ax.text(0.99, r.target, f"SQL target {r.target:.1%} ", color="tab:red", va="bottom", ha="right",
                            fontsize=8, transform=ax.get_yaxis_transform())
        ax.legend(fontsize=8, loc="upper left")
    return fig


def _psi_figure(result: MonitorResult, top: int = 25):
    from matplotlib.ticker import FuncFormatter

    from leadscore.reporting.report import new_figure

    shown, quiet = _shown_psi(result)
    t = pd.concat([shown[shown["kind"] != "score"].head(top), shown[shown["kind"] == "score"]])
    more = int((shown["kind"] != "score").sum()) - int((t["kind"] != "score").sum())
    t = t.sort_values("psi", kind="stable").reset_index(drop=True)
    fig = new_figure(9, max(3.0, 0.3 * len(t) + 1.4))
    ax = fig.subplots()
    colors = {"act": "tab:red", "watch": "tab:orange", "stable": "tab:green", "n/a": "grey"}
    floor = 1e-3
    values = np.maximum(t["psi"].fillna(0).to_numpy(dtype="float64"), floor)
    ax.barh(np.arange(len(t)), values, color=[colors.get(s, "grey") for s in t["status"]])
    ax.set_yticks(np.arange(len(t)), t["feature"], fontsize=8)
    for limit, name, style in ((result.config.psi_watch, "watch", "--"), (result.config.psi_act, "act", "-.")):
        ax.axvline(limit, ls=style, color="dimgrey", lw=1, label=f"{name}: PSI >= {limit:g}")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlim(floor, max(1.0, float(values.max()) * 1.5))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    left_out = [f"{quiet} feature(s) with PSI < {PSI_SHOWN:g} not shown"] if quiet else []
    left_out += [f"{more} more below these"] if more > 0 else []
    ax.set(xlabel="PSI (log scale), latest run vs training window; bars below 0.001 drawn at 0.001",
           title=f"Population stability: features with PSI >= {PSI_SHOWN:g}, {result.facts['probability']} and score"
                 + (f"\n({'; '.join(left_out)})" if left_out else ""))
    return fig


def _calibration_figure(result: MonitorResult):
    from matplotlib.ticker import PercentFormatter

    from leadscore.reporting.report import (
        logit_axis,
        logit_limits,
        new_figure,
        reliability_points,
    )

    prob, outcome = _outcome(result)
    min_rows = result.config.min_rows
    fig = new_figure(12, 4.8)
    ax1, ax2 = fig.subplots(1, 2)
    t = result.reliability
    top = 0.01
    if len(t):
        hidden, rows = reliability_points(ax1, t["predicted"], t["observed"], t["observed_low"], t["observed_high"],
                                          t["rows"], label="matured scores", min_rows=min_rows)
        shown = t[t["rows"] >= min_rows]
        top = max(top, float(np.nanmax(np.r_[shown["predicted"], shown["observed_high"], 0.0])))
        if hidden:
            ax1.text(0.98, 0.02, f"not drawn: {hidden} bin(s) with < {min_rows} rows ({rows:,} rows)",
                     transform=ax1.transAxes, ha="right", va="bottom", fontsize=8, color="dimgrey")
    top = min(1.0, math.ceil(top * 1.08 * 50) / 50)
    ax1.plot([0, top], [0, top], ls="-.", color="grey", lw=1, label="perfectly calibrated")
    ax1.set(xlim=(0, top), ylim=(0, top), xlabel=f"mean predicted {prob}", ylabel=f"realized {outcome} rate",
            title=f"Reliability (10 equal-width bins, 95 % Wilson): ECE {result.ece:.4f}")
    ax1.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax1.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax1.legend(fontsize=8, loc="upper left")
    b = result.by_band[(result.by_band["band"] != "all") & (result.by_band["matured"] > 0)]
    if len(b):
        lo, hi = logit_limits(b[["predicted_rate", "realized_rate", "realized_low", "realized_high"]].to_numpy())
        reliability_points(ax2, b["predicted_rate"], b["realized_rate"], b["realized_low"], b["realized_high"],
                           b["matured"], label="score bands", min_rows=1, limits=(lo, hi))
        ax2.plot([lo, hi], [lo, hi], ls="-.", color="grey", lw=1, label="perfectly calibrated")
        logit_axis(ax2, "x", lo, hi)
        logit_axis(ax2, "y", lo, hi)
        ax2.legend(fontsize=8, loc="upper left")
        ax2.text(0.98, 0.02, f"a band without a realized {outcome} sits on the lower edge", transform=ax2.transAxes,
                 ha="right", va="bottom", fontsize=8, color="dimgrey")
    ax2.set(xlabel=f"mean predicted {prob} (log-odds scale)", ylabel=f"realized {outcome} rate (log-odds scale)",
            title="Calibration by score band (95 % Wilson)")
    return fig


def monitor_figures(result: MonitorResult) -> dict[str, bytes]:
    """name -> PNG: realized_vs_predicted, psi, calibration."""
    from leadscore.reporting.report import figure_png

    return {"realized_vs_predicted.png": figure_png(_realized_figure(result)),
            "psi.png": figure_png(_psi_figure(result)),
            "calibration.png": figure_png(_calibration_figure(result))}


def _formatted(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """The display table: ``columns`` is (header, source) pairs, a source being a column name
    formatted by its kind, ``(column, kind)``, or ``(point, low, high, kind)`` for a value with
    its interval; sources the frame lacks are skipped."""
    from leadscore.reporting.report import fmt, fmt_interval

    out = {}
    for header, source in columns:
        if isinstance(source, str):
            source = (source, None)
        if not all(c in frame.columns for c in source[:-1]):
            continue
        if len(source) == 4:
            point, low, high, kind = source
            out[header] = [fmt_interval(p, lo, hi, kind) for p, lo, hi in zip(frame[point], frame[low], frame[high])]
        else:
            out[header] = [fmt(v, source[1]) for v in frame[source[0]]]
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))


def _drop_empty(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Without the columns that have no value in any row; (table, the columns left out)."""
    empty = [c for c in frame.columns if len(frame) and (frame[c] == "").all()]
    return frame.drop(columns=empty), empty


WON_COLUMNS = ("won windows matured", "realized won rate", "predicted won rate", "SQL with a matured won window",
               "SQL→won (95 %)")


def _rate_view(table: pd.DataFrame, key: str, outcome: str) -> tuple[pd.DataFrame, list[str]]:
    """A realized-vs-predicted table for display and the columns left out for having no value."""
    view = _formatted(table, [
        (key.replace("_", " "), (key, "text")), ("scored", ("scored", "count")), ("matured", ("matured", "count")),
        ("immature", ("immature", "count")), (f"{outcome} (count)", ("positives", "count")),
        (f"realized {outcome} rate (95 %)", ("realized_rate", "realized_low", "realized_high", "pct")),
        (f"predicted {outcome} rate", ("predicted_rate", "pct")),
        ("won windows matured", ("won_matured", "count")), ("realized won rate", ("realized_won_rate", "pct")),
        ("predicted won rate", ("predicted_won_rate", "pct")),
        ("SQL with a matured won window", ("sql_with_won_window", "count")),
        ("SQL→won (95 %)", ("realized_sql_to_won", "sql_to_won_low", "sql_to_won_high", "pct")),
    ])
    if "realized_won_rate" in table and not table["realized_won_rate"].notna().any():
        # no won window has closed: the won columns would be zeros and blanks
        dropped = [c for c in WON_COLUMNS if c in view.columns]
        view = view.drop(columns=dropped)
        view, empty = _drop_empty(view)
        return view, dropped + empty
    return _drop_empty(view)


def _summary_cards(result: MonitorResult) -> list[dict]:
    from leadscore.reporting.report import card, fmt

    prob, outcome = _outcome(result)
    f, cfg = result.facts, result.config
    cards = []
    total = result.by_tier[result.by_tier["tier"] == "all"]
    if len(total) and total["matured"].iloc[0] > 0:
        r = total.iloc[0]
        cards.append(card(f"Realized {outcome} rate, matured rows", fmt(r["realized_rate"], "pct"),
                          f"predicted {fmt(r['predicted_rate'], 'pct')}; {fmt(r['matured'], 'count')} matured rows"))
    status_of = {"off target": "review", "on target": "ok", "on target (below, not significant)": "ok",
                 "below target (within tolerance)": "ok"}
    for r in result.targets.itertuples():
        cards.append(card(f"{r.population} vs target", fmt(r.realized, "pct"),
                          f"target {fmt(r.target, 'pct')}: {r.status}", status_of.get(r.status, "")))
    if math.isfinite(result.ece):
        cards.append(card("Calibration error (ECE)", f"{result.ece:.4f}",
                          f"limit {cfg.ece_limit:g}; chance level {result.ece_chance:.4f}",
                          "alert" if result.ece_flag else "ok"))
    feats = result.psi[result.psi["kind"] != "score"]
    if len(feats):
        top = feats.sort_values("psi", ascending=False, kind="stable").iloc[0]
        n_act, n_watch = int((feats["status"] == "act").sum()), int((feats["status"] == "watch").sum())
        cards.append(card("Largest feature drift (PSI)", fmt(top["psi"], "psi"),
                          f"{top['feature']}; {n_act} feature(s) act, {n_watch} watch; {prob} PSI "
                          f"{fmt(result.psi_of(prob), 'psi')}",
                          "alert" if n_act else "review" if n_watch else "ok"))
    cards.append(card("Scored rows", fmt(f["scored_rows"], "count"),
                      f"{f['runs']} run(s), latest {f['latest_run'][:10]}; {fmt(f['matured_rows'], 'count')} matured"))
    capacity = getattr(result, "capacity", None)
    if capacity is not None and len(capacity) and "new_sql_per_week" in capacity:
        known = capacity.dropna(subset=["new_sql_per_week"])  # the first run has no run before it
        if len(known):
            last = known.iloc[-1]
            cards.append(card("New SQL per week (latest run)", fmt(last["new_sql_per_week"], "count"),
                              f"as of {fmt(last.get('as_of'), 'date')}: {fmt(last.get('open_sql'), 'count')} open "
                              f"SQL; {fmt(last.get('new_mql_or_better_per_week'), 'count')} new MQL or better "
                              "per week"))
    return cards


CAPACITY_COLUMNS = (("as of", ("as_of", "date")), ("days since the previous run", ("days_since_previous", "count")),
                    ("open MQL or better", ("open_mql_or_better", "count")), ("open SQL", ("open_sql", "count")),
                    ("new MQL or better", ("new_mql_or_better", "count")), ("new SQL", ("new_sql", "count")),
                    ("new MQL or better per week", ("new_mql_or_better_per_week", "count")),
                    ("new SQL per week", ("new_sql_per_week", "count")))


def render_monitor_report(result: MonitorResult, figures: dict[str, bytes] | None = None) -> str:
    """The monitoring report as one self-contained HTML page: the verdict and the headline
    figures first, the details after."""
    from leadscore.reporting.report import figure_item, html_table, render_template

    figures = monitor_figures(result) if figures is None else figures
    prob, outcome = _outcome(result)
    f, cfg = result.facts, result.config
    facts = pd.DataFrame({"fact": [
        "model", "fitted on as-of dates until", "scoring runs", "rows", "data observed until", "outcomes", "cutoffs"],
        "value": [
        ", ".join(f["model_versions"]) or "-",
        f"{f['trained_until']} (outcomes observed until {str(f.get('observed_until_at_training') or '-')[:10]})",
        f"{f['runs']} runs, {f['first_run'][:10]} .. {f['latest_run'][:10]}",
        (f"{f['scored_rows']:,} rows of {f['scored_leads']:,} leads; {f['matured_rows']:,} matured, "
         f"{f['immature_rows']:,} immature (left out)"), f["observed_until"][:16],
        (f"{f['primary_label']} (the export's outcome column"
         + (f", within {f['horizon']} days of the lead's date)" if f["horizon"] else ")") if f.get("flat") else
         f"SQL within {f['horizon_days']} days, won within {f['won_horizon_days']} days"
         if f["primary_label"] == "became_sql" else f"won within {f['won_horizon_days']} days (no SQL model)"),
        f"{f['cutoff_policy']}: MQL {prob} >= {f['mql_cutoff']:.4g}, SQL {prob} >= {f['sql_cutoff']:.4g}"]})

    rate_tables, won_note = [], None
    for title, table, key in (("By model tier", result.by_tier, "tier"),
                              ("By rule-baseline tier", result.by_baseline_tier, "baseline_tier"),
                              ("By score band", result.by_band, "band")):
        view, dropped = _rate_view(table, key, outcome)
        won = [c for c in dropped if c in WON_COLUMNS]
        if won:
            won_note = (f"Won columns left out: no won outcome has matured yet (no scored row's {f['won_horizon_days']}"
                        f"-day won window has closed by {f['observed_until'][:10]}).")
        other = [c for c in dropped if c not in WON_COLUMNS]
        note = f"Left out for having no value in any row: {', '.join(other)}." if other else None
        rate_tables.append({"title": title, "table": html_table(view, index=False), "note": note})

    targets = None
    if len(result.targets):
        targets = html_table(_formatted(result.targets, [
            ("population", ("population", "text")), ("target", ("target", "pct")),
            ("realized (95 %, resampling leads)", ("realized", "low", "high", "pct")),
            ("matured rows", ("matured", "count")), ("leads", ("leads", "count")), ("status", ("status", "text"))]),
            index=False)

    capacity = getattr(result, "capacity", None)
    capacity_html = None
    if capacity is not None and len(capacity):
        capacity_html = html_table(_formatted(capacity, CAPACITY_COLUMNS), index=False)

    reliability = result.reliability.copy()
    if len(reliability):
        reliability["range"] = [f"{lo:.0%}–{lo + 1 / cfg.ece_bins:.0%}" for lo in reliability["bin_low"]]
    reliability_table_html = html_table(_formatted(reliability, [
        (f"predicted {prob} range", ("range", "text")), ("matured rows", ("rows", "count")),
        (f"mean predicted {prob}", ("predicted", "pct")),
        (f"realized {outcome} rate (95 %)", ("observed", "observed_low", "observed_high", "pct"))]), index=False)

    shown, quiet = _shown_psi(result)
    psi_table = html_table(_formatted(shown, [
        ("feature", ("feature", "text")), ("group", ("group", "text")), ("kind", ("kind", "text")),
        ("PSI", ("psi", "psi")), ("status", ("status", "text")),
        ("values unseen in training", ("unseen_share", "pct"))]), index=False)
    psi_quiet = (f"{quiet} feature(s) with PSI < {PSI_SHOWN:g} not shown (their distribution did not move)."
                 if quiet else None)

    persona_tables = []
    share_columns = [("feature", ("feature", "text")), ("value", ("value", "text")),
                     ("disqualified leads", ("disqualified", "count")), ("converted leads", ("converted", "count")),
                     ("share of disqualified", ("disqualified_share", "pct")),
                     ("share of converted", ("converted_share", "pct")),
                     ("over-representation (share difference)", ("over_representation", "pct")),
                     ("lift (ratio of shares)", ("lift", "ratio")),
                     ("disqualified among leads with it", ("disqualified_rate", "pct"))]
    persona = result.persona
    for grp, title in (("fit", "Fit (who they are)"), ("engagement", "Engagement (what they did)")):
        g = persona[persona["group"] == grp].head(cfg.persona_top) if len(persona) else persona
        if len(g):
            persona_tables.append({"title": title, "table": html_table(_formatted(g, share_columns), index=False)})
    misleading = None
    if len(result.misleading):
        misleading = html_table(_formatted(result.misleading.head(15), [
            ("feature", ("feature", "text")), ("group", ("group", "text")),
            ("mean positive contribution, disqualified", ("mean_positive_disqualified", "logodds")),
            ("mean contribution, disqualified", ("mean_disqualified", "logodds")),
            ("mean contribution, converted", ("mean_converted", "logodds")),
            ("strongest push for (share of disqualified)", ("top_push_share", "pct"))]), index=False)

    runs = html_table(_formatted(result.runs, [
        ("as of", ("as_of", "datetime")), ("model version", ("model_version", "text")), ("scored", ("scored", "count")),
        ("matured", ("matured", "count")), ("immature", ("immature", "count")),
        ("won windows matured", ("won_matured", "count")), ("outcome window closes", ("window_closes", "date"))]),
        index=False)

    reference = (f"Reference: {f['reference_rows']:,} feature rows of leads open at "
                 + (", ".join(d[:10] for d in f["reference_dates"]) or "the training export's rows")
                 + f" (end of the training window); current: {f['current_rows']:,} leads of the run of "
                   f"{f['latest_run'][:10]}" + (f", both at most {f['max_lead_age_days']} days old"
                                                if f["max_lead_age_days"] else "") + ".")
    calibration_text = (
        f"ECE {result.ece:.4f} (limit {cfg.ece_limit:g}; a perfectly calibrated model shows up to "
        f"{result.ece_chance:.4f} by chance on these rows): " + ("FLAGGED" if result.ece_flag else "within limits")
        + ". Over the score bands (equal-share bins, more telling where most probabilities are small), the mean "
          f"|predicted - realized| is {f['ece_score_bands']:.4f} (informational).")
    return render_template(
        "monitor.html.j2", title="leadscore monitoring", verdict=result.verdict.upper(),
        verdict_status=VERDICT_STATUS[result.verdict], exit_code=result.exit_code,
        reasons_label="Triggered by" if result.verdict != NO_ACTION else "Checked", reasons=result.reasons,
        cards=_summary_cards(result), notes=result.notes, facts=html_table(facts, index=False, css_class="text"),
        outcome=outcome,
        realized_figure=figure_item(figures, "realized_vs_predicted.png", f"realized vs predicted {outcome} rate",
                                    "Diamonds: mean predicted probability; dots: realized rate with its 95 % Wilson "
                                    "interval, on matured rows only."),
        target_note=f["target_note"], targets=targets, rate_tables=rate_tables, won_note=won_note,
        capacity=capacity_html,
        calibration_figure=figure_item(figures, "calibration.png", "calibration curves",
                                       f"Bins with fewer than {cfg.min_rows} matured rows are not drawn on the left."),
        calibration_text=calibration_text, reliability=reliability_table_html,
        psi_figure=figure_item(figures, "psi.png", "PSI by feature"), reference=reference, psi=psi_table,
        psi_quiet=psi_quiet, psi_shown=PSI_SHOWN,
        persona_intro=(f"{f['disqualified_leads']:,} disqualified leads vs {f['converted_leads']:,} leads that "
                       f"{label_spec(f['primary_label']).noun} (each on its latest scored row before the outcome; "
                       "matured windows only)."),
        persona_tables=persona_tables,
        misleading_intro=(f"Mean SHAP contribution (log-odds of the uncalibrated {prob} model) among disqualified "
                          "leads: the largest positive means are what pushed them up wrongly."),
        misleading=misleading, runs=runs)
