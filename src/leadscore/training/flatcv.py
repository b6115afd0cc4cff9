"""Evaluation of a flat export (one row per lead), and the final fit.

**Out of time when the export has dates** (:func:`walk_forward_flat`): folds placed from the
newest matured lead backwards; at each cut-off the models train on the leads whose label had
matured by then (their date plus the horizon is at or before the cut-off - so no training
lead is dated after the earliest test lead) and are tested on the leads dated in the
``test_weeks`` from the cut-off on. This is how a model deployed at the cut-off would have
done. **Stratified k-fold** (:func:`cross_validate_flat`): rows shuffled into folds - the only
evaluation an export without dates allows, and optimistic when the funnel drifts (the model
trains on leads from the same months it is tested on).

On each fold, on the same training rows and the same columns:

* the **candidates** of :mod:`leadscore.modeling.candidates` - LightGBM shapes, the logistic
  regression and their blend - each calibrated out of fold on every training row (two models
  fitted on half the leads score the other half), so no row calibrates a model it was fitted
  on. The candidate with the lowest mean log loss over the folds is leadscore's ``model``
  (its rows are repeated under that name);
* ``lgbm_default`` - a plain ``lightgbm.LGBMClassifier()`` with default parameters on all
  training rows (categoricals as pandas categories with the same training levels);
* ``logreg`` - the plain one-hot logistic regression of :func:`leadscore.modeling.model.fit_logistic`;
* ``baseline`` - the rule baseline, when the rows carry its points.

Metrics are the project's :func:`leadscore.modeling.metrics.classification_metrics` names on the test
fold, from each model's probabilities (leadscore's model is ranked by its calibrated
probability, as it is served); callers add the label prefix (``converted_``) if they need it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from leadscore.labels.examples import WEIGHT
from leadscore.modeling.baseline import RuleBaselineClassifier
from leadscore.modeling.candidates import (
    Candidate,
    candidate_table,
    candidates_for,
    choose,
    fit_entrants,
    lightgbm_candidate,
    ship_plan,
)
from leadscore.modeling.metrics import classification_metrics
from leadscore.modeling.model import (
    ConversionModel,
    InsufficientData,
    ModelConfig,
    as_model_frame,
    categorical_levels,
    fit_logistic,
    logistic_proba,
)
from leadscore.training.flat import FlatData, FlatSplit

ID = "lead_id"
DATE = "lead_date"
POINTS = "baseline_points"
MODELS = ("model", "lgbm_default", "logreg")
METRICS = ("auc", "pr_auc", "logloss", "brier", "ece", "lift_top_decile", "capture_top_decile")


@dataclass
class FlatCVResult:
    folds: pd.DataFrame  # one row per (fold, model): fold, model, auc, pr_auc, logloss, brier, ece, lift/capture
    summary: pd.DataFrame  # index: model; columns: (metric, "mean") and (metric, "std") over folds
    out_of_fold: pd.DataFrame  # id, y, fold, and one out-of-fold probability column per model
    label: str = "converted"
    winner: str = ""            # the candidate chosen by mean log loss: the rows named ``model`` are its
    candidates: pd.DataFrame = field(default_factory=pd.DataFrame)  # candidate, family, mean AUC / log loss / ECE, chosen
    fold_entrants: list = field(default_factory=list)  # per fold, candidate name -> Entrant (the fitted models)
    out_of_time: bool = False   # walk-forward on the leads' dates (else stratified, shuffled folds)
    windows: pd.DataFrame | None = None  # out of time: fold, cutoff, train rows / until, test from / until / rows

    def mean(self, metric: str = "auc") -> pd.Series:
        """Mean of ``metric`` over folds, per model."""
        return self.summary[(metric, "mean")]


def model_frame(data: FlatData) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The frame :func:`fit_lightgbm` expects (``lead_id``, the features, the label and, when the
    export has dates, ``lead_date``), indexed by row position; and the feature and categorical
    column names."""
    features = list(data.features.columns)
    label = data.label
    for reserved, what in ((ID, "id"), (label, "label"), (DATE, "lead date"), (POINTS, "rule baseline's points"),
                           (WEIGHT, "example weights")):
        if reserved in features:
            raise ValueError(f"feature column {reserved!r} clashes with the name used for the {what}; rename it "
                             "in the export" + (" or set `label:` in the config" if what == "label" else ""))
    if not (len(data.ids) == len(data.features) == len(data.y)):
        raise ValueError(f"ids, features and labels differ in length: {len(data.ids)}, "
                         f"{len(data.features)}, {len(data.y)}")
    ids = pd.Series(data.ids).astype(str).reset_index(drop=True)
    if ids.duplicated().any():
        raise ValueError(f"duplicate lead ids, e.g. {ids[ids.duplicated()].iloc[0]!r}: one row per lead is expected")
    kind = dict(zip(data.catalogue["name"], data.catalogue["kind"])) if len(data.catalogue) else {}
    categorical = [c for c in features if kind.get(c) == "categorical"
                   or (c not in kind and not pd.api.types.is_numeric_dtype(data.features[c]))]
    frame = data.features.reset_index(drop=True).copy()
    frame.insert(0, ID, ids)
    frame[label] = np.asarray(data.y).astype(bool)
    if data.dates is not None:
        frame[DATE] = pd.Series(data.dates).reset_index(drop=True)
    if data.points is not None:
        frame[POINTS] = np.asarray(data.points, dtype="float64")
    return frame, features, categorical


