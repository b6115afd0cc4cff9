"""Metrics and calibration: hand-computable cases and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadscore.modeling.calibration import MarginCalibrator
from leadscore.modeling.metrics import (
    classification_metrics,
    expected_calibration_error,
    lift_top_fraction,
)


def test_ece_by_hand():
    # Two bins: [0.1, 0.1] with outcomes [0, 1] -> |0.1 - 0.5| ; [0.9, 0.9] with [1, 1] -> |0.9 - 1.0|.
    p = np.array([0.1, 0.1, 0.9, 0.9])
    y = np.array([0, 1, 1, 1])
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)


def test_perfectly_calibrated_bins_have_zero_ece():
    p = np.repeat([0.05, 0.25, 0.75], 20)
    y = np.concatenate([np.r_[np.ones(1), np.zeros(19)], np.r_[np.ones(5), np.zeros(15)], np.r_[np.ones(15), np.zeros(5)]])
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)


def test_lift_by_hand():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0] * 10)  # 20 % positives
    score = np.where(y == 1, 1.0, 0.0) + np.linspace(0, 0.1, 100)
    lift, capture = lift_top_fraction(y, score, 0.1)  # top 10 rows all positive
    assert lift == pytest.approx(1.0 / 0.2) and capture == pytest.approx(10 / 20)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.booleans(), min_size=10, max_size=200).filter(lambda v: 0 < sum(v) < len(v)),
       st.floats(0.05, 0.95))
def test_a_constant_score_has_lift_one(y, fraction):
    y = np.array(y, dtype=int)
    lift, capture = lift_top_fraction(y, np.zeros(len(y)), fraction)
    assert lift == pytest.approx(1.0) and capture == pytest.approx(fraction)


def test_metrics_reward_a_better_ranking():
    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.1
    good = np.clip(0.1 + 0.5 * (y - 0.1) + rng.normal(0, 0.1, 5000), 0.01, 0.99)
    poor = np.clip(0.1 + 0.05 * (y - 0.1) + rng.normal(0, 0.1, 5000), 0.01, 0.99)
    g, p = classification_metrics(y, good), classification_metrics(y, poor)
    assert g["auc"] > p["auc"] and g["lift_top_decile"] > p["lift_top_decile"] and g["pr_auc"] > p["pr_auc"]


@pytest.mark.parametrize("method", ["isotonic", "sigmoid", "auto"])
def test_calibrator_recovers_true_probabilities(method):
    rng = np.random.default_rng(1)
    margin = rng.normal(0, 2, 20000)
    true_p = 1 / (1 + np.exp(-(0.5 * margin - 1.0)))  # the raw margin is over-confident and shifted
    y = rng.random(20000) < true_p
    cal = MarginCalibrator(method).fit(margin, y, groups=np.arange(20000) // 4)
    p = cal.predict(margin)
    assert expected_calibration_error(y, p) < 0.02
    assert np.all(np.diff(p[np.argsort(margin)]) >= -1e-12)  # monotone: ranking unchanged
    if method == "auto":
        assert cal.method_ in ("isotonic", "sigmoid") and set(cal.cv_logloss_) == {"isotonic", "sigmoid"}
        assert cal.method_ == min(cal.cv_logloss_, key=cal.cv_logloss_.get)


@settings(max_examples=30, deadline=None)
@given(method=st.sampled_from(["isotonic", "sigmoid"]), seed=st.integers(0, 2**16),
       margins=st.lists(st.floats(-40, 40, allow_nan=False), min_size=1, max_size=30))
def test_the_calibrator_gives_what_scikit_learns_predict_gives_bit_for_bit(method, seed, margins):
    """The calibrator reads its fitted model's attributes instead of calling predict (whose input
    checks cost more than the arithmetic on a served request's rows): the same numbers, inside
    the fitted range, beyond it and at its ends."""
    rng = np.random.default_rng(seed)
    fit_margin = rng.normal(0, 2, 400)
    y = rng.random(400) < 1 / (1 + np.exp(-fit_margin))
    cal = MarginCalibrator(method).fit(fit_margin, y)
    x = np.r_[np.array(margins), fit_margin[:20], fit_margin.min(), fit_margin.max()]
    sklearn = (cal.model_.predict(x) if method == "isotonic" else cal.model_.predict_proba(x.reshape(-1, 1))[:, 1])
    assert np.array_equal(cal.predict(x), np.clip(sklearn, 1e-6, 1 - 1e-6))
