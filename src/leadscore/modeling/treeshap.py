"""Exact TreeSHAP for a LightGBM booster, faster than LightGBM's own ``pred_contrib``.

The same numbers as ``booster.predict(X, pred_contrib=True)`` (the tests check every run to
1e-9), computed another way - the per-leaf precomputation of Fast TreeSHAP v2 (Yang, 2021):

A tree's TreeSHAP values are a sum over its leaves. For one leaf only the *distinct* features
on its root-to-leaf path matter, each with

* ``z`` - the share of training rows that follow the path at that feature's splits (the
  product of child over parent row counts), and
* ``o`` - 1 if the row itself follows the path at all of that feature's splits, else 0.

The leaf adds to feature ``i`` the Shapley value of the game
``f(S) = value * prod(o_j, j in S) * prod(z_j, j not in S)``:
``value * (o_i - z_i) * sum_S |S|!(d-|S|-1)!/d! * prod(o_j, j in S) * prod(z_j, j not in S+i)``,
which depends on the row only through its ``d`` bits ``o``. For every leaf with
``d <= table_depth`` the ``d`` values are computed once for all ``2**d`` patterns when the
explainer is built; explaining a row is then one pass over each tree's splits (which way the
row goes at each) and one table look-up per leaf (rows go through in blocks, tree by tree, so
a tree's tables are read from the cache by the whole block) - O(leaves x depth) per tree instead of
TreeSHAP's O(leaves x depth**2). Leaves with deeper paths get the same formula evaluated for
the row's pattern. Splits are decided exactly as LightGBM decides them (missing values, zero
as missing, categorical sets), so the row takes the path it takes in ``predict``.

Large batches are split over the cores (numba ``prange``); small requests run on one thread.
The kernels are compiled on first use and cached in ``$NUMBA_CACHE_DIR`` or, when that is not
set, ``~/.cache/leadscore/numba`` - never beside this file, which for a registered model is the
registry's copy of the code: a compiled file there would change the model's artifacts (and the
registry check refuses files the manifest does not record).
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import weakref
from collections import namedtuple
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange


def _cache_outside_the_code() -> bool:
    """Point numba's cache (unless the user did) at a writable directory of this user's; False:
    there is none, so compile in every process rather than write beside the code."""
    if numba.config.CACHE_DIR:
        return True
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for where in (home / "leadscore" / "numba", Path(tempfile.gettempdir()) / f"leadscore-numba-{os.getuid()}"):
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(where, os.W_OK):
            numba.config.CACHE_DIR = str(where)
            return True
    return False


CACHE = _cache_outside_the_code()

TABLE_DEPTH = 10      # tables for leaves with up to 10 distinct features: at most 80 KB a leaf
PARALLEL_ROWS = 2000  # from this many rows on, the rows are split over the cores
BLOCK_ROWS = 256      # rows explained together, tree by tree
_ZERO = float(np.float32(1e-35))   # LightGBM's kZeroThreshold (a float widened to double)
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}

# The trees, flattened. Internal nodes are numbered within their tree; ``step_*`` are the
# root-to-leaf steps of every leaf, ``slot_*`` the distinct features on each leaf's path.
Trees = namedtuple("Trees", [
    "tree_node", "tree_leaf",                               # per tree: first node / first leaf (+ end)
    "feature", "threshold", "categorical", "default_left", "missing", "cat_from",   # per node
    "cats",                                                 # categories going left, all nodes
    "leaf_value", "leaf_d", "leaf_step", "leaf_slot", "leaf_table",                 # per leaf
    "step_node", "step_left", "step_slot",                  # per step
    "slot_feature", "slot_z",                               # per slot
    "table", "base", "max_nodes", "max_d",
])


class TreeExplainer:
    """Exact SHAP contributions of a binary LightGBM booster's raw margin, in ``pred_contrib``'s
    layout: one column per feature and the expected value last.

    ``booster``: the trained model; ``iteration``: the number of trees used (``None``: all).
    Build once per model (:func:`explainer_for` caches one) and call :meth:`contributions`
    with the float matrix LightGBM would predict on (categoricals as their codes)."""

    def __init__(self, booster, iteration: int | None = None, table_depth: int = TABLE_DEPTH):
        if not 0 <= table_depth <= 20:
            raise ValueError(f"table_depth must be between 0 and 20 (2**table_depth rows a leaf), got {table_depth}")
        dump = booster.dump_model(num_iteration=iteration or -1)
        if dump.get("num_tree_per_iteration", 1) != 1 or any(t.get("is_linear") for t in dump["tree_info"]):
            raise ValueError("exact fast TreeSHAP covers single-output boosters without linear leaves")
        self.n_features = int(dump["max_feature_idx"]) + 1
        self.trees = _flatten([t["tree_structure"] for t in dump["tree_info"]], table_depth)

    def contributions(self, X: np.ndarray, parallel_rows: int = PARALLEL_ROWS,
                      block_rows: int = BLOCK_ROWS) -> np.ndarray:
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a matrix of {self.n_features} feature columns, got shape {X.shape}")
        out = np.empty((len(X), self.n_features + 1))
        if len(X) >= parallel_rows:
            with _PARALLEL:   # numba's default thread pool must not be entered by two threads at once
                _explain_parallel(X, out, self.trees, block_rows)
        else:
            _explain_rows(X, 0, len(X), out, self.trees, block_rows)
        return out


_PARALLEL = threading.Lock()
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def explainer_for(booster, iteration: int | None = None) -> TreeExplainer:
    """The :class:`TreeExplainer` of ``booster`` cut at ``iteration`` trees, built on first use."""
    per_booster = _CACHE.setdefault(booster, {})
    if iteration not in per_booster:
        per_booster[iteration] = TreeExplainer(booster, iteration)
    return per_booster[iteration]


# ---------------------------------------------------------------------------
# Flattening LightGBM's model dump
# ---------------------------------------------------------------------------

def _flatten(trees: list[dict], table_depth: int) -> Trees:
    nodes = {k: [] for k in ("feature", "threshold", "categorical", "default_left", "missing", "cat_from")}
    cats: list[int] = []
    leaves = {k: [] for k in ("value", "d", "step", "slot")}
    steps = {k: [] for k in ("node", "left", "slot")}
    slot_feature: list[int] = []
    slot_z: list[float] = []
    tree_node, tree_leaf = [0], [0]
    base = 0.0

    for root in trees:
        if "leaf_value" in root:   # a tree of one leaf moves only the expected value
            base += float(root["leaf_value"])
            tree_node.append(tree_node[-1])
            tree_leaf.append(tree_leaf[-1])
            continue
        first = len(nodes["feature"])
        total = float(root["internal_count"])

        def node_of(n: dict) -> int:
            local = len(nodes["feature"]) - first
            nodes["feature"].append(int(n["split_feature"]))
            categorical = n["decision_type"] == "=="
            nodes["categorical"].append(categorical)
            nodes["threshold"].append(0.0 if categorical else float(n["threshold"]))
            nodes["default_left"].append(bool(n["default_left"]))
            nodes["missing"].append(_MISSING[n["missing_type"]])
            nodes["cat_from"].append(len(cats))
            if categorical:
                cats.extend(int(c) for c in str(n["threshold"]).split("||"))
            return local

        # depth-first, carrying the path: (local node, went left, feature, child/parent count)
        stack = [(root, [])]
        while stack:
            n, path = stack.pop()
            if "leaf_value" in n:
                value = float(n["leaf_value"])
                base += value * float(n["leaf_count"]) / total
                slots: dict[int, int] = {}
                z: list[float] = []
                leaves["step"].append(len(steps["node"]))
                leaves["slot"].append(len(slot_feature))
                for local, left, feature, share in path:
                    if feature not in slots:
                        slots[feature] = len(z)
                        z.append(1.0)
                        slot_feature.append(feature)
                    z[slots[feature]] *= share
                    steps["node"].append(local)
                    steps["left"].append(left)
                    steps["slot"].append(slots[feature])
                slot_z.extend(z)
                leaves["value"].append(value)
                leaves["d"].append(len(z))
                continue
            local = node_of(n)
            count = float(n["internal_count"])
            for child, left in ((n["right_child"], False), (n["left_child"], True)):
                share = float(child.get("internal_count", child.get("leaf_count"))) / count
                stack.append((child, path + [(local, left, int(n["split_feature"]), share)]))
        tree_node.append(len(nodes["feature"]))
        tree_leaf.append(len(leaves["value"]))

    leaf_d = np.asarray(leaves["d"], dtype=np.int64)
    leaf_table = np.full(len(leaf_d), -1, dtype=np.int64)
    sizes = np.where(leaf_d <= table_depth, (1 << np.minimum(leaf_d, 62)) * leaf_d, 0)
    tabled = leaf_d <= table_depth
    leaf_table[tabled] = (np.cumsum(sizes) - sizes)[tabled]
    leaf_slot = np.asarray(leaves["slot"] + [len(slot_feature)], dtype=np.int64)
    trees_ = Trees(
        tree_node=np.asarray(tree_node, np.int64), tree_leaf=np.asarray(tree_leaf, np.int64),
        feature=np.asarray(nodes["feature"], np.int64), threshold=np.asarray(nodes["threshold"], np.float64),
        categorical=np.asarray(nodes["categorical"], np.bool_), default_left=np.asarray(nodes["default_left"], np.bool_),
        missing=np.asarray(nodes["missing"], np.int64),
        cat_from=np.asarray(nodes["cat_from"] + [len(cats)], np.int64), cats=np.asarray(cats, np.int64),
        leaf_value=np.asarray(leaves["value"], np.float64), leaf_d=leaf_d,
        leaf_step=np.asarray(leaves["step"] + [len(steps["node"])], np.int64), leaf_slot=leaf_slot,
        leaf_table=leaf_table,
        step_node=np.asarray(steps["node"], np.int64), step_left=np.asarray(steps["left"], np.bool_),
        step_slot=np.asarray(steps["slot"], np.int64),
        slot_feature=np.asarray(slot_feature, np.int64), slot_z=np.asarray(slot_z, np.float64),
        table=np.zeros(int(sizes.sum())), base=base,
        max_nodes=int(np.diff(tree_node).max(initial=0)), max_d=int(leaf_d.max(initial=0)),
    )
    _fill_tables(trees_)
    return trees_


# ---------------------------------------------------------------------------
# The kernels
# ---------------------------------------------------------------------------

@njit(cache=CACHE)
def _leaf_phi(o, z, d, value, p, w, out):
    """``out[:d]``: the leaf's share of each path feature's contribution for the pattern ``o``
    (``p``: d + 1, ``w``: d scratch values)."""
    # w[k] = k!(d-1-k)!/d!, the weight of the subsets of size k
    w[0] = 1.0 / d
    for k in range(d - 1):
        w[k + 1] = w[k] * (k + 1) / (d - 1 - k)
    # p: the coefficients of prod_j (z_j + o_j t) - the subsets of size k, each weighed by its z and o
    p[0] = 1.0
    for k in range(1, d + 1):
        p[k] = 0.0
    for j in range(d):
        for k in range(j + 1, 0, -1):
            p[k] = z[j] * p[k] + o[j] * p[k - 1]
        p[0] = z[j] * p[0]
    # without feature i: divide by (z_i + o_i t)
    for i in range(d):
        total = 0.0
        if o[i]:
            q = p[d]   # from the top: q_(k-1) = p_k - z_i q_k
            for k in range(d - 1, -1, -1):
                total += w[k] * q
                q = p[k] - z[i] * q
        elif z[i] > 0.0:
            for k in range(d):
                total += w[k] * p[k] / z[i]
        out[i] = value * (o[i] - z[i]) * total


@njit(cache=CACHE)
def _fill_tables(t):
    o = np.empty(max(t.max_d, 1), np.uint8)
    p = np.empty(t.max_d + 1)
    w = np.empty(max(t.max_d, 1))
    for leaf in range(len(t.leaf_d)):
        start = t.leaf_table[leaf]
        if start < 0:
            continue
        d = t.leaf_d[leaf]
        z = t.slot_z[t.leaf_slot[leaf]:t.leaf_slot[leaf + 1]]
        for mask in range(1 << d):
            for j in range(d):
                o[j] = (mask >> j) & 1
            _leaf_phi(o, z, d, t.leaf_value[leaf], p, w, t.table[start + mask * d:start + (mask + 1) * d])


@njit(cache=CACHE)
def _goes_left(x, node, t):
    """LightGBM's decision at ``node`` for the value ``x`` (``Tree::Decision``)."""
    if t.categorical[node]:   # left: the category is in the node's set; missing or negative: right
        if math.isnan(x) or x >= 2147483648.0:
            return False
        code = int(x)
        if code < 0:
            return False
        for c in range(t.cat_from[node], t.cat_from[node + 1]):
            if t.cats[c] == code:
                return True
        return False
    missing = t.missing[node]
    if math.isnan(x):   # missing: the default side if the node learnt one for NaN, else read as 0
        if missing == 2:
            return t.default_left[node]
        x = 0.0
    if missing == 1 and -_ZERO <= x and x <= _ZERO:
        return t.default_left[node]
    return x <= t.threshold[node]