def fit_calibrated(train: pd.DataFrame, label: str, features: list[str], categorical: list[str],
                   config: ModelConfig, method: str = "auto", candidates: list[Candidate] | None = None,
                   fixed: dict | None = None, winner: str | None = None) -> tuple[ConversionModel, np.ndarray]:
    """A model on ``train`` calibrated out of fold on every row of ``train`` (each row's margin
    from a fit without its lead): the ``winner`` of ``candidates`` (default: the configured
    LightGBM, early-stopped on a held-out share of the leads). Returns the model and the rows'
    out-of-fold calibrated probabilities (what cutoffs and the score scale are set on)."""
    if candidates is None:
        candidates = [lightgbm_candidate(config, {})]
    entrants = fit_entrants(candidates, train, train, label, features, categorical, config, method, fixed)
    entrant = entrants[winner or candidates[-1].name]
    entrant.model.info["calibration_rows"] = len(train)
    return entrant.model, entrant.calibration_p


def fit_default_lgbm(train: pd.DataFrame, label: str, features: list[str], categorical: list[str],
                     seed: int = 0, n_jobs: int = 2) -> tuple[lgb.LGBMClassifier, dict[str, list[str]]]:
    """``LGBMClassifier()`` with default parameters on all of ``train``; categoricals as pandas
    categories with the training levels (returned, to build the test frame the same way)."""
    levels = categorical_levels(train, categorical)
    clf = lgb.LGBMClassifier(random_state=seed, n_jobs=n_jobs, verbose=-1)
    clf.fit(as_model_frame(train, features, levels), train[label].to_numpy())
    return clf, levels


