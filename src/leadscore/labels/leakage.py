"""Leakage audit: a feature that alone predicts the label almost perfectly is suspect.

For each feature, the single-feature ROC AUC against the label: categorical values (and
quantile bins of numeric features, plus a bin for missing) are replaced by their positive
rate, and that rate is the score. Values seen fewer than ``min_support`` times are pooled, so
an id-like column cannot look predictive by memorising rows. Any feature at or above
``threshold`` (default 0.9) is reported as suspected leakage, e.g. a status the sales team
fills in after contacting the lead.

A feature computed point in time by construction (``point_in_time``: counts of events before
as_of, attributes read from an attribute history) cannot carry an outcome from the future:
its AUC is reported, but it is never suspected - a strong signal there is signal. A constant
feature (one value, or missing everywhere) carries no signal and is left out.
With fewer than ``min_positives`` positive (or negative) labels a single value shared by the
few positives looks "predictive" by chance, so the audit refuses (:class:`AuditSkipped`)
rather than name suspects.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import Field
from sklearn.metrics import roc_auc_score

from leadscore.settings import Section, Whole

RARE = "__rare__"


class AuditSkipped(ValueError):
    """Too few positive (or negative) labels to tell leakage from chance."""


def _binned(values: pd.Series, min_support: int, n_bins: int) -> pd.Series:
    if isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(values) \
            or pd.api.types.is_bool_dtype(values):
        keys = values.astype("object").where(values.notna(), "__missing__").astype(str)
    else:
        numeric = values.astype("float64")
        keys = pd.Series("__missing__", index=values.index, dtype=object)
        present = numeric.notna()
        ranks = numeric[present].rank(method="dense")
        if ranks.nunique() > 1:
            bins = pd.qcut(ranks, q=min(n_bins, int(present.sum())), labels=False, duplicates="drop")
            keys[present] = bins.astype(int).astype(str)
        elif present.any():  # one value: a single bin (qcut cannot cut it)
            keys[present] = "0"
    counts = keys.map(keys.value_counts())
    return keys.where(counts >= min_support, RARE)


def single_feature_auc(values: pd.Series, y: np.ndarray, min_support: int = 30, n_bins: int = 20,
                       weight: np.ndarray | None = None) -> float:
    """ROC AUC of the feature's per-value positive rate as a score (0.5 = no signal); with
    ``weight`` (a sample's example weights) both the rates and the AUC are weighted."""
    keys = _binned(values.reset_index(drop=True), min_support, n_bins)
    y = pd.Series(np.asarray(y, dtype="float64"))
    if weight is None:
        score = keys.map(y.groupby(keys).mean())
    else:
        w = pd.Series(np.asarray(weight, dtype="float64"))
        score = keys.map((y * w).groupby(keys).sum() / w.groupby(keys).sum())
    auc = roc_auc_score(y, score, sample_weight=weight)
    return float(max(auc, 1.0 - auc))


def leakage_audit(features: pd.DataFrame, y, threshold: float = 0.9, min_support: int = 30,
                  n_bins: int = 20, min_positives: int = 10, point_in_time=(), weight=None) -> pd.DataFrame:
    """feature, auc, point_in_time, suspected (auc >= threshold and not point in time) - sorted
    by AUC, highest first; constant features left out. Raises :class:`AuditSkipped` with fewer
    than ``min_positives`` positive or negative labels. ``weight``: the rows' example weights
    (a sample of leads, :data:`leadscore.labels.examples.WEIGHT`)."""
    y = np.asarray(y).astype(bool)
    if len(y) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(y)} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if min(n_pos, n_neg) < min_positives:
        raise AuditSkipped(f"leakage audit skipped: {n_pos:,} positive and {n_neg:,} negative labels; at least "
                           f"{min_positives} of each are needed to tell leakage from chance (leakage.min_positives)")
    audited = [col for col in features.columns if features[col].nunique(dropna=False) > 1]
    rows = [{"feature": col, "auc": single_feature_auc(features[col], y, min_support, n_bins, weight)} for col in audited]
    if not rows:
        return empty_audit()
    out = pd.DataFrame(rows).sort_values("auc", ascending=False, kind="stable").reset_index(drop=True)
    out["point_in_time"] = out["feature"].isin(set(point_in_time))
    out["suspected"] = (out["auc"] >= threshold) & ~out["point_in_time"]
    return out


def empty_audit() -> pd.DataFrame:
    return pd.DataFrame({"feature": pd.Series(dtype="str"), "auc": pd.Series(dtype="float64"),
                         "point_in_time": pd.Series(dtype="bool"), "suspected": pd.Series(dtype="bool")})


def format_audit(audit: pd.DataFrame, top: int = 10, threshold: float = 0.9) -> str:
    suspects = audit[audit["suspected"]]
    width = max([len(str(f)) for f in audit["feature"].head(top)] + [10])
    lines = [f"leakage audit: single-feature ROC AUC, top {min(top, len(audit))} of {len(audit)} features "
             f"(suspected at >= {threshold:g})"]
    for row in audit.head(top).itertuples():
        flag = ("  <- suspected leakage" if row.suspected else
                "  (point in time by construction: signal, not leakage)" if row.auc >= threshold else "")
        lines.append(f"  {row.feature:<{width}} {row.auc:.3f}{flag}")
    if len(suspects):
        lines.append("suspected leakage: " + ", ".join(suspects["feature"])
                     + " (a feature this predictive on its own is often filled in after the outcome; "
                       "exclude it unless you know it is available at scoring time)")
    elif (audit["auc"] >= threshold).any():
        lines.append("no suspected leakage: the features above the threshold are computed point in time")
    else:
        lines.append("no feature above the leakage threshold")
    return "\n".join(lines)


class LeakageConfig(Section):
    """``threshold``: single-feature AUC at which a feature is suspected; ``min_support``:
    fewest rows a value (or bin) needs to keep its own positive rate; ``n_bins``: quantile
    bins for numeric features; ``min_positives``: fewest positive (and negative) labels to
    audit at all."""

    threshold: Annotated[float, Field(gt=0.5, le=1.0)] = 0.9
    min_support: Whole = 30
    n_bins: Annotated[int, Field(ge=2)] = 20
    min_positives: Whole = 10
