"""The training pipeline: examples -> out-of-time split -> models -> calibration -> cutoffs ->
evaluation beside the references -> report. Pure orchestration over the stage modules; the
command line adds I/O (tables in, bundle and MLflow run out).

**The outcome ladder.** The stages the CRM really records decide which models exist: P(SQL)
(``became_sql``) when it records ``sql`` events, P(won) when it records ``won`` events, and
P(won) alone for a CRM that only records won deals. A label whose positives are too few is
skipped with its count and the label that is trained instead; only when no label can be
trained does training refuse (the rule baseline stays in use). The *primary* label
(``primary_label``: ``auto`` = ``became_sql`` when it can be trained, else ``won``) gets the
cutoffs, the 1-99 score, the tier and the explanations; the other is trained and evaluated
beside it.

Everything a run learned or measured is in the returned :class:`TrainingRun`; metric names
are the project's (``sql_auc``, ``won_auc``, ``baseline_sql_auc``, ``oracle_won_auc``, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from leadscore.baseline import RuleBaselineClassifier, load_rules
from leadscore.config import PipelineConfig
from leadscore.contract import (
    DEFAULT_CONTRACT,
    FIT_ATTRIBUTE_COLUMNS,
    Contract,
    utc_timestamp,
)
from leadscore.cutoffs import choose_cutoffs, cutoff_report, tradeoff_curve
from leadscore.examples import (
    LABEL_SPECS,
    Label,
    Split,
    build_examples,
    matured,
    split_out_of_time,
    stage_counts,
)
from leadscore.features import connect, feature_catalogue, point_in_time_features
from leadscore.leakage import AuditSkipped, empty_audit, leakage_audit
from leadscore.metrics import classification_metrics
from leadscore.scorer import Scorer, score_scale
from leadscore.train import (
    ConversionModel,
    InsufficientData,
    calibrate,
    calibration_mask,
    fit_lightgbm,
    fit_logistic,
    logistic_proba,
)

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "pipelines" / "rules.yaml"


@dataclass
class LabelRun:
    """One label's model, where it was calibrated, and how it did on its test slice."""

    label: Label
    model: ConversionModel
    split: Split
    calibration_frame: pd.DataFrame        # the rows the calibrator (and, if primary, the cutoffs) saw
    calibration_share: float               # share of all leads those rows' leads are
    scores: pd.DataFrame | None            # y and each model's probability on the test slice
    comparison: pd.DataFrame | None        # models x metrics on the test slice
    calibration: pd.DataFrame | None       # log loss, Brier, ECE before / after calibration
    metrics: dict[str, float]              # project metric names (sql_auc, logreg_won_auc, ...)

    @property
    def test(self) -> pd.DataFrame:
        return self.split.parts["test"]


@dataclass
class TrainingRun:
    config: PipelineConfig
    scorer: Scorer
    metrics: dict[str, float]                 # project metric names, on the test slices
    comparison: pd.DataFrame                  # models x metrics (primary label, test slice)
    calibration: pd.DataFrame                 # before / after calibration on the test slice
    cutoffs: pd.DataFrame                     # cutoff_report on the test slice
    tradeoff: pd.DataFrame
    test_scores: pd.DataFrame                 # y and each model's probability on the test slice
    test_frame: pd.DataFrame                  # the test slice's feature rows and labels
    leakage: pd.DataFrame
    fingerprint: dict
    labels: dict[str, LabelRun] = field(default_factory=dict)   # every trained label
    skipped: dict[str, str] = field(default_factory=dict)       # label -> why it was not trained
    lines: list[str] = field(default_factory=list)   # what happened, for the console and the report
    params: dict = field(default_factory=dict)

    @property
    def primary(self) -> Label:
        return LABEL_SPECS[self.scorer.primary]

    @property
    def suspected_leakage(self) -> list[str]:
        return self.leakage.loc[self.leakage["suspected"], "feature"].tolist()


