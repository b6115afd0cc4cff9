"""Sampling weights in metrics, calibration and the rule baseline.

Training may keep every lead with a positive outcome and only a share r of the others, each of
their rows weighted 1/r. The defining property: an integer weight w gives what repeating the row
w times gives. Unit weights give exactly what no weights give, and bad weights are refused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss

from leadscore.modeling.baseline import RuleBaselineClassifier
from leadscore.modeling.calibration import MarginCalibrator, grouped_stratified_folds
from leadscore.modeling.metrics import (
    classification_metrics,
    expected_calibration_error,
    gains_curve,
    lift_top_fraction,
    reliability_table,
    sample_weights,
)

FAST = settings(max_examples=30, deadline=None)
GRID = np.linspace(-10, 10, 201)


@st.composite
def weighted_rows(draw, min_size=4, max_size=40):
    """(y, p, w): outcomes with both classes, probabilities with ties, integer weights 1..4."""
    n = draw(st.integers(min_size, max_size))
    y = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=int)
    y[0], y[1] = 1, 0
    p = draw(st.lists(st.sampled_from([0.02, 0.1, 0.25, 0.5, 0.8, 0.97]) | st.floats(0.001, 0.999),
                      min_size=n, max_size=n))
    w = np.array(draw(st.lists(st.integers(1, 4), min_size=n, max_size=n)))
    return y, np.array(p), w


def repeat(w, *arrays):
    return [np.repeat(np.asarray(a), w) for a in arrays]


# --- integer weights are repeated rows ----------------------------------------------------------


@FAST
@given(weighted_rows(), st.booleans())
def test_classification_metrics_weights_are_repeated_rows(rows, points_score):
    y, p, w = rows
    score = np.round(p * 5) if points_score else None  # a points-like score with many ties
    weighted = classification_metrics(y, p, score=score, weight=w)
    yr, pr = repeat(w, y, p)
    repeated = classification_metrics(yr, pr, score=None if score is None else np.repeat(score, w))
    assert weighted.keys() == repeated.keys()
    for key in weighted:
        assert weighted[key] == pytest.approx(repeated[key], rel=1e-9, abs=1e-12), key


@FAST
@given(weighted_rows(), st.integers(2, 20))
def test_reliability_table_weights_are_repeated_rows(rows, n_bins):
    y, p, w = rows
    weighted = reliability_table(y, p, n_bins, weight=w)
    repeated = reliability_table(*repeat(w, y, p), n_bins)
    assert weighted["rows"].dtype == "float64" and repeated["rows"].dtype.kind == "i"
    pd.testing.assert_frame_equal(weighted.drop(columns="effective_rows"), repeated, check_dtype=False, rtol=1e-9)
    # what an interval rests on: the bin's rows when every weight is alike, fewer when they differ
    n = pd.Series(w).groupby(np.minimum((np.asarray(p) * n_bins).astype(int), n_bins - 1)).agg(["size", "nunique"])
    eff = weighted.set_index("bin")["effective_rows"]
    assert (eff <= n["size"] + 1e-9).all() and np.allclose(eff[n["nunique"] == 1], n.loc[n["nunique"] == 1, "size"])
    assert expected_calibration_error(y, p, n_bins, weight=w) == pytest.approx(
        expected_calibration_error(*repeat(w, y, p), n_bins), rel=1e-9, abs=1e-12)


@FAST
@given(weighted_rows(), st.floats(0.01, 1.0), st.booleans())
def test_lift_and_gains_weights_are_repeated_rows(rows, fraction, ties):
    y, p, w = rows
    score = np.round(p * 3) if ties else p  # ties at the cut are split by expected value
    yr, sr = repeat(w, y, score)
    assert lift_top_fraction(y, score, fraction, weight=w) == pytest.approx(
        lift_top_fraction(yr, sr, fraction), rel=1e-9)
    pd.testing.assert_frame_equal(gains_curve(y, score, 10, weight=w), gains_curve(yr, sr, 10), rtol=1e-9)


def _calibration_rows(draw_margins, y, w):
    """Margins and outcomes with a positive at the lowest margin and a negative at the highest,
    so the data are never separable and the sigmoid's fit is finite (and unique)."""
    margin = np.r_[np.array(draw_margins), -6.0, 6.0]
    return margin, np.r_[y, 1, 0], np.r_[w, 1, 1]


