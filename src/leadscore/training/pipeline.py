"""The training pipeline: examples -> walk-forward backtest -> the shipped model -> calibration -> cutoffs ->
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

**Walk-forward, then the newest data.** Each label is evaluated the way production runs: at
each of the backtest's cut-offs (:func:`leadscore.labels.examples.walk_forward`) a model is fitted on
what was known then - examples whose label window had closed - and calibrated on its newest
weeks out of fold (models fitted on half the leads score the other half), exactly as the
shipped model is, then tested on the weeks after the cut-off.

**Candidates.** At every cut-off each candidate of :mod:`leadscore.modeling.candidates`
(LightGBM shapes, a logistic regression, their blend) is fitted and calibrated that way; the
one with the lowest mean log loss over the folds (a simpler one when within
``model.selection_tolerance``) becomes the model. The shipped model is the winner's same fit at
the end of the data, on the newest matured outcomes and every lead, with the number of trees
the folds chose. Its promotion slice - leads of the newest weeks held out of everything -
is where a retrained challenger meets the champion on outcomes neither was trained on.

Everything a run learned or measured is in the returned :class:`TrainingRun`; metric names
are the project's (``sql_auc`` - the newest fold - , ``backtest_sql_auc_mean``, ``won_auc``,
``baseline_sql_auc``, ``oracle_won_auc``, ...).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from leadscore.data.contract import (
    DEFAULT_CONTRACT,
    FIT_ATTRIBUTE_COLUMNS,
    Contract,
)
from leadscore.features.builder import (
    connect,
    feature_catalogue,
    point_in_time_features,
)
from leadscore.labels.examples import (
    LABEL_SPECS,
    WEIGHT,
    CutoffParts,
    ExampleSample,
    Fold,
    Label,
    build_examples,
    history_weeks_needed,
    parts_at,
    stage_counts,
    walk_forward,
    weights_of,
)
from leadscore.labels.leakage import AuditSkipped, empty_audit, leakage_audit
from leadscore.modeling.baseline import (
    DEFAULT_RULES,
    RuleBaselineClassifier,
    load_rules,
    with_baseline_points,
)
from leadscore.modeling.candidates import (
    Candidate,
    Entrant,
    candidate_table,
    candidates_for,
    candidates_lines,
    choose,
    fit_entrants,
    lightgbm_candidate,
    ship_plan,
    small_data,
)
from leadscore.modeling.cutoffs import choose_cutoffs, cutoff_report, tradeoff_curve
from leadscore.modeling.metrics import classification_metrics
from leadscore.modeling.model import (
    ConversionModel,
    InsufficientData,
    fit_logistic,
    logistic_proba,
    sample_negatives,
)
from leadscore.serving.scorer import Scorer, score_scale
from leadscore.training.config import PipelineConfig

AUDIT_SAMPLE = 100_000  # the leakage audit reads a uniform sample of the shipped model's fit rows


@dataclass
class FoldRun:
    """One backtest fold: the model fitted at its cut-off and how it did on the weeks after."""

    fold: Fold
    parts: CutoffParts
    model: ConversionModel | None          # the chosen candidate's fit (set by _settle)
    test: pd.DataFrame                     # the test rows (features, labels)
    scores: pd.DataFrame                   # y and each candidate's, reference's and the model's probability
    comparison: pd.DataFrame               # models (model, candidates, references) x metrics
    calibration: pd.DataFrame              # log loss, Brier, ECE before / after calibration (the model)
    calibration_p: np.ndarray              # parts.calibration's out-of-fold calibrated probabilities (the model)
    entrants: dict = field(default_factory=dict)  # candidate name -> Entrant (only the chosen one once settled)


@dataclass
class LabelRun:
    """One label: its backtest folds and the shipped model, fitted on the newest matured outcomes."""

    label: Label
    model: ConversionModel
    parts: CutoffParts                     # what the shipped model was fitted and calibrated on
    folds: list[FoldRun]
    fold_notes: list[str]                  # folds that could not be evaluated, and why
    metrics: dict[str, float]              # project metric names (sql_auc, backtest_sql_auc_mean, ...)
    calibration_p: np.ndarray              # parts.calibration's out-of-fold calibrated probabilities
    winner: str = ""                       # the chosen candidate
    candidates: pd.DataFrame = field(default_factory=pd.DataFrame)  # candidate x mean AUC / log loss / ECE, chosen

    @property
    def newest(self) -> FoldRun | None:
        return self.folds[-1] if self.folds else None


@dataclass
class TrainingRun:
    config: PipelineConfig
    scorer: Scorer
    metrics: dict[str, float]                 # project metric names: the newest fold, and the backtest
    comparison: pd.DataFrame                  # models x metrics (primary label, newest fold's test slice)
    calibration: pd.DataFrame                 # before / after calibration on that slice
    cutoffs: pd.DataFrame                     # the policy's cutoffs in the newest fold, on its test slice
    tradeoff: pd.DataFrame
    test_scores: pd.DataFrame                 # y and each model's probability on the newest fold's test slice
    test_frame: pd.DataFrame                  # that slice's feature rows and labels
    leakage: pd.DataFrame
    fingerprint: dict
    backtest: pd.DataFrame = field(default_factory=pd.DataFrame)  # fold x model metrics of the primary label
    promotion: pd.DataFrame = field(default_factory=pd.DataFrame)  # rows to compare a champion on
    labels: dict[str, LabelRun] = field(default_factory=dict)   # every trained label
    skipped: dict[str, str] = field(default_factory=dict)       # label -> why it was not trained
    lines: list[str] = field(default_factory=list)   # what happened, for the console and the report
    params: dict = field(default_factory=dict)
    sample: ExampleSample | None = None       # how the examples were sampled (None: every example)

    @property
    def primary(self) -> Label:
        return LABEL_SPECS[self.scorer.primary]

    @property
    def suspected_leakage(self) -> list[str]:
        return self.leakage.loc[self.leakage["suspected"], "feature"].tolist()


def data_fingerprint(con: duckdb.DuckDBPyConnection, contract: Contract | None = None) -> dict:
    """Row counts, date range and an order-independent hash of the contract's tables."""
    from leadscore.data.contract import TIME_COLUMN

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


