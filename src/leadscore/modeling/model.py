"""Learn calibrated conversion probabilities: LightGBM per label, references beside it.

For each label (``became_sql``, ``won``) on an out-of-time split grouped by lead:

* a LightGBM classifier on the catalogue's features (categoricals handled natively, with the
  training categories fixed so scoring sees the same codes), early-stopped on a validation
  part of the training period made of *other leads*. Classes are not reweighted: reweighting
  would distort the probabilities the cutoffs are set on; calibration then maps the raw
  margin to probabilities on the calibration slice;
* a logistic regression (one-hot + imputation + scaling) on the same rows, for reference;
* the rule baseline, its points as the ranking score (``RuleBaselineClassifier``).

Too few positives in the training part is refused (:class:`InsufficientData`): the rule
baseline stays in use.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Annotated, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from pydantic import Field
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from leadscore.labels.examples import WEIGHT, lead_parts, weights_of
from leadscore.modeling.calibration import MarginCalibrator
from leadscore.modeling.families import BlendMargin, LinearMargin, TreeMargin
from leadscore.settings import Section, Whole


class InsufficientData(Exception):
    """Too few positive outcomes to learn from; the rule baseline remains in use."""


class ModelConfig(Section):
    """LightGBM parameters and the data-sufficiency floor.

    ``min_positives``: fewest positives in the training part to train at all (CRM vendors
    ask for about 120 conversions). ``candidates``: the model families raced per label
    (:mod:`leadscore.modeling.candidates`), ``search_trials`` LightGBM shapes among them, a
    smaller and more regularised grid below ``small_data_positives``; a simpler candidate within
    ``selection_tolerance`` (relative log loss) of the best wins. ``rare_level_rows``: categorical
    levels with fewer training rows are pooled into one level, ``(other)``, which also takes
    values never seen in training. ``validation_fraction``: share of training leads held
    out for early stopping. ``max_fit_rows``: a fit on more examples keeps every positive and
    a random sample of the negatives, each weighted by the inverse of its sampling rate, so the
    margins keep the full data's scale (None: no sampling); calibration always reads every
    held-out row, so the probabilities stay unbiased.
    """

    n_estimators: Whole = 2000
    learning_rate: Annotated[float, Field(gt=0)] = 0.03
    num_leaves: Annotated[int, Field(ge=2)] = 15
    min_child_samples: Whole = 200
    subsample: Annotated[float, Field(gt=0, le=1)] = 0.8
    colsample_bytree: Annotated[float, Field(gt=0, le=1)] = 0.8
    reg_lambda: Annotated[float, Field(ge=0)] = 5.0
    early_stopping_rounds: Whole = 100
    validation_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.2
    min_data_per_group: Whole = 100
    cat_smooth: Annotated[float, Field(ge=0)] = 10.0
    min_positives: Whole = 120
    max_fit_rows: Annotated[int, Field(ge=1000)] | None = 300_000   # None (empty in YAML): no sampling
    seed: int = 0
    n_jobs: Whole = 2
    candidates: Annotated[tuple[Literal["lightgbm", "logistic", "blend"], ...], Field(min_length=1)] = (
        "lightgbm", "logistic", "blend")
    search_trials: Whole = 3
    small_data_positives: Whole = 1000
    selection_tolerance: Annotated[float, Field(ge=0, lt=0.1)] = 0.002
    rare_level_rows: Annotated[int, Field(ge=0)] = 10


OTHER = "(other)"  # the pooled level: rare in training, or never seen there


def categorical_levels(frame: pd.DataFrame, categorical: list[str], rare_rows: int = 0) -> dict[str, list[str]]:
    """The categories seen in training, sorted: the fixed codes the model is trained on. Levels
    with fewer than ``rare_rows`` rows are pooled into :data:`OTHER` (added when any is)."""
    out = {}
    for c in categorical:
        counts = frame[c].dropna().astype(str).value_counts()
        kept = sorted(counts.index[counts >= rare_rows])
        out[c] = kept + [OTHER] if len(kept) < len(counts) and OTHER not in kept else kept
    return out


def as_model_frame(frame: pd.DataFrame, features: list[str], levels: dict[str, list[str]]) -> pd.DataFrame:
    """Feature columns in model order; categoricals as pd.Categorical with the training levels.
    A value outside them is :data:`OTHER` when the levels pool rare ones, else missing (which
    every family handles); a missing value stays missing."""
    out = frame[features].copy()
    for col, cats in levels.items():
        index, dtype = _levels(tuple(cats))
        column = out[col]
        present = column.notna().to_numpy()
        values = column if pd.api.types.is_string_dtype(column.dtype) else column.astype(str)
        codes = index.get_indexer(values)  # -1: missing or not a training level
        if OTHER in cats:
            codes = np.where((codes < 0) & present, index.get_loc(OTHER), codes)
        out[col] = pd.Categorical.from_codes(np.where(present, codes, -1), dtype=dtype)
    return out


@functools.lru_cache(maxsize=256)
def _levels(cats: tuple[str, ...]) -> tuple[pd.Index, pd.CategoricalDtype]:
    """A model's levels as an index to look values up in and as the categorical dtype: built
    once per model, not on every request."""
    return pd.Index(cats), pd.CategoricalDtype(list(cats))


@dataclass
class ConversionModel:
    """A trained model of one label - its ``core`` (a family of :mod:`leadscore.modeling.families`:
    LightGBM trees, a logistic regression or a blend of both) maps the model matrix to a raw
    margin - plus the calibrator that turns the margin into a probability."""

    label: str
    features: list[str]
    levels: dict[str, list[str]]
    core: TreeMargin | LinearMargin | BlendMargin
    calibrator: MarginCalibrator | None = None
    info: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.core.family

    @property
    def trees(self) -> TreeMargin | None:
        """The LightGBM part: the core itself, a blend's tree member, or None."""
        if isinstance(self.core, TreeMargin):
            return self.core
        if isinstance(self.core, BlendMargin):
            return next((m for _, m in self.core.members if isinstance(m, TreeMargin)), None)
        return None

    @property
    def booster(self) -> lgb.Booster | None:
        return self.trees.booster if self.trees is not None else None

    @property
    def best_iteration(self) -> int:
        """Trees used (0 for a model without trees)."""
        return self.trees.best_iteration if self.trees is not None else 0

    def describe(self) -> str:
        return self.core.describe()

    def matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input: its features in order, categoricals with the training levels."""
        return as_model_frame(frame, self.features, self.levels)

    def reads_like(self, other: ConversionModel) -> bool:
        """Same features and levels: one prepared matrix serves both models."""
        return list(self.features) == list(other.features) and self.levels == other.levels

    def margin(self, frame: pd.DataFrame, matrix: pd.DataFrame | None = None) -> np.ndarray:
        """Raw score (log-odds) of the rows; ``matrix``: the rows already prepared by :meth:`matrix`."""
        return self.core.decision_function(self.matrix(frame) if matrix is None else matrix)

    def predict_proba(self, frame: pd.DataFrame, matrix: pd.DataFrame | None = None) -> np.ndarray:
        """Calibrated P(label)."""
        return self.probability(self.margin(frame, matrix))

    def probability(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated P(label) of raw margins (:meth:`margin`)."""
        if self.calibrator is None:
            raise RuntimeError("the model is not calibrated yet")
        return self.calibrator.predict(margin)


