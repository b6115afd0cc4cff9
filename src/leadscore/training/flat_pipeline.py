"""Training on a flat export (one row per lead): evaluate, then build the model to deploy.

The same steps as the event pipeline (:mod:`leadscore.training.pipeline`), on the export's rows:

1. **Evaluation** - out of time when the export has a date column
   (:func:`leadscore.training.flatcv.walk_forward_flat`), then a stratified random split labelled as the
   optimistic one; without dates the random split alone (:func:`leadscore.training.flatcv.cross_validate_flat`).
2. **The model to deploy** - the candidate the evaluation chose (lowest mean log loss over its
   folds: a LightGBM shape, the logistic regression or their blend,
   :mod:`leadscore.modeling.candidates`) fitted on every matured lead with the trees its folds
   chose, calibrated out of fold on all of them.
3. **Cutoffs and the 1-99 score** - by the configured policy, on those out-of-fold
   probabilities; per-week figures count leads per week of their date (without dates, the
   whole export counts as one week).
4. **Explanations** - the fit x engagement grid from the model's contributions; reasons read
   the export's column names ("Lead Source = Reference").

The result is a :class:`leadscore.serving.scorer.Scorer` whose feature rows are the export's columns
(plus ``lead_id`` and ``as_of``): bundle, registry, batch scoring, explanations and the served
model take it like any other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from leadscore.modeling.baseline import score_flat_baseline
from leadscore.modeling.candidates import candidates_lines
from leadscore.modeling.cutoffs import choose_cutoffs
from leadscore.modeling.metrics import classification_metrics
from leadscore.serving.scorer import Scorer, probability_column, score_scale
from leadscore.training.flat import FlatData, FlatDataset, load_config, load_flat
from leadscore.training.flatcv import (
    DATE,
    ID,
    FlatCVResult,
    cross_validate_flat,
    model_frame,
    ship,
    walk_forward_flat,
)
from leadscore.training.pipeline import learn_model_grid

MODEL_NAMES = ("model", "lgbm_default", "logreg", "baseline")


@dataclass
class FlatRun:
    """A flat export's training run: its evaluation(s) and the scorer to deploy."""

    dataset: FlatDataset
    data: FlatData
    scorer: Scorer
    evaluation: FlatCVResult                  # out of time when dated, else the random split
    random_split: FlatCVResult | None         # the random split beside an out-of-time evaluation
    metrics: dict[str, float]
    params: dict
    fingerprint: dict
    fit_rows: pd.DataFrame                    # what the deployed model was fitted on (features, label)
    lines: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.data.label


def scoring_rows(data: FlatData, as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """The scorer's input for an export's leads: ``lead_id``, ``as_of`` and the columns. ``as_of``
    is the lead's date when the export has one, else ``as_of`` (default: now, UTC)."""
    frame = data.features.reset_index(drop=True).copy()
    frame.insert(0, "lead_id", pd.Series(data.ids).astype(str).reset_index(drop=True).to_numpy())
    when = (pd.Series(data.dates).reset_index(drop=True) if data.dates is not None
            else pd.Series(as_of or pd.Timestamp.now(tz="UTC"), index=frame.index))
    frame.insert(1, "as_of", when.astype("datetime64[us, UTC]"))
    return frame


def file_fingerprint(path: Path, rows: int) -> dict:
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"file": str(path), "rows": {"leads": rows}, "hash": digest[:16]}


def _named(prefix: str, metrics: pd.Series) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()}