def data_fingerprint(con: duckdb.DuckDBPyConnection, contract: Contract | None = None) -> dict:
    """Row counts, date range and an order-independent hash of the contract's tables."""
    from leadscore.contract import TIME_COLUMN

    out: dict = {"rows": {}}
    digest = hashlib.sha256()
    for table in (contract or DEFAULT_CONTRACT).tables:
        ts = TIME_COLUMN[table]
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
    if not len(examples):
        raise InsufficientData("no example has a matured label yet: the data ends before the first label window "
                               "closes; add data or shorten the horizon")
    lo, hi = examples["as_of"].min(), examples["as_of"].max()
    span = hi - lo
    return (lo + span * (1 - s.test_fraction - s.calibration_fraction)).floor("D"), (lo + span * (1 - s.test_fraction)).floor("D")


def _latent(data_dir: Path | None) -> dict | None:
    """The generator's hidden tables when the data is synthetic (read once per run)."""
    from leadscore.synthetic.truth import find_latent

    return find_latent(data_dir)


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


def _part_problem(split: Split, label: Label, horizon: int) -> str | None:
    """Why a split part is empty, in words that say which date to move."""
    b1, b2 = split.boundaries
    for name, when in (("training part", f"label windows ({horizon} days) closing before calibration_start "
                                         f"{b1:%Y-%m-%d}"),
                       ("test slice", f"as-of dates from test_start {b2:%Y-%m-%d} on")):
        part = split.parts["train" if name == "training part" else "test"]
        if len(part) == 0:
            return (f"{label.name}: the {name} is empty ({when}); set the split dates inside the matured examples' "
                    "as-of window, or remove them to split by fractions")
    return None


