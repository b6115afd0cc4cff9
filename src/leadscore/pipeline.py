"""The training pipeline: examples -> out-of-time split -> models -> calibration -> cutoffs ->
evaluation beside the references -> report. Pure orchestration over the stage modules; the
command line adds I/O (tables in, bundle and MLflow run out).

Everything a run learned or measured is in the returned :class:`TrainingRun`; metric names
are the project's (``sql_auc``, ``baseline_sql_auc``, ``oracle_sql_auc``, ...).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from leadscore.baseline import RuleBaselineClassifier, load_rules
from leadscore.config import PipelineConfig
from leadscore.contract import utc_timestamp
from leadscore.cutoffs import choose_cutoffs, cutoff_report, tradeoff_curve
from leadscore.examples import build_examples, matured, split_out_of_time
from leadscore.features import connect, feature_catalogue
from leadscore.leakage import leakage_audit
from leadscore.metrics import classification_metrics
from leadscore.scorer import Scorer, score_scale
from leadscore.train import (
    InsufficientData,
    calibrate,
    fit_lightgbm,
    fit_logistic,
    logistic_proba,
    validation_mask,
)

SQL, WON = "became_sql", "won"
DEFAULT_RULES = Path(__file__).resolve().parents[2] / "pipelines" / "rules.yaml"


@dataclass
class TrainingRun:
    config: PipelineConfig
    scorer: Scorer
    metrics: dict[str, float]                 # project metric names, on the test slice
    comparison: pd.DataFrame                  # models x metrics (became_sql, test slice)
    won_metrics: dict[str, float] | None
    calibration: pd.DataFrame                 # before / after calibration on the test slice
    cutoffs: pd.DataFrame                     # cutoff_report on the test slice
    tradeoff: pd.DataFrame
    test_scores: pd.DataFrame                 # y and each model's probability on the test slice
    test_frame: pd.DataFrame                  # the test slice's feature rows and labels
    leakage: pd.DataFrame
    fingerprint: dict
    lines: list[str] = field(default_factory=list)   # what happened, for the console and the report
    params: dict = field(default_factory=dict)

    @property
    def suspected_leakage(self) -> list[str]:
        return self.leakage.loc[self.leakage["suspected"], "feature"].tolist()


def data_fingerprint(con: duckdb.DuckDBPyConnection) -> dict:
    """Row counts, date range and an order-independent hash of the three contract tables."""
    out: dict = {"rows": {}}
    digest = hashlib.sha256()
    for table, ts in (("leads", "created_at"), ("activities", "occurred_at"), ("lifecycle", "occurred_at")):
        n, lo, hi, row_hash = con.execute(
            f"SELECT count(*), min({ts})::VARCHAR, max({ts})::VARCHAR, sum(hash(t)::HUGEINT) FROM {table} t").fetchall()[0]
        out["rows"][table] = int(n)
        out[f"{table}_from"], out[f"{table}_until"] = str(lo), str(hi)
        digest.update(f"{table}:{n}:{row_hash}".encode())
    out["hash"] = digest.hexdigest()[:16]
    return out


def _split_dates(pipeline: PipelineConfig, examples: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp]:
    s = pipeline.split
    if s.calibration_start is not None:
        return utc_timestamp(s.calibration_start), utc_timestamp(s.test_start)
    lo, hi = examples["as_of"].min(), examples["as_of"].max()
    span = hi - lo
    return (lo + span * (1 - s.test_fraction - s.calibration_fraction)).floor("D"), (lo + span * (1 - s.test_fraction)).floor("D")


def _latent(data_dir: Path | None) -> dict | None:
    """The generator's hidden tables when the data is synthetic (read once per run)."""
    if data_dir is None or not (Path(data_dir) / "latent_leads.parquet").exists():
        return None
    from leadscore.synthetic.truth import load_latent

    return load_latent(data_dir)


def _oracle(latent: dict | None, test: pd.DataFrame, horizon: int, won_horizon: int) -> pd.DataFrame | None:
    """The generator's true probabilities for the test rows, when the data is synthetic."""
    if latent is None:
        return None
    from leadscore.synthetic.truth import true_probabilities

    truth = pd.concat([true_probabilities(latent, a, horizon, won_horizon) for a in sorted(test["as_of"].unique())])
    return test[["lead_id", "as_of"]].merge(truth[["lead_id", "as_of", "p_sql", "p_won"]], on=["lead_id", "as_of"],
                                            how="left", validate="one_to_one")


