"""Stratified k-fold evaluation of flat exports (leadscore.training.flatcv): folds, no leakage from the
test fold, reproducibility, sanity on planted data, the final fit, and the real X Education file."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from leadscore.modeling.metrics import expected_calibration_error
from leadscore.modeling.model import OTHER, ModelConfig
from leadscore.training import flatcv
from leadscore.training.flat import FlatData, load_config, load_flat
from leadscore.training.flatcv import MODELS, cross_validate_flat, fit_flat

REPO = Path(__file__).resolve().parents[1]
N = 3000
CONFIG = ModelConfig(learning_rate=0.1)  # fewer trees than the default 0.03: the tests stay quick


def _synthetic_flat(n: int = N, seed: int = 5) -> tuple[FlatData, np.ndarray]:
    """A flat export with a planted signal, and the true probabilities.

    ``row_key`` is a unique number per row (pure noise to the models) that lets the leak test
    recognise every row in whatever frame a model is fitted on; ``campaign`` has many rare
    levels, so levels taken from the test fold would show up in the categories."""
    rng = np.random.default_rng(seed)
    source = rng.choice(["ads", "organic", "referral", "event", "partner"], n, p=[0.4, 0.25, 0.15, 0.1, 0.1])
    occupation = rng.choice(["student", "employed", "unemployed", "missing"], n, p=[0.3, 0.4, 0.2, 0.1])
    campaign = np.array([f"c{int(v):03d}" for v in rng.zipf(1.6, n) % 400])
    visits = rng.poisson(3, n).astype("float64")
    seconds = rng.gamma(2.0, 300.0, n)
    logit = (-1.3 + pd.Series(source).map({"ads": -0.8, "organic": 0.2, "referral": 2.0, "event": 0.8,
                                           "partner": 1.0}).to_numpy()
             + pd.Series(occupation).map({"student": -1.0, "employed": 1.2, "unemployed": 0.0,
                                          "missing": -0.5}).to_numpy()
             + 1.8 * (seconds - 600.0) / 600.0 + 0.2 * (visits - 3.0))
    p = 1.0 / (1.0 + np.exp(-logit))
    y = rng.random(n) < p
    visits[rng.random(n) < 0.05] = np.nan  # missing numbers, as exports have them
    features = pd.DataFrame({"source": source, "occupation": occupation, "campaign": campaign,
                             "visits": visits, "seconds": seconds, "row_key": np.arange(n) + 0.5})
    kinds = {"source": "categorical", "occupation": "categorical", "campaign": "categorical",
             "visits": "numeric", "seconds": "numeric", "row_key": "numeric"}
    catalogue = pd.DataFrame({"name": list(kinds), "kind": list(kinds.values())})
    ids = pd.Series([f"L{i:05d}" for i in range(n)])
    return FlatData(ids=ids, features=features, y=y, catalogue=catalogue, excluded={}), p


@pytest.fixture(scope="module")
def planted():
    return _synthetic_flat()


@pytest.fixture(scope="module")
def cv5(planted):
    data, _ = planted
    return cross_validate_flat(data, CONFIG, n_splits=5, seed=0)


def test_folds_are_stratified_disjoint_and_cover_every_row_once(planted, cv5):
    data, _ = planted
    oof = cv5.out_of_fold
    assert len(oof) == N and oof["id"].is_unique
    assert set(oof["id"]) == set(data.ids)
    truth = pd.Series(data.y.astype(int), index=data.ids)
    assert (oof.set_index("id")["y"] == truth.loc[oof["id"]]).all()
    assert sorted(oof["fold"].unique()) == [0, 1, 2, 3, 4]
    sizes = oof.groupby("fold").size()
    positives = oof.groupby("fold")["y"].sum()
    assert sizes.max() - sizes.min() <= 1
    assert positives.max() - positives.min() <= 1  # stratified: positives spread as evenly as possible
    names = [*MODELS, *cv5.candidates["candidate"]]
    assert oof[names].notna().all().all()
    assert ((oof[names] > 0) & (oof[names] < 1)).all().all()
    assert len(cv5.folds) == 5 * len(names)
    assert set(map(tuple, cv5.folds[["fold", "model"]].to_numpy())) == {(k, m) for k in range(5) for m in names}
    assert list(cv5.summary.index) == names
    assert cv5.summary[("auc", "mean")]["model"] == pytest.approx(
        cv5.folds.loc[cv5.folds["model"] == "model", "auc"].mean())
    # every family raced; the model is the candidate with the lowest mean log loss (or a simpler tie)
    assert set(cv5.candidates["family"]) == {"lightgbm", "logistic", "blend"}
    mean_ll = cv5.candidates.set_index("candidate")["logloss"]
    assert mean_ll[cv5.winner] <= mean_ll.min() * (1 + CONFIG.selection_tolerance)
    assert (cv5.candidates["chosen"] == "yes").sum() == 1
    np.testing.assert_array_equal(oof["model"], oof[cv5.winner])
    # the fold metrics are the out-of-fold probabilities' metrics, fold by fold
    for k in range(5):
        part = oof[oof["fold"] == k]
        for m in names:
            got = cv5.folds.loc[(cv5.folds["fold"] == k) & (cv5.folds["model"] == m), "auc"].item()
            assert got == pytest.approx(roc_auc_score(part["y"], part[m]))


def test_no_test_fold_row_is_used_in_fitting(planted, monkeypatch):
    """Every frame any model - each candidate, its cross-fitted halves, the references - is
    fitted, early-stopped or calibrated on is recorded (rows recognised by the planted
    row_key); none may hold a row of that fold's test set, and the categorical levels must be
    the training rows' levels."""
    from leadscore.modeling import candidates
    from leadscore.modeling.families import LinearMargin

    data, _ = planted
    log: list = []

    original_fit = lgb.LGBMClassifier.fit

    def recording_fit(self, X, y, *args, **kwargs):
        log.append(("lgbm", set(X["row_key"]), {c: list(X[c].cat.categories) for c in ("campaign", "source")}))
        for eval_X in kwargs.get("eval_X") or ():
            log.append(("early_stopping", set(eval_X["row_key"]), None))
        return original_fit(self, X, y, *args, **kwargs)

    original_linear = LinearMargin.fit

    def recording_linear(self, X, y, *args, **kwargs):
        log.append(("linear", set(X["row_key"]), {c: list(X[c].cat.categories) for c in ("campaign", "source")}))
        return original_linear(self, X, y, *args, **kwargs)

    original_calibrate = candidates.calibrate

    def recording_calibrate(model, calibration, *args, **kwargs):
        log.append(("calibrate", set(calibration["row_key"]), None))
        return original_calibrate(model, calibration, *args, **kwargs)

    original_logistic = flatcv.fit_logistic

    def recording_logistic(train, *args, **kwargs):
        log.append(("logreg", set(train["row_key"]), None))
        return original_logistic(train, *args, **kwargs)

    monkeypatch.setattr(lgb.LGBMClassifier, "fit", recording_fit)
    monkeypatch.setattr(LinearMargin, "fit", recording_linear)
    monkeypatch.setattr(candidates, "calibrate", recording_calibrate)
    monkeypatch.setattr(flatcv, "fit_logistic", recording_logistic)
    config = CONFIG.replace(search_trials=1)
    result = cross_validate_flat(data, config, n_splits=3, seed=1, progress=lambda line: log.append(("end", None, None)))

    key_of = dict(zip(data.ids, data.features["row_key"]))
    oof = result.out_of_fold
    every = set(data.features["row_key"])
    segments, current = [], []
    for entry in log:
        if entry[0] == "end":
            segments.append(current)
            current = []
        else:
            current.append(entry)
    assert len(segments) == 3 and not current
    for k, calls in enumerate(segments):
        test_keys = {key_of[i] for i in oof.loc[oof["fold"] == k, "id"]}
        train_keys = every - test_keys
        kinds = [c[0] for c in calls]
        # the LightGBM candidate and its two cross-fitted halves, the default model; the logistic
        # candidate and its halves; calibrations of LightGBM, logistic and blend; the reference
        assert kinds.count("lgbm") == 4 and kinds.count("early_stopping") == 1
        assert kinds.count("linear") == 3 and kinds.count("calibrate") == 3 and kinds.count("logreg") == 1
        for kind, keys, _ in calls:
            assert not keys & test_keys, f"fold {k}: {kind} was fitted on {len(keys & test_keys)} test rows"
        # and the check is not vacuous: the training rows are what the models saw
        assert {key for kind, keys, _ in calls if kind == "logreg" for key in keys} == train_keys
        for family in ("lgbm", "linear"):
            fitted = [keys for kind, keys, _ in calls if kind == family]
            if family == "lgbm":
                assert max(fitted, key=len) == train_keys  # the default model: all training rows
            else:
                assert fitted[0] == train_keys  # the logistic candidate: all training rows
            # calibrated on every training row, each scored by the half model that did not fit it
            halves = sorted(fitted, key=len)[:2]
            assert not halves[0] & halves[1] and halves[0] | halves[1] == train_keys
        assert all(keys == train_keys for kind, keys, _ in calls if kind == "calibrate")
        train_rows = data.features[data.features["row_key"].isin(train_keys)]
        for kind, _, levels in calls:
            if kind in ("lgbm", "linear"):
                for col, cats in levels.items():
                    # the halves that calibrate see half the levels; none comes from the test fold
                    assert set(cats) - {OTHER} <= set(train_rows[col]), f"fold {k}: {col} levels not from training"
        assert set(data.features["campaign"]) != set(train_rows["campaign"])  # a level only in the test fold


