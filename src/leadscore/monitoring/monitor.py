"""Closing the loop: how past scores performed, whether the population or the model drifted,
and what the leads sales disqualified have in common.

:func:`monitor` takes the model (scorer and manifest), the contract tables (a DuckDB
connection from :func:`leadscore.features.builder.connect`) and the concatenated output of past
scoring runs, and returns a :class:`~leadscore.monitoring.result.MonitorResult`;
:func:`~leadscore.monitoring.report.render_monitor_report` turns it
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

import math
from pathlib import Path

import numpy as np
import pandas as pd

from leadscore.data.contract import utc_timestamp
from leadscore.labels.examples import LABEL_SPECS, label_spec
from leadscore.modeling.cutoffs import TIERS
from leadscore.modeling.metrics import (
    expected_calibration_error,
    reliability_table,
    wilson_interval,
)
from leadscore.monitoring.calibration import ece_by_chance
from leadscore.monitoring.drift import population_drift, reference_population

# The steps, one module each: outcomes (1), calibration (2), drift (3), persona (4); result holds
# the settings, the result and the verdict (5); report renders it.
from leadscore.monitoring.outcomes import (
    capacity_table,
    outcomes,
    rate_table,
    score_band,
    target_checks,
)
from leadscore.monitoring.persona import (
    misleading_contributions,
    negative_persona,
    resolved_leads,
)
from leadscore.monitoring.result import (
    NO_ACTION,
    RETRAIN,
    REVIEW_CUTOFFS,
    MonitorConfig,
    MonitorResult,
    ece_flag,
)


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

    @classmethod
    def read(cls, scorer, flat: Path, data: Path | None, reference: Path | None, config: MonitorConfig) -> FlatOutcomes:
        """From the export declaration ``flat``: outcomes from ``data``, the reference population
        from the training export ``reference`` (both default to the declaration's file)."""
        from leadscore.training.flat import load_config, load_flat
        from leadscore.training.flat_pipeline import NotThisModel

        if not scorer.flat:
            raise NotThisModel("the model was trained on event data; monitor it with --data DIR, not --flat")
        dataset = load_config(flat)
        return cls(scorer, load_flat(dataset, data), load_flat(dataset, reference, scoring=True), config)

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
    if ece_flag(ece, chance, config):
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
