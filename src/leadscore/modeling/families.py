"""Model families: each maps a model matrix to a raw margin (log-odds) and explains it exactly.

Every family answers the same two questions about the rows of a model matrix (the features
in model order, categoricals as ``pd.Categorical`` with the training levels -
:func:`leadscore.modeling.model.as_model_frame`):

* ``decision_function(X)`` - the raw margin the calibrator turns into a probability;
* ``contributions(X)`` - ``(values, base)``: one contribution per feature and row, in the
  margin's log-odds, with ``values.sum(axis=1) + base == decision_function(X)`` exactly.

**Trees** (:class:`TreeMargin`): exact TreeSHAP - :mod:`leadscore.modeling.treeshap`, the same
values as LightGBM's ``pred_contrib`` computed faster (``pred_contrib`` itself when LightGBM
has to convert the frame).

**Logistic regression** (:class:`LinearMargin`): each feature is expanded into its own block of
columns - a categorical into one-hot levels (levels rarer than ``min_frequency`` pooled into
one), a number into a missing-value flag and a linear spline of its signed log (the value and a
hinge at each interior quantile knot) - standardised,
and a penalised logistic regression is fitted on all blocks, its ``C`` chosen by inner
cross-validation on log loss (grouped by lead). The model is additive over features, so its
exact SHAP values (interventional, the training rows as background) are, per feature, the sum
over its block of ``coef * (column - training mean)``; the base is ``intercept + coef . mean``.

**Blend** (:class:`BlendMargin`): a weighted sum of members' margins. Contributions are the
same weighted sum of the members' contributions - exact, because SHAP values are linear in the
model - and the blended margin is then calibrated like any other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

from leadscore.modeling.treeshap import explainer_for


class TreeMargin:
    """A LightGBM booster cut at ``best_iteration`` trees (0: all of them)."""

    family = "lightgbm"

    def __init__(self, booster, best_iteration: int = 0, params: dict | None = None):
        self.booster = booster
        self.best_iteration = int(best_iteration)
        self.params = dict(params or {})

    @property
    def _iteration(self) -> int | None:
        return self.best_iteration or None

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.booster.predict(lightgbm_matrix(X, self.booster), raw_score=True,
                                               num_iteration=self._iteration))

    def contributions(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        X = lightgbm_matrix(X, self.booster)
        if isinstance(X, np.ndarray) and len(X):   # exact, faster than pred_contrib (modeling.treeshap)
            raw = explainer_for(self.booster, self._iteration).contributions(X)
        else:
            raw = np.asarray(self.booster.predict(X, pred_contrib=True, num_iteration=self._iteration))
        return raw[:, :-1], raw[:, -1]

    def explain(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(contributions, base, margin) - the margin computed by the model itself."""
        X = lightgbm_matrix(X, self.booster)
        return (*self.contributions(X), self.decision_function(X))

    def describe(self) -> str:
        p = self.params
        shape = (f" ({p['num_leaves']} leaves, min {p['min_child_samples']} rows per leaf, L2 {p['reg_lambda']:g})"
                 if {"num_leaves", "min_child_samples", "reg_lambda"} <= set(p) else "")
        return f"LightGBM, {self.best_iteration or self.booster.num_trees()} trees{shape}"


def lightgbm_matrix(X, booster):
    """The array LightGBM makes of the model frame ``X`` before it predicts - categoricals as
    their codes (missing: NaN), all columns in the dtype LightGBM chooses - made in one pass
    instead of LightGBM's column-by-column pandas work, which dominates a request of a few rows.
    Returns ``X`` itself when it is not a plain frame whose categories are the booster's
    (LightGBM then converts it as always); the predictions are the same either way."""
    if not isinstance(X, pd.DataFrame) or len(X) == 0:
        return X
    dtypes = list(X.dtypes)
    cat = [i for i, t in enumerate(dtypes) if isinstance(t, pd.CategoricalDtype)]
    known = booster.pandas_categorical or []
    if len(cat) != len(known) or any(list(dtypes[i].categories) != list(c) for i, c in zip(cat, known)):
        return X
    num = sorted(set(range(len(dtypes))) - set(cat))
    if any(not isinstance(dtypes[i], np.dtype) or dtypes[i].kind not in "biuf" for i in num):
        return X   # nullable or other extension dtypes: LightGBM's own conversion
    codes = {i: X.iloc[:, i].cat.codes.to_numpy() for i in cat}
    # as LightGBM: codes with a missing value (-1) become float64, the others keep their integer type
    kinds = [dtypes[i].type for i in num] + [np.float64 if (c < 0).any() else c.dtype.type for c in codes.values()]
    target = np.result_type(*kinds, np.float32)
    out = np.empty((len(X), len(dtypes)), dtype=target)
    if num:
        out[:, num] = X.iloc[:, num].to_numpy(dtype=target)
    for i, c in codes.items():
        out[:, i] = np.where(c < 0, np.nan, c)
    return out


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