def train_flat(dataset: FlatDataset, path: Path | str | None = None,
               echo: Callable[[str], None] = lambda s: None) -> FlatRun:
    """Evaluate and build the scorer to deploy; raises InsufficientData / ConfigError with the counts."""
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        echo(line)

    data = load_flat(dataset, path)
    label, split, model_cfg = data.label, dataset.split_settings, dataset.model_settings
    rules = dataset.load_rules(data.catalogue)
    if rules is not None:
        data.points = score_flat_baseline(rules, data.features, explain=False)["total_points"].to_numpy()
    matured = data.matured()
    say(f"{len(data.features):,} leads, {data.features.shape[1]} columns, {len(data.excluded)} excluded by the config "
        f"(see the config for why); label {label}: {int(matured.y.sum()):,} positive of {len(matured.y):,} "
        f"({matured.y.mean():.1%})"
        + (f" with matured {data.horizon_days}-day outcomes, lead dates {data.dates.min():%Y-%m-%d} .. "
           f"{data.dates.max():%Y-%m-%d}, export time {data.observed_until:%Y-%m-%d}" if data.dates is not None else ""))
    for note in data.notes:
        say(f"note: {note}")
    random_split = None
    if data.dates is not None:
        say(f"\nout of time: walk-forward, {split.folds} folds of {split.test_weeks} weeks of leads; each trained on the "
            "leads whose outcome had matured by its cut-off")
        evaluation = walk_forward_flat(data, model_cfg, split, progress=say)
        say(f"\n{split.cv_folds}-fold stratified cross-validation (random split - optimistic when the funnel drifts: "
            "its folds mix the months a model is tested on into its training)")
        random_split = cross_validate_flat(data, model_cfg, n_splits=split.cv_folds, seed=0, progress=say)
    else:
        say(f"\n{split.cv_folds}-fold stratified cross-validation (random split; the export has no date column, so "
            "this is the best evaluation available - with date_column an out-of-time one is made)")
        evaluation = cross_validate_flat(data, model_cfg, n_splits=split.cv_folds, seed=0, progress=say)

    metrics: dict[str, float] = {}
    for name, prefix in (("model", f"{label}_"), ("logreg", f"logreg_{label}_"), ("lgbm_default", f"lgbm_default_{label}_"),
                         ("baseline", f"baseline_{label}_")):
        if name not in evaluation.summary.index:
            continue
        metrics.update(_named(prefix, evaluation.summary.loc[name].xs("mean", level=1)))
        if random_split is not None:
            metrics.update(_named(f"random_split_{prefix}", random_split.summary.loc[name].xs("mean", level=1)))

    for name, row in evaluation.candidates.set_index("candidate").iterrows():
        metrics.update({f"candidate_{name}_{label}_{m}": float(row[m]) for m in ("auc", "logloss", "ece")})
    say(f"\ncandidates, mean over the {'walk-forward' if evaluation.out_of_time else 'cross-validation'} folds "
        f"(the lowest log loss wins; a simpler one within {model_cfg.selection_tolerance:.1%} of it instead):")
    for line in candidates_lines(evaluation.candidates):
        say(line)

    frame, features, categorical = model_frame(matured)
    model, p_oof = ship(evaluation, frame, label, features, categorical, model_cfg)
    y = frame[label].to_numpy().astype(int)
    week = (frame[DATE].dt.floor("D") - pd.to_timedelta(frame[DATE].dt.dayofweek, unit="D") if DATE in frame
            else pd.Series(pd.Timestamp("2000-01-03", tz="UTC"), index=frame.index))
    probability = probability_column(label)
    cutoffs = choose_cutoffs(p_oof, y, week, dataset.cutoff_policy, probability=probability)
    for note in cutoffs.notes:
        say(f"WARNING cutoffs: {note}")
    grid = learn_model_grid(model, frame, data.catalogue, seed=model_cfg.seed)
    scorer = Scorer(models={label: model}, primary=label, cutoffs=cutoffs, scale=score_scale(p_oof),
                    catalogue=data.catalogue, feature_config=None, rules=rules, grid=grid,
                    info={"name": dataset.bundle_name, "flat": True}, ratios=dataset.ratio_specs)
    oof = classification_metrics(y, p_oof)
    say(f"\nthe model to deploy: {evaluation.winner} - {model.describe()} - on every matured lead ({len(frame):,}, "
        f"{int(y.sum()):,} positive), {model.info['calibration']} calibration out of fold on all of them "
        f"(out-of-fold ECE {oof['ece']:.4f}); {len(model.features)} columns"
        + (f", {len(model.info['constant_features'])} constant left out" if model.info["constant_features"] else ""))
    say(f"cutoffs ({dataset.cutoff_policy.policy}): MQL {probability} >= {cutoffs.mql:.4f}, "
        f"SQL {probability} >= {cutoffs.sql:.4f}")
    params = {"flat": True, "dataset": dataset.dataset, "label": label, "evaluation":
              "walk-forward" if data.dates is not None else "stratified k-fold",
              "horizon_days": data.horizon_days, "observed_until": None if data.observed_until is None
              else data.observed_until.isoformat(), "rows_fit": len(frame), "positives_fit": int(y.sum()),
              "best_iteration": model.best_iteration, "calibration_method": model.info["calibration"],
              "candidate": evaluation.winner, "model_family": model.family, "model_description": model.describe(),
              "cutoff_policy": dataset.cutoff_policy.policy, "mql_cutoff": cutoffs.mql, "sql_cutoff": cutoffs.sql,
              **({"train_from": f"{frame[DATE].min():%Y-%m-%d}", "train_until": f"{frame[DATE].max():%Y-%m-%d}"}
                 if DATE in frame else {}),
              **{f"model_{k}": v for k, v in vars(model_cfg).items()}}
    fingerprint = file_fingerprint(Path(path) if path is not None else dataset.file, len(data.features))
    fit_rows = frame.drop(columns=[DATE], errors="ignore").rename(columns={ID: "lead_id"})
    return FlatRun(dataset=dataset, data=data, scorer=scorer, evaluation=evaluation, random_split=random_split,
                   metrics=metrics, params=params, fingerprint=fingerprint, fit_rows=fit_rows, lines=lines)


