"""Examples and labels, maturity, the grouped out-of-time split, the leakage audit, flat exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from leadscore.cli.app import app
from leadscore.features.builder import connect, open_leads
from leadscore.labels.examples import (
    LABELS,
    WEIGHT,
    ExampleConfig,
    build_examples,
    history_weeks_needed,
    label_examples,
    lead_hash,
    matured,
    observed_end,
    parts_at,
    sample_leads,
    walk_forward,
)
from leadscore.labels.leakage import leakage_audit
from leadscore.settings import ConfigError
from leadscore.training.config import load_pipeline
from leadscore.training.flat import load_config, load_flat

from .conftest import ts
from .test_features import _lead, _tables

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _labels_tables():
    leads = [_lead(x, "2025-01-01") for x in ("EARLY", "EDGE", "LATE", "NEVER", "WON")]
    lc = [
        ("EARLY", "sql", ts("2025-03-11"), None),  # 10 days after the as_of of 2025-03-01
        ("EDGE", "sql", ts("2025-04-12"), None),  # exactly as_of + 42 days: inside [as_of, as_of + H]
        ("LATE", "sql", ts("2025-04-12 00:00:01"), None),  # one second past the horizon
        ("WON", "sql", ts("2025-03-05"), None),
        ("WON", "won", ts("2025-05-01"), None),
    ]
    acts = [("NEVER", ts("2025-09-01"), "email_open", None)]  # exported on 2025-09-01 (observed_until below)
    return _tables(leads, acts, lc)


def test_labels_read_the_horizon_window():
    cfg = ExampleConfig(start="2025-03-01", end="2025-03-01", horizon_days=42, won_horizon_days=120,
                        observed_until="2025-09-01")
    ex, report = build_examples(_labels_tables(), cfg)
    got = ex.set_index("lead_id")
    assert got.loc["EARLY", "became_sql"] and got.loc["EDGE", "became_sql"]
    assert not got.loc["LATE", "became_sql"] and not got.loc["NEVER", "became_sql"]
    assert got.loc["WON", "became_sql"] and got.loc["WON", "won"]
    assert not got.loc["EARLY", "won"]
    assert report.positives == {"became_sql": 3, "won": 1}
    assert report.immature == {"became_sql": 0, "won": 0}


def test_immature_examples_are_unlabelled_and_counted():
    # Observed until 2025-09-01: as-of dates after 2025-07-21 cannot see 42 days ahead,
    # and after 2025-05-04 cannot see 120 days ahead.
    cfg = ExampleConfig(start="2025-06-01", end="2025-08-31", cadence_days=7, observed_until="2025-09-01")
    ex, report = build_examples(_labels_tables(), cfg)
    end = ts("2025-09-01")
    expect_sql = ex["as_of"] + pd.Timedelta(days=42) > end
    expect_won = ex["as_of"] + pd.Timedelta(days=120) > end
    assert expect_sql.any() and (~expect_sql).any()
    assert (ex["became_sql"].isna() == expect_sql).all()
    assert (ex["won"].isna() == expect_won).all()
    assert report.immature == {"became_sql": int(expect_sql.sum()), "won": int(expect_won.sum())}
    assert len(matured(ex, "became_sql")) == int((~expect_sql).sum())
    # An explicit observed_until moves the boundary.
    ex2, report2 = build_examples(_labels_tables(), ExampleConfig(start="2025-06-01", end="2025-08-31",
                                                                  observed_until="2025-12-31"))
    assert report2.immature["became_sql"] == 0


def test_examples_cover_open_leads_at_every_date(synthetic_dir):
    tables = {n: synthetic_dir / f"{n}.parquet" for n in ("leads", "activities", "lifecycle")}
    ex, report = build_examples(tables, ExampleConfig(start="2025-01-06", end="2025-03-31", cadence_days=14))
    assert len(report.as_of_dates) == 7 and report.examples == len(ex)
    assert not ex.duplicated(["lead_id", "as_of"]).any()
    # A positive never appears for a lead after its SQL: it is no longer open.
    lc = pd.read_parquet(synthetic_dir / "lifecycle.parquet")
    first_sql = lc[lc["stage"] == "sql"].groupby("lead_id")["occurred_at"].min()
    joined = ex.join(first_sql.rename("sql_at"), on="lead_id")
    assert (joined["sql_at"].isna() | (joined["sql_at"] >= joined["as_of"])).all()


def test_sampled_examples_are_the_full_rows_of_every_positive_lead_and_a_weighted_share_of_the_others(
        synthetic_dir):
    """max_examples: the same report as every example; each kept lead's rows exactly as in the
    full build (features and labels); every lead with a matured positive kept at weight 1, the
    others at 1/r; the weighted examples stand for the whole window."""
    tables = {n: synthetic_dir / f"{n}.parquet" for n in ("leads", "activities", "lifecycle")}
    cfg = dict(start="2024-10-07", end="2025-09-01", cadence_days=14, max_lead_age_days=365)
    full, full_report = build_examples(tables, ExampleConfig(**cfg))
    sampled, report = build_examples(tables, ExampleConfig(**cfg, max_examples=len(full) // 3))
    assert WEIGHT not in full
    assert (report.examples, report.leads, report.immature, report.positives) == \
        (full_report.examples, full_report.leads, full_report.immature, full_report.positives)
    s = report.sample
    assert s is not None and 0 < s.rate < 1 and s.examples == len(sampled) and s.leads == sampled["lead_id"].nunique()
    assert abs(len(sampled) - len(full) // 3) < 0.1 * len(full)  # about max_examples
    positive = set(full.loc[full[list(LABELS)].fillna(False).any(axis=1), "lead_id"])
    assert s.positive_leads == len(positive)
    kept = set(sampled["lead_id"])
    assert positive <= kept
    expected = full[full["lead_id"].isin(kept)].reset_index(drop=True)
    pd.testing.assert_frame_equal(sampled.drop(columns=WEIGHT), expected)
    weight = sampled[WEIGHT].to_numpy()
    assert (weight[sampled["lead_id"].isin(positive).to_numpy()] == 1).all()
    assert np.allclose(weight[~sampled["lead_id"].isin(positive).to_numpy()], 1 / s.rate)
    # the weighted sample estimates the window: examples and the matured negatives
    assert abs(weight.sum() / len(full) - 1) < 0.1
    negatives = full["became_sql"].eq(False).sum()
    assert abs((weight * sampled["became_sql"].eq(False)).sum() / negatives - 1) < 0.1
    assert "sampled (examples.max_examples" in "\n".join(report.lines())
    # a budget the window fits in keeps every example, unweighted
    again, report = build_examples(tables, ExampleConfig(**cfg, max_examples=len(full)))
    assert report.sample is None and WEIGHT not in again and len(again) == len(full)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=5, max_size=300), st.data())
def test_property_lead_sampling_keeps_positives_and_a_larger_budget_keeps_a_superset(sizes, data):
    """Every lead with an outcome while their examples fill at most half the budget (else those
    leads at the rate that fills half); the others at the rate that fills the rest; each kept
    lead weighs 1 / its group's rate; a larger budget keeps a superset."""
    per_lead = pd.Series(sizes, index=[f"L{i:05d}" for i in range(len(sizes))])
    positive = per_lead.index[data.draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))]
    small_budget = data.draw(st.integers(1000, 4000))
    small, s1 = sample_leads(per_lead, positive, small_budget)
    large, s2 = sample_leads(per_lead, positive, small_budget + data.draw(st.integers(0, 4000)))
    n_pos, n_other = int(per_lead[positive].sum()), int(per_lead.sum()) - int(per_lead[positive].sum())
    if n_pos <= max(small_budget / 2, small_budget - n_other):
        assert s1.positive_rate == 1 and set(positive) <= set(small.index)
    else:
        assert s1.positive_rate * n_pos == pytest.approx(max(small_budget / 2, small_budget - n_other))
    assert np.allclose(small[small.index.isin(positive)], 1 / s1.positive_rate)
    assert np.allclose(small[~small.index.isin(positive)], 1 / s1.rate) and 0 < s1.rate <= 1
    if n_other:
        assert s1.rate * n_other == pytest.approx(min(n_other, small_budget - s1.positive_rate * n_pos))
    assert set(small.index) <= set(large.index) and s1.rate <= s2.rate and s1.positive_rate <= s2.positive_rate
    assert s1.examples == per_lead[small.index].sum() and s1.leads == len(small)
    assert s1.other_leads == (~small.index.isin(positive)).sum()
    assert ("WARNING only" in "\n".join(s1.lines())) == (s1.other_leads < 10_000)  # always few here
    again, _ = sample_leads(per_lead.sample(frac=1, random_state=1), positive, small_budget)  # order-free
    assert set(again.index) == set(small.index)


