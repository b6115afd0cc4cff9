"""The trained scorer: feature rows in, calibrated probabilities, score and tier out.

One object holds everything a score needs - the ``became_sql`` and ``won`` models with their
calibrators, the cutoffs and the policy they were chosen by, the score scale, the feature
catalogue and configuration, and the rule baseline that always runs alongside. It is what
the bundle under ``models/<name>/`` stores and what the MLflow pyfunc model wraps, so batch
scoring, on-request serving and retraining all use the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leadscore.cutoffs import Cutoffs
from leadscore.features import FeatureConfig
from leadscore.train import ConversionModel

KEY_COLUMNS = ("lead_id", "as_of")
BASELINE_COLUMNS = ("baseline_points", "baseline_tier")
SCORE_COLUMNS = ("lead_id", "as_of", "p_sql", "p_won", "score", "tier")
# What batch scoring and the served model return per lead (baseline columns when the rows carry them).
EXPLAINED_COLUMNS = (*SCORE_COLUMNS, "fit_score", "engagement_score", "grid", "reasons")


class ScoringInputError(ValueError):
    """Feature rows that the scorer cannot use; the message names the columns at fault."""


def score_scale(p: np.ndarray, n_points: int = 98) -> np.ndarray:
    """Break points of the 1-99 score: quantiles of ``p`` on reference data (the calibration
    slice), so a score of 90 means "higher than about 90 % of open leads were"."""
    qs = np.linspace(0, 1, n_points + 2)[1:-1]
    return np.unique(np.quantile(np.asarray(p, dtype="float64"), qs))


@dataclass
class Scorer:
    sql_model: ConversionModel
    won_model: ConversionModel | None
    cutoffs: Cutoffs
    scale: np.ndarray
    catalogue: pd.DataFrame
    feature_config: FeatureConfig
    rules: object | None = None  # leadscore.baseline.RuleSet: the points baseline scored alongside
    grid: object | None = None   # leadscore.explain.GridThresholds: fit x engagement grid cells
    info: dict = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return list(self.sql_model.features)

    def check_input(self, frame: pd.DataFrame) -> None:
        if not isinstance(frame, pd.DataFrame):
            raise ScoringInputError(f"expected a table of feature rows, got {type(frame).__name__}")
        missing = [c for c in (*KEY_COLUMNS, *self.features) if c not in frame.columns]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise ScoringInputError(f"feature rows lack column(s) {shown}; give the columns `leadscore features` "
                                    "writes (lead_id, as_of and the feature catalogue)")
        numeric = [f for f in self.features if f not in self.sql_model.levels]
        bad = [c for c in numeric if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))]
        if bad:
            raise ScoringInputError(f"feature column(s) {', '.join(bad[:10])} must be numeric, "
                                    f"got {', '.join(str(frame[c].dtype) for c in bad[:10])}")

    def score_points(self, p_sql: np.ndarray) -> np.ndarray:
        """1-99, monotone in p_sql (a percentile of the reference open leads)."""
        return (1 + np.searchsorted(self.scale, p_sql, side="right")).astype("int16")

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """lead_id, as_of, p_sql, p_won, score, tier (+ baseline_points / baseline_tier when the
        rows carry them), one row per input row in input order. ``as_of`` without a time zone
        is read as UTC (MLflow's pyfunc schema only takes zone-naive timestamps)."""
        self.check_input(frame)
        X = self.sql_model.matrix(frame)
        p_sql = self.sql_model.predict_proba(frame, X)
        as_of = pd.to_datetime(frame["as_of"])
        as_of = as_of.dt.tz_localize("UTC") if as_of.dt.tz is None else as_of.dt.tz_convert("UTC")
        out = pd.DataFrame({"lead_id": frame["lead_id"].astype("str").to_numpy(), "as_of": as_of.array})
        out["p_sql"] = p_sql
        if self.won_model is not None:
            won_X = X if self.won_model.reads_like(self.sql_model) else None
            out["p_won"] = self.won_model.predict_proba(frame, won_X)
        else:
            out["p_won"] = np.nan
        out["score"] = self.score_points(p_sql)
        out["tier"] = pd.array(self.cutoffs.tier(p_sql), dtype="str")
        for col in BASELINE_COLUMNS:
            if col in frame.columns:
                out[col] = frame[col].to_numpy()
        return out

    def score(self, frame: pd.DataFrame, top_reasons: int = 3) -> pd.DataFrame:
        """:meth:`predict` plus fit_score, engagement_score, grid and ``reasons`` (the top
        reasons for and against in words, one text cell): the columns of
        :data:`EXPLAINED_COLUMNS`, then baseline_points / baseline_tier when the rows carry them."""
        from leadscore.explain import explain_rows, reasons_line

        rows, _ = explain_rows(self, frame, top_reasons)
        out = rows[list(EXPLAINED_COLUMNS[:-1])].copy()
        out["grid"] = out["grid"].astype("str") if self.grid is not None else pd.Series(pd.NA, index=out.index,
                                                                                         dtype="str")
        out["reasons"] = pd.array([reasons_line(p, n) for p, n in zip(rows["reasons_positive"],
                                                                       rows["reasons_negative"])], dtype="str")
        for col in BASELINE_COLUMNS:
            if col in frame.columns:
                out[col] = frame[col].to_numpy()
        return out
