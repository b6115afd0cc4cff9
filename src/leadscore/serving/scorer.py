"""The trained scorer: feature rows in, calibrated probabilities, score and tier out.

One object holds everything a score needs - a model per outcome the CRM records
(``became_sql``, ``won``, or only one of them) with its calibrator, which of them is the
*primary* label (the one the cutoffs, the 1-99 score, the tier and the explanations are
about), the cutoffs and the policy they were chosen by, the score scale, the feature
catalogue and configuration, and the rule baseline that always runs alongside. It is what
the bundle under ``models/<name>/`` stores and what the MLflow pyfunc model wraps, so batch
scoring, on-request serving and retraining all use the same code. A probability whose model
the CRM's outcomes could not train (``p_sql`` for a CRM without an SQL stage) is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leadscore.features.builder import FeatureConfig, with_ratios
from leadscore.labels.examples import LABEL_SPECS, label_spec
from leadscore.modeling.cutoffs import Cutoffs
from leadscore.modeling.families import TreeMargin, lightgbm_matrix
from leadscore.modeling.model import ConversionModel
from leadscore.serving.columns import (
    BASELINE_COLUMNS,
    EXPLANATION,
    KEY_COLUMNS,
    SCORE,
    names,
)


class ScoringInputError(ValueError):
    """Feature rows that the scorer cannot use; the message names the columns at fault."""


def rows_named(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    return f"row(s) {rows[:10].tolist()}" + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")


def as_of_utc(values: pd.Series) -> pd.Series:
    """The rows' ``as_of`` in UTC: timestamps, or ISO 8601 text (naive means UTC, any mix of
    forms); :class:`ScoringInputError` names the rows that are neither."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
        bad = parsed.isna().to_numpy()
    else:
        text = values.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        parsed = pd.to_datetime(values.where(text), utc=True, format="ISO8601", errors="coerce")
        bad = parsed.isna().to_numpy()
    if bad.any():
        raise ScoringInputError(f"as_of must be an ISO 8601 timestamp such as 2025-09-01T06:00:00 (UTC unless zoned), got "
                                f"{values[bad].iloc[0]!r} in {rows_named(bad)}")
    return parsed


@dataclass(frozen=True)
class ScoreScale:
    """The 1-99 score: 1 + 98 x the mid-rank ECDF of the reference probabilities (the
    calibration slice's open leads) at ``p`` - the share of reference leads below ``p`` plus
    half the share tied with it. A score of 90 means "higher than about 90 % of open leads";
    leads tied in probability get the same score whatever their number (a flat stretch of an
    isotonic calibrator does not eat the scale), and the scale runs from 1 (below every
    reference lead) to 99 (above every one)."""

    values: np.ndarray      # distinct reference probabilities, ascending
    cumulative: np.ndarray  # reference leads at or below each value (their summed weights, when weighted)

    @classmethod
    def of(cls, p, weight=None) -> ScoreScale:
        """``weight``: the reference rows' sampling weights (a sample of leads), so the scale
        ranks against the whole lead base; None counts each row once."""
        values, where = np.unique(np.asarray(p, dtype="float64"), return_inverse=True)
        if not len(values):
            raise ValueError("the score scale needs reference probabilities")
        counts = np.bincount(where, minlength=len(values)) if weight is None else \
            np.bincount(where, weights=np.asarray(weight, dtype="float64"), minlength=len(values))
        return cls(values=values, cumulative=np.cumsum(counts))

    def points(self, p) -> np.ndarray:
        p = np.asarray(p, dtype="float64")
        n = float(self.cumulative[-1])
        below_i = np.searchsorted(self.values, p, side="left")   # values < p
        upto_i = np.searchsorted(self.values, p, side="right")   # values <= p
        cum = np.r_[0, self.cumulative]
        share = (cum[below_i] + 0.5 * (cum[upto_i] - cum[below_i])) / n
        return (1 + np.floor(98 * share + 0.5)).astype("int16")


def probability_column(label: str) -> str:
    """The output column of a label's probability: p_sql, p_won, or ``p_<label>`` (flat exports)."""
    return label_spec(label).probability


def score_scale(p: np.ndarray, weight: np.ndarray | None = None) -> ScoreScale:
    """The 1-99 score of reference probabilities ``p`` (the calibration slice, weighted when
    it is a sample of leads): :class:`ScoreScale`."""
    return ScoreScale.of(p, weight)