class LinearMargin(ClassifierMixin, BaseEstimator):
    """Penalised logistic regression on per-feature blocks (see the module docstring).

    ``Cs``: the inverse regularisation strengths tried (``C`` given: no search). ``cv``: inner
    folds, grouped by ``groups`` when :meth:`fit` gets them. ``n_knots``: quantiles of each
    number's signed log (the outer two are its range) where the linear spline may bend; tied
    quantiles merge (few distinct values: fewer bends, down to a straight line).
    ``min_frequency``: categorical levels with fewer training rows are pooled into one.
    """

    family = "logistic"

    def __init__(self, C: float | None = None, Cs=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3), cv: int = 3,
                 n_knots: int = 5, min_frequency: int = 20, max_iter: int = 2000, seed: int = 0):
        self.C = C
        self.Cs = Cs
        self.cv = cv
        self.n_knots = n_knots
        self.min_frequency = min_frequency
        self.max_iter = max_iter
        self.seed = seed

    # -- the design matrix, one block of columns per feature ---------------------------------
    def _fit_blocks(self, X: pd.DataFrame) -> None:
        self.features_ = list(X.columns)
        self.blocks_ = {}
        for col in self.features_:
            s = X[col]
            if isinstance(s.dtype, pd.CategoricalDtype):
                codes = s.cat.codes.to_numpy()
                values, counts = np.unique(codes, return_counts=True)
                self.blocks_[col] = ("categorical", values[counts >= self.min_frequency])
            else:
                x = s.to_numpy(dtype="float64")
                missing = np.isnan(x)
                fill = float(np.median(x[~missing])) if (~missing).any() else 0.0
                v = _signed_log1p(np.where(missing, fill, x))
                knots = np.unique(np.quantile(v, np.linspace(0, 1, self.n_knots)))[1:-1]  # interior knots
                self.blocks_[col] = ("numeric", (fill, bool(missing.any()), knots))

    def _block(self, col: str, s: pd.Series) -> np.ndarray:
        kind, spec = self.blocks_[col]
        if kind == "categorical":
            codes = s.cat.codes.to_numpy()
            kept = spec
            onehot = (codes[:, None] == kept[None, :]).astype("float64")
            pooled = (~np.isin(codes, kept)).astype("float64")[:, None]  # rare, unseen (and missing if rare)
            return np.hstack([onehot, pooled])
        fill, flag, knots = spec
        x = s.to_numpy(dtype="float64")
        missing = np.isnan(x)
        v = _signed_log1p(np.where(missing, fill, x))
        # a linear spline: the value and a hinge at each interior knot (slope may change there)
        parts = [v[:, None], np.maximum(v[:, None] - knots[None, :], 0.0)]
        if flag:
            parts.append(missing.astype("float64")[:, None])
        return np.hstack(parts)

    def _design(self, X: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.features_ if c not in X.columns]
        if missing:
            raise ValueError(f"the model matrix lacks column(s) {missing[:10]}")
        Z = np.hstack([self._block(c, X[c]) for c in self.features_])
        return (Z - self.center_) / self.scale_

    def fit(self, X: pd.DataFrame, y, sample_weight=None, groups=None):
        y = np.asarray(y).astype(int)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype="float64")
        self._fit_blocks(X)
        raw = [self._block(c, X[c]) for c in self.features_]
        widths = [b.shape[1] for b in raw]
        Z = np.hstack(raw)
        self.center_ = np.average(Z, axis=0, weights=w)
        sd = np.sqrt(np.average((Z - self.center_) ** 2, axis=0, weights=w))
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        Z = (Z - self.center_) / self.scale_
        ends = np.cumsum(widths)
        self.slices_ = {c: slice(int(e - n), int(e)) for c, n, e in zip(self.features_, widths, ends)}
        if self.C is not None:
            model = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(Z, y, sample_weight=w)
            self.C_ = float(self.C)
        else:
            from sklearn.model_selection import GroupKFold, StratifiedKFold

            if groups is not None:
                splits = list(GroupKFold(n_splits=self.cv).split(Z, y, np.asarray(groups)))
            else:
                splits = list(StratifiedKFold(n_splits=self.cv, shuffle=True, random_state=self.seed).split(Z, y))
            model = LogisticRegressionCV(Cs=list(self.Cs), cv=splits, scoring="neg_log_loss", max_iter=self.max_iter,
                                         l1_ratios=(0.0,), use_legacy_attributes=False).fit(Z, y, sample_weight=w)
            self.C_ = float(model.C_)
        self.coef_ = model.coef_[0].copy()
        self.intercept_ = float(model.intercept_[0])
        self.classes_ = np.array([0, 1])
        self.n_terms_ = int(Z.shape[1])
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        return self._margin(self._design(X))

    def _margin(self, design: np.ndarray) -> np.ndarray:
        """``design @ coef + intercept``, added term after term: a row's margin is the same scored
        alone or among any number of rows (a matrix product orders its additions by the shape)."""
        margin = np.zeros(len(design))
        for j, c in enumerate(self.coef_):
            margin += design[:, j] * c
        return margin + self.intercept_

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p, p])

    def contributions(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self.explain(X)[:2]

    def explain(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(contributions, base, margin) from one design matrix; the margin is the model's own
        ``design @ coef + intercept``."""
        design = self._design(X)
        margin = self._margin(design)
        # The design is centred on the training mean: each column's term is its SHAP value.
        terms = design * self.coef_
        ends = np.array([self.slices_[c].stop for c in self.features_])
        cum = np.concatenate([np.zeros((len(X), 1)), np.cumsum(terms, axis=1)], axis=1)
        starts = np.array([self.slices_[c].start for c in self.features_])
        return cum[:, ends] - cum[:, starts], np.full(len(X), self.intercept_), margin

    def describe(self) -> str:
        return f"logistic regression, {self.n_terms_} terms, C={self.C_:g}"


class BlendMargin:
    """``sum(weight * member margin)`` over ``members`` ((weight, family) pairs)."""

    family = "blend"

    def __init__(self, members: list[tuple[float, object]]):
        self.members = [(float(w), m) for w, m in members]

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        return sum(w * m.decision_function(X) for w, m in self.members)

    def contributions(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self.explain(X)[:2]

    def explain(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values, base, margin = 0.0, 0.0, 0.0
        for w, m in self.members:
            v, b, g = m.explain(X)
            values, base, margin = values + w * v, base + w * b, margin + w * g
        return values, base, margin

    def describe(self) -> str:
        return "blend of " + " and ".join(f"{w:g} x {m.describe()}" for w, m in self.members)
