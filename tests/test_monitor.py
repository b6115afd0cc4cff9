"""Monitoring: realized vs predicted on matured outcomes only, calibration and population
drift with a verdict, the negative persona of disqualified leads, and the self-contained report.

All scenarios score the module's model (``monitored_bundle``: 8,000 synthetic leads, data
until 2025-10-01, trained on the outcomes known on 2025-03-01 - fitted up to mid January -
42-day SQL horizon) on weekly-ish runs from May to September 2025. The run of 2025-09-01 is deliberately immature (its window closes
after the data ends); the others have matured.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.features.builder import connect, open_leads
from leadscore.labels.examples import data_bounds
from leadscore.modeling.cutoffs import CutoffPolicy, Cutoffs
from leadscore.modeling.metrics import wilson_interval
from leadscore.monitoring.drift import (
    categorical_bins,
    numeric_bins,
    psi,
    psi_from_shares,
)
from leadscore.monitoring.monitor import monitor
from leadscore.monitoring.outcomes import score_band
from leadscore.monitoring.report import render_monitor_report
from leadscore.monitoring.result import (
    EXIT_NO_ACTION,
    EXIT_RETRAIN,
    EXIT_REVIEW_CUTOFFS,
    NO_ACTION,
    RETRAIN,
    REVIEW_CUTOFFS,
    MonitorConfig,
)
from leadscore.serving.batch import score_chunk
from leadscore.serving.registry import load_scorer
from leadscore.training.config import load_pipeline

from .conftest import app, runner, write_config

RUNS = ("2025-05-05", "2025-06-09", "2025-07-14", "2025-08-18", "2025-09-01")
IMMATURE_RUN = pd.Timestamp("2025-09-01", tz="UTC")  # + 42 days is after the end of the data
SHIFT_START = pd.Timestamp("2025-01-20", tz="UTC")    # after the newest as-of date the model was fitted on
NEW_SOURCE = "tiktok_ads"                             # a lead source the model never saw
PLANTED_SOURCE = "social"


# ---------------------------------------------------------------------------
# Fixture helpers: scoring runs, a shifted population, planted disqualifications
# ---------------------------------------------------------------------------

def score_runs(scorer, frames: dict, dates=RUNS) -> pd.DataFrame:
    """What `leadscore score` writes for each date, concatenated (one reason per direction
    keeps it quick; the monitor does not read reasons)."""
    con = connect(frames)
    runs = []
    for d in dates:
        pairs = open_leads(con, [pd.Timestamp(d, tz="UTC")]).sort_values("lead_id").reset_index(drop=True)
        runs.append(score_chunk(scorer, con, pairs, 1, "leadscore/1", "test-run"))
    return pd.concat(runs, ignore_index=True)


def shift_population(frames: dict, since: pd.Timestamp, share: float = 0.8, keep_activity: float = 0.35,
                     seed: int = 0) -> dict:
    """A new channel takes over after training: ``share`` of the leads created from
    ``since`` on come from ``NEW_SOURCE`` and do only ``keep_activity`` of their activities
    (a colder, less engaged audience). Outcomes are left as they were."""
    rng = np.random.default_rng(seed)
    leads = frames["leads"].copy()
    late = (leads["created_at"] >= since).to_numpy()
    moved = late & (rng.random(len(leads)) < share)
    leads.loc[moved, "lead_source"] = NEW_SOURCE
    acts = frames["activities"]
    moved_ids = set(leads.loc[moved, "lead_id"])
    drop = acts["lead_id"].isin(moved_ids).to_numpy() & (rng.random(len(acts)) >= keep_activity)
    return {"leads": leads, "activities": acts[~drop].reset_index(drop=True), "lifecycle": frames["lifecycle"]}


def plant_disqualifications(frames: dict, scores: pd.DataFrame, source: str, share: float = 0.8,
                            horizon_days: int = 42, seed: int = 0) -> tuple[dict, set]:
    """Sales disqualifies most leads of ``source``: for ``share`` of its leads scored in a
    matured run, a ``disqualified`` event within the horizon of the lead's first scored run
    (1-35 days after it). Returns the new tables and the leads given an event."""
    rng = np.random.default_rng(seed)
    _, end = data_bounds(connect(frames))
    leads = frames["leads"].set_index("lead_id")["lead_source"]
    matured = scores[pd.to_datetime(scores["as_of"], utc=True) + pd.Timedelta(days=horizon_days) <= end]
    first = matured.sort_values("as_of").groupby("lead_id", sort=True).head(1)
    first = first[first["lead_id"].map(leads).eq(source).to_numpy()]
    chosen = first[rng.random(len(first)) < share]
    life = frames["lifecycle"]
    at = pd.to_datetime(chosen["as_of"], utc=True) + pd.to_timedelta(rng.uniform(1, 35, len(chosen)), unit="D")
    new = pd.DataFrame({"lead_id": chosen["lead_id"].to_numpy(), "stage": "disqualified",
                        "occurred_at": at.astype(life["occurred_at"].dtype).to_numpy(), "amount": np.nan})
    new = new.astype({c: life[c].dtype for c in life.columns})
    return {**frames, "lifecycle": pd.concat([life, new], ignore_index=True)}, set(chosen["lead_id"])


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def monitored_bundle(train_dir, tmp_path_factory) -> Path:
    """A model trained on the outcomes known on 2025-03-01 (fitted on as-of dates up to mid
    January), monitored over the months after it."""
    work = tmp_path_factory.mktemp("monitored")
    config = write_config(work / "train.yaml", train_dir, examples={"observed_until": "2025-03-01"},
                          split={"folds": 2})  # the monitor reads the shipped model only: a short backtest will do
    result = runner.invoke(app, ["train", "--config", str(config), "--no-tracking"])
    assert result.exit_code == 0, result.output
    pipeline = load_pipeline(config)
    bundle = Path(pipeline.models_dir) / pipeline.name
    assert json.loads((bundle / "manifest.json").read_text())["params"]["train_until"] < f"{SHIFT_START:%Y-%m-%d}"
    return bundle


@pytest.fixture(scope="module")
def model(monitored_bundle):
    return load_scorer(str(monitored_bundle))


@pytest.fixture(scope="module")
def unshifted(model, frames):
    scorer, manifest = model
    scores = score_runs(scorer, frames)
    return scores, monitor(scorer, manifest, connect(frames), scores, config=MonitorConfig())


@pytest.fixture(scope="module")
def shifted(model, frames):
    scorer, manifest = model
    data = shift_population(frames, SHIFT_START)
    scores = score_runs(scorer, data)
    return scores, monitor(scorer, manifest, connect(data), scores, config=MonitorConfig())


def _summary(result) -> str:
    feats = result.psi[result.psi["kind"] != "score"]
    return (f"verdict {result.verdict}; ECE {result.ece:.4f} (chance {result.ece_chance:.4f}); PSI p_sql "
            f"{result.psi_of('p_sql'):.3f}, score {result.psi_of('score'):.3f}; top features "
            + ", ".join(f"{r.feature} {r.psi:.3f}" for r in feats.head(4).itertuples())
            + "; targets " + ", ".join(f"{r.population} {r.realized:.3%} ({r.low:.3%}-{r.high:.3%}) vs {r.target:.0%}"
                                       for r in result.targets.itertuples()))


# ---------------------------------------------------------------------------
# Pure pieces
# ---------------------------------------------------------------------------

def test_psi_is_zero_for_identical_populations_and_matches_the_formula():
    rng = np.random.default_rng(0)
    x = rng.exponential(size=5000)
    assert psi(x, x, categorical=False) == pytest.approx(0.0, abs=1e-12)
    # two bins by hand: 50/50 -> 80/20
    assert psi_from_shares([0.5, 0.5], [0.8, 0.2]) == pytest.approx(0.3 * math.log(1.6) + 0.3 * math.log(2.5))
    # an empty reference bin is set to epsilon, so the PSI is finite but large
    assert psi(["a"] * 100, ["a"] * 50 + ["new"] * 50, categorical=True) > 2


def test_numeric_bins_cut_at_reference_quantiles_and_keep_missing_apart():
    ref = pd.Series(list(range(100)) + [np.nan] * 25, dtype="float64")
    a, b, labels = numeric_bins(ref, pd.Series([np.nan] * 10 + [1000.0] * 10), bins=4)
    assert labels[-1] == "missing" and len(labels) == len(a) == len(b) == 5
    assert a[-1] == pytest.approx(25 / 125) and b[-1] == pytest.approx(0.5)
    assert a[:-1] == pytest.approx([0.2] * 4)      # quartiles of the reference: equal shares
    assert b[-2] == pytest.approx(0.5)              # 1000 lands in the top bin, not a new one
    a, b, values = categorical_bins(pd.Series(["x", None, "x"]), pd.Series(["y", "x"]))
    assert values == ["missing", "x", "y"] and list(a) == pytest.approx([1 / 3, 2 / 3, 0])


def test_wilson_interval_known_values_and_score_bands():
    low, high = wilson_interval([0, 5, 50], [10, 10, 100])
    assert low[0] == 0 and high[0] == pytest.approx(0.2775, abs=1e-4)
    assert (low[1], high[1]) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert np.isnan(wilson_interval(0, 0)[0])
    # the vectorised formula agrees with scipy's (scalar) Wilson interval
    from scipy.stats import binomtest

    ks, ns = [0, 1, 7, 33, 99, 500], [10, 3, 50, 40, 100, 2000]
    for conf in (0.9, 0.95):
        low, high = wilson_interval(ks, ns, conf)
        for k, n, lo, hi in zip(ks, ns, low, high):
            ci = binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
            assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert list(score_band(pd.Series([1, 10, 11, 90, 91, 99]))) == ["1-10", "1-10", "11-20", "81-90", "91-99", "91-99"]


def test_config_rejects_inconsistent_limits():
    with pytest.raises(ValueError, match="psi_watch"):
        MonitorConfig(psi_watch=0.3, psi_act=0.25)
    with pytest.raises(ValueError, match="target_tolerance"):
        MonitorConfig(target_tolerance=1.5)


# ---------------------------------------------------------------------------
# Verdicts: unshifted vs shifted population
# ---------------------------------------------------------------------------

def test_unshifted_population_recommends_no_action(unshifted):
    _, result = unshifted
    print("\nunshifted:", _summary(result))
    assert result.verdict == NO_ACTION, result.reasons
    assert result.exit_code == EXIT_NO_ACTION == 0
    assert not (result.psi["status"] == "act").any()
    assert result.psi_of("p_sql") < 0.1 and result.psi_of("score") < 0.1
    assert result.ece <= result.config.ece_limit and not result.ece_flag
    # the predicted rate of matured rows is close to what happened
    total = result.by_tier.set_index("tier").loc["all"]
    assert total["realized_low"] <= total["predicted_rate"] * 1.25
    assert total["predicted_rate"] * 0.75 <= total["realized_high"]
    assert not (result.targets["status"] == "off target").any()
    # nothing was unseen in training
    assert result.psi.loc[result.psi["feature"] == "lead_source", "unseen_share"].iloc[0] < 0.01


def test_shifted_population_flags_drift_and_recommends_retrain(shifted, unshifted):
    _, result = shifted
    print("\nshifted:", _summary(result))
    assert result.verdict == RETRAIN
    assert result.exit_code == EXIT_RETRAIN == 4
    source = result.psi.set_index("feature").loc["lead_source"]
    assert source["status"] == "act" and source["psi"] >= result.config.psi_act
    assert source["unseen_share"] > 0.3  # the new channel: values the model never saw
    # the engagement drop shows too, and the reasons name the numbers that triggered the verdict
    engagement = result.psi[(result.psi["group"] == "engagement") & (result.psi["status"] != "stable")]
    assert len(engagement) >= 1
    assert any("lead_source" in r and re.search(r"lead_source \d+\.\d{3}", r) for r in result.reasons)
    # far more drift than the unshifted run on the same dates
    assert result.psi_of("p_sql") > unshifted[1].psi_of("p_sql")
    metrics = result.metrics()
    assert metrics["monitor_verdict_code"] == EXIT_RETRAIN
    assert metrics["monitor_psi_max_feature"] >= 0.25 and metrics["monitor_unseen_share_max"] > 0.3


def test_conversion_below_the_cutoffs_target_recommends_review_cutoffs(model, frames, unshifted):
    """The same scores and data, but cutoffs said to be chosen for a 40 % SQL-tier target:
    no drift, realized conversion far below target -> review cutoffs (exit 5)."""
    import dataclasses

    scorer, manifest = model
    scores, _ = unshifted
    demanding = Cutoffs(policy=CutoffPolicy(policy="conversion_rate", mql=0.04, sql=0.4, bootstrap=0),
                        mql=scorer.cutoffs.mql, sql=scorer.cutoffs.sql)
    result = monitor(dataclasses.replace(scorer, cutoffs=demanding), manifest, connect(frames), scores,
                     config=MonitorConfig(bootstrap=300))
    assert result.verdict == REVIEW_CUTOFFS and result.exit_code == EXIT_REVIEW_CUTOFFS == 5
    sql_tier = result.targets.set_index("population").loc["SQL tier"]
    assert sql_tier["status"] == "off target" and sql_tier["high"] < 0.4 * 0.8
    assert any("SQL tier" in r and "40.0%" in r for r in result.reasons)
    # a policy without a conversion target: stated, and never "review cutoffs"
    capacity = Cutoffs(policy=CutoffPolicy(policy="capacity", mql=0.3, sql=0.1, bootstrap=0),
                       mql=scorer.cutoffs.mql, sql=scorer.cutoffs.sql)
    result = monitor(dataclasses.replace(scorer, cutoffs=capacity), manifest, connect(frames), scores,
                     config=MonitorConfig(bootstrap=0, chance_draws=20))
    assert result.targets.empty and "sets no conversion-rate target" in result.facts["target_note"]
    assert result.verdict == NO_ACTION


# ---------------------------------------------------------------------------
# Matured outcomes only
# ---------------------------------------------------------------------------

def _realized_by_hand(frames, scores, horizon_days=42) -> tuple[int, int]:
    """(matured rows, rows with an SQL event in (as_of, as_of + horizon]) from the raw tables."""
    _, end = data_bounds(connect(frames))
    rows = scores[["lead_id", "as_of"]].copy()
    rows = rows[rows["as_of"] + pd.Timedelta(days=horizon_days) <= end]
    sql = frames["lifecycle"][frames["lifecycle"]["stage"] == "sql"][["lead_id", "occurred_at"]]
    joined = rows.merge(sql, on="lead_id", how="left")
    hit = (joined["occurred_at"] > joined["as_of"]) & (joined["occurred_at"] <= joined["as_of"]
                                                       + pd.Timedelta(days=horizon_days))
    positives = joined[hit].drop_duplicates(["lead_id", "as_of"])
    return len(rows), len(positives)


def test_realized_rates_use_only_matured_outcomes_and_count_the_rest(model, frames, unshifted):
    scorer, manifest = model
    scores, result = unshifted
    immature = scores[scores["as_of"] == IMMATURE_RUN]
    assert len(immature) > 1000
    # the immature run is left out and counted, per run and in total
    runs = result.runs.set_index("as_of")
    assert runs.loc[IMMATURE_RUN, "matured"] == 0 and runs.loc[IMMATURE_RUN, "immature"] == len(immature)
    assert (runs.drop(index=IMMATURE_RUN)["immature"] == 0).all()
    assert result.facts["immature_rows"] == len(immature) and result.metrics()["monitor_immature_rows"] == len(immature)
    assert any(f"{len(immature):,} scored rows" in n for n in result.notes)
    total = result.by_tier.set_index("tier").loc["all"]
    n_matured, n_sql = _realized_by_hand(frames, scores)
    assert total["matured"] == n_matured == len(scores) - len(immature)
    assert total["positives"] == n_sql and total["realized_rate"] == pytest.approx(n_sql / n_matured)
    # some immature leads did become SQL before the data ended: counted neither way
    late_sql = frames["lifecycle"][(frames["lifecycle"]["stage"] == "sql")
                                   & (frames["lifecycle"]["occurred_at"] > IMMATURE_RUN)]["lead_id"]
    assert immature["lead_id"].isin(set(late_sql)).any()
    # the same figures without the immature run at all
    alone = monitor(scorer, manifest, connect(frames), scores[scores["as_of"] != IMMATURE_RUN],
                    config=MonitorConfig(bootstrap=0, chance_draws=20))
    cols = ["matured", "positives", "realized_rate", "predicted_rate"]
    pd.testing.assert_frame_equal(alone.by_tier[cols], result.by_tier[cols])
    assert alone.ece == pytest.approx(result.ece)


def test_an_earlier_end_of_data_makes_later_runs_immature(model, frames, unshifted):
    """observed_until 2025-08-01: runs whose 42-day window closes after it are immature,
    although their outcomes are in the tables."""
    scorer, manifest = model
    scores, _ = unshifted
    result = monitor(scorer, manifest, connect(frames), scores,
                     config=MonitorConfig(observed_until="2025-08-01", bootstrap=0, chance_draws=20))
    closes = scores["as_of"] + pd.Timedelta(days=42)
    early = closes <= pd.Timestamp("2025-08-01", tz="UTC")
    assert result.facts["matured_rows"] == int(early.sum()) and result.facts["immature_rows"] == int((~early).sum())
    assert set(result.runs.loc[result.runs["matured"] > 0, "as_of"]) == {pd.Timestamp("2025-05-05", tz="UTC"),
                                                                         pd.Timestamp("2025-06-09", tz="UTC")}
    total = result.by_tier.set_index("tier").loc["all"]
    assert total["matured"] == int(early.sum())
    _, n_sql = _realized_by_hand(frames, scores[early.to_numpy()])
    assert total["positives"] == n_sql


# ---------------------------------------------------------------------------
# Disqualified leads
# ---------------------------------------------------------------------------

def test_negative_persona_recovers_a_planted_source(model, frames, unshifted):
    scorer, manifest = model
    scores, _ = unshifted
    data, planted = plant_disqualifications(frames, scores, PLANTED_SOURCE)
    assert len(planted) > 100
    result = monitor(scorer, manifest, connect(data), scores, config=MonitorConfig(bootstrap=0, chance_draws=20))
    persona = result.persona
    print("\npersona (top 8):\n" + persona.head(8).to_string())
    fit = persona[persona["group"] == "fit"].reset_index(drop=True)
    top = fit.iloc[0]
    assert (top["feature"], top["value"]) == ("lead_source", PLANTED_SOURCE)
    assert top["lift"] > 3 and top["disqualified"] >= 0.8 * len(planted)
    assert top["over_representation"] > 1.5 * fit["over_representation"].iloc[1]
    # the same table without the plant: the source is not special
    before = unshifted[1].persona
    row = before[(before["feature"] == "lead_source") & (before["value"] == PLANTED_SOURCE)]
    assert row.empty or row["lift"].iloc[0] < 2
    # rates and counts are consistent
    assert (persona["disqualified_share"] > persona["converted_share"]).all()
    assert persona["over_representation"].is_monotonic_decreasing
    n_dq = result.facts["disqualified_leads"]
    assert top["disqualified_share"] == pytest.approx(top["disqualified"] / n_dq)
    # what pushed disqualified leads up: catalogue features, largest mean positive contribution first
    m = result.misleading
    assert set(m["feature"]) == set(scorer.features)
    assert m["mean_positive_disqualified"].is_monotonic_decreasing
    assert (m["mean_positive_disqualified"] >= m["mean_disqualified"] - 1e-12).all()
    assert m["mean_positive_disqualified"].iloc[0] > 0


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------

def test_report_is_self_contained_html_with_the_verdict_first(shifted, tmp_path):
    _, result = shifted
    text = render_monitor_report(result)
    assert text.startswith("<!DOCTYPE html>")
    images = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(images) == 3 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    verdict = text.index("Verdict: RETRAIN (exit code 4)")
    assert verdict < text.index("<h2>")
    assert '<div class="verdict verdict-alert">' in text  # red: act on it
    for heading in ("Realized vs predicted", "Calibration", "Population drift", "negative persona"):
        assert heading in text
    # every table scrolls in its own box; features that did not move are counted, not listed
    assert text.count("<table") == text.count('<div class="scroll"><table') > 5
    quiet = result.psi[(result.psi["kind"] != "score") & (result.psi["psi"] < 0.01)]
    if len(quiet):
        assert f"{len(quiet)} feature(s) with PSI &lt; 0.01 not shown" in text
    drift = text[text.index("<h2>Population drift</h2>"):]
    drift = drift[:drift.index("<h2>", 10)]
    assert all(f"<td>{name}</td>" not in drift for name in quiet["feature"])
    assert all(f"<td>{name}</td>" in drift for name in result.psi.loc[result.psi["psi"] >= 0.01, "feature"])
    (tmp_path / "monitor.html").write_text(text)


def test_json_and_metrics_are_plain(unshifted):
    _, result = unshifted
    doc = result.to_json()
    text = json.dumps(doc, allow_nan=False)  # no NaN, no numpy types
    assert json.loads(text)["verdict"] == NO_ACTION and doc["exit_code"] == 0
    assert {"by_tier", "by_baseline_tier", "by_band", "targets", "calibration", "psi", "persona",
            "misleading", "runs"} <= set(doc)
    metrics = result.metrics()
    assert all(k.startswith("monitor_") and isinstance(v, float) for k, v in metrics.items())
    for name in ("monitor_ece", "monitor_psi_score", "monitor_psi_max_feature", "monitor_realized_mql_sql_rate",
                 "monitor_realized_sql_rate", "monitor_matured_rows"):
        assert math.isfinite(metrics[name]), name
    assert metrics["monitor_ece"] == pytest.approx(result.ece)


# ---------------------------------------------------------------------------
# The command a scheduler runs
# ---------------------------------------------------------------------------

def test_cli_writes_report_json_and_an_mlflow_run_and_exits_retrain_on_drift(frames, monitored_bundle, shifted, tmp_path):
    from mlflow.tracking import MlflowClient

    from leadscore.io import write_table

    data = tmp_path / "data"
    for name, table in shift_population(frames, SHIFT_START).items():
        write_table(table, data / f"{name}.parquet")
    scores, expected = shifted
    runs = tmp_path / "scores"
    for as_of, run in scores.groupby("as_of"):
        write_table(run, runs / f"{as_of:%Y-%m-%d}.parquet")
    # a run's side files are not scores: a quarantine file with other columns must be skipped
    write_table(pd.DataFrame({"table": ["leads"], "reason": ["planted"]}), runs / "2025-09-01.quarantine.parquet")
    uri = f"sqlite:///{tmp_path / 'monitor.db'}"
    out, js = tmp_path / "report" / "monitor.html", tmp_path / "report" / "monitor.json"
    result = runner.invoke(app, ["monitor", "--model", str(monitored_bundle),
                                 "--data", str(data), "--scores", str(runs), "--out", str(out), "--json", str(js),
                                 "--tracking-uri", uri])
    assert result.exit_code == EXIT_RETRAIN, result.output
    assert f"from {len(RUNS)} file(s)" in result.output and "verdict: RETRAIN (exit 4)" in result.output
    doc = json.loads(js.read_text())
    assert doc["verdict"] == RETRAIN == expected.verdict
    assert doc["metrics"]["monitor_psi_max_feature"] == pytest.approx(expected.metrics()["monitor_psi_max_feature"])
    assert "Verdict: RETRAIN (exit code 4)" in out.read_text()

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("leadscore-monitoring")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["verdict"] == RETRAIN
    assert run.data.metrics["monitor_verdict_code"] == EXIT_RETRAIN
    assert run.data.metrics["monitor_ece"] == pytest.approx(doc["metrics"]["monitor_ece"])
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts beside the SQLite store, not in the working directory


def test_cli_names_missing_or_empty_score_inputs(trained_bundle, train_dir, tmp_path):
    from leadscore.cli.app import EXIT_UNUSABLE

    args = ["monitor", "--model", str(trained_bundle), "--data", str(train_dir),
            "--out", str(tmp_path / "r.html"), "--no-tracking", "--scores"]
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, [*args, str(tmp_path / "empty")])
    assert result.exit_code == EXIT_UNUSABLE and "no scoring output" in result.output
    result = runner.invoke(app, [*args, str(tmp_path / "nowhere.parquet")])
    assert result.exit_code == EXIT_UNUSABLE and "nowhere.parquet: no such file" in result.output
    assert not (tmp_path / "r.html").exists()


def test_capacity_counts_leads_new_to_a_tier_since_the_run_before():
    from leadscore.monitoring.outcomes import capacity_table

    # three runs a week apart, then one 14 days later; counted by hand:
    #   A: lead -> MQL -> SQL -> SQL   new to MQL-or-better in run 2, new to SQL in run 3
    #   B: MQL  -> lead -> MQL -> -    back to MQL in run 3 (new again: it was not there in run 2)
    #   C:   -  -> SQL  -> SQL -> MQL  new lead straight in SQL in run 2
    #   D:   -  ->  -   -> -   -> MQL  new in run 4
    day = pd.Timestamp("2025-09-01", tz="UTC")
    at = [day, day + pd.Timedelta(days=7), day + pd.Timedelta(days=14), day + pd.Timedelta(days=28)]
    rows = [("A", 0, "lead"), ("A", 1, "MQL"), ("A", 2, "SQL"), ("A", 3, "SQL"), ("B", 0, "MQL"), ("B", 1, "lead"),
            ("B", 2, "MQL"), ("C", 1, "SQL"), ("C", 2, "SQL"), ("C", 3, "MQL"), ("D", 3, "MQL")]
    scores = pd.DataFrame([{"lead_id": lead, "as_of": at[k], "tier": tier} for lead, k, tier in rows])
    table = capacity_table(scores)
    assert table["open_mql_or_better"].tolist() == [1, 2, 3, 3]
    assert table["open_sql"].tolist() == [0, 1, 2, 1]
    assert table["new_mql_or_better"].iloc[1:].tolist() == [2, 1, 1]   # A, C | B | D
    assert table["new_sql"].iloc[1:].tolist() == [1, 1, 0]             # C | A | -
    assert table["new_mql_or_better_per_week"].iloc[1:].tolist() == [2.0, 1.0, 0.5]  # the last run is 14 days on
    assert table.iloc[0][["new_mql_or_better", "new_sql"]].isna().all()  # the first run has no run before