def _fit_label(label: Label, examples: pd.DataFrame, b1, b2, pipeline: PipelineConfig, features: list[str],
               categorical: list[str], latent, say, primary: bool) -> LabelRun:
    """Fit, calibrate and evaluate one label on its own out-of-time split (its own horizon).
    Raises InsufficientData (with the counts) when it cannot be trained; for the primary
    label also when its test slice cannot evaluate it."""
    ex_cfg = pipeline.examples
    horizon = label.horizon(ex_cfg)
    rows = matured(examples, label.name)
    # A calibration window shorter than the label window can hold no matured example: its
    # leads train too, and held-out training leads calibrate.
    short = b2 - b1 < pd.Timedelta(days=horizon)
    split = split_out_of_time(rows, b1, b2, horizon, pipeline.split.lead_fractions, pipeline.split.salt,
                              without_calibration=short)
    if primary:
        for line in split.lines():
            say(line)
    if short:
        say(f"{label.name}: the calibration window {b1:%Y-%m-%d} .. {b2:%Y-%m-%d} is shorter than the "
            f"{horizon}-day label window, so no calibration example can mature in it: the calibration part's "
            "leads train too (label windows closed before test_start), and held-out training leads calibrate")
    problem = _part_problem(split, label, horizon)
    if problem and (primary or len(split.parts["train"]) == 0):
        raise InsufficientData(problem)
    train, cal, test = (split.parts[k] for k in ("train", "calibration", "test"))
    n_pos = {k: int(v[label.name].sum()) for k, v in split.parts.items()}
    if n_pos["train"] < pipeline.model.min_positives:
        raise InsufficientData(
            f"{label.name}: only {n_pos['train']} positive outcomes in the training part ({len(train):,} examples; "
            f"{int(rows[label.name].sum()):,} among all {len(rows):,} matured examples); at least "
            f"{pipeline.model.min_positives} are needed to learn a model (model.min_positives)")
    if primary and test[label.name].nunique() < 2:
        raise InsufficientData(
            f"{label.name}: the test slice (as of {b2:%Y-%m-%d} on) has {len(test):,} examples and "
            f"{n_pos['test']} positives ({int(rows[label.name].sum()):,} positives among all "
            f"{len(rows):,} matured examples); move split.test_start earlier or add data")
    fractions = np.asarray(pipeline.split.lead_fractions, dtype="float64") / sum(pipeline.split.lead_fractions)
    share = float(fractions[1])
    in_period = len(cal) == 0 or cal[label.name].nunique() < 2
    model = fit_lightgbm(train, label.name, features, categorical, pipeline.model, keep_for_calibration=in_period)
    if in_period:
        cal = train[calibration_mask(train, pipeline.model)]
        share = float((fractions[0] + (fractions[1] if short else 0.0)) * pipeline.model.validation_fraction / 2)
        if not short:
            say(f"{label.name}: the calibration slice has {n_pos['calibration']} positives among "
                f"{len(split.parts['calibration']):,} matured examples; calibrating on held-out training leads")
        say(f"{label.name}: calibrated on {len(cal):,} examples of held-out training leads "
            f"({int(cal[label.name].sum())} positive), never used to fit or to stop the trees")
        if cal[label.name].sum() < 2:
            raise InsufficientData(f"{label.name}: {int(cal[label.name].sum())} positives to calibrate on")
    model = calibrate(model, cal, pipeline.calibration)
    dropped = model.info["constant_features"]
    say(f"{label.name}: LightGBM {model.best_iteration} trees on {model.info['train_rows']:,} examples "
        f"({model.info['train_positives']:,} positive), {model.info['calibration']} calibration; "
        f"{len(model.features)} features" + (f", {len(dropped)} constant in the training part left out" if dropped
                                             else ""))
    if dropped and primary:
        say(f"  constant features left out: {', '.join(dropped[:20])}" + (f" and {len(dropped) - 20} more"
                                                                         if len(dropped) > 20 else ""))
    run = LabelRun(label=label, model=model, split=split, calibration_frame=cal, calibration_share=share,
                   scores=None, comparison=None, calibration=None, metrics={})
    if len(test) == 0 or test[label.name].nunique() < 2:
        say(f"{label.name}: no matured test slice with both outcomes to evaluate on ({len(test):,} examples, "
            f"{n_pos['test']} positive)")
        return run

    y = test[label.name].astype(int).to_numpy()
    margin = model.margin(test)
    scores = pd.DataFrame({"lead_id": test["lead_id"], "as_of": test["as_of"], "y": y,
                           "model": model.calibrator.predict(margin),
                           "model_uncalibrated": 1.0 / (1.0 + np.exp(-margin))})
    logreg = fit_logistic(train, label.name, model.features, [c for c in categorical if c in model.features],
                          seed=pipeline.model.seed)
    scores["logreg"] = logistic_proba(logreg, test)
    baseline = RuleBaselineClassifier().fit(cal, cal[label.name].astype(int))
    scores["baseline"] = baseline.predict_proba(test)[:, 1]
    scores["baseline_points"] = test["baseline_points"].to_numpy()
    comparison = {
        "model": classification_metrics(y, scores["model"]),
        "logreg": classification_metrics(y, scores["logreg"]),
        "baseline": classification_metrics(y, scores["baseline"], score=scores["baseline_points"]),
    }
    oracle = _oracle(latent, test, ex_cfg.horizon_days, ex_cfg.won_horizon_days)
    if oracle is not None and oracle[label.probability].notna().all():
        scores["oracle"] = oracle[label.probability].to_numpy()
        comparison["oracle"] = classification_metrics(y, scores["oracle"])
    elif oracle is not None:
        say(f"note: the oracle lacks {int(oracle[label.probability].isna().sum()):,} test rows; oracle metrics left out")
    p = f"{label.short}_"
    metrics = {**_named(p, comparison["model"]), **_named(f"logreg_{p}", comparison["logreg"]),
               **_named(f"baseline_{p}", comparison["baseline"])}
    if "oracle" in comparison:
        metrics.update(_named(f"oracle_{p}", comparison["oracle"]))
        metrics[f"{p}auc_vs_oracle"] = metrics[f"{p}auc"] / metrics[f"oracle_{p}auc"]
    calibration = pd.DataFrame({
        name: {k: classification_metrics(y, scores[col])[k] for k in ("logloss", "brier", "ece")}
        for name, col in (("before", "model_uncalibrated"), ("after", "model"))}).T
    run.scores, run.comparison, run.calibration, run.metrics = scores, pd.DataFrame(comparison).T, calibration, metrics
    if not primary:
        say(f"{label.name}: test AUC {metrics[f'{p}auc']:.3f} on {len(test):,} examples")
    return run