@FAST
@given(st.sampled_from(["sigmoid", "isotonic"]),
       st.lists(st.tuples(st.floats(-5, 5).map(lambda x: round(x, 1)), st.booleans(), st.integers(1, 4)),
                min_size=3, max_size=40))
def test_calibrator_weights_are_repeated_rows(method, rows):
    m, y, w = (np.array(c) for c in zip(*rows))
    margin, y, w = _calibration_rows(m, y.astype(int), w)
    weighted = MarginCalibrator(method).fit(margin, y, sample_weight=w)
    repeated = MarginCalibrator(method).fit(*repeat(w, margin, y))
    np.testing.assert_allclose(weighted.predict(GRID), repeated.predict(GRID), rtol=0, atol=1e-6)


@settings(max_examples=15, deadline=None)  # 22 calibrator fits an example
@given(st.integers(0, 2**16), st.integers(2, 4))
def test_auto_calibrator_with_one_weight_for_all_rows_is_repeated_rows(seed, c):
    """``auto``'s folds are dealt by rows, unweighted (most positives first, then most rows). With
    per-lead weights, repeating a lead's rows changes those counts, so the repeated data are dealt
    into other folds and their cross-validated losses are not the weighted ones - no exact
    equality to test. One weight for every row scales every lead's counts alike: the same folds,
    so the same cross-validated log losses and choice (and repeated rows keep their lead's id)."""
    rng = np.random.default_rng(seed)
    n = 120
    margin = np.round(rng.normal(0, 2, n), 1)
    y = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(int)
    y[:5], y[5:10] = 1, 0  # at least five positives: the same number of folds either way
    lead = np.arange(n) // 3
    w = np.full(n, c)
    weighted = MarginCalibrator("auto").fit(margin, y, groups=lead, sample_weight=w)
    repeated = MarginCalibrator("auto").fit(*repeat(w, margin, y), groups=np.repeat(lead, w))
    assert weighted.cv_logloss_.keys() == repeated.cv_logloss_.keys()
    for method in weighted.cv_logloss_:
        assert weighted.cv_logloss_[method] == pytest.approx(repeated.cv_logloss_[method], rel=1e-6)
    losses = sorted(repeated.cv_logloss_.values())
    if losses[1] - losses[0] > 1e-6 * losses[1]:  # not a near tie
        assert weighted.method_ == repeated.method_
    np.testing.assert_allclose(weighted.predict(GRID), repeated.predict(GRID), rtol=0, atol=1e-6)


def test_auto_calibrator_with_lead_weights_weighs_its_choice_and_its_fit():
    """Per-lead weights: the folds are the unweighted ones; each fold's fit and the log loss
    of the out-of-fold predictions are weighted, and so is the winner's final fit."""
    rng = np.random.default_rng(3)
    n = 3000
    margin = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.7 * margin - 1)))).astype(int)
    lead = np.arange(n) // 4
    w = np.where(np.bincount(lead, weights=y)[lead] > 0, 1.0, 1 + (lead % 3))  # constant within a lead
    auto = MarginCalibrator("auto").fit(margin, y, groups=lead, sample_weight=w)
    for method in ("isotonic", "sigmoid"):
        pred = np.empty(n)
        for tr, te in grouped_stratified_folds(y, lead, 5):
            pred[te] = MarginCalibrator(method).fit(margin[tr], y[tr], sample_weight=w[tr]).predict(margin[te])
        assert auto.cv_logloss_[method] == pytest.approx(log_loss(y, pred, sample_weight=w), rel=1e-12)
    assert auto.method_ == min(auto.cv_logloss_, key=auto.cv_logloss_.get)
    fixed = MarginCalibrator(auto.method_).fit(margin, y, sample_weight=w)
    assert np.array_equal(auto.predict(GRID), fixed.predict(GRID))


