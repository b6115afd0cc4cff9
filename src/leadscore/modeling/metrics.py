"""Evaluation metrics for conversion probabilities: ranking, calibration and lift.

Names follow the project's metric vocabulary (``auc``, ``pr_auc``, ``logloss``, ``brier``,
``ece``, ``lift_top_decile``); callers prefix them with the label and the model, e.g.
``sql_auc``, ``baseline_sql_lift_top_decile``.

Every metric takes an optional ``weight`` per row: the sampling weight of a row drawn from a
sample of leads (1 / its lead's inclusion probability), so that the metric estimates the full
population's value rather than the sample's. Integer weights give what repeating each row that
many times gives; ``weight=None`` is every row once (:func:`sample_weights` checks them).
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


def sample_weights(weight, n: int, name: str = "weight") -> np.ndarray | None:
    """``weight`` as float64, checked: ``n`` finite values above 0 (a row's sampling weight,
    1 / its inclusion probability), else ValueError naming ``name``. None stays None."""
    if weight is None:
        return None
    try:
        w = (weight.to_numpy(dtype="float64", na_value=np.nan) if isinstance(weight, pd.Series)
             else np.asarray(weight, dtype="float64"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numbers, one per row: {e}") from None
    if w.ndim != 1 or len(w) != n:
        raise ValueError(f"{name} must have one value per row: got shape {w.shape} for {n} rows")
    bad = np.flatnonzero(~(np.isfinite(w) & (w > 0)))
    if len(bad):
        raise ValueError(f"{name} must be positive and finite: {len(bad)} of {n} are not, "
                         f"e.g. row {bad[0]}: {float(w[bad[0]])!r}")
    return w


def expected_calibration_error(y, p, n_bins: int = 10, weight=None) -> float:
    """ECE with equal-width probability bins: sum over bins of |mean(p) - mean(y)| x share of rows
    (means and shares weighted by ``weight``, the rows' sampling weights, when given)."""
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    w = sample_weights(weight, len(y))
    w = np.ones(len(y)) if w is None else w
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    w_all = w.sum()
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        w_b = w[m]
        w_sum = w_b.sum()
        total += (w_sum / w_all) * abs((w_b * p[m]).sum() / w_sum - (w_b * y[m]).sum() / w_sum)
    return float(total)


def reliability_table(y, p, n_bins: int = 10, weight=None) -> pd.DataFrame:
    """Per equal-width bin: rows, mean predicted, observed rate - the reliability diagram's data.
    With ``weight`` (sampling weights) ``rows`` is the bin's total weight (an estimate of the
    population's rows), the means are weighted, and ``effective_rows`` (Kish's (sum w)^2 / sum w^2)
    is the number of unweighted rows as precise as the bin's - what an interval rests on."""
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    w = sample_weights(weight, len(y))
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    if w is None:
        frame = pd.DataFrame({"bin": bins, "p": p, "y": y})
        out = frame.groupby("bin").agg(rows=("y", "size"), predicted=("p", "mean"), observed=("y", "mean")).reset_index()
    else:
        out = binned_rates(bins, y, p, w)
    out["bin_low"] = out["bin"] / n_bins
    return out


def binned_rates(bins: np.ndarray, y: np.ndarray, p: np.ndarray, w: np.ndarray) -> pd.DataFrame:
    """Per bin (ascending): ``rows`` (the summed weight), the weighted mean ``predicted`` and
    ``observed`` rate, and ``effective_rows``, Kish's (sum w)^2 / sum w^2 - the number of
    unweighted rows as precise as the bin's, what an interval rests on."""
    sums = pd.DataFrame({"bin": bins, "w": w, "wp": w * p, "wy": w * y, "w2": w * w}).groupby("bin").sum()
    return pd.DataFrame({"rows": sums["w"], "predicted": sums["wp"] / sums["w"], "observed": sums["wy"] / sums["w"],
                         "effective_rows": sums["w"] ** 2 / sums["w2"]}).reset_index()


def lift_top_fraction(y, score, fraction: float = 0.1, weight=None) -> tuple[float, float]:
    """(lift, capture) of the top ``fraction`` of rows by score: its positive rate over the
    overall rate, and the share of all positives it holds. Ties at the cut are split evenly
    (by expected value), so a constant score has lift 1. With ``weight`` (sampling weights)
    the top fraction, the rates and the positives are measured in weight: the top rows whose
    weights sum to ``fraction`` of the total."""
    y, score = np.asarray(y, dtype="float64"), np.asarray(score, dtype="float64")
    w = sample_weights(weight, len(y))
    w = np.ones(len(y)) if w is None else w
    k = fraction * w.sum()
    order = np.argsort(-score, kind="stable")
    s_sorted, w_sorted, wy_sorted = score[order], w[order], (w * y)[order]
    # the row holding the k-th unit of weight (with unit weights: row ceil(k) - 1)
    cut = s_sorted[min(np.searchsorted(np.cumsum(w_sorted), k), len(y) - 1)]
    above = s_sorted > cut
    at = s_sorted == cut
    w_above = w_sorted[above].sum()
    take_at = k - w_above  # weight still needed from the tie block
    pos = wy_sorted[above].sum() + (take_at / w_sorted[at].sum()) * wy_sorted[at].sum() if at.any() else wy_sorted[above].sum()
    pos_all = (w * y).sum()
    rate_top, rate_all = pos / k, pos_all / w.sum()
    if rate_all == 0:
        return float("nan"), float("nan")
    return float(rate_top / rate_all), float(pos / pos_all)


def gains_curve(y, score, points: int = 20, weight=None) -> pd.DataFrame:
    """Share of positives captured (and lift) in the top x % of rows, for x on a grid
    (rows and positives measured in ``weight``, the sampling weights, when given)."""
    w = sample_weights(weight, len(y))
    rows = []
    for q in np.linspace(1 / points, 1.0, points):
        lift, capture = lift_top_fraction(y, score, q, weight=w)
        rows.append({"top_fraction": q, "capture": capture, "lift": lift})
    return pd.DataFrame(rows)


def classification_metrics(y, p, score=None, n_bins: int = 10, weight=None) -> dict[str, float]:
    """auc, pr_auc, logloss, brier, ece, lift_top_decile, capture_top_decile.

    ``p`` are probabilities; ``score`` (default ``p``) ranks rows for AUC and lift, so a
    points-based score can be ranked by its points while calibrated by its own map.
    ``weight``: each row's sampling weight (1 / its inclusion probability), so that metrics on
    a sample of leads estimate the full population's; None counts every row once.
    """
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype="float64"), EPS, 1 - EPS)
    score = p if score is None else np.asarray(score, dtype="float64")
    w = sample_weights(weight, len(y))
    if len(np.unique(y)) < 2:
        raise ValueError(f"metrics need positives and negatives; got {int(y.sum())} positives in {len(y)} rows")
    lift, capture = lift_top_fraction(y, score, 0.1, weight=w)
    return {
        "auc": float(roc_auc_score(y, score, sample_weight=w)),
        "pr_auc": float(average_precision_score(y, score, sample_weight=w)),
        "logloss": float(log_loss(y, p, labels=[0, 1], sample_weight=w)),
        "brier": float(brier_score_loss(y, p, sample_weight=w)),
        "ece": expected_calibration_error(y, p, n_bins, weight=w),
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