def _fit_at(label: Label, rows: pd.DataFrame, cutoff, pipeline: PipelineConfig, features: list[str],
            categorical: list[str], trees: int | None = None):
    """The configured LightGBM fitted at ``cutoff`` as a shipped model is (:func:`_race_at` with
    that one candidate; ``trees`` fixed, or early stopping). Returns (model, parts, the rows it
    was fitted on, the calibration rows' out-of-fold probabilities)."""
    cand = lightgbm_candidate(pipeline.model, {})
    entrants, parts, sample = _race_at(label, rows, cutoff, pipeline, features, categorical, [cand],
                                       {cand.name: {"trees": trees}} if trees else None)
    return entrants[cand.name].model, parts, sample, entrants[cand.name].calibration_p


def _race_at(label: Label, rows: pd.DataFrame, cutoff, pipeline: PipelineConfig, features: list[str],
             categorical: list[str], candidates: list[Candidate], fixed: dict | None = None, say=None):
    """The shipped model's procedure at ``cutoff``, for each candidate: fit on what was known
    then (a weighted negative sample beyond ``model.max_fit_rows``), calibrate on its newest
    weeks out of fold (:func:`leadscore.modeling.candidates.fit_entrants`). Returns (candidate
    name -> Entrant, parts, the rows they were fitted on). Raises InsufficientData with the counts."""
    sp = pipeline.split
    parts = parts_at(rows, label.name, cutoff, label.horizon(pipeline.examples), sp.holdout_weeks,
                     sp.promotion_fraction, sp.salt)
    n_pos = int(parts.fit[label.name].sum())
    if n_pos < pipeline.model.min_positives:
        raise InsufficientData(
            f"{label.name}: only {n_pos} positive outcomes known by {parts.cutoff:%Y-%m-%d} ({len(parts.fit):,} "
            f"examples to fit on; {int(rows[label.name].sum()):,} among all {int(rows[label.name].notna().sum()):,} "
            "matured examples); at "
            f"least {pipeline.model.min_positives} are needed to learn a model (model.min_positives)")
    cal = parts.calibration
    if cal[label.name].nunique() < 2:
        raise InsufficientData(
            f"{label.name}: the newest {sp.holdout_weeks} weeks of matured as-of dates before {parts.cutoff:%Y-%m-%d} "
            f"have {int(cal[label.name].sum())} positives in {len(cal):,} examples to calibrate on; widen "
            "split.holdout_weeks")
    sample, rate = sample_negatives(parts.fit, label.name, pipeline.model.max_fit_rows, pipeline.model.seed)
    entrants = fit_entrants(candidates, sample, cal, label.name, features, categorical, pipeline.model,
                            pipeline.calibration, fixed, say)
    window = dict(train_from=f"{parts.fit['as_of'].min():%Y-%m-%d}", train_until=f"{parts.fit['as_of'].max():%Y-%m-%d}",
                  calibration_from=f"{cal['as_of'].min():%Y-%m-%d}", calibration_until=f"{cal['as_of'].max():%Y-%m-%d}",
                  calibration_rows=len(cal))
    for e in entrants.values():
        e.model.info.update(window, negative_sampling_rate=rate)
    return entrants, parts, sample