@FAST
@given(st.lists(st.tuples(st.integers(-20, 120), st.booleans(), st.integers(1, 4)), min_size=2, max_size=40))
def test_rule_baseline_weights_are_repeated_rows(rows):
    points, y, w = (np.array(c) for c in zip(*rows))
    y = y.astype(int)
    x = pd.DataFrame({"baseline_points": points.astype(float)})
    weighted = RuleBaselineClassifier().fit(x, y, sample_weight=w)
    xr = pd.DataFrame({"baseline_points": np.repeat(points, w).astype(float)})
    repeated = RuleBaselineClassifier().fit(xr, np.repeat(y, w))
    grid = pd.DataFrame({"baseline_points": np.arange(-30.0, 131.0)})
    np.testing.assert_allclose(weighted.predict_proba(grid), repeated.predict_proba(grid), rtol=0, atol=1e-9)


# --- unit weights are no weights, bit for bit ----------------------------------------------------


@FAST
@given(weighted_rows(max_size=80))
def test_unit_weights_are_no_weights_exactly(rows):
    y, p, _ = rows
    ones = np.ones(len(y))
    assert classification_metrics(y, p, weight=ones) == classification_metrics(y, p)
    assert classification_metrics(y, p, score=np.round(p * 5), weight=ones) == classification_metrics(
        y, p, score=np.round(p * 5))
    assert expected_calibration_error(y, p, weight=ones) == expected_calibration_error(y, p)
    for fraction in (0.05, 0.1, 0.37, 1.0):
        assert lift_top_fraction(y, p, fraction, weight=ones) == lift_top_fraction(y, p, fraction)
    pd.testing.assert_frame_equal(gains_curve(y, p, weight=ones), gains_curve(y, p), check_exact=True)
    unit = reliability_table(y, p, weight=ones)
    assert (unit["effective_rows"] == unit["rows"]).all()
    pd.testing.assert_frame_equal(unit.drop(columns="effective_rows"), reliability_table(y, p),
                                  check_exact=True, check_dtype=False)
    assert reliability_table(y, p)["rows"].dtype.kind == "i"  # still counts without weights


@pytest.mark.parametrize("method", ["auto", "isotonic", "sigmoid"])
def test_unit_weights_are_no_weights_exactly_for_the_calibrator_and_the_baseline(method):
    rng = np.random.default_rng(7)
    margin = rng.normal(0, 2, 600)
    y = (rng.random(600) < 1 / (1 + np.exp(-margin))).astype(int)
    ones, lead = np.ones(600), np.arange(600) // 3
    a = MarginCalibrator(method).fit(margin, y, groups=lead)
    b = MarginCalibrator(method).fit(margin, y, groups=lead, sample_weight=ones)
    assert a.method_ == b.method_ and a.cv_logloss_ == b.cv_logloss_
    assert np.array_equal(a.predict(GRID), b.predict(GRID))
    x = pd.DataFrame({"baseline_points": np.round(margin * 10)})
    assert np.array_equal(RuleBaselineClassifier().fit(x, y).predict_proba(x),
                          RuleBaselineClassifier().fit(x, y, sample_weight=ones).predict_proba(x))


# --- what the weights are for ---------------------------------------------------------------------


