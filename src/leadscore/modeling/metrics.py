"""Evaluation metrics for conversion probabilities: ranking, calibration and lift.

Names follow the project's metric vocabulary (``auc``, ``pr_auc``, ``logloss``, ``brier``,
``ece``, ``lift_top_decile``); callers prefix them with the label and the model, e.g.
``sql_auc``, ``baseline_sql_lift_top_decile``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

EPS = 1e-6
_CHUNK_DRAWS = 4_000_000  # bootstrap draws held in memory at once


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    """ECE with equal-width probability bins: sum over bins of |mean(p) - mean(y)| x share of rows."""
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        total += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(total)


def reliability_table(y, p, n_bins: int = 10) -> pd.DataFrame:
    """Per equal-width bin: rows, mean predicted, observed rate - the reliability diagram's data."""
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    frame = pd.DataFrame({"bin": bins, "p": p, "y": y})
    out = frame.groupby("bin").agg(rows=("y", "size"), predicted=("p", "mean"), observed=("y", "mean")).reset_index()
    out["bin_low"] = out["bin"] / n_bins
    return out


def lift_top_fraction(y, score, fraction: float = 0.1) -> tuple[float, float]:
    """(lift, capture) of the top ``fraction`` of rows by score: its positive rate over the
    overall rate, and the share of all positives it holds. Ties at the cut are split evenly
    (by expected value), so a constant score has lift 1."""
    y, score = np.asarray(y, dtype="float64"), np.asarray(score, dtype="float64")
    n = len(y)
    k = fraction * n
    order = np.argsort(-score, kind="stable")
    s_sorted, y_sorted = score[order], y[order]
    cut = s_sorted[int(np.ceil(k)) - 1] if k >= 1 else s_sorted[0]
    above = s_sorted > cut
    at = s_sorted == cut
    n_above = above.sum()
    take_at = k - n_above  # rows still needed from the tie block
    pos = y_sorted[above].sum() + (take_at / at.sum()) * y_sorted[at].sum() if at.any() else y_sorted[above].sum()
    rate_top, rate_all = pos / k, y.mean()
    if rate_all == 0:
        return float("nan"), float("nan")
    return float(rate_top / rate_all), float(pos / y.sum())


def gains_curve(y, score, points: int = 20) -> pd.DataFrame:
    """Share of positives captured (and lift) in the top x % of rows, for x on a grid."""
    rows = []
    for q in np.linspace(1 / points, 1.0, points):
        lift, capture = lift_top_fraction(y, score, q)
        rows.append({"top_fraction": q, "capture": capture, "lift": lift})
    return pd.DataFrame(rows)


def classification_metrics(y, p, score=None, n_bins: int = 10) -> dict[str, float]:
    """auc, pr_auc, logloss, brier, ece, lift_top_decile, capture_top_decile.

    ``p`` are probabilities; ``score`` (default ``p``) ranks rows for AUC and lift, so a
    points-based score can be ranked by its points while calibrated by its own map.
    """
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype="float64"), EPS, 1 - EPS)
    score = p if score is None else np.asarray(score, dtype="float64")
    if len(np.unique(y)) < 2:
        raise ValueError(f"metrics need positives and negatives; got {int(y.sum())} positives in {len(y)} rows")
    lift, capture = lift_top_fraction(y, score, 0.1)
    return {
        "auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "logloss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p, n_bins),
        "lift_top_decile": lift,
        "capture_top_decile": capture,
    }


# ---------------------------------------------------------------------------
# Bootstrap over leads
# ---------------------------------------------------------------------------

def lead_bootstrap_sums(codes: np.ndarray, n_leads: int, columns: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Per resample of leads (with replacement; a lead's examples move together): the column sums.

    Sums per lead are taken once; a resample is then a vector of how often each lead was drawn,
    so its sums are one matrix product. Returns ``(n_resamples, n_columns)``."""
    per_lead = np.column_stack([np.bincount(codes, weights=c, minlength=n_leads) for c in columns.T])
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, per_lead.shape[1]))
    chunk = max(1, min(n_resamples, _CHUNK_DRAWS // n_leads))
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        draws = rng.integers(0, n_leads, size=(m, n_leads)) + (np.arange(m) * n_leads)[:, None]
        counts = np.bincount(draws.ravel(), minlength=m * n_leads).reshape(m, n_leads)
        out[start:start + m] = counts.astype("float64") @ per_lead
    return out


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap values (NaN and inf left out)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = 1 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def wilson_interval(k, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of k successes in n trials (element-wise; NaN where n == 0)."""
    k, n = np.asarray(k, dtype="float64"), np.asarray(n, dtype="float64")
    z = _z(confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
        low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    bad = n <= 0
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)