def _label_order(pipeline: PipelineConfig, recorded: dict[str, int], skipped: dict[str, str]) -> list[Label]:
    """The labels the CRM records, the primary candidate first; the others are in ``skipped``."""
    order = []
    for label in LABEL_SPECS.values():
        if recorded.get(label.stage, 0) == 0:
            skipped[label.name] = (f"the data records no `{label.stage}` stage (0 of {sum(recorded.values()):,} "
                                   f"lifecycle events), so there is no {label.probability} model")
        else:
            order.append(label)
    if pipeline.primary_label != "auto":
        order.sort(key=lambda lab: lab.name != pipeline.primary_label)
    return order


def train_pipeline(pipeline: PipelineConfig, tables, data_dir: Path | None = None,
                   echo: Callable[[str], None] = lambda s: None, contract: Contract | None = None) -> TrainingRun:
    """Run the whole training pipeline on contract tables (DataFrames, paths or a connection).
    ``contract``: the data source's (custom attributes and activity kinds become features)."""
    contract = contract or DEFAULT_CONTRACT
    con = tables if isinstance(tables, duckdb.DuckDBPyConnection) else connect(tables, contract)
    feature_config = dataclasses.replace(pipeline.features, contract=contract)
    rules_path = pipeline.resolve(pipeline.rules) if pipeline.rules else DEFAULT_RULES
    rules = load_rules(rules_path, contract)
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        echo(line)

    fingerprint = data_fingerprint(con, contract)
    say(f"data: {fingerprint['rows']['leads']:,} leads, {fingerprint['rows']['activities']:,} activities, "
        f"{fingerprint['rows']['lifecycle']:,} lifecycle events (fingerprint {fingerprint['hash']})")
    current = [a for a in (*FIT_ATTRIBUTE_COLUMNS, *(a.name for a in contract.attributes))
               if a != "job_title" and a not in contract.history_attributes]
    if current:
        say(f"note: lead attributes read at their current value (no attribute history for them): {', '.join(current)}; "
            "if the CRM overwrites one after qualification it leaks the outcome into training - the leakage audit "
            "below names any that predicts too well (data/README.md: attribute history)")
    examples, report = build_examples(con, pipeline.examples, feature_config, rules=rules)
    for line in report.lines():
        say(line)
    catalogue = feature_catalogue(feature_config)
    features = catalogue["name"].tolist()
    categorical = catalogue.loc[catalogue["kind"] == "categorical", "name"].tolist()
    latent = _latent(data_dir)

    skipped: dict[str, str] = {}
    order = _label_order(pipeline, stage_counts(con), skipped)
    runs: dict[str, LabelRun] = {}
    b1 = b2 = None
    for label in order:  # the first label that trains is the primary one
        if pipeline.primary_label not in ("auto", label.name):
            break
        try:
            b1, b2 = _split_dates(pipeline, matured(examples, label.name))
            runs[label.name] = _fit_label(label, examples, b1, b2, pipeline, features, categorical, latent, say,
                                          primary=True)
            break
        except InsufficientData as exc:
            skipped[label.name] = str(exc).removeprefix(f"{label.name}: ")
            say(f"{label.name}: not trained: {skipped[label.name]}")
    if not runs:
        reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items())
        wanted = "" if pipeline.primary_label == "auto" else f" (primary_label: {pipeline.primary_label})"
        raise InsufficientData(f"no outcome label can be trained{wanted}: {reasons}. The rule baseline remains in "
                               "use; retrain when more outcomes have matured.")
    primary = next(iter(runs.values()))
    for label in order:
        if label.name in runs or label.name in skipped:
            continue
        try:
            runs[label.name] = _fit_label(label, examples, b1, b2, pipeline, features, categorical, latent, say,
                                          primary=False)
        except InsufficientData as exc:
            skipped[label.name] = str(exc).removeprefix(f"{label.name}: ")
            say(f"{label.name}: not trained: {skipped[label.name]}")
    for name, why in skipped.items():
        say(f"{name}: skipped ({why}); {primary.label.name} is the primary label: cutoffs, score and tier read "
            f"{primary.label.probability}")

    train = primary.split.parts["train"]
    lk = pipeline.leakage
    try:
        audit = leakage_audit(train[primary.model.features], train[primary.label.name].astype(bool), lk.threshold,
                              lk.min_support, lk.n_bins, lk.min_positives, point_in_time_features(feature_config))
    except AuditSkipped as exc:
        say(str(exc))
        audit = empty_audit()
    suspected = audit.loc[audit["suspected"], "feature"].tolist()
    if suspected:
        say(f"WARNING suspected leakage (single-feature AUC >= {lk.threshold}): {', '.join(suspected)}")

    metrics = {k: v for r in runs.values() for k, v in r.metrics.items()}
    # Cutoffs: chosen where the primary model was calibrated, reported on the test slice for the whole lead base.
    label, model, cal = primary.label, primary.model, primary.calibration_frame
    p_cal = model.predict_proba(cal)
    test = primary.test
    test_scale = 1.0 / (pipeline.split.lead_fractions[2] / sum(pipeline.split.lead_fractions))
    cutoffs = choose_cutoffs(p_cal, cal[label.name].astype(int).to_numpy(), cal["as_of"], pipeline.cutoffs,
                             population_scale=1.0 / primary.calibration_share, probability=label.probability)
    for note in cutoffs.notes:
        say(f"WARNING cutoffs: {note}")
    scores = primary.scores
    cut_table = cutoff_report(cutoffs, scores["model"].to_numpy(), scores["y"].to_numpy(), test["as_of"],
                              test["lead_id"], population_scale=test_scale)
    tradeoff = tradeoff_curve(scores["model"].to_numpy(), scores["y"].to_numpy(), test["as_of"],
                              population_scale=test_scale)
    say(f"cutoffs ({pipeline.cutoffs.policy}): MQL {label.probability} >= {cutoffs.mql:.4f}, "
        f"SQL {label.probability} >= {cutoffs.sql:.4f}")

    grid = _learn_grid(model, train, catalogue, seed=pipeline.model.seed)
    scorer = Scorer(models={name: r.model for name, r in runs.items()}, primary=label.name, cutoffs=cutoffs,
                    scale=score_scale(p_cal), catalogue=catalogue, feature_config=feature_config, rules=rules,
                    grid=grid, info={"name": pipeline.name, "trained_until": str(b1), "test_start": str(b2)})
    ex_cfg, model_cfg = pipeline.examples, pipeline.model
    params = {"calibration_start": str(b1.date()), "test_start": str(b2.date()),
              "primary_label": label.name, "labels_trained": ", ".join(runs),
              "horizon_days": ex_cfg.horizon_days, "won_horizon_days": ex_cfg.won_horizon_days,
              "cadence_days": ex_cfg.cadence_days, "max_lead_age_days": ex_cfg.max_lead_age_days,
              "calibration_method": model.info["calibration"],
              "best_iteration": model.best_iteration, "cutoff_policy": pipeline.cutoffs.policy,
              "mql_cutoff": cutoffs.mql, "sql_cutoff": cutoffs.sql, "n_features": len(model.features),
              "n_constant_features": len(model.info["constant_features"]),
              "grid_fit_a": grid.fit[0], "grid_fit_b": grid.fit[1],
              "grid_engagement_1": grid.engagement[0], "grid_engagement_2": grid.engagement[1],
              **{f"model_{k}": v for k, v in vars(model_cfg).items()},
              **{f"rows_{k}": len(v) for k, v in primary.split.parts.items()}}
    return TrainingRun(config=pipeline, scorer=scorer, metrics=metrics, comparison=primary.comparison,
                       calibration=primary.calibration, cutoffs=cut_table, tradeoff=tradeoff, test_scores=scores,
                       test_frame=test, leakage=audit, fingerprint=fingerprint, labels=runs, skipped=skipped,
                       lines=lines, params=params)


