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

from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from leadscore.calibration import MarginCalibrator
from leadscore.examples import lead_parts


class InsufficientData(Exception):
    """Too few positive outcomes to learn from; the rule baseline remains in use."""


@dataclass(frozen=True)
class ModelConfig:
    """LightGBM parameters and the data-sufficiency floor.

    ``min_positives``: fewest positives in the training part to train at all (CRM vendors
    ask for about 120 conversions). ``validation_fraction``: share of training leads held
    out for early stopping.
    """

    n_estimators: int = 2000
    learning_rate: float = 0.03
    num_leaves: int = 15
    min_child_samples: int = 200
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 5.0
    early_stopping_rounds: int = 100
    validation_fraction: float = 0.2
    min_positives: int = 120
    seed: int = 0
    n_jobs: int = 2

    def __post_init__(self):
        if not 0 < self.validation_fraction < 0.5:
            raise ValueError(f"validation_fraction must be in (0, 0.5), got {self.validation_fraction!r}")
        if self.min_positives < 1:
            raise ValueError(f"min_positives must be >= 1, got {self.min_positives!r}")


def categorical_levels(frame: pd.DataFrame, categorical: list[str]) -> dict[str, list[str]]:
    """The categories seen in training, sorted: the fixed codes the model is trained on."""
    return {c: sorted(frame[c].astype(str).unique()) for c in categorical}


def as_model_frame(frame: pd.DataFrame, features: list[str], levels: dict[str, list[str]]) -> pd.DataFrame:
    """Feature columns in model order; categoricals as pd.Categorical with the training levels
    (a value never seen in training becomes missing, which LightGBM handles)."""
    out = frame[features].copy()
    for col, cats in levels.items():
        values = out[col] if pd.api.types.is_string_dtype(out[col]) else out[col].astype(str)
        codes = pd.Index(cats).get_indexer(values)  # -1: missing or never seen in training
        out[col] = pd.Categorical.from_codes(codes, categories=cats)
    return out