def _named(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def train_pipeline(pipeline: PipelineConfig, tables, data_dir: Path | None = None,
                   echo: Callable[[str], None] = lambda s: None) -> TrainingRun:
    """Run the whole training pipeline on contract tables (DataFrames or paths)."""
    con = tables if isinstance(tables, duckdb.DuckDBPyConnection) else connect(tables)
    rules_path = pipeline.resolve(pipeline.rules) if pipeline.rules else DEFAULT_RULES
    rules = load_rules(rules_path)
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        echo(line)

    fingerprint = data_fingerprint(con)
    say(f"data: {fingerprint['rows']['leads']:,} leads, {fingerprint['rows']['activities']:,} activities, "
        f"{fingerprint['rows']['lifecycle']:,} lifecycle events (fingerprint {fingerprint['hash']})")
    examples, report = build_examples(con, pipeline.examples, pipeline.features, rules=rules)
    for line in report.lines():
        say(line)
    catalogue = feature_catalogue(pipeline.features)
    features = catalogue["name"].tolist()
    categorical = catalogue.loc[catalogue["kind"] == "categorical", "name"].tolist()
    ex_cfg, model_cfg = pipeline.examples, pipeline.model

    sql_examples = matured(examples, SQL)
    b1, b2 = _split_dates(pipeline, sql_examples)
    split = split_out_of_time(sql_examples, b1, b2, ex_cfg.horizon_days, pipeline.split.lead_fractions,
                              pipeline.split.salt)
    for line in split.lines():
        say(line)
    train, cal, test = (split.parts[k] for k in ("train", "calibration", "test"))
    if len(test) == 0 or test[SQL].nunique() < 2:
        raise InsufficientData(f"the test slice (as of {b2:%Y-%m-%d} on) has {len(test):,} examples and "
                               f"{int(test[SQL].sum()) if len(test) else 0} positives; move split.test_start "
                               "earlier or add data")

    audit = leakage_audit(train[features], train[SQL].astype(bool), pipeline.leakage.threshold,
                          pipeline.leakage.min_support, pipeline.leakage.n_bins)
    suspected = audit.loc[audit["suspected"], "feature"].tolist()
    if suspected:
        say(f"WARNING suspected leakage (single-feature AUC >= {pipeline.leakage.threshold}): {', '.join(suspected)}")

    sql_model = calibrate(fit_lightgbm(train, SQL, features, categorical, model_cfg), cal, pipeline.calibration)
    say(f"became_sql: LightGBM {sql_model.best_iteration} trees on {sql_model.info['train_rows']:,} examples "
        f"({sql_model.info['train_positives']:,} positive), {sql_model.info['calibration']} calibration")

    y = test[SQL].astype(int).to_numpy()
    margin = sql_model.margin(test)
    scores = pd.DataFrame({"lead_id": test["lead_id"], "as_of": test["as_of"], "y": y,
                           "model": sql_model.calibrator.predict(margin),
                           "model_uncalibrated": 1.0 / (1.0 + np.exp(-margin))})
    logreg = fit_logistic(train, SQL, features, categorical, seed=model_cfg.seed)
    scores["logreg"] = logistic_proba(logreg, test, features, categorical)
    baseline = RuleBaselineClassifier().fit(cal, cal[SQL].astype(int))
    scores["baseline"] = baseline.predict_proba(test)[:, 1]
    scores["baseline_points"] = test["baseline_points"].to_numpy()
    comparison = {
        "model": classification_metrics(y, scores["model"]),
        "logreg": classification_metrics(y, scores["logreg"]),
        "baseline": classification_metrics(y, scores["baseline"], score=scores["baseline_points"]),
    }
    latent = _latent(data_dir)
    oracle = _oracle(latent, test, ex_cfg.horizon_days, ex_cfg.won_horizon_days)
    if oracle is not None and oracle["p_sql"].notna().all():
        scores["oracle"] = oracle["p_sql"].to_numpy()
        comparison["oracle"] = classification_metrics(y, scores["oracle"])
    elif oracle is not None:
        say(f"note: the oracle lacks {int(oracle['p_sql'].isna().sum()):,} test rows; oracle metrics left out")

    metrics = {**_named("sql_", comparison["model"]), **_named("logreg_sql_", comparison["logreg"]),
               **_named("baseline_sql_", comparison["baseline"])}
    if "oracle" in comparison:
        metrics.update(_named("oracle_sql_", comparison["oracle"]))
        metrics["sql_auc_vs_oracle"] = metrics["sql_auc"] / metrics["oracle_sql_auc"]

    calibration = pd.DataFrame({
        name: {k: classification_metrics(y, scores[col])[k] for k in ("logloss", "brier", "ece")}
        for name, col in (("before", "model_uncalibrated"), ("after", "model"))}).T

    won_model, won_metrics = _won_model(examples, pipeline, b1, b2, features, categorical, latent, say)
    if won_metrics:
        metrics.update(won_metrics)

    # Cutoffs: chosen on the calibration slice, reported on the test slice for the whole lead base.
    p_cal = sql_model.predict_proba(cal)
    cal_scale, test_scale = (1.0 / (f / sum(pipeline.split.lead_fractions)) for f in pipeline.split.lead_fractions[1:])
    cutoffs = choose_cutoffs(p_cal, cal[SQL].astype(int).to_numpy(), cal["as_of"], pipeline.cutoffs,
                             population_scale=cal_scale)
    cut_table = cutoff_report(cutoffs, scores["model"].to_numpy(), y, test["as_of"], test["lead_id"],
                              population_scale=test_scale)
    tradeoff = tradeoff_curve(scores["model"].to_numpy(), y, test["as_of"], population_scale=test_scale)
    say(f"cutoffs ({pipeline.cutoffs.policy}): MQL p_sql >= {cutoffs.mql:.4f}, SQL p_sql >= {cutoffs.sql:.4f}")

    grid = _learn_grid(sql_model, train, catalogue, seed=model_cfg.seed)
    scorer = Scorer(sql_model=sql_model, won_model=won_model, cutoffs=cutoffs, scale=score_scale(p_cal),
                    catalogue=catalogue, feature_config=pipeline.features, rules=rules, grid=grid,
                    info={"name": pipeline.name, "trained_until": str(b1), "test_start": str(b2)})
    params = {"calibration_start": str(b1.date()), "test_start": str(b2.date()),
              "horizon_days": ex_cfg.horizon_days, "won_horizon_days": ex_cfg.won_horizon_days,
              "cadence_days": ex_cfg.cadence_days, "calibration_method": sql_model.info["calibration"],
              "best_iteration": sql_model.best_iteration, "cutoff_policy": pipeline.cutoffs.policy,
              "mql_cutoff": cutoffs.mql, "sql_cutoff": cutoffs.sql, "n_features": len(features),
              "grid_fit_a": grid.fit[0], "grid_fit_b": grid.fit[1],
              "grid_engagement_1": grid.engagement[0], "grid_engagement_2": grid.engagement[1],
              **{f"model_{k}": v for k, v in vars(model_cfg).items()},
              **{f"rows_{k}": len(v) for k, v in split.parts.items()}}
    return TrainingRun(config=pipeline, scorer=scorer, metrics=metrics,
                       comparison=pd.DataFrame(comparison).T, won_metrics=won_metrics, calibration=calibration,
                       cutoffs=cut_table, tradeoff=tradeoff, test_scores=scores, test_frame=test, leakage=audit,
                       fingerprint=fingerprint, lines=lines, params=params)


GRID_SAMPLE = 50_000


def _learn_grid(model, train: pd.DataFrame, catalogue: pd.DataFrame, seed: int = 0):
    """Fit x engagement grid thresholds from the training part (a sample of it): the same
    share per letter and digit as the rule baseline's grid on those examples."""
    from leadscore.explain import contributions, group_scores, learn_grid

    sample = train.sample(n=min(len(train), GRID_SAMPLE), random_state=seed) if len(train) > GRID_SAMPLE else train
    scores = group_scores(contributions(model, sample).values, catalogue)
    baseline = sample["baseline_grid"] if "baseline_grid" in sample else None
    return learn_grid(scores["fit_score"], scores["engagement_score"], baseline)


def _won_model(examples, pipeline, b1, b2, features, categorical, latent, say):
    """The closed-won model on its own split (its labels mature later). When no calibration
    example has matured yet, the held-out leads of the training period calibrate it."""
    won_examples = matured(examples, WON)
    split = split_out_of_time(won_examples, b1, b2, pipeline.examples.won_horizon_days,
                              pipeline.split.lead_fractions, pipeline.split.salt)
    train, cal, test = (split.parts[k] for k in ("train", "calibration", "test"))
    try:
        model = fit_lightgbm(train, WON, features, categorical, pipeline.model)
        if cal[WON].nunique() < 2 if len(cal) else True:
            cal = train[validation_mask(train, pipeline.model)]
        if cal[WON].sum() < 2:
            raise InsufficientData(f"won: {int(cal[WON].sum())} positives to calibrate on")
            say("won: no matured calibration slice; calibrated on the training period's held-out leads")
        model = calibrate(model, cal, pipeline.calibration)
    except InsufficientData as exc:
        say(f"won: not trained ({exc}); p_won is left empty")
        return None, None
    if len(test) == 0 or test[WON].nunique() < 2:
        say("won: no matured test slice to evaluate on")
        return model, None
    y = test[WON].astype(int).to_numpy()
    m = classification_metrics(y, model.predict_proba(test))
    out = _named("won_", m)
    oracle = _oracle(latent, test, pipeline.examples.horizon_days, pipeline.examples.won_horizon_days)
    if oracle is not None and oracle["p_won"].notna().all():
        out.update(_named("oracle_won_", classification_metrics(y, oracle["p_won"])))
    say(f"won: LightGBM {model.best_iteration} trees; test AUC {m['auc']:.3f} on {len(test):,} examples")
    return model, out


# ---------------------------------------------------------------------------
# Outputs: the report and the bundle (the command line adds MLflow)
# ---------------------------------------------------------------------------

def report_inputs(run: TrainingRun, facts: list[tuple[str, str]] | None = None):
    from leadscore.report import TrainingReportInputs

    s = run.scorer
    base_facts = [
        ("model", run.config.name),
        ("data", f"{run.fingerprint['rows']['leads']:,} leads, {run.fingerprint['rows']['activities']:,} activities "
                 f"(fingerprint {run.fingerprint['hash']})"),
        ("split", f"calibration from {run.params['calibration_start']}, test from {run.params['test_start']} "
                  "(out of time, grouped by lead)"),
        ("test slice", f"{len(run.test_scores):,} examples, {int(run.test_scores['y'].sum()):,} became SQL "
                       f"within {run.params['horizon_days']} days"),
        ("calibration", run.params["calibration_method"]),
        ("cutoffs", f"{run.config.cutoffs.policy}: MQL p_sql >= {s.cutoffs.mql:.4f}, SQL p_sql >= {s.cutoffs.sql:.4f}"),
    ]
    extra = []
    if run.won_metrics:
        extra.append(("Closed-won model (test slice)", pd.DataFrame(
            {"won": {k[4:]: v for k, v in run.won_metrics.items() if k.startswith("won_")}}).T))
    extra.append(("Leakage audit: top single-feature AUCs (training part)", run.leakage.head(15)))
    notes = [f"Suspected leakage: {', '.join(run.suspected_leakage)}"] if run.suspected_leakage else []
    return TrainingReportInputs(
        title=f"leadscore training run: {run.config.name}", facts=base_facts + (facts or []),
        metrics=run.comparison, scores=run.test_scores, uncalibrated="model_uncalibrated",
        ranking={"baseline": "baseline_points"}, cutoffs=run.cutoffs, tradeoff=run.tradeoff,
        calibration=run.calibration, extra_tables=extra, notes=notes)


def manifest_for(run: TrainingRun, mlflow_run_id: str | None = None) -> dict:
    import json
    from dataclasses import asdict

    def plain(value):  # numpy scalars and arrays, timestamps -> JSON
        return value.tolist() if hasattr(value, "tolist") else str(value)

    return json.loads(json.dumps({
        "name": run.config.name,
        "mlflow_run_id": mlflow_run_id,
        "metrics": run.metrics,
        "cutoffs": run.scorer.cutoffs.to_dict(),
        "feature_catalogue": run.scorer.catalogue.to_dict(orient="records"),
        "feature_config": asdict(run.config.features),
        "data_fingerprint": run.fingerprint,
        "params": run.params,
        "suspected_leakage": run.suspected_leakage,
        "grid": run.scorer.grid.to_dict() if run.scorer.grid is not None else None,
    }, default=plain))


EXPLAIN_SAMPLE = 3_000


def explanation_outputs(run: TrainingRun) -> tuple[dict[str, bytes], pd.DataFrame]:
    """The global view of the p_sql model on (a sample of) the test slice: SHAP figures and
    the mean |SHAP| importance table."""
    from leadscore.explain import contributions, global_figures, importance_table

    test = run.test_frame
    sample = test.sample(n=EXPLAIN_SAMPLE, random_state=0) if len(test) > EXPLAIN_SAMPLE else test
    model = run.scorer.sql_model
    figures = global_figures(model, sample, run.scorer.catalogue)
    return figures, importance_table(contributions(model, sample).values, run.scorer.catalogue)


def write_outputs(run: TrainingRun, bundle_dir: Path, mlflow_run_id: str | None = None):
    """Write the bundle (scorer, manifest, hashes) with the HTML report inside it.
    Returns (report path, figures)."""
    from leadscore.bundle import write_bundle
    from leadscore.report import render_training_report, training_figures

    inputs = report_inputs(run, [("MLflow run", mlflow_run_id)] if mlflow_run_id else None)
    shap_figures, importance = explanation_outputs(run)
    inputs.extra_tables.append(("SHAP importance on the test slice (mean |log-odds|), top 20", importance.head(20)))
    inputs.figure_sections.append(("Why the model scores as it does (SHAP, test slice sample)",
                                   sorted(shap_figures)))
    figures = {**training_figures(inputs), **shap_figures}
    html = render_training_report(inputs, figures)
    write_bundle(bundle_dir, {"scorer.joblib": run.scorer}, manifest_for(run, mlflow_run_id),
                 extra_files={"report.html": html,
                              "feature_catalogue.csv": run.scorer.catalogue.to_csv(index=False),
                              "shap_importance.csv": importance.to_csv(index=False)})
    return Path(bundle_dir) / "report.html", figures


# ---------------------------------------------------------------------------
# Retraining: champion and challenger on the same newest out-of-time slice
# ---------------------------------------------------------------------------

def compare_on_test(run: TrainingRun, champion: Scorer, con) -> dict[str, float]:
    """The champion's metrics on the challenger's test slice (features recomputed with the
    champion's own feature configuration when it differs)."""
    test = run.test_frame
    if champion.feature_config != run.config.features:
        from leadscore.features import features_as_of

        test = features_as_of(con, test[["lead_id", "as_of"]], config=champion.feature_config)
        test = run.test_frame[["lead_id", "as_of"]].merge(test, on=["lead_id", "as_of"], how="left")
    p = champion.sql_model.predict_proba(test)
    return classification_metrics(run.test_scores["y"].to_numpy(), p)


def promotion_decision(champion: dict[str, float], challenger: dict[str, float], cfg) -> tuple[bool, str]:
    """Promote when the challenger is better by the configured margin on AUC or on log loss,
    and its ECE is not worse than the champion's by more than ``max_ece_increase``."""
    auc_gain = challenger["auc"] - champion["auc"]
    ll_gain = champion["logloss"] - challenger["logloss"]
    ece_rise = challenger["ece"] - champion["ece"]
    figures = (f"AUC {challenger['auc']:.4f} vs {champion['auc']:.4f} ({auc_gain:+.4f}, needs +{cfg.min_auc_gain}), "
               f"log loss {challenger['logloss']:.5f} vs {champion['logloss']:.5f} ({-ll_gain:+.5f}, needs "
               f"-{cfg.min_logloss_gain}), ECE {challenger['ece']:.4f} vs {champion['ece']:.4f}")
    better = auc_gain >= cfg.min_auc_gain or ll_gain >= cfg.min_logloss_gain
    if better and ece_rise <= cfg.max_ece_increase:
        return True, "promote: " + figures
    why = "not better by the margin" if not better else "calibration worse"
    return False, f"keep the champion ({why}): " + figures