def stratified_folds(y: np.ndarray, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """The test fold (0 .. n_splits-1) of every row: stratified by ``y``, shuffled with ``seed``."""
    y = np.asarray(y).astype(int)
    fold = np.full(len(y), -1)
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        fold[test] = k
    return fold


def _compare(train: pd.DataFrame, test: pd.DataFrame, label: str, features: list[str], categorical: list[str],
             config: ModelConfig) -> tuple[dict[str, np.ndarray], dict]:
    """The candidates (:mod:`leadscore.modeling.candidates`, each calibrated out of fold on
    ``train``) and the references fitted on ``train`` - a default LGBMClassifier, the plain
    logistic regression and, when the rows carry its points, the rule baseline (an isotonic map
    of its points) - and their probabilities on ``test``. Returns them and the entrants."""
    candidates = candidates_for(config, int(train[label].sum()))
    entrants = fit_entrants(candidates, train, train, label, features, categorical, config)
    proba = {name: e.model.predict_proba(test) for name, e in entrants.items()}
    default, levels = fit_default_lgbm(train, label, features, categorical, seed=config.seed, n_jobs=config.n_jobs)
    proba["lgbm_default"] = default.predict_proba(as_model_frame(test, features, levels))[:, 1]
    proba["logreg"] = logistic_proba(fit_logistic(train, label, features, categorical, seed=config.seed), test)
    if POINTS in train:
        proba["baseline"] = RuleBaselineClassifier().fit(train, train[label].astype(int)).predict_proba(test)[:, 1]
    return proba, entrants


def _metrics(y: np.ndarray, proba: dict[str, np.ndarray], test: pd.DataFrame) -> dict[str, dict]:
    """Each model's metrics; the baseline ranks by its points."""
    return {name: classification_metrics(y, p, score=test[POINTS] if name == "baseline" else None)
            for name, p in proba.items()}


def _result(rows: list[dict], oof: pd.DataFrame, label: str, fold_entrants: list[dict], config: ModelConfig,
            **kw) -> FlatCVResult:
    """Choose the winner by mean log loss over the folds; its rows and probabilities become ``model``."""
    folds = pd.DataFrame(rows, columns=["fold", "model", *METRICS])
    candidates = _raced(fold_entrants)
    mean_ll = folds.groupby("model")["logloss"].mean()
    winner = choose(mean_ll, candidates, config.selection_tolerance)
    folds = pd.concat([folds[folds["model"] == winner].assign(model="model"), folds], ignore_index=True)
    folds = folds.sort_values(["fold"], kind="stable").reset_index(drop=True)
    oof["model"] = oof[winner]
    references = [m for m in (*MODELS, "baseline") if m in set(folds["model"])]
    summary = folds.groupby("model", sort=False)[list(METRICS)].agg(["mean", "std"])
    order = references + [c.name for c in candidates if c.name in summary.index]
    per_fold = [{name: row for name, row in folds[folds["fold"] == k].set_index("model").to_dict("index").items()}
                for k in sorted(folds["fold"].unique())]
    return FlatCVResult(folds=folds, summary=summary.reindex(order), out_of_fold=oof, label=label, winner=winner,
                        candidates=candidate_table(per_fold, candidates, winner), fold_entrants=fold_entrants, **kw)


def _raced(fold_entrants: list[dict]) -> list[Candidate]:
    """The candidates that ran in any fold, in race order."""
    seen: dict[str, Candidate] = {}
    for entrants in fold_entrants:
        for e in entrants.values():
            seen.setdefault(e.candidate.name, e.candidate)
    return list(seen.values())


def ship(result: FlatCVResult, frame: pd.DataFrame, label: str, features: list[str], categorical: list[str],
         config: ModelConfig, method: str = "auto") -> tuple[ConversionModel, np.ndarray]:
    """The evaluation's winner fitted on every row of ``frame`` with the trees its folds chose
    (:func:`leadscore.modeling.candidates.ship_plan`), calibrated out of fold on all of them."""
    plan, fixed = ship_plan(result.winner, _raced(result.fold_entrants), result.fold_entrants)
    model, p = fit_calibrated(frame, label, features, categorical, config, method, plan, fixed, result.winner)
    model.info["candidate"] = result.winner
    return model, p


def cross_validate_flat(data: FlatData, config: ModelConfig, n_splits: int = 5, seed: int = 0,
                        progress: Callable[[str], None] | None = None) -> FlatCVResult:
    """Stratified ``n_splits``-fold comparison of leadscore's model, a default LGBMClassifier and
    the logistic regression on the same folds and columns (matured leads only, when dated).

    ``seed`` shuffles the folds; the models' own seed is ``config.seed``. ``progress`` (if given)
    is called with one line per finished fold.
    """
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits!r}")
    data = data.matured()
    label = data.label
    frame, features, categorical = model_frame(data)
    y = frame[label].to_numpy().astype(int)
    fold = stratified_folds(y, n_splits, seed)
    oof = pd.DataFrame({"id": frame[ID], "y": y, "fold": fold})
    for name in MODELS:
        oof[name] = np.nan
    rows, fold_entrants = [], []
    for k in range(n_splits):
        train, test = frame[fold != k], frame[fold == k]
        proba, entrants = _compare(train, test, label, features, categorical, config)
        fold_entrants.append(entrants)
        for name, metrics in _metrics(y[fold == k], proba, test).items():
            oof.loc[fold == k, name] = proba[name]
            rows.append({"fold": k, "model": name, **metrics})
        if progress is not None:
            progress(f"fold {k + 1}/{n_splits}: {len(train):,} training rows, {len(test):,} test rows; "
                     + _fold_line(rows[-len(proba):], entrants))
    return _result(rows, oof, label, fold_entrants, config)


def _fold_line(rows: list[dict], entrants: dict) -> str:
    fitted = ", ".join(f"{name} {e.seconds:.0f} s" for name, e in entrants.items())
    return ("AUC / log loss " + ", ".join(f"{r['model']} {r['auc']:.4f} / {r['logloss']:.4f}" for r in rows)
            + f" (fitted: {fitted})")


@dataclass(frozen=True)
class TimeFold:
    """A walk-forward fold of a dated export: train on leads matured by ``cutoff``, test on the
    leads dated in [``cutoff``, ``test_until``)."""

    cutoff: pd.Timestamp
    test_until: pd.Timestamp


