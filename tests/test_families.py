"""Model families and the candidate race (leadscore.modeling): exact contributions for every
family, rare levels pooled, missing numbers flagged, the choice by log loss with ties to the
simpler model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadscore.modeling.candidates import (
    Candidate,
    blend_weight,
    choose,
    fit_entrants,
    fit_linear,
)
from leadscore.modeling.families import BlendMargin, LinearMargin
from leadscore.modeling.model import (
    OTHER,
    ModelConfig,
    as_model_frame,
    categorical_levels,
    fit_lightgbm,
)

CONFIG = ModelConfig(learning_rate=0.1, min_positives=20, min_child_samples=20, search_trials=1)


def _rows(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Leads with a planted signal: a categorical with rare levels, a skewed number with gaps."""
    rng = np.random.default_rng(seed)
    source = rng.choice(["ads", "organic", "referral", "rare1", "rare2"], n, p=[0.5, 0.3, 0.196, 0.002, 0.002])
    seconds = rng.gamma(2.0, 300.0, n)
    visits = rng.poisson(3, n).astype("float64")
    logit = (-1.0 + pd.Series(source).map({"ads": -0.8, "organic": 0.2, "referral": 1.5, "rare1": 0.0,
                                           "rare2": 0.0}).to_numpy() + 1.5 * (seconds - 600) / 600)
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    visits[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({"lead_id": [f"L{i}" for i in range(n)], "source": source, "seconds": seconds,
                         "visits": visits, "y": y})


FEATURES, CATEGORICAL = ["source", "seconds", "visits"], ["source"]


@pytest.fixture(scope="module")
def rows():
    return _rows()


@pytest.fixture(scope="module")
def linear(rows):
    return fit_linear(rows, "y", FEATURES, CATEGORICAL, CONFIG)


def test_rare_levels_are_pooled_and_unseen_values_join_them_missing_stays_missing():
    frame = pd.DataFrame({"c": ["a"] * 20 + ["b"] * 3 + [None]})
    levels = categorical_levels(frame, ["c"], rare_rows=10)
    assert levels == {"c": ["a", OTHER]}
    X = as_model_frame(pd.DataFrame({"c": ["a", "b", "never seen", None]}), ["c"], levels)
    assert X["c"].astype(object).tolist()[:3] == ["a", OTHER, OTHER] and pd.isna(X["c"].iloc[3])
    # without pooling an unseen value is missing, as LightGBM's own unseen category
    plain = categorical_levels(frame, ["c"])
    assert plain == {"c": ["a", "b"]}
    assert pd.isna(as_model_frame(pd.DataFrame({"c": ["zzz"]}), ["c"], plain)["c"].iloc[0])


def test_linear_contributions_add_up_to_the_margin_and_are_local(rows, linear):
    X = linear.matrix(rows)
    values, base = linear.core.contributions(X)
    margin = linear.core.decision_function(X)
    assert values.shape == (len(rows), len(linear.features))
    np.testing.assert_allclose(values.sum(axis=1) + base, margin, rtol=0, atol=1e-9)
    # a feature's contribution depends on its own value only: changing `seconds` moves only its column
    changed = rows.assign(seconds=rows["seconds"] * 3)
    v2, _ = linear.core.contributions(linear.matrix(changed))
    j = linear.features.index("seconds")
    others = [i for i in range(len(linear.features)) if i != j]
    np.testing.assert_allclose(v2[:, others], values[:, others], rtol=0, atol=1e-12)
    assert np.abs(v2[:, j] - values[:, j]).max() > 0.1
    # the training rows' contributions average zero per feature (centred on the training mean)
    np.testing.assert_allclose(values.mean(axis=0), 0.0, atol=1e-9)


def test_linear_model_learns_the_planted_direction_and_flags_missing_numbers(rows, linear):
    X = linear.matrix(rows)
    values, _ = linear.core.contributions(X)
    src = values[:, linear.features.index("source")]
    by_source = pd.Series(src).groupby(rows["source"].to_numpy()).mean()
    assert by_source["referral"] > by_source["organic"] > by_source["ads"]
    sec = values[:, linear.features.index("seconds")]
    assert np.corrcoef(sec, rows["seconds"])[0, 1] > 0.9
    kind, (fill, flagged, _) = linear.core.blocks_["visits"]
    assert kind == "numeric" and flagged and fill == pytest.approx(rows["visits"].median())
    # the rare levels share one column; both rare levels get the same contribution
    rare = pd.Series(src)[rows["source"].isin(["rare1", "rare2"]).to_numpy()]
    assert len(rare) and rare.nunique() == 1


def test_c_is_chosen_by_inner_cross_validation_among_the_grid(linear):
    assert linear.info["C"] in LinearMargin().Cs
    fixed = fit_linear(_rows(seed=1), "y", FEATURES, CATEGORICAL, CONFIG, C=0.05)
    assert fixed.core.C_ == 0.05


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_blend_contributions_are_the_weighted_members_and_add_up(rows, linear, w, seed):
    trees = fit_lightgbm(rows, "y", FEATURES, CATEGORICAL, CONFIG, trees=30)
    blend = BlendMargin([(w, trees.core), (1 - w, linear.core)])
    sample = rows.sample(50, random_state=seed)
    X = trees.matrix(sample)
    assert trees.levels == linear.levels and trees.features == linear.features  # one matrix serves both
    values, base = blend.contributions(X)
    vt, bt = trees.core.contributions(X)
    vl, bl = linear.core.contributions(X)
    np.testing.assert_allclose(values, w * vt + (1 - w) * vl, rtol=0, atol=1e-12)
    np.testing.assert_allclose(values.sum(axis=1) + base, blend.decision_function(X), rtol=0, atol=1e-9)


def test_every_entrant_is_calibrated_out_of_fold_and_explains_exactly(rows):
    from leadscore.serving.explain import contributions

    cands = [Candidate("lightgbm", "lightgbm"), Candidate("logistic", "logistic"), Candidate("blend", "blend")]
    entrants = fit_entrants(cands, rows, rows, "y", FEATURES, CATEGORICAL, CONFIG)
    assert list(entrants) == ["lightgbm", "logistic", "blend"]
    blend = entrants["blend"]
    assert blend.partner == "lightgbm" and blend.model.family == "blend"
    w = blend.model.info["blend_weight"]
    np.testing.assert_allclose(blend.calibration_margin, w * entrants["lightgbm"].calibration_margin
                               + (1 - w) * entrants["logistic"].calibration_margin)
    for name, e in entrants.items():
        c = contributions(e.model, rows.head(300))
        assert c.additivity_error() < 1e-9, name
        p = e.model.predict_proba(rows.head(300))
        np.testing.assert_allclose(p, e.model.calibrator.predict(c.margin), rtol=0, atol=1e-12)
        # out of fold: the calibration margin is not the in-sample margin of the fitted model
        assert not np.allclose(e.calibration_margin, e.model.margin(rows))


def test_blend_weight_prefers_the_member_that_carries_the_signal():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-2 * signal))).astype(int)
    noise = rng.normal(size=5000)
    assert blend_weight(signal, noise, y) == 0.75
    assert blend_weight(noise, signal, y) == 0.25


