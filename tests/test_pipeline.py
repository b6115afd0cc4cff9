"""The training pipeline end to end: train, bundle, MLflow registry, retrain and promotion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from leadscore.cli.app import app
from leadscore.modeling.model import InsufficientData
from leadscore.training.config import PromotionConfig, load_pipeline
from leadscore.training.pipeline import promotion_decision, train_pipeline

from .conftest import runner, write_config


def test_train_prints_metrics_and_writes_bundle_with_project_metric_names(trained):
    config, output = trained
    pipeline = load_pipeline(config)
    bundle = Path(pipeline.models_dir) / pipeline.name
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in ("sql_auc", "sql_pr_auc", "sql_logloss", "sql_brier", "sql_ece", "sql_lift_top_decile",
                 "logreg_sql_auc", "baseline_sql_auc", "baseline_sql_lift_top_decile", "oracle_sql_auc",
                 "oracle_sql_logloss"):
        assert np.isfinite(manifest["metrics"][name]), name
    assert manifest["cutoffs"]["mql"] <= manifest["cutoffs"]["sql"]
    assert set(manifest["files"]) >= {"scorer.json", "report.html"}
    assert "report:" in output and "model / oracle AUC" in output
    html = (bundle / "report.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html


def test_registered_champion_loads_in_a_fresh_process_and_scores_like_the_bundle(trained, train_dir, tmp_path):
    from leadscore.features.builder import features_as_of
    from leadscore.serving.registry import load_scorer

    config, _ = trained
    pipeline = load_pipeline(config)
    rows = features_as_of({n: train_dir / f"{n}.parquet" for n in ("leads", "activities", "lifecycle")},
                          as_of="2025-06-01", config=pipeline.features).head(200)
    rows_path = tmp_path / "rows.parquet"
    # MLflow's schema takes zone-naive timestamps: the served model reads them as UTC
    rows.assign(as_of=rows["as_of"].dt.tz_localize(None)).to_parquet(rows_path)
    out_path = tmp_path / "scored.parquet"
    code = ("import mlflow, pandas as pd, sys; m = mlflow.pyfunc.load_model('models:/leadscore@champion'); "
            f"m.predict(pd.read_parquet({str(rows_path)!r})).to_parquet({str(out_path)!r})")
    env = {**os.environ, "MLFLOW_TRACKING_URI": pipeline.tracking.tracking_uri}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = pd.read_parquet(out_path)
    scorer, _ = load_scorer(str(Path(pipeline.models_dir) / pipeline.name))
    local = scorer.predict(rows)
    np.testing.assert_allclose(served["p_sql"], local["p_sql"])
    assert (pd.to_datetime(served["as_of"], utc=True) == local["as_of"]).all()
    assert (served["tier"].to_numpy() == local["tier"].to_numpy()).all()
    # score is monotone in p_sql and tiers follow the cutoffs
    order = np.argsort(local["p_sql"].to_numpy())
    assert (np.diff(local["score"].to_numpy()[order]) >= 0).all()
    is_sql = local["p_sql"] >= scorer.cutoffs.sql
    assert (local.loc[is_sql, "tier"] == "SQL").all() and (local.loc[~is_sql, "tier"] != "SQL").all()


def test_tampered_registered_bundle_is_refused_by_name(trained, tmp_path):
    import mlflow

    from leadscore.serving.bundle import BundleError

    config, _ = trained
    pipeline = load_pipeline(config)
    mlflow.set_tracking_uri(pipeline.tracking.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts("models:/leadscore@champion", dst_path=str(tmp_path)))
    scorer_file = next(local.rglob("scorer.json"))
    data = bytearray(scorer_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    scorer_file.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="scorer.json"):
        mlflow.pyfunc.load_model(str(local))


def test_too_few_positives_is_refused_and_names_the_count(train_dir, tmp_path):
    config = write_config(tmp_path / "train.yaml", train_dir, model={"min_positives": 10**6})
    with pytest.raises(InsufficientData, match=r"only \d+ positive.*rule baseline remains in use"):
        train_pipeline(load_pipeline(config), {n: train_dir / f"{n}.parquet" for n in
                                               ("leads", "activities", "lifecycle")})
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2 and "rule baseline remains in use" in result.output


def _alias_version(config: Path, alias: str) -> str:
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(load_pipeline(config).tracking.tracking_uri)
    return str(MlflowClient().get_model_version_by_alias("leadscore", alias).version)


def _last_run_tags(config: Path) -> dict:
    import mlflow

    mlflow.set_tracking_uri(load_pipeline(config).tracking.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["leadscore"], order_by=["start_time DESC"], max_results=1)
    return {k[len("tags."):]: v for k, v in runs.iloc[0].items() if k.startswith("tags.")} | {
        k[len("metrics."):]: v for k, v in runs.iloc[0].items() if k.startswith("metrics.")}


def export_as_of(data: Path, cut: pd.Timestamp, out: Path) -> Path:
    """The CRM as exported at ``cut``: leads created, activities and stages recorded before it."""
    out.mkdir(parents=True)
    for name, col in (("leads", "created_at"), ("activities", "occurred_at"), ("lifecycle", "occurred_at")):
        frame = pd.read_parquet(data / f"{name}.parquet")
        frame[frame[col] < cut].to_parquet(out / f"{name}.parquet")
    return out


def _manifest(config: Path) -> dict:
    pipeline = load_pipeline(config)
    return json.loads((Path(pipeline.models_dir) / pipeline.name / "manifest.json").read_text())


def test_the_mlflow_run_has_a_description_its_datasets_and_the_cutoff_figures(trained):
    import mlflow
    from mlflow.tracking import MlflowClient

    config, _ = trained
    mlflow.set_tracking_uri(load_pipeline(config).tracking.tracking_uri)
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("leadscore").experiment_id],
                                order_by=["attributes.start_time ASC"], max_results=1)
    note = run.data.tags["mlflow.note.content"]
    assert "became_sql" in note and "AUC" in note and "new leads/week" in note
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}  # context -> dataset
    assert set(inputs) == {"training", "calibration", "test"}
    params = _manifest(config)["params"]
    assert json.loads(inputs["test"].profile)["num_rows"] == params["rows_test"]
    assert json.loads(inputs["calibration"].profile)["num_rows"] == params["rows_calibration"]
    cuts = pd.read_csv(client.download_artifacts(run.info.run_id, "tables/cutoffs.csv")).set_index("cutoff")
    for name in ("mql", "sql"):
        for col in ("new_leads_per_week", "open_leads", "conversion_rate", "recall"):
            assert run.data.metrics[f"cutoff_{name}_{col}"] == pytest.approx(cuts.loc[name.upper(), col])


def test_the_shipped_model_is_fitted_on_the_newest_matured_outcomes(trained):
    config, output = trained
    params = _manifest(config)["params"]
    observed = pd.Timestamp(params["observed_until"])
    # the newest as-of date whose 42-day window has closed: no matured outcome left out of the fit
    assert observed - pd.Timedelta(days=42 + 7) < pd.Timestamp(params["train_until"], tz="UTC") <= observed - pd.Timedelta(days=42)
    assert params["calibration_until"] == params["train_until"]  # calibrated on the same newest weeks
    # the won model too: its own newest matured (120-day) window, calibrated on held-out leads of it -
    # not on its early-stopping rows
    won_until = pd.Timestamp(params["won_calibration_until"], tz="UTC")
    assert observed - pd.Timedelta(days=120 + 7) < won_until <= observed - pd.Timedelta(days=120)
    assert params["won_train_until"] == params["won_calibration_until"] and params["won_calibration_rows"] > 1000
    metrics = _manifest(config)["metrics"]
    folds = [k for k in metrics if k.startswith("fold") and k.endswith("_sql_auc")]
    assert len(folds) == 3 and metrics["sql_auc"] == metrics["fold3_sql_auc"]
    assert np.isfinite(metrics["backtest_sql_auc_mean"]) and np.isfinite(metrics["backtest_sql_auc_sd"])
    assert "walk-forward backtest, became_sql (primary label), AUC per fold:" in output


def test_a_retrain_moves_with_newer_outcomes_and_compares_on_outcomes_neither_model_saw(train_dir, tmp_path):
    """Train on the export of 8 weeks ago, then retrain on today's: the challenger's window is
    later, the comparison rows are after everything the champion saw and held out of the
    challenger's fit; a worse (two-tree) challenger is not promoted; a retrain on data no newer
    than the champion's says so and promotes nothing."""
    two_folds = {"folds": 2}  # the retrain's semantics do not depend on the backtest's length; it keeps the test quick
    early = export_as_of(train_dir, pd.Timestamp("2025-08-06", tz="UTC"), tmp_path / "early")
    old = write_config(tmp_path / "old.yaml", early, split=two_folds)
    result = runner.invoke(app, ["train", "--config", str(old)])
    assert result.exit_code == 0, result.output
    champion, champion_params = _alias_version(old, "champion"), _manifest(old)["params"]

    # a two-tree challenger (quick to fit): on the same export it is kept because nothing newer
    # matured, whatever its quality; on the newer export because it is worse
    two_trees = dict(split=two_folds, model={"n_estimators": 2, "learning_rate": 0.001, "early_stopping_rounds": 1,
                                             "candidates": ["lightgbm"], "search_trials": 1},
                     cutoffs={"policy": "capacity", "mql": 0.2, "sql": 0.05})
    # --tracking-uri wins over the config's store (which is left untouched); --no-progress prints no heartbeat
    elsewhere = tmp_path / "elsewhere" / "mlflow.db"
    same_config = write_config(tmp_path / "same.yaml", early, **two_trees)
    raw = yaml.safe_load(same_config.read_text())
    raw["tracking"]["tracking_uri"] = f"sqlite:///{elsewhere}"
    same_config.write_text(yaml.safe_dump(raw))
    same = runner.invoke(app, ["retrain", "--config", str(same_config), "--no-progress",
                               "--tracking-uri", load_pipeline(old).tracking.tracking_uri])
    assert same.exit_code == 0, same.output
    assert not elsewhere.exists() and "s elapsed; last:" not in same.output
    assert "keep the champion: the training window did not move" in same.output
    assert _alias_version(old, "champion") == champion

    worse = write_config(tmp_path / "worse.yaml", train_dir, **two_trees)
    result = runner.invoke(app, ["retrain", "--config", str(worse)])
    assert result.exit_code == 0, result.output
    tags = _last_run_tags(worse)
    assert tags["promotion"] == "kept champion", tags["promotion_reason"]
    assert _alias_version(worse, "champion") == champion
    assert np.isfinite(tags["champion_sql_auc"]) and np.isfinite(tags["challenger_sql_auc"])
    assert tags["champion_sql_auc"] > tags["challenger_sql_auc"]
    assert tags["promotion_rows"] > 0 and tags["promotion_positives"] > 0
    params = json.loads((Path(load_pipeline(worse).models_dir) / "leadscore-challenger" / "manifest.json")
                        .read_text())["params"]
    assert params["train_until"] > champion_params["train_until"]  # the window moved
    since = max(champion_params["train_until"], champion_params["calibration_until"])
    assert tags["comparison_since"] == since and "after the champion's data (" + since in result.output