def manifest_for(run: FlatRun, mlflow_run_id: str | None = None) -> dict:
    import json

    return json.loads(json.dumps({
        "name": run.dataset.bundle_name, "flat": True, "mlflow_run_id": mlflow_run_id, "metrics": run.metrics,
        "cutoffs": run.scorer.cutoffs.to_dict(), "feature_catalogue": run.scorer.catalogue.to_dict(orient="records"),
        "primary_label": run.label, "data_fingerprint": run.fingerprint, "params": run.params,
        "grid": run.scorer.grid.to_dict() if run.scorer.grid is not None else None,
    }, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def write_flat_outputs(run: FlatRun, bundle_dir: Path, mlflow_run_id: str | None = None):
    """The bundle (scorer, manifest, hashes) with the HTML report. Returns (report path, figures)."""
    from leadscore.reporting.report import (
        TrainingReportInputs,
        render_training_report,
        training_figures,
    )
    from leadscore.serving.bundle import SCORER_FILE, write_bundle
    from leadscore.serving.explain import (
        contributions,
        global_figures,
        importance_table,
    )

    ev = run.evaluation
    kind = "out of time (walk-forward)" if ev.out_of_time else "stratified k-fold (random split)"
    comparison = ev.summary.xs("mean", axis=1, level=1)
    scores = ev.out_of_fold.rename(columns={"id": "lead_id"})
    facts = [("model", run.dataset.bundle_name), ("data", f"{run.fingerprint['file']}: {len(run.data.features):,} "
                                                          f"leads (sha256 {run.fingerprint['hash']})"),
             ("label", f"{run.label}: cutoffs, score and tier read {run.scorer.probability}"),
             ("evaluation", kind + ("" if ev.out_of_time else "; the export has no date column, so a random split "
                                    "is the best evaluation available")),
             ("the model deployed", f"{run.params['candidate']} ({run.params['model_description']}) on "
                                    f"{run.params['rows_fit']:,} matured leads, {run.params['calibration_method']} "
                                    "calibration out of fold"),
             ("cutoffs", f"{run.dataset.cutoff_policy.policy}: MQL {run.scorer.probability} >= "
                         f"{run.scorer.cutoffs.mql:.4f}, SQL {run.scorer.probability} >= {run.scorer.cutoffs.sql:.4f}"),
             *([("MLflow run", mlflow_run_id)] if mlflow_run_id else [])]
    extra = [("Candidates, mean over the folds (lowest log loss wins, ties go to the simpler)", ev.candidates),
             (f"{kind}: per fold", ev.folds)]
    if run.random_split is not None:
        extra.append(("Random split - optimistic when the funnel drifts (mean over stratified folds)",
                      run.random_split.summary.xs("mean", axis=1, level=1)))
    sample = run.fit_rows.sample(n=min(len(run.fit_rows), 3000), random_state=0)
    model = run.scorer.primary_model
    shap_figures = global_figures(model, sample, run.scorer.catalogue)
    importance = importance_table(contributions(model, sample).values, run.scorer.catalogue)
    extra.append(("SHAP importance on the training leads (mean |log-odds|), top 20", importance.head(20)))
    if run.scorer.rules is not None:
        facts.append(("rule baseline", f"{run.dataset.rules_path}: {len(run.scorer.rules.rule_names)} rules"))
    inputs = TrainingReportInputs(title=f"leadscore training run: {run.dataset.bundle_name}", facts=facts,
                                  metrics_title=f"{kind.capitalize()}, mean over the folds: model and references",
                                  metrics=comparison.loc[[m for m in MODEL_NAMES if m in comparison.index]],
                                  scores=scores, extra_tables=extra, notes=list(run.data.notes),
                                  figure_sections=[("Why the model scores as it does (SHAP)", sorted(shap_figures))])
    figures = {**training_figures(inputs), **shap_figures}
    html = render_training_report(inputs, figures)
    write_bundle(bundle_dir, {SCORER_FILE: run.scorer}, manifest_for(run, mlflow_run_id),
                 extra_files={"report.html": html, "feature_catalogue.csv": run.scorer.catalogue.to_csv(index=False),
                              "shap_importance.csv": importance.to_csv(index=False)})
    return Path(bundle_dir) / "report.html", figures


def with_baseline(rows: pd.DataFrame, scorer: Scorer) -> pd.DataFrame:
    """``rows`` with the rule baseline's ``baseline_points`` and ``baseline_tier`` beside them
    (what the scorer passes through to its output), when the model has a rule set."""
    if scorer.rules is None:
        return rows
    b = score_flat_baseline(scorer.rules, rows, explain=False)
    return rows.assign(baseline_points=b["total_points"].to_numpy(), baseline_tier=b["baseline_tier"].to_numpy())


def input_example(run: FlatRun, n: int = 5) -> pd.DataFrame:
    """A few scoring rows of the export, for the registered model's signature: the export's own
    columns (the model derives its ratio columns itself)."""
    rows = scoring_rows(run.data.matured(), run.data.observed_until)
    derived = {r.name for r in run.scorer.ratios}
    raw = [f for f in run.scorer.features if f not in derived]
    raw += [part for r in run.scorer.ratios for part in (r.numerator, r.denominator) if part not in raw]
    return rows.head(n)[["lead_id", "as_of", *raw]].reset_index(drop=True)



class NotThisModel(ValueError):
    """The model and the export do not fit: an event-data model, or columns the model reads missing."""


def flat_scoring_rows(scorer: Scorer, config: Path, data: Path | None = None,
                      as_of: pd.Timestamp | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the scorer's input rows for a flat export's leads, the rows set aside with their reasons):
    rows in = scoring rows + quarantined. :class:`NotThisModel` when the model was trained on event
    data or reads a column the export lacks; ``ConfigError`` for the declaration or the file."""
    if not scorer.flat:
        raise NotThisModel("the model was trained on event data (leads, activities, lifecycle); give it --data DIR "
                           "--as-of, not --flat")
    leads = load_flat(load_config(config), data, scoring=True)
    missing = [f for f in scorer.features if f not in leads.features.columns]
    if missing:
        raise NotThisModel(f"{config} does not give the column(s) the model reads: {', '.join(missing)}")
    return with_baseline(scoring_rows(leads, as_of), scorer), leads.quarantined


def explain_flat_lead(scorer: Scorer, config: Path, data: Path | None, lead_id: str,
                      as_of: pd.Timestamp | None = None, k: int = 3) -> dict:
    """The explanation of one lead of a flat export (as :func:`leadscore.serving.explain.explain_lead`
    gives one from event data), with the rule baseline's points and fired rules."""
    from leadscore.serving.explain import UnknownLead, baseline_summary, explanation_of

    rows, _ = flat_scoring_rows(scorer, config, data, as_of)
    row = rows[rows["lead_id"] == str(lead_id)].reset_index(drop=True)
    if row.empty:
        raise UnknownLead(f"lead_id {lead_id!r} is not a row of {data or config} (or it was quarantined)")
    result = explanation_of(scorer, row, k=k)
    if scorer.rules is not None:
        result["baseline"] = baseline_summary(score_flat_baseline(scorer.rules, row).iloc[0])
    return result