def test_the_lowest_log_loss_wins_unless_a_simpler_candidate_is_within_the_tolerance():
    cands = [Candidate("lgbm_a", "lightgbm"), Candidate("lgbm_b", "lightgbm"), Candidate("logistic", "logistic"),
             Candidate("blend", "blend")]
    ll = pd.Series({"lgbm_a": 0.400, "lgbm_b": 0.3896, "logistic": 0.420, "blend": 0.389})
    assert choose(ll, cands, tolerance=0.0) == "blend"
    assert choose(ll, cands, tolerance=0.002) == "lgbm_b"       # blend ahead by 0.0006 / 0.389 < 0.2 %: trees
    assert choose(ll, cands, tolerance=0.03) == "lgbm_a"        # the earlier grid shape wins a tie among trees
    assert choose(ll, cands, tolerance=0.08) == "logistic"      # logistic is the simplest
    assert choose(ll.drop("blend"), cands, 0.0) == "lgbm_b"
    with pytest.raises(Exception, match="no candidate"):
        choose(pd.Series(dtype=float), cands, 0.0)


@pytest.fixture(scope="module")
def trees(rows):
    return fit_lightgbm(rows, "y", FEATURES, CATEGORICAL, CONFIG, trees=30)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), as_int=st.booleans(), missing_share=st.floats(0, 1))
def test_our_lightgbm_input_gives_exactly_what_lightgbm_gives_from_the_frame(trees, seed, n, as_int, missing_share):
    """The array made for LightGBM in one pass predicts (raw score and pred_contrib) bit for bit as
    LightGBM's own conversion of the frame: codes, missing categories, integer columns, one row."""
    from leadscore.modeling.families import lightgbm_matrix

    model, booster = trees, trees.core.booster
    sample = _rows(n, seed)
    sample.loc[np.random.default_rng(seed).random(n) < missing_share, "source"] = None   # missing: code -1
    if as_int:
        sample["visits"] = sample["visits"].fillna(0).astype("int64")
    X = model.matrix(sample)
    M = lightgbm_matrix(X, booster)
    assert isinstance(M, np.ndarray) and M.shape == X.shape
    for kind in ({"raw_score": True}, {"pred_contrib": True}):
        assert np.array_equal(booster.predict(M, **kind), booster.predict(X, **kind))
    # categories that are not the booster's, or a nullable column: LightGBM's own conversion
    other = X.assign(source=X["source"].cat.reorder_categories(list(reversed(X["source"].cat.categories))))
    assert lightgbm_matrix(other, booster) is other
    nullable = X.assign(visits=X["visits"].astype("Float64"))
    assert lightgbm_matrix(nullable, booster) is nullable