def flat_folds(dates: pd.Series, horizon_days: int, observed_until: pd.Timestamp, split: FlatSplit) -> list[TimeFold]:
    """The folds, oldest first: the newest tests the ``test_weeks`` up to the newest matured
    lead date, each older one ``step_weeks`` earlier; a fold is kept only if at least
    ``min_train_weeks`` of leads had matured by its cut-off."""
    horizon = pd.Timedelta(days=horizon_days)
    newest = observed_until - horizon            # the last date whose label window has closed
    first = dates.min()
    out = []
    for k in reversed(range(split.folds)):
        until = newest - pd.Timedelta(weeks=split.step_weeks * k)
        cutoff = until - pd.Timedelta(weeks=split.test_weeks)
        if cutoff - horizon - first >= pd.Timedelta(weeks=split.min_train_weeks):
            out.append(TimeFold(cutoff=cutoff, test_until=until))
    return out


def walk_forward_flat(data: FlatData, config: ModelConfig, split: FlatSplit,
                      progress: Callable[[str], None] | None = None) -> FlatCVResult:
    """Out-of-time comparison of the three models on :func:`flat_folds`. Raises
    InsufficientData when the history is too short for a single fold."""
    if data.dates is None:
        raise ValueError("walk-forward evaluation needs the leads' dates (date_column)")
    label, horizon = data.label, pd.Timedelta(days=data.horizon_days)
    frame, features, categorical = model_frame(data.matured())
    folds = flat_folds(data.dates, data.horizon_days, data.observed_until, split)
    if not folds:
        weeks = (data.observed_until - horizon - data.dates.min()) / pd.Timedelta(weeks=1)
        raise InsufficientData(
            f"{label}: the leads' dates span {weeks:.0f} weeks up to the newest matured one; one fold of "
            f"{split.test_weeks} test weeks after {split.min_train_weeks} weeks of training and a {data.horizon_days}-"
            f"day label window needs {split.test_weeks + split.min_train_weeks + -(-data.horizon_days // 7)} weeks")
    y = frame[label].to_numpy().astype(int)
    oof = pd.DataFrame({"id": frame[ID], "y": y, "fold": -1})
    for name in MODELS:
        oof[name] = np.nan
    rows, windows, fold_entrants = [], [], []
    for k, f in enumerate(folds):
        train = frame[frame[DATE] + horizon <= f.cutoff]
        in_test = ((frame[DATE] >= f.cutoff) & (frame[DATE] < f.test_until)).to_numpy()
        test = frame[in_test]
        why = (f"{int(test[label].sum())} positives among its {len(test):,} test leads"
               if test[label].nunique() < 2 else None)
        if why is None:
            try:
                proba, entrants = _compare(train, test, label, features, categorical, config)
            except InsufficientData as exc:
                why = str(exc).removeprefix(f"{label}: ")
        if why is not None:
            if progress is not None:
                progress(f"fold {k + 1}/{len(folds)} (cut-off {f.cutoff:%Y-%m-%d}): not evaluated: {why}")
            continue
        fold_entrants.append(entrants)
        for name, metrics in _metrics(y[in_test], proba, test).items():
            oof.loc[in_test, name] = proba[name]
            rows.append({"fold": k, "model": name, **metrics})
        oof.loc[in_test, "fold"] = k
        windows.append({"fold": k, "cutoff": f.cutoff, "train_rows": len(train), "train_positives": int(train[label].sum()),
                        "train_until": train[DATE].max(), "test_from": test[DATE].min(), "test_until": test[DATE].max(),
                        "test_rows": len(test), "test_positives": int(test[label].sum())})
        if progress is not None:
            progress(f"fold {k + 1}/{len(folds)}: cut-off {f.cutoff:%Y-%m-%d}; trained on {len(train):,} leads dated "
                     f"{train[DATE].min():%Y-%m-%d} .. {train[DATE].max():%Y-%m-%d} ({int(train[label].sum()):,} "
                     f"positive), tested on {len(test):,} dated {f.cutoff:%Y-%m-%d} .. {test[DATE].max():%Y-%m-%d} "
                     f"({int(test[label].sum()):,} positive); " + _fold_line(rows[-len(proba):], entrants))
    if not rows:
        raise InsufficientData(f"{label}: no walk-forward fold has both outcomes in its test weeks (each named above)")
    return _result(rows, oof[oof["fold"] >= 0].reset_index(drop=True), label, fold_entrants, config,
                   out_of_time=True, windows=pd.DataFrame(windows))


def fit_flat(data: FlatData, config: ModelConfig, seed: int = 0) -> ConversionModel:
    """The configured LightGBM fitted on every matured row (early-stopped on a held-out share of
    the leads), calibrated out of fold on all of them. ``seed`` replaces ``config.seed``."""
    frame, features, categorical = model_frame(data.matured())
    model, _ = fit_calibrated(frame, data.label, features, categorical, config.replace(seed=seed))
    model.info["categorical"] = categorical
    return model