def test_a_fit_at_a_cutoff_sees_only_closed_label_windows_and_holds_out_leads(synthetic_dir):
    tables = {n: synthetic_dir / f"{n}.parquet" for n in ("leads", "activities", "lifecycle")}
    ex, report = build_examples(tables, ExampleConfig(cadence_days=7))
    cut = ts("2025-06-01")
    parts = parts_at(ex, "became_sql", cut, 42, holdout_weeks=8, promotion_fraction=0.15)
    for frame in (parts.fit, parts.calibration, parts.promotion):
        assert (frame["as_of"] + pd.Timedelta(days=42) <= cut).all() and frame["became_sql"].notna().all()
    newest = parts.holdout_from
    assert (parts.calibration["as_of"] > newest).all() and (parts.promotion["as_of"] > newest).all()
    # the promotion leads are out of everything; calibration is the fit's newest weeks
    assert not set(parts.promotion["lead_id"]) & set(parts.fit.loc[parts.fit["as_of"] > newest, "lead_id"])
    assert parts.calibration.equals(parts.fit[parts.fit["as_of"] > newest].reset_index(drop=True))
    share = parts.promotion["lead_id"].nunique() / ex.loc[ex["as_of"] > newest, "lead_id"].nunique()
    assert 0.1 < share < 0.2
    # every matured example before the cut-off is fitted, held out for promotion or purged (a
    # promotion lead's example whose label window reaches into the held-out weeks), once
    known = ex[ex["became_sql"].notna() & (ex["as_of"] + pd.Timedelta(days=42) <= cut)]
    assert len(parts.fit) + len(parts.promotion) + parts.purged == len(known) and parts.purged > 0