def _evaluate(label: Label, fold: Fold, entrants: dict[str, Entrant], parts: CutoffParts, sample: pd.DataFrame,
              rows: pd.DataFrame, pipeline: PipelineConfig, categorical: list[str], latent) -> FoldRun | str:
    """Every candidate, the logistic regression reference (fitted on the same rows, ``sample``),
    the rule baseline (mapped on the same calibration leads) and the oracle on the fold's test
    dates; a reason string when it cannot be tested. The fold's ``model`` is set once the
    candidates are chosen (:func:`_settle`)."""
    test = rows[rows["as_of"].isin(fold.test_dates) & rows[label.name].notna()].reset_index(drop=True)
    if test[label.name].nunique() < 2:
        return f"{len(test):,} test examples with {int(test[label.name].sum())} positives"
    y, w = test[label.name].astype(int).to_numpy(), weights_of(test)
    scores = pd.DataFrame({"lead_id": test["lead_id"], "as_of": test["as_of"], "y": y})
    if w is not None:
        scores[WEIGHT] = w
    comparison = {}
    some = next(iter(entrants.values())).model
    matrix = some.matrix(test)
    for name, e in entrants.items():
        margin = e.model.margin(test, matrix if e.model.reads_like(some) else None)
        scores[name] = e.model.calibrator.predict(margin)
        scores[f"{name}_uncalibrated"] = 1.0 / (1.0 + np.exp(-margin))
        comparison[name] = classification_metrics(y, scores[name], weight=w)
    logreg = fit_logistic(sample, label.name, some.features, [c for c in categorical if c in some.features],
                          seed=pipeline.model.seed)
    scores["logreg"] = logistic_proba(logreg, test)
    baseline = RuleBaselineClassifier().fit(parts.calibration, parts.calibration[label.name].astype(int),
                                            sample_weight=weights_of(parts.calibration))
    scores["baseline"] = baseline.predict_proba(test)[:, 1]
    scores["baseline_points"] = test["baseline_points"].to_numpy()
    comparison["logreg"] = classification_metrics(y, scores["logreg"], weight=w)
    comparison["baseline"] = classification_metrics(y, scores["baseline"], score=scores["baseline_points"], weight=w)
    ex = pipeline.examples
    oracle = _oracle(latent, test, ex.horizon_days, ex.won_horizon_days)
    if oracle is not None and oracle[label.probability].notna().all():
        scores["oracle"] = oracle[label.probability].to_numpy()
        comparison["oracle"] = classification_metrics(y, scores["oracle"], weight=w)
    return FoldRun(fold=fold, parts=parts, model=None, test=test, scores=scores,
                   comparison=pd.DataFrame(comparison).T, calibration=pd.DataFrame(), calibration_p=np.empty(0),
                   entrants=entrants)


def _settle(run: FoldRun, winner: str) -> None:
    """Make the chosen candidate the fold's ``model`` (its scores, metrics and calibration);
    the other candidates' fitted models are let go (their scores and metrics stay)."""
    e = run.entrants[winner]
    run.model, run.calibration_p = e.model, e.calibration_p
    run.scores["model"] = run.scores[winner]
    run.scores["model_uncalibrated"] = run.scores[f"{winner}_uncalibrated"]
    run.scores = run.scores.drop(columns=[c for c in run.scores if c.endswith("_uncalibrated") and c != "model_uncalibrated"])
    run.comparison = pd.concat([run.comparison.loc[[winner]].rename(index={winner: "model"}), run.comparison])
    y, w = run.scores["y"].to_numpy(), weights_of(run.scores)
    run.calibration = pd.DataFrame({
        name: {k: classification_metrics(y, run.scores[col], weight=w)[k] for k in ("logloss", "brier", "ece")}
        for name, col in (("before", "model_uncalibrated"), ("after", "model"))}).T
    run.entrants = {winner: e}


