"""Fitting: negative sampling keeps the full data's weight, fixed-tree fits, and the
out-of-fold margins the calibration is fitted on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadscore.modeling.model import (
    WEIGHT,
    ModelConfig,
    cross_fitted_margin,
    fit_lightgbm,
    sample_negatives,
)

SMALL = ModelConfig(n_estimators=30, num_leaves=4, min_child_samples=5, min_positives=5, early_stopping_rounds=5)


def _rows(n_leads: int = 300, per_lead: int = 4, seed: int = 0) -> pd.DataFrame:
    """Examples whose label follows one numeric feature, a few per lead."""
    rng = np.random.default_rng(seed)
    lead = np.repeat([f"L{i}" for i in range(n_leads)], per_lead)
    x = rng.normal(size=len(lead))
    y = rng.random(len(lead)) < 1 / (1 + np.exp(-(2 * x - 2)))
    return pd.DataFrame({"lead_id": lead, "x": x, "noise": rng.normal(size=len(lead)),
                         "y": pd.array(y, dtype="boolean")})


@settings(max_examples=40, deadline=None)
@given(n_pos=st.integers(0, 50), n_neg=st.integers(0, 400), max_rows=st.integers(1, 300), seed=st.integers(0, 5))
def test_property_negative_sampling_keeps_every_positive_and_weights_the_negatives(n_pos, n_neg, max_rows, seed):
    frame = pd.DataFrame({"lead_id": [f"L{i}" for i in range(n_pos + n_neg)],
                          "y": [True] * n_pos + [False] * n_neg})
    out, rate = sample_negatives(frame, "y", max_rows, seed)
    assert int(out["y"].sum()) == n_pos                                   # every positive stays, weight 1
    assert (out.loc[out["y"], WEIGHT] == 1.0).all()
    negatives = out.loc[~out["y"], WEIGHT]
    assert np.allclose(negatives, 1.0 / rate)                             # negatives stand for the ones left out
    if n_pos + n_neg <= max_rows:
        assert rate == 1.0 and len(out) == n_pos + n_neg
    # sampling twice composes: the weights still stand for the original negatives
    again, rate2 = sample_negatives(out, "y", max_rows, seed + 1)
    assert np.allclose(again.loc[~again["y"], WEIGHT], 1.0 / (rate * rate2))


def test_negative_sampling_keeps_negatives_when_positives_alone_exceed_the_budget():
    """A large lead base can have more positives than ``max_rows`` (the logistic reference's
    50,000): half the budget still goes to negatives, or the fit would see one class."""
    frame = pd.DataFrame({"lead_id": [f"L{i}" for i in range(11_000)], "y": [True] * 1000 + [False] * 10_000})
    out, rate = sample_negatives(frame, "y", 500, seed=0)
    assert rate == 250 / 10_000 and int(out["y"].sum()) == 1000
    assert 150 < int((~out["y"]).sum()) < 350 and np.allclose(out.loc[~out["y"], WEIGHT], 40.0)


def test_a_fit_with_fixed_trees_has_exactly_that_many():
    rows = _rows()
    model = fit_lightgbm(rows, "y", ["x", "noise"], [], SMALL, trees=7)
    assert model.best_iteration == 7 and model.booster.num_trees() == 7
    assert model.info["validation_rows"] == 0 and model.info["train_rows"] == len(rows)


def test_a_leads_out_of_fold_margin_does_not_depend_on_its_own_rows():
    """The calibration's margins come from models that never saw the lead: dropping a lead's
    training rows leaves its out-of-fold margins exactly as they were."""
    rows = _rows()
    margin = cross_fitted_margin(rows, rows, "y", ["x", "noise"], [], SMALL, trees=20)
    for lead in ("L3", "L100", "L250"):
        without = rows[rows["lead_id"] != lead]
        again = cross_fitted_margin(without, rows, "y", ["x", "noise"], [], SMALL, trees=20)
        mine = (rows["lead_id"] == lead).to_numpy()
        np.testing.assert_array_equal(again[mine], margin[mine])
        assert not np.array_equal(again[~mine], margin[~mine])  # the other group's model did change
    # and the margins carry the signal: higher x, higher margin
    assert np.corrcoef(rows["x"], margin)[0, 1] > 0.8


def test_a_half_with_few_positives_still_fits_when_the_whole_fit_had_enough():
    rows = _rows(n_leads=120, seed=1)
    config = ModelConfig(**{**SMALL.__dict__, "min_positives": int(rows["y"].sum())})
    margin = cross_fitted_margin(rows, rows, "y", ["x", "noise"], [], config, trees=5)
    assert np.isfinite(margin).all()
    with pytest.raises(Exception, match="min_positives"):
        fit_lightgbm(rows.iloc[: len(rows) // 2], "y", ["x", "noise"], [], config, trees=5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.booleans()), min_size=2, max_size=300), st.integers(2, 5))
def test_calibration_folds_keep_each_lead_in_one_test_fold_and_spread_positives(rows, n_splits):
    from leadscore.modeling.calibration import grouped_stratified_folds

    groups = np.array([g for g, _ in rows])
    y = np.array([int(v) for _, v in rows])
    folds = grouped_stratified_folds(y, groups, n_splits)
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(len(rows)))          # every row tested exactly once
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])              # a lead never on both sides
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(rows)))
    # leads with one row each: positives differ by at most one between folds
    if len(set(groups.tolist())) == len(groups):
        per_fold = [int(y[te].sum()) for _, te in folds]
        assert max(per_fold) - min(per_fold) <= 1