@pytest.mark.parametrize("challenger, promote", [
    ({"auc": 0.80, "logloss": 0.040, "ece": 0.002}, False),    # same as the champion
    ({"auc": 0.81, "logloss": 0.040, "ece": 0.002}, True),     # better AUC
    ({"auc": 0.80, "logloss": 0.039, "ece": 0.002}, True),     # better log loss
    ({"auc": 0.81, "logloss": 0.039, "ece": 0.010}, False),    # better but worse calibrated
    ({"auc": 0.801, "logloss": 0.04, "ece": 0.001}, False),    # gain below the margin
])
def test_promotion_decision_margins(challenger, promote):
    champion = {"auc": 0.80, "logloss": 0.040, "ece": 0.002}
    decided, reason = promotion_decision(champion, challenger, PromotionConfig(min_auc_gain=0.002,
                                                                               min_logloss_gain=0.0002))
    assert decided is promote
    assert reason.startswith("promote" if promote else "keep")


@pytest.mark.slow
def test_candidates_race_on_the_backtest_folds_and_the_winner_ships_explained_exactly(train_dir, tmp_path):
    """Every family raced at each cut-off; the shipped model is the candidate with the lowest
    mean fold log loss (or a simpler one within the tolerance), its fold rows are that
    candidate's, and whatever family it is, its contributions add up to its margin."""
    from leadscore.serving.explain import contributions

    config = write_config(tmp_path / "race.yaml", train_dir, split={"folds": 2},
                          model={"candidates": ["lightgbm", "logistic", "blend"], "search_trials": 1})
    pipeline = load_pipeline(config)
    lines: list[str] = []
    run = train_pipeline(pipeline, {n: train_dir / f"{n}.parquet" for n in ("leads", "activities", "lifecycle")},
                         echo=lines.append)
    sql = run.labels["became_sql"]
    table = sql.candidates.set_index("candidate")
    assert set(table["family"]) == {"lightgbm", "logistic", "blend"} and (table["folds"] == 2).all()
    best = table["logloss"].min()
    assert table.loc[sql.winner, "logloss"] <= best * (1 + pipeline.model.selection_tolerance)
    assert (table["chosen"] == "yes").sum() == 1 and table.loc[sql.winner, "chosen"] == "yes"
    assert run.scorer.sql_model.family == table.loc[sql.winner, "family"]
    assert run.params["candidate"] == sql.winner and run.metrics[f"candidate_{sql.winner}_sql_logloss_mean"] == \
        pytest.approx(table.loc[sql.winner, "logloss"])
    for fold in sql.folds:  # the fold's model rows are the winner's rows
        assert fold.comparison.loc["model"].equals(fold.comparison.loc[sql.winner].rename("model"))
        np.testing.assert_array_equal(fold.scores["model"], fold.scores[sql.winner])
    assert any(line.lstrip().startswith("* " + sql.winner) for line in lines)
    sample = run.test_frame.head(500)
    for model in run.scorer.models.values():
        c = contributions(model, sample)
        assert c.additivity_error() < 1e-9
        np.testing.assert_allclose(c.margin, model.margin(sample), rtol=0, atol=1e-9)