def _backtest_metrics(label: Label, folds: list[FoldRun]) -> dict[str, float]:
    """The newest fold's metrics under the project names (``sql_auc``, ``logreg_sql_auc``, ...),
    the mean and sd over the folds (``backtest_sql_auc_mean``), and each fold's (``fold1_sql_auc``)."""
    p = f"{label.short}_"
    out: dict[str, float] = {}
    prefixes = {"model": p, "logreg": f"logreg_{p}", "baseline": f"baseline_{p}", "oracle": f"oracle_{p}"}
    newest = folds[-1].comparison
    for name, prefix in prefixes.items():
        if name in newest.index:
            out.update(_named(prefix, newest.loc[name].to_dict()))
    if f"oracle_{p}auc" in out:
        out[f"{p}auc_vs_oracle"] = out[f"{p}auc"] / out[f"oracle_{p}auc"]
    for name, prefix in prefixes.items():
        for metric in ("auc", "logloss", "ece"):
            values = [f.comparison.loc[name, metric] for f in folds if name in f.comparison.index]
            if values:
                out[f"backtest_{prefix}{metric}_mean"] = float(np.mean(values))
                out[f"backtest_{prefix}{metric}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    for i, f in enumerate(folds, start=1):
        out[f"fold{i}_{p}auc"] = float(f.comparison.loc["model", "auc"])
    return out


def _fit_label(label: Label, examples: pd.DataFrame, observed_until: pd.Timestamp, pipeline: PipelineConfig,
               features: list[str], categorical: list[str], latent, say, primary: bool) -> LabelRun:
    """The backtest, then the shipped model, for one label. Raises InsufficientData when the
    label cannot be trained - and, for the primary label, when no fold can evaluate it."""
    sp, ex = pipeline.split, pipeline.examples
    horizon = label.horizon(ex)
    rows = examples  # immature examples included: every step below reads only the matured ones (not copied: memory)
    matured_as_of = rows.loc[rows[label.name].notna(), "as_of"]
    n_pos = int(rows[label.name].sum())
    if n_pos < pipeline.model.min_positives:
        raise InsufficientData(
            f"{label.name}: only {n_pos} positive outcomes among all {len(matured_as_of):,} matured examples; at "
            f"least {pipeline.model.min_positives} are needed to learn a model (model.min_positives)")
    folds = walk_forward(matured_as_of, horizon, observed_until, sp.folds, sp.test_weeks, sp.step_weeks,
                         ex.cadence_days, sp.cutoffs)
    if not primary:  # the other label: its newest fold tells its trees and how it does
        folds = folds[-1:]
    n_folds = sp.folds if primary else 1
    needed = history_weeks_needed(horizon, n_folds, sp.test_weeks, sp.step_weeks, sp.min_train_weeks)
    have = (observed_until - examples["as_of"].min()) / pd.Timedelta(weeks=1) if len(examples) else 0.0
    notes: list[str] = []
    if not sp.cutoffs and (len(folds) < n_folds or have < needed):
        layout = (f"{sp.folds} folds of {sp.test_weeks} test weeks, {sp.step_weeks} weeks apart" if primary
                  else f"its newest fold's {sp.test_weeks} test weeks")
        problem = (f"{label.name}: the history is too short for the backtest: its as-of dates run "
                   f"{have:.0f} weeks up to the end of the outcomes ({observed_until:%Y-%m-%d}); {layout}, a "
                   f"{horizon}-day label window and {sp.min_train_weeks} weeks of training need {needed} weeks - "
                   "lower split.folds, test_weeks or step_weeks, or add history")
        if primary:
            raise InsufficientData(problem)
        notes.append(problem.removeprefix(f"{label.name}: "))
        folds = []
    candidates = candidates_for(pipeline.model, n_pos)
    regime = "small-data grid" if small_data(n_pos, pipeline.model) else "grid"
    say(f"  candidates ({n_pos:,} positives: LightGBM {regime}): {', '.join(c.name for c in candidates)}")
    fold_runs: list[FoldRun] = []
    t_race = time.perf_counter()
    for i, fold in enumerate(folds, start=1):
        try:
            entrants, parts, sample = _race_at(label, rows, fold.cutoff, pipeline, features, categorical, candidates)
        except InsufficientData as exc:
            notes.append(f"fold {i} (cut-off {fold.cutoff:%Y-%m-%d}): {str(exc).removeprefix(label.name + ': ')}")
            continue
        run = _evaluate(label, fold, entrants, parts, sample, rows, pipeline, categorical, latent)
        if isinstance(run, str):
            notes.append(f"fold {i} (cut-off {fold.cutoff:%Y-%m-%d}): not tested: {run}")
            continue
        fold_runs.append(run)
        c = run.comparison
        say(f"  {'fold ' + str(i) if primary else 'newest fold'}: cut-off {fold.cutoff:%Y-%m-%d}; fit on {len(parts.fit):,} examples as of "
            f"{parts.fit['as_of'].min():%Y-%m-%d} .. {parts.fit['as_of'].max():%Y-%m-%d} "
            f"({int(parts.fit[label.name].sum()):,} positive); tested on "
            f"{len(run.test):,} examples as of {fold.test_dates[0]:%Y-%m-%d} .. {fold.test_end:%Y-%m-%d}: AUC / log loss "
            + ", ".join(f"{name} {c.loc[name, 'auc']:.3f} / {c.loc[name, 'logloss']:.4f}" for name in c.index))
        run.parts.fit = run.parts.fit.iloc[:0]  # the fold's fit rows are done with: keep memory to the shipped fit
    for note in notes:
        say(f"  {label.name}: {note}")
    if primary and not fold_runs:
        raise InsufficientData(f"{label.name}: no backtest fold could be evaluated (each is named above); the "
                               f"newest: {notes[-1]}")
    winner, table, plan, fixed = None, pd.DataFrame(), [lightgbm_candidate(pipeline.model, {})], None
    if fold_runs:
        per_fold = [f.comparison.to_dict("index") for f in fold_runs]
        mean_ll = pd.Series({c.name: np.mean([f[c.name]["logloss"] for f in per_fold if c.name in f])
                             for c in candidates if any(c.name in f for f in per_fold)})
        winner = choose(mean_ll, candidates, pipeline.model.selection_tolerance)
        table = candidate_table(per_fold, candidates, winner)
        plan, fixed = ship_plan(winner, candidates, [f.entrants for f in fold_runs])
        for f in fold_runs:
            _settle(f, winner)
        say(f"  candidates, mean over {len(fold_runs)} fold(s) (the lowest log loss wins; a simpler one within "
            f"{pipeline.model.selection_tolerance:.1%} of it instead; {time.perf_counter() - t_race:.0f} s):")
        for line in candidates_lines(table):
            say(line)
    entrants, parts, _ = _race_at(label, rows, observed_until, pipeline, features, categorical, plan, fixed)
    winner = winner or plan[0].name
    model, p_cal = entrants[winner].model, entrants[winner].calibration_p
    model.info["candidate"] = winner
    dropped = model.info["constant_features"]
    how = ""
    if model.best_iteration:
        how = ((f", its trees the median of the {len(fold_runs)} folds'" if len(fold_runs) > 1
                else ", its trees as its newest fold's") if fold_runs else " (early-stopped: no fold to choose its trees)")
    say(f"{label.name}: the shipped model: {winner} - {model.describe()}{how} - on {len(parts.fit):,} examples as of {parts.fit['as_of'].min():%Y-%m-%d} .. "
        f"{parts.fit['as_of'].max():%Y-%m-%d} ({int(parts.fit[label.name].sum()):,} positive), the newest matured "
        f"outcomes; {model.info['calibration']} calibration out of fold on its {len(parts.calibration):,} examples "
        f"as of {parts.calibration['as_of'].min():%Y-%m-%d} .. {parts.calibration['as_of'].max():%Y-%m-%d}; "
        f"{len(parts.promotion):,} examples of {parts.promotion['lead_id'].nunique():,} leads held out to compare "
        "a challenger on; "
        f"{len(model.features)} features" + (f", {len(dropped)} constant in the fit left out" if dropped else "")
        + (f"; fitted on every positive and {model.info['negative_sampling_rate']:.0%} of the negatives, weighted"
           if model.info["negative_sampling_rate"] < 1 else ""))
    if dropped and primary:
        say(f"  constant features left out: {', '.join(dropped[:20])}" + (f" and {len(dropped) - 20} more"
                                                                         if len(dropped) > 20 else ""))
    metrics = _backtest_metrics(label, fold_runs) if fold_runs else {}
    for row in table.itertuples():
        metrics.update({f"candidate_{row.candidate}_{label.short}_{m}_mean": float(getattr(row, m))
                        for m in ("auc", "logloss", "ece")})
    return LabelRun(label=label, model=model, parts=parts, folds=fold_runs, fold_notes=notes, metrics=metrics,
                    calibration_p=p_cal, winner=winner, candidates=table)


def backtest_table(run: LabelRun) -> pd.DataFrame:
    """fold, cut-off, test dates, model and each reference's AUC / log loss / ECE, then mean and sd."""
    rows = []
    for i, f in enumerate(run.folds, start=1):
        rec = {"fold": str(i), "cutoff": f"{f.fold.cutoff:%Y-%m-%d}",
               "tested": f"{f.fold.test_dates[0]:%Y-%m-%d} .. {f.fold.test_end:%Y-%m-%d}",
               "examples": len(f.test), "positives": int(f.scores["y"].sum())}
        for name in f.comparison.index:
            for metric in ("auc", "logloss", "ece"):
                rec[f"{name}_{metric}"] = float(f.comparison.loc[name, metric])
        rows.append(rec)
    table = pd.DataFrame(rows)
    if len(table) > 1:
        numeric = [c for c in table.columns if c.endswith(("_auc", "_logloss", "_ece"))]
        mean = {"fold": "mean", **table[numeric].mean().to_dict()}
        sd = {"fold": "sd", **table[numeric].std(ddof=1).to_dict()}
        table = pd.concat([table, pd.DataFrame([mean, sd])], ignore_index=True)
    return table


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
    feature_config = pipeline.features.replace(contract=contract)
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
    examples, report = build_examples(con, pipeline.examples, feature_config)
    examples = with_baseline_points(con, examples, rules, feature_config.contract)
    for line in report.lines():
        say(line)
    catalogue = feature_catalogue(feature_config)
    features = catalogue["name"].tolist()
    categorical = catalogue.loc[catalogue["kind"] == "categorical", "name"].tolist()
    latent = _latent(data_dir)

    observed_until = report.observed_until
    skipped: dict[str, str] = {}
    order = _label_order(pipeline, stage_counts(con), skipped)
    runs: dict[str, LabelRun] = {}
    sp = pipeline.split
    for label in order:  # the first label that trains is the primary one
        if pipeline.primary_label not in ("auto", label.name):
            break
        try:
            say(f"{label.name}: walk-forward backtest, {sp.folds if not sp.cutoffs else len(sp.cutoffs)} folds of "
                f"{sp.test_weeks} test weeks; each fold fitted as the shipped model is, on what was known at its "
                f"cut-off:")
            runs[label.name] = _fit_label(label, examples, observed_until, pipeline, features, categorical, latent,
                                          say, primary=True)
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
            say(f"{label.name}: its newest fold:")
            runs[label.name] = _fit_label(label, examples, observed_until, pipeline, features, categorical, latent,
                                          say, primary=False)
        except InsufficientData as exc:
            skipped[label.name] = str(exc).removeprefix(f"{label.name}: ")
            say(f"{label.name}: not trained: {skipped[label.name]}")
    for name, why in skipped.items():
        say(f"{name}: skipped ({why}); {primary.label.name} is the primary label: cutoffs, score and tier read "
            f"{primary.label.probability}")

    label, model, parts = primary.label, primary.model, primary.parts
    fit = parts.fit
    lk = pipeline.leakage
    audited = fit.sample(n=AUDIT_SAMPLE, random_state=pipeline.model.seed) if len(fit) > AUDIT_SAMPLE else fit
    try:
        audit = leakage_audit(audited[model.features], audited[label.name].astype(bool), lk.threshold,
                              lk.min_support, lk.n_bins, lk.min_positives, point_in_time_features(feature_config),
                              weights_of(audited))
    except AuditSkipped as exc:
        say(str(exc))
        audit = empty_audit()
    suspected = audit.loc[audit["suspected"], "feature"].tolist()
    if suspected:
        say(f"WARNING suspected leakage (single-feature AUC >= {lk.threshold}): {', '.join(suspected)}")

    metrics = {k: v for r in runs.values() for k, v in r.metrics.items()}
    # Cutoffs of the shipped model: chosen on its newest weeks, out of fold (the promotion leads aside).
    cal, p_cal = parts.calibration, primary.calibration_p
    cal_scale = 1.0 / (1.0 - sp.promotion_fraction)
    cutoffs = _cutoffs(pipeline, label, p_cal, cal, cal_scale, say)
    # What the same policy delivers out of time: chosen in the newest fold, measured on its test slice.
    newest = primary.newest
    fold_cal = newest.parts.calibration
    fold_cutoffs = choose_cutoffs(newest.calibration_p, fold_cal[label.name].astype(int).to_numpy(),
                                  fold_cal["as_of"], pipeline.cutoffs, population_scale=cal_scale,
                                  probability=label.probability, lead_id=fold_cal["lead_id"],
                                  weight=weights_of(fold_cal))
    scores, test = newest.scores, newest.test
    cut_table = cutoff_report(fold_cutoffs, scores["model"].to_numpy(), scores["y"].to_numpy(), test["as_of"],
                              test["lead_id"], weight=weights_of(test))
    tradeoff = tradeoff_curve(scores["model"].to_numpy(), scores["y"].to_numpy(), test["as_of"], lead_id=test["lead_id"],
                              weight=weights_of(test))
    say(f"cutoffs ({pipeline.cutoffs.policy}) of the shipped model: MQL {label.probability} >= {cutoffs.mql:.4f}, "
        f"SQL {label.probability} >= {cutoffs.sql:.4f}")

    grid = learn_model_grid(model, fit, catalogue, seed=pipeline.model.seed)
    window = {"observed_until": observed_until.isoformat(), "train_from": f"{fit['as_of'].min():%Y-%m-%d}",
              "train_until": f"{fit['as_of'].max():%Y-%m-%d}",
              "calibration_from": f"{cal['as_of'].min():%Y-%m-%d}", "calibration_until": f"{cal['as_of'].max():%Y-%m-%d}"}
    scorer = Scorer(models={name: r.model for name, r in runs.items()}, primary=label.name, cutoffs=cutoffs,
                    scale=score_scale(p_cal, weights_of(cal)), catalogue=catalogue, feature_config=feature_config, rules=rules,
                    grid=grid, info={"name": pipeline.name, **window})
    ex_cfg, model_cfg = pipeline.examples, pipeline.model
    params = {**window, "primary_label": label.name, "labels_trained": ", ".join(runs),
              "horizon_days": ex_cfg.horizon_days, "won_horizon_days": ex_cfg.won_horizon_days,
              "cadence_days": ex_cfg.cadence_days, "max_lead_age_days": ex_cfg.max_lead_age_days,
              "label_latency_days": ex_cfg.label_latency_days,
              "calibration_method": model.info["calibration"], "best_iteration": model.best_iteration,
              "candidate": primary.winner, "model_family": model.family, "model_description": model.describe(),
              "backtest_cutoffs": ", ".join(f"{f.fold.cutoff:%Y-%m-%d}" for f in primary.folds),
              "backtest_test_until": f"{newest.fold.test_end:%Y-%m-%d}",
              "cutoff_policy": pipeline.cutoffs.policy, "mql_cutoff": cutoffs.mql, "sql_cutoff": cutoffs.sql,
              "n_features": len(model.features), "n_constant_features": len(model.info["constant_features"]),
              "grid_fit_a": grid.fit[0], "grid_fit_b": grid.fit[1],
              "grid_engagement_1": grid.engagement[0], "grid_engagement_2": grid.engagement[1],
              **{f"model_{k}": v for k, v in vars(model_cfg).items()},
              **{f"split_{k}": v for k, v in vars(sp).items() if k not in ("calibration_start", "test_start")},
              "rows_fit": len(fit), "rows_calibration": len(cal), "rows_promotion": len(parts.promotion),
              "rows_test": len(test), "examples_max_examples": ex_cfg.max_examples,
              "examples_sample_rate": report.sample.rate if report.sample else 1.0,
              **{f"{r.label.short}_{k}": r.model.info[k] for r in runs.values() if r is not primary
                 for k in ("train_from", "train_until", "calibration_from", "calibration_until", "calibration_rows")}}
    return TrainingRun(config=pipeline, scorer=scorer, metrics=metrics, comparison=newest.comparison,
                       calibration=newest.calibration, cutoffs=cut_table, tradeoff=tradeoff, test_scores=scores,
                       test_frame=test, leakage=audit, fingerprint=fingerprint, backtest=backtest_table(primary),
                       promotion=parts.promotion, labels=runs, skipped=skipped, lines=lines, params=params,
                       sample=report.sample)


def _cutoffs(pipeline: PipelineConfig, label: Label, p, frame: pd.DataFrame, scale: float, say):
    cutoffs = choose_cutoffs(p, frame[label.name].astype(int).to_numpy(), frame["as_of"], pipeline.cutoffs,
                             population_scale=scale, probability=label.probability, lead_id=frame["lead_id"],
                             weight=weights_of(frame))
    for note in cutoffs.notes:
        say(f"WARNING cutoffs: {note}")
    return cutoffs


GRID_SAMPLE = 20_000


def representative_sample(rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` of ``rows``, drawn uniformly; when they are a weighted sample of leads, drawn
    with replacement in proportion to their weights (the only draw that is), so the rows stand
    for the whole lead base."""
    if WEIGHT in rows:
        return rows.sample(n=min(len(rows), n), replace=True, random_state=seed, weights=rows[WEIGHT])
    return rows if len(rows) <= n else rows.sample(n=n, random_state=seed)


def learn_model_grid(model, train: pd.DataFrame, catalogue: pd.DataFrame, seed: int = 0):
    """Fit x engagement grid thresholds from the training part (a sample of it): the same
    share per letter and digit as the rule baseline's grid on those examples."""
    from leadscore.serving.explain import contributions, group_scores, learn_grid

    sample = representative_sample(train, GRID_SAMPLE, seed)
    scores = group_scores(contributions(model, sample).values, catalogue)
    baseline = sample["baseline_grid"] if "baseline_grid" in sample else None
    return learn_grid(scores["fit_score"], scores["engagement_score"], baseline)


# ---------------------------------------------------------------------------
# Outputs: the report and the bundle (the command line adds MLflow)
# ---------------------------------------------------------------------------

def report_inputs(run: TrainingRun, facts: list[tuple[str, str]] | None = None):
    from leadscore.reporting.report import TrainingReportInputs

    s = run.scorer
    base_facts = [
        ("model", run.config.name),
        ("data", f"{run.fingerprint['rows']['leads']:,} leads, {run.fingerprint['rows']['activities']:,} activities "
                 f"(fingerprint {run.fingerprint['hash']})"),
        ("outcomes observed until", run.params["observed_until"][:16]),
        ("the shipped model", f"fitted on examples as of {run.params['train_from']} .. {run.params['train_until']} "
                              f"(the newest matured outcomes): {run.params['candidate']} - "
                              f"{run.params['model_description']}; calibrated "
                              f"({run.params['calibration_method']}) out of fold on its examples as of "
                              f"{run.params['calibration_from']} .. {run.params['calibration_until']}"),
        ("backtest", f"walk forward, cut-offs {run.params['backtest_cutoffs']}; each fold fitted as the shipped "
                     "model is, on what was known at its cut-off, and tested on the weeks after it"),
        ("primary label", f"{run.primary.name}: cutoffs, score and tier read {run.primary.probability}"),
        ("newest fold's test slice", f"{len(run.test_scores):,} examples, {int(run.test_scores['y'].sum()):,} "
                                     f"{run.primary.noun} within {run.primary.horizon(run.config.examples)} days"),
        ("cutoffs", f"{run.config.cutoffs.policy}: MQL {run.primary.probability} >= {s.cutoffs.mql:.4f}, "
                    f"SQL {run.primary.probability} >= {s.cutoffs.sql:.4f}"),
    ]
    if run.sample:
        base_facts.append(("examples sampled", " ".join(run.sample.lines()).strip()))
    base_facts += [(f"{name} (not trained)", why) for name, why in run.skipped.items()]
    extra = [("Candidates, mean over the backtest folds (the lowest log loss wins; ties go to the simpler)",
              run.labels[run.primary.name].candidates),
             ("Walk-forward backtest (AUC, log loss, ECE per fold; the newest fold last)", run.backtest)]
    for name, other in run.labels.items():
        if name != run.primary.name and other.newest is not None:
            extra.append((f"{other.label.name} model (its own newest fold)", other.newest.comparison))
    extra.append(("Leakage audit: top single-feature AUCs (the shipped model's fit)", run.leakage.head(15)))
    notes = [f"Suspected leakage: {', '.join(run.suspected_leakage)}"] if run.suspected_leakage else []
    notes += [f"Cutoffs: {note}" for note in s.cutoffs.notes]
    return TrainingReportInputs(
        title=f"leadscore training run: {run.config.name}", facts=base_facts + (facts or []),
        metrics=run.comparison, scores=run.test_scores, uncalibrated="model_uncalibrated",
        ranking={"baseline": "baseline_points"}, cutoffs=run.cutoffs, tradeoff=run.tradeoff,
        calibration=run.calibration, extra_tables=extra, notes=notes)


def manifest_for(run: TrainingRun, mlflow_run_id: str | None = None) -> dict:
    import json

    def plain(value):  # numpy scalars and arrays, timestamps -> JSON
        return value.tolist() if hasattr(value, "tolist") else str(value)

    return json.loads(json.dumps({
        "name": run.config.name,
        "mlflow_run_id": mlflow_run_id,
        "metrics": run.metrics,
        "cutoffs": run.scorer.cutoffs.to_dict(),
        "feature_catalogue": run.scorer.catalogue.to_dict(orient="records"),
        "feature_config": run.scorer.feature_config.as_dict(),
        "primary_label": run.scorer.primary,
        "skipped_labels": run.skipped,
        "example_sampling": run.sample.as_dict() if run.sample else None,
        "data_fingerprint": run.fingerprint,
        "params": run.params,
        "suspected_leakage": run.suspected_leakage,
        "grid": run.scorer.grid.to_dict() if run.scorer.grid is not None else None,
    }, default=plain))


EXPLAIN_SAMPLE = 3_000


def explanation_outputs(run: TrainingRun) -> tuple[dict[str, bytes], pd.DataFrame]:
    """The global view of the primary model on (a sample of) the test slice: SHAP figures and
    the mean |SHAP| importance table."""
    from leadscore.serving.explain import (
        contributions,
        global_figures,
        importance_table,
    )

    test = run.test_frame
    sample = representative_sample(test, EXPLAIN_SAMPLE, 0)
    model = run.scorer.primary_model
    figures = global_figures(model, sample, run.scorer.catalogue)
    return figures, importance_table(contributions(model, sample).values, run.scorer.catalogue)


def write_outputs(run: TrainingRun, bundle_dir: Path, mlflow_run_id: str | None = None):
    """Write the bundle (scorer, manifest, hashes) with the HTML report inside it.
    Returns (report path, figures)."""
    from leadscore.reporting.report import render_training_report, training_figures
    from leadscore.serving.bundle import SCORER_FILE, write_bundle

    inputs = report_inputs(run, [("MLflow run", mlflow_run_id)] if mlflow_run_id else None)
    shap_figures, importance = explanation_outputs(run)
    inputs.extra_tables.append(("SHAP importance on the test slice (mean |log-odds|), top 20", importance.head(20)))
    inputs.figure_sections.append(("Why the model scores as it does (SHAP, test slice sample)",
                                   sorted(shap_figures)))
    figures = {**training_figures(inputs), **shap_figures}
    html = render_training_report(inputs, figures)
    write_bundle(bundle_dir, {SCORER_FILE: run.scorer}, manifest_for(run, mlflow_run_id),
                 extra_files={"report.html": html,
                              "feature_catalogue.csv": run.scorer.catalogue.to_csv(index=False),
                              "shap_importance.csv": importance.to_csv(index=False)})
    return Path(bundle_dir) / "report.html", figures


# ---------------------------------------------------------------------------
# Retraining: champion and challenger on the same newest out-of-time slice
# ---------------------------------------------------------------------------

def champion_trained_until(manifest: dict) -> pd.Timestamp | None:
    """The newest as-of date the champion was fitted or calibrated on (older bundles: the day
    before their calibration_start minus the horizon)."""
    params = manifest.get("params", {})
    if params.get("calibration_until"):
        return pd.Timestamp(max(params["calibration_until"], params["train_until"]), tz="UTC")
    if params.get("calibration_start"):  # a bundle from before the walk-forward backtest
        return pd.Timestamp(params["calibration_start"], tz="UTC")
    return None


@dataclass
class Comparison:
    """Champion and challenger on the challenger's promotion slice after the champion's data."""

    rows: int
    positives: int
    since: pd.Timestamp | None
    champion: dict[str, float] | None
    challenger: dict[str, float] | None
    reason: str = ""            # why there is nothing to compare on


def compare_champion(run: TrainingRun, champion: Scorer, champion_manifest: dict, con) -> Comparison:
    """The champion and the challenger on matured outcomes neither was trained on: the
    challenger's promotion slice (held-out leads of its newest matured weeks, never fitted or
    calibrated on), as of dates after everything the champion was fitted and calibrated on."""
    label = run.primary
    model = champion.models.get(label.name)
    since = champion_trained_until(champion_manifest)
    promo = run.promotion
    if model is None:
        return Comparison(0, 0, since, None, None, f"the champion has no {label.name} model (its primary label is "
                                                     f"{champion.primary})")
    if since is None:
        return Comparison(0, 0, None, None, None, "the champion's manifest does not say what it was trained on")
    rows = promo[promo["as_of"] > since].reset_index(drop=True)
    if len(rows) == 0 or rows[label.name].nunique() < 2:
        return Comparison(len(rows), int(rows[label.name].sum()) if len(rows) else 0, since, None, None,
                          f"the training window did not move: no matured outcome after the champion's data "
                          f"(as of {since:%Y-%m-%d}) to compare on ({len(rows):,} held-out examples)")
    champ_rows = rows
    if champion.feature_config != run.scorer.feature_config:
        from leadscore.features.builder import features_as_of

        champ_rows = features_as_of(con, rows[["lead_id", "as_of"]], config=champion.feature_config)
        champ_rows = rows[["lead_id", "as_of"]].merge(champ_rows, on=["lead_id", "as_of"], how="left")
    y, w = rows[label.name].astype(int).to_numpy(), weights_of(rows)
    return Comparison(len(rows), int(y.sum()), since, classification_metrics(y, model.predict_proba(champ_rows), weight=w),
                      classification_metrics(y, run.scorer.primary_model.predict_proba(rows), weight=w))


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
