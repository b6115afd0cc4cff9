"""Calibration of a model's raw margin into probabilities: isotonic or sigmoid, chosen by log loss.

Both are fitted on the calibration slice (newer than the training data, other leads). The
choice between them is made by grouped cross-validation *inside* that slice, so isotonic's
flexibility is not rewarded for fitting the very rows it is judged on; the winner is then
refitted on the whole slice. Both maps are monotone, so ranking (AUC, lift) is unchanged.

When the slice is a sample of leads, ``fit``'s ``sample_weight`` (1 / each row's inclusion
probability) weights the choice's log loss and both fits, so that the map estimates the full
population's conversion rate at each margin rather than the (positive-enriched) sample's.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from leadscore.modeling.metrics import sample_weights

EPS = 1e-6
METHODS = ("isotonic", "sigmoid")


def grouped_stratified_folds(y, groups, n_splits: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row indices of ``n_splits`` folds: every group (a lead) in exactly one test
    fold, and positives and rows spread evenly - the groups are dealt to the folds in turn, those
    with the most positives first, then the largest (ties in a fixed shuffled order).

    What scikit-learn's StratifiedGroupKFold is for, at a fraction of its cost: it searches the
    best fold for one group at a time (seconds for 10k leads, on every calibration fit; this
    takes milliseconds - ``benchmarks/bench_folds.py``)."""
    _, group = np.unique(np.asarray(groups), return_inverse=True)
    positives = np.bincount(group, weights=np.asarray(y, dtype="float64"))
    rows = np.bincount(group)
    order = np.random.default_rng(seed).permutation(len(rows))
    order = order[np.lexsort((-rows[order], -positives[order]))]
    fold_of = np.empty(len(rows), dtype=np.int64)
    fold_of[order] = np.arange(len(rows)) % n_splits
    fold = fold_of[group]
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_splits)]


class MarginCalibrator(BaseEstimator):
    """Map a raw margin (log-odds) to a probability. ``method``: isotonic, sigmoid or auto."""

    def __init__(self, method: str = "auto", n_splits: int = 5):
        self.method = method
        self.n_splits = n_splits

    @staticmethod
    def _fit_one(method: str, margin: np.ndarray, y: np.ndarray, w: np.ndarray | None = None):
        if method == "isotonic":
            return IsotonicRegression(out_of_bounds="clip", y_min=EPS, y_max=1 - EPS).fit(margin, y, sample_weight=w)
        if method == "sigmoid":
            return LogisticRegression(C=1e6, max_iter=1000).fit(margin.reshape(-1, 1), y, sample_weight=w)
        raise ValueError(f"unknown calibration method {method!r}; use one of {METHODS} or auto")

    @staticmethod
    def _apply(model, margin: np.ndarray) -> np.ndarray:
        """What ``predict`` / ``predict_proba`` of the fitted model give for float64 margins, the
        same arithmetic from its fitted attributes without scikit-learn's input checks, which
        cost more than the arithmetic on the few rows of a served request."""
        margin = np.asarray(margin, dtype="float64").reshape(-1)
        if isinstance(model, IsotonicRegression):   # out_of_bounds="clip": clipped, then interpolated
            p = model.f_(np.clip(margin, model.X_min_, model.X_max_)).astype("float64")
        else:
            p = expit(margin.reshape(-1, 1) @ model.coef_.T + model.intercept_).reshape(-1)
        return np.clip(p, EPS, 1 - EPS)

    def fit(self, margin, y, groups=None, sample_weight=None):
        """Fit the map (choosing the method by grouped cross-validated log loss for ``auto``).

        ``groups``: each row's lead, kept within one fold. ``sample_weight``: each row's
        sampling weight (1 / its inclusion probability) when the rows are a sample of leads;
        it weights the cross-validated log loss and every fit. Folds are dealt by rows, unweighted.
        """
        margin, y = np.asarray(margin, dtype="float64"), np.asarray(y).astype(int)
        w = sample_weights(sample_weight, len(y), "sample_weight")
        self.cv_logloss_ = {}
        if self.method == "auto":
            groups = np.arange(len(y)) if groups is None else np.asarray(groups)
            n_splits = max(2, min(self.n_splits, len(np.unique(groups)), int(y.sum())))
            folds = grouped_stratified_folds(y, groups, n_splits)
            for method in METHODS:
                pred = np.empty(len(y))
                for tr, te in folds:
                    w_tr = None if w is None else w[tr]
                    if len(np.unique(y[tr])) < 2:  # too few positives for this fold: its base rate
                        pred[te] = np.clip(np.average(y[tr], weights=w_tr), EPS, 1 - EPS)
                        continue
                    pred[te] = self._apply(self._fit_one(method, margin[tr], y[tr], w_tr), margin[te])
                self.cv_logloss_[method] = float(log_loss(y, pred, labels=[0, 1], sample_weight=w))
            self.method_ = min(self.cv_logloss_, key=self.cv_logloss_.get)
        else:
            self.method_ = self.method
        self.model_ = self._fit_one(self.method_, margin, y, w)
        return self

    def predict(self, margin) -> np.ndarray:
        return self._apply(self.model_, np.asarray(margin, dtype="float64"))