def test_a_weighted_sample_of_leads_estimates_the_population():
    """Keep every positive and a quarter of the negatives, weighted 4: weighted metrics and
    calibration come close to the full population's, unweighted ones are far off."""
    rng = np.random.default_rng(11)
    n = 40000
    margin = rng.normal(-1.5, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(int)
    keep = (y == 1) | (rng.random(n) < 0.25)
    w = np.where(y == 1, 1.0, 4.0)[keep]
    full = MarginCalibrator("sigmoid").fit(margin, y)
    p_full = full.predict(margin)
    weighted = MarginCalibrator("sigmoid").fit(margin[keep], y[keep], sample_weight=w)
    unweighted = MarginCalibrator("sigmoid").fit(margin[keep], y[keep])
    assert np.abs(weighted.predict(GRID[80:121]) - full.predict(GRID[80:121])).max() < 0.03
    assert np.abs(unweighted.predict(GRID[80:121]) - full.predict(GRID[80:121])).max() > 0.1

    population = classification_metrics(y, p_full)
    sample = classification_metrics(y[keep], p_full[keep], weight=w)
    plain = classification_metrics(y[keep], p_full[keep])
    for key, tolerance in (("logloss", 0.02), ("brier", 0.01), ("ece", 0.02), ("lift_top_decile", 0.3),
                           ("capture_top_decile", 0.03), ("auc", 0.01)):
        assert abs(sample[key] - population[key]) < tolerance, key
    assert abs(plain["logloss"] - population["logloss"]) > 0.1 and plain["ece"] > 0.1


# --- bad weights ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("weight", "message"), [
    ([1.0, 2.0, 3.0], r"weight must have one value per row: got shape \(3,\) for 5 rows"),
    ([[1.0] * 5], r"weight must have one value per row: got shape \(1, 5\)"),
    ([1.0, np.nan, 2.0, 1.0, 1.0], r"weight must be positive and finite: 1 of 5 are not, e\.g\. row 1: nan"),
    ([1.0, 1.0, np.inf, -np.inf, 1.0], r"weight must be positive and finite: 2 of 5 are not, e\.g\. row 2: inf"),
    ([1.0, 0.0, -2.0, 1.0, 0.0], r"weight must be positive and finite: 3 of 5 are not, e\.g\. row 1: 0\.0"),
    (["a", 1, 1, 1, 1], r"weight must be numbers"),
])
def test_bad_weights_are_refused_with_what_is_wrong(weight, message):
    y, p = np.array([0, 1, 0, 1, 0]), np.array([0.1, 0.7, 0.2, 0.6, 0.4])
    with pytest.raises(ValueError, match=message):
        sample_weights(weight, 5)
    for call in (lambda: classification_metrics(y, p, weight=weight),
                 lambda: expected_calibration_error(y, p, weight=weight),
                 lambda: reliability_table(y, p, weight=weight),
                 lambda: lift_top_fraction(y, p, 0.2, weight=weight),
                 lambda: gains_curve(y, p, weight=weight)):
        with pytest.raises(ValueError, match=message):
            call()
    sample_message = message.replace("weight", "sample_weight", 1)
    with pytest.raises(ValueError, match=sample_message):
        MarginCalibrator("auto").fit(np.log(p / (1 - p)), y, sample_weight=weight)
    with pytest.raises(ValueError, match=sample_message):
        RuleBaselineClassifier().fit(pd.DataFrame({"baseline_points": p * 100}), y, sample_weight=weight)


def test_no_weights_stay_none_and_good_ones_become_float64():
    assert sample_weights(None, 3) is None
    w = sample_weights(pd.Series([1, 2, 4]), 3)
    assert w.dtype == np.float64 and w.tolist() == [1.0, 2.0, 4.0]


@FAST
@given(weighted_rows())
def test_the_score_scale_of_a_weighted_reference_is_that_of_repeated_rows(rows):
    """The 1-99 score ranks a lead against the whole lead base: a reference row of weight w
    counts as w leads (the calibration slice of a sample of leads)."""
    from leadscore.serving.scorer import ScoreScale

    _, p, w = rows
    grid = np.r_[np.unique(p), np.linspace(0, 1, 11)]
    assert np.array_equal(ScoreScale.of(p, w).points(grid), ScoreScale.of(repeat(w, p)[0]).points(grid))
    assert np.array_equal(ScoreScale.of(p, np.ones(len(p))).points(grid), ScoreScale.of(p).points(grid))