@dataclass
class Scorer:
    models: dict[str, ConversionModel]  # label -> calibrated model, for the labels that could be trained
    primary: str                        # the label of the cutoffs, score, tier and explanations
    cutoffs: Cutoffs
    scale: ScoreScale
    catalogue: pd.DataFrame
    feature_config: FeatureConfig | None  # None: a flat export's model (its columns are the features)
    rules: object | None = None  # leadscore.modeling.baseline.RuleSet: the points baseline scored alongside
    grid: object | None = None   # leadscore.serving.explain.GridThresholds: fit x engagement grid cells
    info: dict = field(default_factory=dict)
    ratios: tuple = ()           # leadscore.features.builder.Ratio: derived columns computed when the rows lack them

    def __post_init__(self):
        if self.primary not in self.models:
            raise ValueError(f"primary label {self.primary!r} has no model (models: {', '.join(self.models)})")

    @property
    def primary_model(self) -> ConversionModel:
        return self.models[self.primary]

    @property
    def probability(self) -> str:
        """The output column the cutoffs, score and tier read: ``p_sql`` or ``p_won`` (a flat
        export's label ``converted``: ``p_converted``)."""
        return probability_column(self.primary)

    @property
    def flat(self) -> bool:
        """A model of a one-row-per-lead export: its feature rows are the export's columns."""
        return self.feature_config is None

    @property
    def probability_columns(self) -> dict[str, str]:
        """label -> output column, in output order: p_sql and p_won for event data (empty when
        the CRM could not train one), the label's own for a flat export."""
        labels = list(self.models) if self.flat else list(LABEL_SPECS)
        return {label: probability_column(label) for label in labels}

    @property
    def output_columns(self) -> tuple[str, ...]:
        """What :meth:`score` returns (before any baseline columns)."""
        return (*KEY_COLUMNS, *self.probability_columns.values(), *names(SCORE, EXPLANATION))

    @property
    def sql_model(self) -> ConversionModel | None:
        return self.models.get("became_sql")

    @property
    def won_model(self) -> ConversionModel | None:
        return self.models.get("won")

    @property
    def features(self) -> list[str]:
        """The feature columns any of the models reads, in catalogue order."""
        used = {f for m in self.models.values() for f in m.features}
        return [f for f in self.catalogue["name"] if f in used]

    @property
    def categorical(self) -> set[str]:
        """The features any model reads as categories (the others are numbers)."""
        return {c for m in self.models.values() for c in m.levels}

    def derivable_ratios(self, columns) -> list:
        """The derived ratio columns rows with ``columns`` lack but can have computed (both parts given)."""
        return [r for r in self.ratios if r.name not in columns and {r.numerator, r.denominator} <= set(columns)]

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows, checked (:meth:`check_input`), with the derived ratio columns they lack."""
        if not isinstance(frame, pd.DataFrame):
            raise ScoringInputError(f"expected a table of feature rows, got {type(frame).__name__}")
        frame = with_ratios(frame, self.derivable_ratios(frame.columns))
        self.check_input(frame)
        return frame

    def check_columns(self, n: int, columns) -> None:
        """:class:`ScoringInputError` for no rows, or for missing columns (named)."""
        if n == 0:
            raise ScoringInputError("no rows to score: send at least one feature row")
        missing = [c for c in (*KEY_COLUMNS, *self.features) if c not in columns]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise ScoringInputError(f"feature rows lack column(s) {shown}; give the columns `leadscore features` "
                                    "writes (lead_id, as_of and the feature catalogue)")

    @staticmethod
    def not_finite(feature: str, value: float, rows: np.ndarray) -> ScoringInputError:
        """The error of an infinity in a numeric feature (no count, age or amount is infinite,
        and it would overflow the reasons)."""
        return ScoringInputError(f"feature {feature!r} must be a finite number, got {value!r} in {rows_named(rows)}")

    def check_input(self, frame: pd.DataFrame) -> None:
        if not isinstance(frame, pd.DataFrame):
            raise ScoringInputError(f"expected a table of feature rows, got {type(frame).__name__}")
        self.check_columns(len(frame), frame.columns)
        categorical = self.categorical
        numeric = [f for f in self.features if f not in categorical]
        dtypes = frame.dtypes
        bad = [c for c in numeric if not (pd.api.types.is_numeric_dtype(dtypes[c]) or pd.api.types.is_bool_dtype(dtypes[c]))]
        if bad:
            raise ScoringInputError(f"feature column(s) {', '.join(bad[:10])} must be numeric, "
                                    f"got {', '.join(str(dtypes[c]) for c in bad[:10])}")
        floats = [c for c in numeric if pd.api.types.is_float_dtype(dtypes[c])]
        if floats:
            infinite = np.isinf(frame[floats].to_numpy(dtype="float64", na_value=np.nan))
            if infinite.any():
                column = int(np.flatnonzero(infinite.any(axis=0))[0])
                rows = infinite[:, column]
                raise self.not_finite(floats[column], float(frame[floats[column]][rows].iloc[0]), rows)

    def score_points(self, p: np.ndarray) -> np.ndarray:
        """1-99, monotone in the primary probability (a percentile of the reference open leads)."""
        return self.scale.points(p)

    def matrices(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame | np.ndarray]:
        """Each model's input matrix of the rows, by label - for LightGBM trees already the
        array LightGBM reads (:func:`leadscore.modeling.families.lightgbm_matrix`), made once
        for the margin and the contributions; models that read the same features share one."""
        out: dict[str, pd.DataFrame | np.ndarray] = {}
        for name, model in self.models.items():
            out[name] = next((out[o] for o in out if self.models[o].reads_like(model)
                              and isinstance(self.models[o].core, TreeMargin) == isinstance(model.core, TreeMargin)),
                             None)
            if out[name] is None:
                out[name] = model.matrix(frame)
                if isinstance(model.core, TreeMargin):
                    out[name] = lightgbm_matrix(out[name], model.booster)
        return out

    def probabilities(self, frame: pd.DataFrame, matrices: dict | None = None) -> dict[str, np.ndarray]:
        """``p_sql`` and ``p_won`` of the rows (NaN for a label without a model); ``matrices``:
        the rows already prepared by :meth:`matrices`."""
        matrices = self.matrices(frame) if matrices is None else matrices
        return self.probabilities_of({name: model.core.decision_function(matrices[name])
                                      for name, model in self.models.items()}, len(frame))

    def probabilities_of(self, margins: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """output column -> calibrated probability, from each model's raw margins (by label);
        NaN for a label without a model."""
        return {column: self.models[name].probability(margins[name]) if name in self.models else np.full(n, np.nan)
                for name, column in self.probability_columns.items()}

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """lead_id, as_of, p_sql, p_won, score, tier (+ baseline_points / baseline_tier when the
        rows carry them), one row per input row in input order. ``as_of`` without a time zone
        is read as UTC (MLflow's pyfunc schema only takes zone-naive timestamps)."""
        return self.predict_prepared(self.prepare(frame))

    @staticmethod
    def keys(frame: pd.DataFrame) -> dict[str, object]:
        """The output's key columns of the rows: lead_id as text, as_of in UTC (:func:`as_of_utc`)."""
        return {"lead_id": frame["lead_id"].astype("str").to_numpy(), "as_of": as_of_utc(frame["as_of"]).array}

    def predict_prepared(self, frame: pd.DataFrame, matrices: dict | None = None) -> pd.DataFrame:
        """:meth:`predict` of rows :meth:`prepare` has checked (``matrices``: their model inputs)."""
        out = pd.DataFrame(self.keys(frame))
        for column, p in self.probabilities(frame, matrices).items():
            out[column] = p
        p = out[self.probability].to_numpy()
        out["score"] = self.score_points(p)
        out["tier"] = pd.array(self.cutoffs.tier(p), dtype="str")
        for col in BASELINE_COLUMNS:
            if col in frame.columns:
                out[col] = frame[col].to_numpy()
        return out

    def score(self, frame: pd.DataFrame, top_reasons: int = 3) -> pd.DataFrame:
        """:meth:`predict` plus fit_score, engagement_score, grid and ``reasons`` (the top
        reasons for and against in words, one text cell): the columns of
        :data:`leadscore.serving.columns.EXPLAINED_COLUMNS`, then baseline_points / baseline_tier when the rows carry them."""
        from leadscore.serving.explain import explain_lines

        rows = explain_lines(self, frame, top_reasons)
        out = rows[list(self.output_columns[:-1])].copy()
        out["grid"] = out["grid"].astype("str") if self.grid is not None else pd.Series(pd.NA, index=out.index,
                                                                                         dtype="str")
        out["reasons"] = pd.array(rows["reasons"], dtype="str")
        for col in BASELINE_COLUMNS:
            if col in frame.columns:
                out[col] = frame[col].to_numpy()
        return out