@njit(cache=CACHE)
def _explain_rows(X, lo, hi, out, t, block_rows):
    """Rows ``lo`` to ``hi`` into ``out``, a block of rows at a time tree by tree: one tree's
    tables stay in the cache while every row of the block reads them."""
    goes_left = np.empty(max(t.max_nodes, 1), np.bool_)
    o = np.empty(max(t.max_d, 1), np.uint8)
    p = np.empty(t.max_d + 1)
    w = np.empty(max(t.max_d, 1))
    phi = np.empty(max(t.max_d, 1))
    for block in range(lo, hi, block_rows):
        end = min(block + block_rows, hi)
        for r in range(block, end):
            out[r, :] = 0.0
            out[r, -1] = t.base
        for tree in range(len(t.tree_node) - 1):
            first = t.tree_node[tree]
            for r in range(block, end):
                for local in range(t.tree_node[tree + 1] - first):
                    goes_left[local] = _goes_left(X[r, t.feature[first + local]], first + local, t)
                for leaf in range(t.tree_leaf[tree], t.tree_leaf[tree + 1]):
                    d = t.leaf_d[leaf]
                    s0 = t.leaf_slot[leaf]
                    start = t.leaf_table[leaf]
                    if start >= 0:   # the row's pattern as bits, and its precomputed values
                        mask = (np.int64(1) << d) - 1
                        for s in range(t.leaf_step[leaf], t.leaf_step[leaf + 1]):   # no branch: a bit off per miss
                            mask &= ~(np.int64(goes_left[t.step_node[s]] ^ t.step_left[s]) << t.step_slot[s])
                        at = start + mask * d
                        for j in range(d):
                            out[r, t.slot_feature[s0 + j]] += t.table[at + j]
                    else:
                        for j in range(d):
                            o[j] = 1
                        for s in range(t.leaf_step[leaf], t.leaf_step[leaf + 1]):
                            if goes_left[t.step_node[s]] != t.step_left[s]:
                                o[t.step_slot[s]] = 0
                        _leaf_phi(o, t.slot_z[s0:s0 + d], d, t.leaf_value[leaf], p, w, phi)
                        for j in range(d):
                            out[r, t.slot_feature[s0 + j]] += phi[j]


@njit(cache=CACHE, parallel=True)
def _explain_parallel(X, out, t, block_rows):
    n = X.shape[0]
    chunks = min(n, 256)
    for c in prange(chunks):
        _explain_rows(X, c * n // chunks, (c + 1) * n // chunks, out, t, block_rows)