GRID_SAMPLE = 50_000


def _learn_grid(model, train: pd.DataFrame, catalogue: pd.DataFrame, seed: int = 0):
    """Fit x engagement grid thresholds from the training part (a sample of it): the same
    share per letter and digit as the rule baseline's grid on those examples."""
    from leadscore.explain import contributions, group_scores, learn_grid

    sample = train.sample(n=min(len(train), GRID_SAMPLE), random_state=seed) if len(train) > GRID_SAMPLE else train
    scores = group_scores(contributions(model, sample).values, catalogue)
    baseline = sample["baseline_grid"] if "baseline_grid" in sample else None
    return learn_grid(scores["fit_score"], scores["engagement_score"], baseline)


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
        ("primary label", f"{run.primary.name}: cutoffs, score and tier read {run.primary.probability}"),
        ("test slice", f"{len(run.test_scores):,} examples, {int(run.test_scores['y'].sum()):,} {run.primary.noun} "
                       f"within {run.primary.horizon(run.config.examples)} days"),
        ("calibration", run.params["calibration_method"]),
        ("cutoffs", f"{run.config.cutoffs.policy}: MQL {run.primary.probability} >= {s.cutoffs.mql:.4f}, "
                    f"SQL {run.primary.probability} >= {s.cutoffs.sql:.4f}"),
    ]
    base_facts += [(f"{name} (not trained)", why) for name, why in run.skipped.items()]
    extra = []
    for name, other in run.labels.items():
        if name != run.primary.name and other.comparison is not None:
            extra.append((f"{other.label.name} model (its own test slice)", other.comparison))
    extra.append(("Leakage audit: top single-feature AUCs (training part)", run.leakage.head(15)))
    notes = [f"Suspected leakage: {', '.join(run.suspected_leakage)}"] if run.suspected_leakage else []
    notes += [f"Cutoffs: {note}" for note in s.cutoffs.notes]
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
        "feature_config": asdict(run.scorer.feature_config),
        "primary_label": run.scorer.primary,
        "skipped_labels": run.skipped,
        "data_fingerprint": run.fingerprint,
        "params": run.params,
        "suspected_leakage": run.suspected_leakage,
        "grid": run.scorer.grid.to_dict() if run.scorer.grid is not None else None,
    }, default=plain))


EXPLAIN_SAMPLE = 3_000


def explanation_outputs(run: TrainingRun) -> tuple[dict[str, bytes], pd.DataFrame]:
    """The global view of the primary model on (a sample of) the test slice: SHAP figures and
    the mean |SHAP| importance table."""
    from leadscore.explain import contributions, global_figures, importance_table

    test = run.test_frame
    sample = test.sample(n=EXPLAIN_SAMPLE, random_state=0) if len(test) > EXPLAIN_SAMPLE else test
    model = run.scorer.primary_model
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

def compare_on_test(run: TrainingRun, champion: Scorer, con) -> dict[str, float] | None:
    """The champion's metrics on the challenger's test slice for the challenger's primary label
    (features recomputed with the champion's own feature configuration when it differs);
    None when the champion has no model for that label."""
    model = champion.models.get(run.scorer.primary)
    if model is None:
        return None
    test = run.test_frame
    if champion.feature_config != run.scorer.feature_config:
        from leadscore.features import features_as_of

        test = features_as_of(con, test[["lead_id", "as_of"]], config=champion.feature_config)
        test = run.test_frame[["lead_id", "as_of"]].merge(test, on=["lead_id", "as_of"], how="left")
    p = model.predict_proba(test)
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