def _require_positives(y: np.ndarray, label: str, config: ModelConfig, where: str) -> None:
    n_pos = int(np.sum(y))
    if n_pos < config.min_positives:
        raise InsufficientData(
            f"{label}: only {n_pos} positive outcomes in the {where} ({len(y):,} examples); at least "
            f"{config.min_positives} are needed to learn a model (model.min_positives)")


def informative_features(frame: pd.DataFrame, features: list[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): a feature that is constant on ``frame`` - one value everywhere, or
    missing everywhere - cannot be learned from, and is dropped before fitting."""
    dropped = [f for f in features if frame[f].nunique(dropna=False) <= 1]
    return [f for f in features if f not in dropped], dropped


def sample_negatives(frame: pd.DataFrame, label: str, max_rows: int | None, seed: int = 0) -> tuple[pd.DataFrame, float]:
    """About ``max_rows`` examples: every positive and a uniform random sample of the
    negatives, with a ``_weight`` column (the rows' weights - 1 unless ``frame`` has them -
    divided, for the sampled negatives, by the sampling rate); returns (rows, the negatives'
    sampling rate). Half the budget at least goes to negatives, so with over ``max_rows / 2``
    positives the rows exceed ``max_rows``: a fit needs both classes."""
    y = frame[label].astype(bool).to_numpy()
    weight = weights_of(frame, ones=True)
    n_neg = int((~y).sum())
    if max_rows is None or len(frame) <= max_rows or n_neg == 0:
        return frame.assign(**{WEIGHT: weight}), 1.0
    rate = min(1.0, max(max_rows - float(y.sum()), max_rows // 2, 1.0) / n_neg)  # half the budget at least
    keep = y | (np.random.default_rng(seed).random(len(frame)) < rate)
    out = frame[keep].reset_index(drop=True)
    out[WEIGHT] = np.where(y[keep], weight[keep], weight[keep] / rate)
    return out, rate


def validation_mask(train: pd.DataFrame, config: ModelConfig) -> np.ndarray:
    """True for the examples of the training leads held out for early stopping (by lead)."""
    f = config.validation_fraction
    return lead_parts(train["lead_id"], (1 - f, f), salt=config.seed + 17) > 0


def fit_lightgbm(train: pd.DataFrame, label: str, features: list[str], categorical: list[str],
                 config: ModelConfig, trees: int | None = None) -> ConversionModel:
    """Fit on the training part; early stopping on a held-out group of training leads. With
    ``trees`` (chosen beforehand, by the backtest) every row fits that many trees instead."""
    y = train[label].astype(bool).to_numpy()
    w = weights_of(train, ones=True)
    _require_positives(y, label, config, "training part")
    features, constant = informative_features(train, features)
    if not features:
        raise InsufficientData(f"{label}: every feature is constant in the training part ({len(train):,} examples)")
    categorical = [c for c in categorical if c in features]
    levels = categorical_levels(train, categorical, config.rare_level_rows)
    held_out = validation_mask(train, config) if trees is None else np.zeros(len(train), dtype=bool)
    X = as_model_frame(train, features, levels)
    model = lgb.LGBMClassifier(
        objective="binary", n_estimators=trees or config.n_estimators, learning_rate=config.learning_rate,
        num_leaves=config.num_leaves, min_child_samples=config.min_child_samples,
        subsample=config.subsample, subsample_freq=1, colsample_bytree=config.colsample_bytree,
        reg_lambda=config.reg_lambda, min_data_per_group=config.min_data_per_group, cat_smooth=config.cat_smooth,
        random_state=config.seed, n_jobs=config.n_jobs, verbose=-1,
        deterministic=True, force_row_wise=True,
    )
    if trees is None:
        model.fit(X[~held_out], y[~held_out], sample_weight=w[~held_out], eval_X=(X[held_out],),
                  eval_y=(y[held_out],), eval_sample_weight=[w[held_out]], eval_metric="binary_logloss",
                  categorical_feature=categorical,
                  callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)])
        best = int(model.best_iteration_ or config.n_estimators)
    else:
        model.fit(X, y, sample_weight=w, categorical_feature=categorical)
        best = int(trees)
    core = TreeMargin(model.booster_, best, params={k: getattr(config, k) for k in
                                                    ("num_leaves", "min_child_samples", "reg_lambda", "learning_rate")})
    return ConversionModel(label=label, features=features, levels=levels, core=core,
                           info={"train_rows": int((~held_out).sum()), "validation_rows": int(held_out.sum()),
                                 "train_positives": int(y[~held_out].sum()), "best_iteration": best,
                                 "constant_features": constant})


def calibrate(model: ConversionModel, calibration: pd.DataFrame, method: str = "auto",
              margin: np.ndarray | None = None) -> ConversionModel:
    """Fit ``model``'s calibrator on the ``calibration`` rows: their margins under ``model``,
    or ``margin`` given (out of fold, :func:`cross_fitted_margin`)."""
    y = calibration[model.label].astype(bool).to_numpy()
    if y.sum() == 0 or y.all():
        raise InsufficientData(f"{model.label}: the calibration slice has no positives or no negatives "
                               f"({len(y):,} examples); widen split.holdout_weeks")
    margin = model.margin(calibration) if margin is None else margin
    model.calibrator = MarginCalibrator(method=method).fit(margin, y, groups=calibration["lead_id"],
                                                           sample_weight=weights_of(calibration))
    model.info["calibration"] = model.calibrator.method_
    model.info["calibration_cv_logloss"] = model.calibrator.cv_logloss_
    return model


CROSS_FIT_GROUPS = 2  # calibration: models fitted on half the leads score the other half


def cross_fitted_margin(train: pd.DataFrame, rows: pd.DataFrame, label: str, features: list[str],
                        categorical: list[str], config: ModelConfig, trees: int) -> np.ndarray:
    """Each of ``rows``' margin from a model (``trees`` trees) fitted on the ``train`` rows of
    the *other* leads: leads fall in :data:`CROSS_FIT_GROUPS` groups by hash, one model per
    group is fitted without it and scores it. Calibrating on these margins uses every lead of
    ``rows`` without a lead judging the trees it trained - far more outcomes than a held-out
    share would leave, which is what decides how well a small CRM's probabilities are
    calibrated (README: Training)."""
    half = config.replace(min_positives=1)  # the whole fit was checked for enough positives
    return cross_fitted(train, rows, lambda part: fit_lightgbm(part, label, features, categorical, half, trees=trees),
                        config.seed)


def cross_fitted(train: pd.DataFrame, rows: pd.DataFrame, refit, seed: int = 0) -> np.ndarray:
    """Each of ``rows``' margin from ``refit(the train rows of the other leads)`` - any model
    family (:func:`cross_fitted_margin`)."""
    shares = (1.0,) * CROSS_FIT_GROUPS
    in_train = lead_parts(train["lead_id"], shares, salt=seed + 29)
    in_rows = lead_parts(rows["lead_id"], shares, salt=seed + 29)
    margin = np.empty(len(rows))
    for group in range(CROSS_FIT_GROUPS):
        model = refit(train[in_train != group])
        margin[in_rows == group] = model.margin(rows[in_rows == group])
    return margin


LOGISTIC_ROWS = 50_000  # the reference is fitted on at most this many examples (a weighted negative sample)


def fit_logistic(train: pd.DataFrame, label: str, features: list[str], categorical: list[str],
                 seed: int = 0) -> Pipeline:
    """The reference model: one-hot categoricals, median-imputed log1p numerics (+ missing flags),
    scaled, on every positive and a weighted sample of negatives up to :data:`LOGISTIC_ROWS`.
    Constant features are left out, as for LightGBM."""
    train, _ = sample_negatives(train, label, LOGISTIC_ROWS, seed)
    features, _ = informative_features(train, features)
    categorical = [c for c in categorical if c in features]
    numeric = [f for f in features if f not in categorical]
    pre = ColumnTransformer([
        ("categorical", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20), categorical),
        ("numeric", make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True),
            FunctionTransformer(_signed_log1p, feature_names_out="one-to-one"),
            StandardScaler()), numeric),
    ])
    pipe = Pipeline([("prepare", pre), ("model", LogisticRegression(C=0.1, max_iter=2000, random_state=seed))])
    weights = weights_of(train)
    pipe.fit(_logistic_frame(train, features, categorical), train[label].astype(bool).to_numpy(),
             model__sample_weight=weights)
    pipe.features_, pipe.categorical_ = features, categorical
    return pipe


def _signed_log1p(x):
    return np.sign(x) * np.log1p(np.abs(x))


def _logistic_frame(frame: pd.DataFrame, features: list[str], categorical: list[str]) -> pd.DataFrame:
    return frame[features].astype({c: str for c in categorical})


def logistic_proba(pipe: Pipeline, frame: pd.DataFrame) -> np.ndarray:
    return pipe.predict_proba(_logistic_frame(frame, pipe.features_, pipe.categorical_))[:, 1]