def test_a_run_on_a_sample_of_the_leads_estimates_what_every_example_shows(train_dir, tmp_path):
    """examples.max_examples: the run fits and judges a weighted sample of the leads (every lead
    with an outcome, a fifth of the others). Its probabilities, metrics and cutoff figures must
    still describe the whole lead base - checked against every example of the newest fold's
    test weeks, which the sample left mostly out."""
    from leadscore.data.contract import DEFAULT_CONTRACT
    from leadscore.labels.examples import WEIGHT, build_examples
    from leadscore.modeling.cutoffs import Cutoffs, cutoff_report
    from leadscore.modeling.metrics import classification_metrics
    from leadscore.training.pipeline import manifest_for

    config = write_config(tmp_path / "train.yaml", train_dir, examples={"max_examples": 60_000},
                          split={"folds": 1})
    pipeline = load_pipeline(config)
    tables = {n: train_dir / f"{n}.parquet" for n in ("leads", "activities", "lifecycle")}
    run = train_pipeline(pipeline, tables)
    assert run.sample is not None and 0.1 < run.sample.rate < 0.4
    assert manifest_for(run)["example_sampling"]["examples"] == run.sample.examples
    assert any(line.startswith("  sampled (examples.max_examples 60,000)") for line in run.lines)
    newest = run.labels["became_sql"].newest
    assert WEIGHT in newest.test and newest.test[WEIGHT].max() > 1
    dates = newest.fold.test_dates
    full, _ = build_examples(tables, pipeline.examples.replace(start=str(dates[0].date()), end=str(dates[-1].date()),
                                                                max_examples=None),
                             pipeline.features.replace(contract=DEFAULT_CONTRACT))
    full = full[full["became_sql"].notna()].reset_index(drop=True)
    assert len(full) > 1.5 * len(newest.test)
    y, p = full["became_sql"].astype(int).to_numpy(), newest.model.predict_proba(full)
    # calibrated for the whole lead base, not for the sample's share of converting leads
    assert abs(p.mean() / y.mean() - 1) < 0.2
    # the run's weighted metrics on its sample estimate the fold model's on every example
    truth = classification_metrics(y, p)
    assert abs(run.metrics["sql_auc"] - truth["auc"]) < 0.01
    assert abs(run.metrics["sql_logloss"] / truth["logloss"] - 1) < 0.1
    # the 1-99 score ranks against the whole lead base: a tenth of it scores 90 or more
    score = run.scorer.scale.points(run.scorer.primary_model.predict_proba(full))
    assert 0.085 <= (score >= 90).mean() <= 0.125  # 0.073 with the sample's unweighted scale
    # and so do the cutoffs' figures (conversion rate and recall at or above each cutoff)
    reported = run.cutoffs.set_index("cutoff")
    cut = Cutoffs(policy=pipeline.cutoffs, mql=reported.loc["MQL", "threshold"], sql=reported.loc["SQL", "threshold"])
    direct = cutoff_report(cut, p, y, full["as_of"], full["lead_id"]).set_index("cutoff")
    for name in ("MQL", "SQL"):  # within the reported 95 % intervals (the lead bootstrap of the sample)
        for col in ("conversion_rate", "recall"):
            low, high = reported.loc[name, f"{col}_low"], reported.loc[name, f"{col}_high"]
            assert low <= direct.loc[name, col] <= high, (name, col, low, direct.loc[name, col], high)
    assert abs(reported.loc["MQL", "conversion_rate"] / direct.loc["MQL", "conversion_rate"] - 1) < 0.15