@dataclass
class ConversionModel:
    """A trained LightGBM booster plus its calibrator, for one label."""

    label: str
    features: list[str]
    levels: dict[str, list[str]]
    booster: lgb.Booster
    calibrator: MarginCalibrator | None = None
    best_iteration: int = 0
    info: dict = field(default_factory=dict)

    def matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input: its features in order, categoricals with the training levels."""
        return as_model_frame(frame, self.features, self.levels)

    def reads_like(self, other: ConversionModel) -> bool:
        """Same features and levels: one prepared matrix serves both models."""
        return list(self.features) == list(other.features) and self.levels == other.levels

    def margin(self, frame: pd.DataFrame, matrix: pd.DataFrame | None = None) -> np.ndarray:
        """Raw score (log-odds) of the rows; ``matrix``: the rows already prepared by :meth:`matrix`."""
        return self.booster.predict(self.matrix(frame) if matrix is None else matrix, raw_score=True,
                                    num_iteration=self.best_iteration or None)

    def predict_proba(self, frame: pd.DataFrame, matrix: pd.DataFrame | None = None) -> np.ndarray:
        """Calibrated P(label)."""
        if self.calibrator is None:
            raise RuntimeError("the model is not calibrated yet")
        return self.calibrator.predict(self.margin(frame, matrix))


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


def held_out_parts(train: pd.DataFrame, config: ModelConfig) -> np.ndarray:
    """Per example, by its lead: 0 fits the trees, 1 and 2 (``validation_fraction`` together,
    half each) are held out - for early stopping, or 1 for early stopping and 2 to calibrate
    on when there is no calibration slice of other time (never the rows that chose the trees)."""
    f = config.validation_fraction
    return lead_parts(train["lead_id"], (1 - f, f / 2, f / 2), salt=config.seed + 17)


def validation_mask(train: pd.DataFrame, config: ModelConfig) -> np.ndarray:
    """True for the examples of the training leads held out for early stopping (by lead)."""
    return held_out_parts(train, config) > 0


def calibration_mask(train: pd.DataFrame, config: ModelConfig) -> np.ndarray:
    """True for the training leads kept out of fitting and early stopping, to calibrate on."""
    return held_out_parts(train, config) == 2


def fit_lightgbm(train: pd.DataFrame, label: str, features: list[str], categorical: list[str],
                 config: ModelConfig, keep_for_calibration: bool = False) -> ConversionModel:
    """Fit on the training part; early stopping on a held-out group of training leads. With
    ``keep_for_calibration`` a second held-out group (:func:`calibration_mask`) is left out of
    both, to calibrate on."""
    y = train[label].astype(bool).to_numpy()
    _require_positives(y, label, config, "training part")
    features, constant = informative_features(train, features)
    if not features:
        raise InsufficientData(f"{label}: every feature is constant in the training part ({len(train):,} examples)")
    categorical = [c for c in categorical if c in features]
    levels = categorical_levels(train, categorical)
    parts = held_out_parts(train, config)
    if keep_for_calibration:
        train, y, parts = train[parts != 2], y[parts != 2], parts[parts != 2]
    held_out = parts > 0
    X = as_model_frame(train, features, levels)
    model = lgb.LGBMClassifier(
        objective="binary", n_estimators=config.n_estimators, learning_rate=config.learning_rate,
        num_leaves=config.num_leaves, min_child_samples=config.min_child_samples,
        subsample=config.subsample, subsample_freq=1, colsample_bytree=config.colsample_bytree,
        reg_lambda=config.reg_lambda, random_state=config.seed, n_jobs=config.n_jobs, verbose=-1,
        deterministic=True, force_row_wise=True,
    )
    model.fit(X[~held_out], y[~held_out], eval_X=(X[held_out],), eval_y=(y[held_out],), eval_metric="binary_logloss",
              categorical_feature=categorical,
              callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)])
    best = int(model.best_iteration_ or config.n_estimators)
    return ConversionModel(label=label, features=features, levels=levels, booster=model.booster_,
                           best_iteration=best,
                           info={"train_rows": int((~held_out).sum()), "validation_rows": int(held_out.sum()),
                                 "train_positives": int(y[~held_out].sum()), "best_iteration": best,
                                 "constant_features": constant})


def calibrate(model: ConversionModel, calibration: pd.DataFrame, method: str = "auto") -> ConversionModel:
    y = calibration[model.label].astype(bool).to_numpy()
    if y.sum() == 0 or y.all():
        raise InsufficientData(f"{model.label}: the calibration slice has no positives or no negatives "
                               f"({len(y):,} examples); move split.calibration_start earlier")
    model.calibrator = MarginCalibrator(method=method).fit(model.margin(calibration), y, groups=calibration["lead_id"])
    model.info["calibration"] = model.calibrator.method_
    model.info["calibration_cv_logloss"] = model.calibrator.cv_logloss_
    return model


def fit_logistic(train: pd.DataFrame, label: str, features: list[str], categorical: list[str],
                 seed: int = 0) -> Pipeline:
    """The reference model: one-hot categoricals, median-imputed log1p numerics (+ missing flags), scaled.
    Constant features are left out, as for LightGBM."""
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
    pipe.fit(_logistic_frame(train, features, categorical), train[label].astype(bool).to_numpy())
    pipe.features_, pipe.categorical_ = features, categorical
    return pipe


def _signed_log1p(x):
    return np.sign(x) * np.log1p(np.abs(x))


def _logistic_frame(frame: pd.DataFrame, features: list[str], categorical: list[str]) -> pd.DataFrame:
    return frame[features].astype({c: str for c in categorical})


def logistic_proba(pipe: Pipeline, frame: pd.DataFrame) -> np.ndarray:
    return pipe.predict_proba(_logistic_frame(frame, pipe.features_, pipe.categorical_))[:, 1]