def test_walk_forward_places_folds_from_the_end_of_the_matured_outcomes():
    dates = pd.Series(pd.date_range("2024-01-07", "2025-09-28", freq="7D", tz="UTC"))
    end = ts("2025-10-01")
    folds = walk_forward(dates, 42, end, folds=3, test_weeks=8, step_weeks=8)
    assert len(folds) == 3 and [len(f.test_dates) for f in folds] == [8, 8, 8]
    matured = dates[dates + pd.Timedelta(days=42) <= end]
    assert folds[-1].test_end == matured.max()                       # the newest fold ends at the newest matured date
    assert [f.cutoff for f in folds] == sorted(f.cutoff for f in folds)
    assert folds[1].cutoff - folds[0].cutoff == pd.Timedelta(weeks=8)
    assert all(f.cutoff == f.test_dates[0] for f in folds)
    explicit = walk_forward(dates, 42, end, 3, 4, 4, cutoffs=["2025-03-01"])
    assert [f.cutoff for f in explicit] == [ts("2025-03-01")] and explicit[0].test_dates[0] == ts("2025-03-02")
    assert history_weeks_needed(42, 3, 8, 8, 8) == 8 + 8 + 16 + 12


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 60), st.booleans()), min_size=1, max_size=200),
       cut_week=st.integers(1, 70), horizon=st.integers(1, 60), holdout=st.integers(1, 10))
def test_property_nothing_a_fit_sees_closes_after_its_cutoff(rows, cut_week, horizon, holdout):
    start = ts("2025-01-05")
    ex = pd.DataFrame({"lead_id": [f"L{lead}" for lead, _, _ in rows],
                       "as_of": [start + pd.Timedelta(days=7 * week) for _, week, _ in rows],
                       "won": pd.array([y for _, _, y in rows], dtype="boolean")})
    cut = start + pd.Timedelta(days=7 * cut_week)
    parts = parts_at(ex, "won", cut, horizon, holdout, 0.2)
    seen = pd.concat([parts.fit, parts.promotion])
    assert (seen["as_of"] + pd.Timedelta(days=horizon) <= cut).all()
    # a lead of the newest weeks is held out for promotion or fitted (and calibrated) there - never both
    assert not set(parts.fit.loc[parts.fit["as_of"] > parts.holdout_from, "lead_id"]) & set(parts.promotion["lead_id"])
    assert (parts.promotion["as_of"] > parts.holdout_from).all()
    assert len(parts.calibration) == int((parts.fit["as_of"] > parts.holdout_from).sum())
    # no fitted example of a promotion lead shares an outcome with its held-out ones: its label
    # window closes before the first held-out as-of date (purged otherwise, and counted)
    held = parts.fit[parts.fit["lead_id"].isin(parts.promotion["lead_id"])]
    assert (held["as_of"] + pd.Timedelta(days=horizon) <= parts.holdout_from).all()
    assert len(seen) + parts.purged == int((ex["as_of"] + pd.Timedelta(days=horizon) <= cut).sum())


