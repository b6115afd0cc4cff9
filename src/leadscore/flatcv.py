"""Stratified k-fold evaluation on a flat export (one row per lead, no dates), and the final fit.

A flat export has no timestamps, so there is no out-of-time split: rows are split into
``n_splits`` stratified folds (shuffled, seeded) and every fold is the test set once. On each
fold, on the same training rows and the same columns, three models are fitted:

* ``model`` - leadscore's model: :func:`leadscore.train.fit_lightgbm` (early-stopped on a
  share of the training rows held out by id) then :func:`leadscore.train.calibrate`. The
  calibration map is fitted on that same held-out share: the booster's trees never saw those
  rows (only the number of trees was chosen on them - one number), and carving a further
  calibration slice out of the training folds would cost the booster another fifth of its
  rows. The test fold is never used for fitting, early stopping or calibration;
* ``lgbm_default`` - a plain ``lightgbm.LGBMClassifier()`` with default parameters on all
  training rows (categoricals as pandas categories with the same training levels);
* ``logreg`` - the one-hot logistic regression of :func:`leadscore.train.fit_logistic`.

Metrics are the project's :func:`leadscore.metrics.classification_metrics` names on the test
fold, from each model's probabilities (leadscore's model is ranked by its calibrated
probability, as it is served); callers add the label prefix (``sql_``) if they need it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from leadscore.flat import FlatData
from leadscore.metrics import classification_metrics
from leadscore.train import (
    ConversionModel,
    ModelConfig,
    as_model_frame,
    calibrate,
    categorical_levels,
    fit_lightgbm,
    fit_logistic,
    logistic_proba,
    validation_mask,
)

LABEL = "converted"
ID = "lead_id"
MODELS = ("model", "lgbm_default", "logreg")
METRICS = ("auc", "pr_auc", "logloss", "brier", "ece", "lift_top_decile", "capture_top_decile")


@dataclass
class FlatCVResult:
    folds: pd.DataFrame  # one row per (fold, model): fold, model, auc, pr_auc, logloss, brier, ece, lift/capture
    summary: pd.DataFrame  # index: model; columns: (metric, "mean") and (metric, "std") over folds
    out_of_fold: pd.DataFrame  # id, y, fold, and one out-of-fold probability column per model

    def mean(self, metric: str = "auc") -> pd.Series:
        """Mean of ``metric`` over folds, per model."""
        return self.summary[(metric, "mean")]


def model_frame(data: FlatData) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The frame :func:`fit_lightgbm` expects (``lead_id``, the features, ``converted``), indexed
    by row position; and the feature and categorical column names."""
    features = list(data.features.columns)
    for reserved in (ID, LABEL):
        if reserved in features:
            raise ValueError(f"feature column {reserved!r} clashes with the name used for the "
                             f"{'id' if reserved == ID else 'label'}; rename it in the export")
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
    frame[LABEL] = np.asarray(data.y).astype(bool)
    return frame, features, categorical


def fit_calibrated(train: pd.DataFrame, features: list[str], categorical: list[str],
                   config: ModelConfig, method: str = "auto") -> ConversionModel:
    """leadscore's model on ``train``: LightGBM early-stopped on the held-out share of its rows
    (:func:`validation_mask`), then calibrated on that same share (never seen by the trees)."""
    model = fit_lightgbm(train, LABEL, features, categorical, config)
    held_out = train[validation_mask(train, config)]
    model = calibrate(model, held_out, method)
    model.info["calibration_rows"] = len(held_out)
    return model


def fit_default_lgbm(train: pd.DataFrame, features: list[str], categorical: list[str],
                     seed: int = 0, n_jobs: int = 2) -> tuple[lgb.LGBMClassifier, dict[str, list[str]]]:
    """``LGBMClassifier()`` with default parameters on all of ``train``; categoricals as pandas
    categories with the training levels (returned, to build the test frame the same way)."""
    levels = categorical_levels(train, categorical)
    clf = lgb.LGBMClassifier(random_state=seed, n_jobs=n_jobs, verbose=-1)
    clf.fit(as_model_frame(train, features, levels), train[LABEL].to_numpy())
    return clf, levels


def stratified_folds(y: np.ndarray, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """The test fold (0 .. n_splits-1) of every row: stratified by ``y``, shuffled with ``seed``."""
    y = np.asarray(y).astype(int)
    fold = np.full(len(y), -1)
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        fold[test] = k
    return fold


def cross_validate_flat(data: FlatData, config: ModelConfig, n_splits: int = 5, seed: int = 0,
                        progress: Callable[[str], None] | None = None) -> FlatCVResult:
    """Stratified ``n_splits``-fold comparison of leadscore's model, a default LGBMClassifier and
    the logistic regression on the same folds and columns.

    ``seed`` shuffles the folds; the models' own seed is ``config.seed``. ``progress`` (if given)
    is called with one line per finished fold.
    """
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits!r}")
    frame, features, categorical = model_frame(data)
    y = frame[LABEL].to_numpy().astype(int)
    fold = stratified_folds(y, n_splits, seed)
    oof = pd.DataFrame({"id": frame[ID], "y": y, "fold": fold})
    for name in MODELS:
        oof[name] = np.nan
    rows = []
    for k in range(n_splits):
        train, test = frame[fold != k], frame[fold == k]
        model = fit_calibrated(train, features, categorical, config)
        default, levels = fit_default_lgbm(train, features, categorical, seed=config.seed, n_jobs=config.n_jobs)
        logreg = fit_logistic(train, LABEL, features, categorical, seed=config.seed)
        proba = {
            "model": model.predict_proba(test),
            "lgbm_default": default.predict_proba(as_model_frame(test, features, levels))[:, 1],
            "logreg": logistic_proba(logreg, test),
        }
        y_test = y[fold == k]
        for name in MODELS:
            oof.loc[fold == k, name] = proba[name]
            rows.append({"fold": k, "model": name, **classification_metrics(y_test, proba[name])})
        if progress is not None:
            aucs = ", ".join(f"{r['model']} {r['auc']:.4f}" for r in rows[-len(MODELS):])
            progress(f"fold {k + 1}/{n_splits}: {len(train):,} training rows, {len(test):,} test rows; "
                     f"{model.best_iteration} trees, {model.info['calibration']} calibration; AUC {aucs}")
    folds = pd.DataFrame(rows, columns=["fold", "model", *METRICS])
    summary = (folds.groupby("model", sort=False)[list(METRICS)].agg(["mean", "std"]).reindex(list(MODELS)))
    return FlatCVResult(folds=folds, summary=summary, out_of_fold=oof)


def fit_flat(data: FlatData, config: ModelConfig, seed: int = 0) -> ConversionModel:
    """The model to serve: fitted on all rows but the held-out share, which early-stops and
    calibrates it. ``seed`` replaces ``config.seed`` (LightGBM's seed and the held-out split)."""
    frame, features, categorical = model_frame(data)
    model = fit_calibrated(frame, features, categorical, replace(config, seed=seed))
    model.info["categorical"] = categorical
    return model
