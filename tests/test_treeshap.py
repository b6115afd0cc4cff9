"""Our exact TreeSHAP (leadscore.modeling.treeshap) against LightGBM's own ``pred_contrib``:
the same values to 1e-9 for any booster shape - missing values, zero as missing, categorical
sets, unseen and negative categories, one-leaf trees, deep paths computed without tables - on
one thread and on all cores, and in the model's explanations."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadscore.modeling.treeshap import TreeExplainer, explainer_for


def _data(rng, n: int, n_num: int, n_cat: int, levels: int, nan_share: float, zero_share: float) -> np.ndarray:
    X = np.empty((n, n_num + n_cat))
    X[:, :n_num] = rng.normal(size=(n, n_num)).round(rng.integers(0, 3))   # rounding: ties at thresholds
    X[:, :n_num][rng.random((n, n_num)) < zero_share] = 0.0
    X[:, n_num:] = rng.integers(0, levels, size=(n, n_cat))
    X[rng.random(X.shape) < nan_share] = np.nan
    return X


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_num=st.integers(1, 4), n_cat=st.integers(0, 2),
       levels=st.integers(2, 12), nan_share=st.sampled_from([0.0, 0.1, 0.4]), zero_share=st.sampled_from([0.0, 0.3]),
       num_leaves=st.integers(2, 40), max_depth=st.sampled_from([-1, 3, 12]),
       zero_as_missing=st.sampled_from([False, False, True]), use_missing=st.sampled_from([True, True, False]),
       rounds=st.integers(1, 12), table_depth=st.sampled_from([0, 3, 10]), parallel=st.booleans(),
       block_rows=st.sampled_from([1, 7, 256]))
def test_contributions_equal_lightgbm_pred_contrib(seed, n_num, n_cat, levels, nan_share, zero_share, num_leaves,
                                                   max_depth, zero_as_missing, use_missing, rounds, table_depth,
                                                   parallel, block_rows):
    rng = np.random.default_rng(seed)
    X = _data(rng, 400, n_num, n_cat, levels, nan_share, zero_share)
    signal = np.nan_to_num(X[:, 0]) + (X[:, -1] % 3 == 0 if n_cat else 0) + rng.normal(0, 0.5, len(X))
    y = (signal > np.median(signal)).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_leaves": num_leaves, "max_depth": max_depth,
              "min_data_in_leaf": 3, "min_data_per_group": 3, "cat_smooth": 1.0, "max_cat_to_onehot": 3,
              "zero_as_missing": zero_as_missing, "use_missing": use_missing, "seed": seed}
    booster = lgb.train(params, lgb.Dataset(X, y, categorical_feature=list(range(n_num, n_num + n_cat)) or "auto"),
                        num_boost_round=rounds)
    # scored on new rows: values outside the training range, missing values whether or not the
    # model saw any, unseen, negative and huge categories
    Z = _data(rng, 120, n_num, n_cat, levels + 3, max(nan_share, 0.15), zero_share) * rng.choice([1.0, 3.0], size=(120, 1))
    if n_cat:
        Z[:3, n_num] = [-1.0, 2.0**40, 0.5]
    ours = TreeExplainer(booster, table_depth=table_depth).contributions(Z, parallel_rows=1 if parallel else 10**9,
                                                                         block_rows=block_rows)
    theirs = booster.predict(Z, pred_contrib=True)
    assert ours.shape == theirs.shape
    assert np.max(np.abs(ours - theirs)) <= 1e-9
    assert np.allclose(ours.sum(axis=1), booster.predict(Z, raw_score=True), atol=1e-9)


def test_one_leaf_trees_and_a_cut_at_the_best_iteration():
    """Trees without a split only move the expected value; ``iteration`` uses the first trees only."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] > 0).astype(int)
    params = {"objective": "binary", "verbose": -1, "min_data_in_leaf": 5}
    stumps = lgb.train({**params, "min_data_in_leaf": 1000}, lgb.Dataset(X, y), num_boost_round=3)
    assert stumps.dump_model()["tree_info"][0]["num_leaves"] == 1
    assert np.max(np.abs(TreeExplainer(stumps).contributions(X) - stumps.predict(X, pred_contrib=True))) <= 1e-12
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=20)
    for iteration in (None, 5):
        ours = TreeExplainer(booster, iteration).contributions(X)
        assert np.max(np.abs(ours - booster.predict(X, pred_contrib=True, num_iteration=iteration))) <= 1e-9
    assert not np.allclose(TreeExplainer(booster, 5).contributions(X), TreeExplainer(booster).contributions(X))


def test_compiled_kernels_are_cached_outside_the_code():
    """Beside the module would be inside a registered model's copy of the code: a new file there
    changes the model's artifacts, and loading it again is refused."""
    from pathlib import Path

    import numba

    import leadscore.modeling.treeshap as module

    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 2))
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, (X[:, 0] > 0).astype(int)),
                        num_boost_round=2)
    TreeExplainer(booster).contributions(X)
    TreeExplainer(booster).contributions(X, parallel_rows=1)
    beside = Path(module.__file__).parent / "__pycache__"
    assert not list(beside.glob("treeshap*.nb*"))
    assert module.CACHE and numba.config.CACHE_DIR and list(Path(numba.config.CACHE_DIR).rglob("treeshap*.nbi"))


def test_the_explainer_is_built_once_per_booster_and_refuses_a_wrong_matrix():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 2))
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, (X[:, 1] > 0).astype(int)),
                        num_boost_round=3)
    assert explainer_for(booster) is explainer_for(booster)
    assert explainer_for(booster, 2) is not explainer_for(booster)
    with pytest.raises(ValueError, match="2 feature columns, got shape \\(5, 3\\)"):
        explainer_for(booster).contributions(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="table_depth"):
        TreeExplainer(booster, table_depth=63)


def test_the_models_explanations_use_it_and_still_add_up_to_the_margin():
    """``contributions`` of a trained conversion model: our kernel's values, equal to pred_contrib on
    the same matrix, summing with the base to the margin LightGBM computes."""
    from leadscore.modeling.families import lightgbm_matrix
    from leadscore.modeling.model import ModelConfig, fit_lightgbm
    from leadscore.serving.explain import contributions

    rng = np.random.default_rng(3)
    n = 1500
    rows = pd.DataFrame({"source": rng.choice(["ads", "organic", "referral"], n), "visits": rng.poisson(3, n) * 1.0})
    rows.loc[rng.random(n) < 0.2, "visits"] = np.nan
    rows["y"] = (rows["source"].eq("referral") | (rows["visits"] > 4)) ^ (rng.random(n) < 0.1)
    model = fit_lightgbm(rows, "y", ["source", "visits"], ["source"],
                         ModelConfig(learning_rate=0.1, min_positives=20, min_child_samples=20, search_trials=1), trees=25)
    c = contributions(model, rows)
    assert c.additivity_error() <= 1e-9
    booster = model.core.booster
    native = booster.predict(lightgbm_matrix(model.matrix(rows), booster), pred_contrib=True,
                             num_iteration=model.core.best_iteration or None)
    assert np.max(np.abs(c.values.to_numpy() - native[:, :-1])) <= 1e-9
    assert np.max(np.abs(c.base - native[:, -1])) <= 1e-9