def test_lead_hashing_is_stable_across_versions():
    """A SHA-256 of the id (not pandas' hash, which is no stable promise): these numbers are the
    contract that keeps a lead in its part from one release to the next."""
    u = lead_hash(pd.Series(["L0000001", "L0000002", "L0000001"]))
    assert u[0] == u[2] and u[0] == pytest.approx(0.1866792, abs=1e-6) and u[1] == pytest.approx(0.9759125, abs=1e-6)
    many = lead_hash(pd.Series([f"L{i:07d}" for i in range(20_000)]))
    assert 0.49 < many.mean() < 0.51 and abs((many < 0.15).mean() - 0.15) < 0.01


def test_an_outcome_exactly_at_as_of_is_a_positive_of_an_open_lead(tables):
    """Features read strictly before as_of, so an SQL at as_of is an outcome: the lead is open
    then and its example is positive (it was open and negative: the SQL fell between the two)."""
    at = ts("2025-01-10")  # lead A's SQL
    con = connect(tables)
    assert "A" in set(open_leads(con, [at])["lead_id"])
    labels = label_examples(con, pd.DataFrame({"lead_id": ["A"], "as_of": [at]}),
                            ExampleConfig(horizon_days=1), ts("2025-06-01"))
    assert bool(labels["became_sql"].iloc[0])


def test_outcomes_are_observed_until_the_newest_lifecycle_event_minus_the_latency(tables):
    """Web activity runs later than sales keys stages: the activity table does not mature labels."""
    tables = {**tables, "activities": pd.concat([tables["activities"], pd.DataFrame({
        "lead_id": ["B"], "occurred_at": [ts("2025-03-01")], "activity_type": ["email_open"], "detail": [None]})])}
    con = connect(tables)
    newest_stage = tables["lifecycle"]["occurred_at"].max()
    assert observed_end(con, ExampleConfig()) == newest_stage
    assert observed_end(con, ExampleConfig(label_latency_days=3)) == newest_stage - pd.Timedelta(days=3)
    assert observed_end(con, ExampleConfig(observed_until="2025-02-01", label_latency_days=1)) == ts("2025-01-31")


# --- leakage audit ------------------------------------------------------------------------


def test_audit_flags_a_planted_leak_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.3
    frame = pd.DataFrame({
        "status_after_call": np.where(y, rng.choice(["closed", "won"], 4000), rng.choice(["junk", "lost"], 4000)),
        "noise": rng.normal(size=4000),
        "row_id": np.arange(4000).astype(str),  # unique per row: pooled, no signal
        "weak": rng.normal(size=4000) + 0.3 * y,
    })
    audit = leakage_audit(frame, y).set_index("feature")
    assert audit.loc["status_after_call", "suspected"] and audit.loc["status_after_call", "auc"] > 0.99
    assert not audit.loc[["noise", "row_id", "weak"], "suspected"].any()
    assert audit.loc["row_id", "auc"] == pytest.approx(0.5)
    assert 0.55 < audit.loc["weak", "auc"] < 0.75


# --- flat exports: X Education ------------------------------------------------------------


def test_xeducation_config_loads_with_select_as_missing(xeducation_csv):
    path = xeducation_csv
    data = load_flat(load_config(REPO / "pipelines" / "xeducation.yaml"), path)
    raw = pd.read_csv(path)
    assert len(data.features) == len(raw) and data.y.mean() == pytest.approx(raw["Converted"].mean())
    assert "Tags" not in data.features.columns and "Tags" in data.excluded
    assert not data.features.isin(["Select"]).any().any()
    n_select = int((raw["Specialization"] == "Select").sum())
    assert n_select > 0
    assert (data.features["Specialization"] == "missing").sum() == n_select + int(raw["Specialization"].isna().sum())
    assert set(data.catalogue["group"]) == {"fit", "engagement"}