def test_same_seed_same_results_other_seed_other_folds(planted):
    data, _ = planted
    a = cross_validate_flat(data, CONFIG, n_splits=3, seed=3)
    b = cross_validate_flat(data, CONFIG, n_splits=3, seed=3)
    pd.testing.assert_frame_equal(a.folds, b.folds)
    pd.testing.assert_frame_equal(a.out_of_fold, b.out_of_fold)
    pd.testing.assert_frame_equal(a.summary, b.summary)
    c = cross_validate_flat(data, CONFIG, n_splits=3, seed=4)
    assert (c.out_of_fold["fold"].to_numpy() != a.out_of_fold["fold"].to_numpy()).any()


def test_planted_signal_is_found_and_the_model_is_calibrated(planted, cv5):
    data, p_true = planted
    best = roc_auc_score(data.y, p_true)  # what knowing the true probabilities would give
    assert best > 0.8
    auc = cv5.summary[("auc", "mean")]
    for m in MODELS:
        assert auc[m] > 0.75, f"{m}: mean AUC {auc[m]:.3f}"
    oof = cv5.out_of_fold
    assert expected_calibration_error(oof["y"], oof["model"]) < 0.05
    assert abs(oof["model"].mean() - oof["y"].mean()) < 0.02
    assert np.abs(oof["model"].to_numpy() - p_true).mean() < 0.08  # close to the planted probabilities


