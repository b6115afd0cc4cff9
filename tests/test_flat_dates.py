"""Dated flat exports: labels that mature, walk-forward evaluation that trains only on the
past, the label's own name, and a drifting funnel where a random split is optimistic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from leadscore.cli.app import app
from leadscore.modeling.model import ModelConfig
from leadscore.settings import ConfigError
from leadscore.synthetic import SynthConfig, generate
from leadscore.synthetic.flat import flat_export
from leadscore.training.flat import FlatSplit, load_config, load_flat
from leadscore.training.flatcv import DATE, flat_folds, model_frame, walk_forward_flat

from .conftest import write_flat_config

runner = CliRunner()
HEADER = "dataset: t\npath: t.csv\nid_column: id\nlabel_column: Converted\nnumeric: [visits]\n"


def _write(tmp_path: Path, rows: dict, extra: str = "") -> Path:
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(HEADER + extra)
    return cfg


def test_outcomes_mature_and_count_only_within_the_horizon(tmp_path):
    cfg = _write(tmp_path, {
        "id": ["a", "b", "c", "d", "e"],
        "created": ["01/01/2025", "01/01/2025", "01/02/2025", "20/03/2025", "01/01/2025"],
        "won on": ["15/01/2025", "30/04/2025", "", "25/03/2025", ""],
        "Converted": [1, 1, 0, 1, 1],
        "visits": [1, 2, 3, 4, 5]},
        "date_column: created\noutcome_date_column: won on\ndate_format: '%d/%m/%Y'\nhorizon_days: 30\n"
        "observed_until: '2025-04-01'\n")
    data = load_flat(load_config(cfg))
    assert data.label == "converted"
    # b converted 119 days after its date: a negative of a 30-day label; e has no date: counted, and said
    assert data.y.tolist() == [True, False, False, True, True]
    assert any("1 positive leads have no 'won on'" in n for n in data.notes)
    assert any("converted more than 30 days after" in n for n in data.notes)
    # d (dated 2025-03-20) has not had 30 days by the export time: out of training and evaluation
    matured = data.matured()
    assert matured.ids.tolist() == ["a", "b", "c", "e"]
    assert any("1 leads dated after 2025-03-02" in n for n in data.notes)


def test_a_date_that_does_not_parse_names_the_rows(tmp_path):
    cfg = _write(tmp_path, {"id": ["a", "b", "c"], "created": ["2025-01-01", "01/02/2025", ""],
                            "Converted": [1, 0, 0], "visits": [1, 2, 3]}, "date_column: created\n")
    with pytest.raises(ConfigError, match=r"date column 'created' in rows \[1, 2\] \(of 2\) is '01/02/2025', not an "
                                          r"ISO 8601 timestamp; set date_format"):
        load_flat(load_config(cfg))


def test_the_model_and_split_sections_are_read_and_checked(tmp_path):
    cfg = _write(tmp_path, {"id": ["a"], "Converted": [1], "visits": [1]},
                 "label: became_customer\nmodel:\n  n_estimators: 50\n  num_leaves: 7\nsplit:\n  folds: 2\n")
    dataset = load_config(cfg)
    assert dataset.model_settings.n_estimators == 50 and dataset.model_settings.num_leaves == 7
    assert dataset.split_settings.folds == 2 and dataset.label_name == "became_customer"
    cfg.write_text(HEADER + "model:\n  n_trees: 50\n")
    with pytest.raises(ConfigError, match=r"model: unknown key\(s\) n_trees; allowed: .*n_estimators"):
        load_config(cfg)
    cfg.write_text(HEADER + "label: Became Customer\n")
    with pytest.raises(ConfigError, match="label must be a snake_case name such as 'became_customer'"):
        load_config(cfg)


@settings(max_examples=80, deadline=None)
@given(days=st.lists(st.integers(0, 700), min_size=2, max_size=80), horizon=st.integers(1, 120),
       export_day=st.integers(0, 900), folds=st.integers(1, 4), test_weeks=st.integers(1, 12),
       step_weeks=st.integers(1, 12), min_train_weeks=st.integers(1, 12))
def test_property_a_fold_trains_only_on_outcomes_known_at_its_cutoff(days, horizon, export_day, folds, test_weeks,
                                                                     step_weeks, min_train_weeks):
    start = pd.Timestamp("2024-01-01", tz="UTC")
    dates = pd.Series([start + pd.Timedelta(days=d, hours=d % 24) for d in days])
    observed = start + pd.Timedelta(days=export_day)
    split = FlatSplit(folds=folds, test_weeks=test_weeks, step_weeks=step_weeks, min_train_weeks=min_train_weeks)
    out = flat_folds(dates, horizon, observed, split)
    h = pd.Timedelta(days=horizon)
    assert len(out) <= folds and [f.cutoff for f in out] == sorted(f.cutoff for f in out)
    for f in out:
        assert f.test_until <= observed - h                      # every test lead's outcome has matured
        assert f.cutoff - h - dates.min() >= pd.Timedelta(weeks=min_train_weeks)
        train = dates[dates + h <= f.cutoff]
        test = dates[(dates >= f.cutoff) & (dates < f.test_until)]
        if len(train) and len(test):
            assert train.max() < test.min()                      # no training lead dated after a test lead


def _drifting_export(tmp_path_factory, name: str, n_leads: int) -> Path:
    """The flat export (its config path) of a drifting synthetic world of ``n_leads`` leads, seed 5."""
    out = tmp_path_factory.mktemp(name)
    generate(SynthConfig(n_leads=n_leads, seed=5, drift=True), out / "world", progress=False)
    return flat_export(out / "world", out)


@pytest.fixture(scope="module")
def drift_flat(tmp_path_factory) -> Path:
    return _drifting_export(tmp_path_factory, "flat", 8000)


def test_no_training_lead_is_dated_after_the_earliest_test_lead(drift_flat):
    dataset = load_config(drift_flat)
    data = load_flat(dataset)
    result = walk_forward_flat(data, ModelConfig(n_estimators=60), dataset.split_settings)
    assert result.out_of_time and len(result.windows) >= 2
    frame, _, _ = model_frame(data.matured())
    for w in result.windows.itertuples():
        assert w.train_until < w.test_from and w.train_until + pd.Timedelta(days=data.horizon_days) <= w.cutoff
        tested = result.out_of_fold.loc[result.out_of_fold["fold"] == w.fold, "id"]
        dated = frame.set_index("lead_id").loc[tested, DATE]
        assert dated.min() >= w.cutoff and len(tested) == w.test_rows
    assert np.isfinite(result.mean("auc")).all()


@pytest.mark.slow
def test_train_on_a_drifting_flat_export_prints_out_of_time_below_the_random_split(drift_flat, tmp_path):
    config = write_flat_config(tmp_path / "flat.yaml", drift_flat.parent / "leads.csv", base=drift_flat)
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "out of time, mean over" in out and "random split - optimistic when the funnel drifts" in out
    aucs = [float(line.split()[1].rstrip(",")) for line in out.splitlines() if line.startswith("became_sql_auc")]
    assert len(aucs) == 2, out
    out_of_time, random_split = aucs
    assert out_of_time < random_split, out
    assert "sql_auc" not in out.replace("became_sql_auc", "")

    # the deployed model scores the export's leads as of their own date, and monitoring reads the
    # export's outcomes, leaving the leads whose 60 days have not passed out as immature
    dataset = load_config(config)
    model, uri = f"models:/{dataset.bundle_name}@champion", dataset.tracking_config.tracking_uri
    for name in ("a", "b"):
        done = runner.invoke(app, ["score", "--model", model, "--flat", str(config), "--tracking-uri", uri,
                                   "--out", str(tmp_path / "scores" / f"{name}.parquet")])
        assert done.exit_code == 0, done.output
    scores = pd.read_parquet(tmp_path / "scores" / "a.parquet")
    data = load_flat(dataset)
    assert (scores["as_of"].to_numpy() == data.dates.to_numpy()).all() and "p_sql" in scores
    watched = runner.invoke(app, ["monitor", "--model", model, "--flat", str(config), "--tracking-uri", uri,
                                  "--scores", str(tmp_path / "scores"), "--out", str(tmp_path / "m.html"), "--no-tracking"])
    assert watched.exit_code in (0, 4, 5), watched.output
    # a dated lead is scored as of its date: the two runs score the same (lead, as_of) rows, counted once
    immature = int((data.dates + pd.Timedelta(days=60) > data.observed_until).sum())
    assert f"rows: {len(scores):,} scored, {len(scores) - immature:,} matured, {immature:,} immature" in watched.output
    assert immature > 0


@pytest.fixture(scope="module")
def small_drift_flat(tmp_path_factory) -> Path:
    """A small drifting export: 5,000 leads in the world, ~2,300 in the export, under 400 positives."""
    return _drifting_export(tmp_path_factory, "small-flat", 5000)


def test_on_small_drifting_data_the_chosen_model_is_at_least_the_logistic_regression(small_drift_flat):
    """Where a default LightGBM loses to the logistic regression out of time (few outcomes, a
    trend), the candidate race must not ship something worse than that logistic regression."""
    dataset = load_config(small_drift_flat)
    data = load_flat(dataset)
    matured = data.matured()
    assert len(matured.y) <= 5000 and matured.y.sum() <= 400
    result = walk_forward_flat(data, ModelConfig(), dataset.split_settings)
    auc, logloss = result.mean("auc"), result.mean("logloss")
    assert auc["logreg"] > auc["lgbm_default"]   # the regime this test is about
    assert auc["model"] >= auc["logreg"] and logloss["model"] <= logloss["logreg"], result.summary
    assert result.candidates["family"].tolist()[:3] == ["lightgbm"] * 3
    assert "lightgbm_l4_m50_r20" in set(result.candidates["candidate"])  # the small-data grid ran