def test_xeducation_audit_with_nothing_excluded_names_tags(xeducation_csv):
    path = xeducation_csv
    res = runner.invoke(app, ["audit", "--flat", str(REPO / "pipelines" / "xeducation.yaml"), "--data", str(path),
                              "--include-excluded"])
    assert res.exit_code == 1, res.output
    assert "suspected leakage: Tags" in res.output
    clean = runner.invoke(app, ["audit", "--flat", str(REPO / "pipelines" / "xeducation.yaml"), "--data", str(path)])
    assert clean.exit_code == 0, clean.output
    assert "no feature above the leakage threshold" in clean.output


def test_flat_config_errors_name_the_column(tmp_path):
    csv = tmp_path / "x.csv"
    pd.DataFrame({"id": ["a", "b"], "y": [1, 0], "size": ["10", "ten"], "extra": ["p", "q"]}).to_csv(csv, index=False)
    cfg = tmp_path / "x.yaml"
    cfg.write_text("dataset: x\npath: x.csv\nid_column: id\nlabel_column: y\nnumeric: [size]\n")
    with pytest.raises(ConfigError, match=r"neither categorical, numeric nor excluded: \['extra'\]"):
        load_flat(load_config(cfg))
    cfg.write_text("dataset: x\npath: x.csv\nid_column: id\nlabel_column: y\nnumeric: [size]\ncategorical: [extra]\n")
    with pytest.raises(ConfigError, match=r"numeric column 'size' has non-numbers in rows \[1\]"):
        load_flat(load_config(cfg))
    cfg.write_text("dataset: x\npath: x.csv\nid_column: id\nlabel_column: y\ncategorical: [size, extra, nope]\n")
    with pytest.raises(ConfigError, match=r"not in the file: \['nope'\]"):
        load_flat(load_config(cfg))


# --- pipeline config and CLI --------------------------------------------------------------


def test_pipeline_config_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "train.yaml"
    bad.write_text("examples:\n  cadence_days: 7\n  horizon: 42\n")
    with pytest.raises(ConfigError, match=r"train.yaml:3: examples: unknown key\(s\) horizon"):
        load_pipeline(bad)   # the line of the unknown key
    bad.write_text("split:\n  folds: 3\n  test_weeks: 0\n")
    with pytest.raises(ConfigError, match=r"train.yaml:3: split: test_weeks must be >= 1, got 0"):
        load_pipeline(bad)   # the line of the key the check names
    bad.write_text("model:\n  learning_rate: 0.05\ncutoffs: 3\n")
    with pytest.raises(ConfigError, match=r"train.yaml:3: cutoffs: expected a mapping, got int"):
        load_pipeline(bad)   # the section's own line
    bad.write_text("examples:\n  cadence_days: [7\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_pipeline(bad)
    bad.write_text("features:\n  half_life_days: -3\n")
    with pytest.raises(ConfigError, match="half_life_days"):
        load_pipeline(bad)
    assert load_pipeline(REPO / "pipelines" / "train.yaml").examples.horizon_days == 42


def test_cli_features_and_examples(synthetic_dir, tmp_path):
    out = tmp_path / "features.parquet"
    res = runner.invoke(app, ["features", "--data", str(synthetic_dir), "--as-of", "2025-06-01", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = pd.read_parquet(out)
    cat = pd.read_csv(tmp_path / "features.catalogue.csv")
    assert list(rows.columns[2:]) == list(cat["name"])
    assert f"{len(rows):,} open leads" in res.output

    cfg = tmp_path / "train.yaml"
    cfg.write_text("examples:\n  cadence_days: 28\n  max_lead_age_days: 200\nleakage:\n  threshold: 0.95\n")
    ex_out = tmp_path / "examples.parquet"
    res = runner.invoke(app, ["examples", "--config", str(cfg), "--data", str(synthetic_dir), "--out", str(ex_out)])
    assert res.exit_code == 0, res.output
    ex = pd.read_parquet(ex_out)
    assert ex["lead_age_days"].max() <= 200
    n_immature = int(ex["became_sql"].isna().sum())
    assert f"{n_immature:,} immature" in res.output
    assert "leakage audit" in res.output