def test_fit_flat_is_calibrated_out_of_fold_on_every_row(planted):
    data, _ = planted
    model = fit_flat(data, CONFIG, seed=2)
    info = model.info
    assert info["train_rows"] + info["validation_rows"] == N and info["calibration_rows"] == N
    assert model.features == list(data.features.columns)
    assert info["categorical"] == ["source", "occupation", "campaign"]
    fresh, p_true = _synthetic_flat(seed=6)  # new leads from the same process
    p = model.predict_proba(fresh.features)
    assert p.shape == (N,) and np.all((p > 0) & (p < 1))
    assert roc_auc_score(fresh.y, p) > 0.8
    assert expected_calibration_error(fresh.y, p) < 0.05
    assert abs(p.mean() - p_true.mean()) < 0.04
    assert np.abs(p - p_true).mean() < 0.08
    again = fit_flat(data, CONFIG, seed=2).predict_proba(fresh.features)
    np.testing.assert_array_equal(p, again)


def test_clashing_or_duplicate_ids_are_refused(planted):
    data, _ = planted
    dup = FlatData(ids=pd.Series(["A"] * N), features=data.features, y=data.y, catalogue=data.catalogue, excluded={})
    with pytest.raises(ValueError, match="duplicate lead ids"):
        cross_validate_flat(dup, CONFIG, n_splits=3)
    clash = FlatData(ids=data.ids, features=data.features.rename(columns={"visits": "lead_id"}), y=data.y,
                     catalogue=data.catalogue, excluded={})
    with pytest.raises(ValueError, match="clashes"):
        cross_validate_flat(clash, CONFIG, n_splits=3)


# --- the real X Education export ---------------------------------------------------------


def test_xeducation_cross_validation_completes_with_finite_metrics(xeducation_csv):
    path = xeducation_csv
    data = load_flat(load_config(REPO / "pipelines" / "xeducation.yaml"), path)
    lines = []
    result = cross_validate_flat(data, ModelConfig(), n_splits=3, seed=0, progress=lines.append)
    assert len(lines) == 3
    assert len(result.folds) == 3 * (len(MODELS) + len(result.candidates))
    values = result.folds.drop(columns=["fold", "model"]).to_numpy(dtype="float64")
    assert np.isfinite(values).all()
    assert np.isfinite(result.summary.to_numpy(dtype="float64")).all()
    oof = result.out_of_fold
    assert len(oof) == len(data.features) and oof["id"].is_unique
    assert "Tags" not in data.features.columns  # the excluded columns stay out of every model
    assert (result.summary[("auc", "mean")] > 0.75).all()
