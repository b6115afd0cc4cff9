"""Real-shaped data: the sparse profile's vendor export (no SQL stage, custom attributes and
kinds, day-first dates) through the whole path with configuration only, the outcome ladder,
and each crash or misleading message found when a real export was first tried."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from leadscore.cli.app import _summarised_warnings, app
from leadscore.data.funnel import funnel_summary
from leadscore.labels.leakage import AuditSkipped, leakage_audit
from leadscore.synthetic.sparse import SOURCE_YAML, SparseConfig, generate_sparse

from .conftest import REPO, runner, write_config

SPARSE_CONFIG = REPO / "pipelines" / "sparse.yaml"


@pytest.fixture(scope="session")
def sparse_dir(tmp_path_factory) -> Path:
    """The sparse profile's export (5,000 contacts, 15 months), generated once per session."""
    out = tmp_path_factory.mktemp("sparse") / "export"
    generate_sparse(SparseConfig(seed=0), out, progress=False)
    return out


def sparse_config(path: Path, data: Path, **overrides) -> Path:
    """pipelines/sparse.yaml as shipped, its outputs (bundle, MLflow) moved next to ``path``."""
    return write_config(path, data, base="sparse.yaml", **overrides)


# ---------------------------------------------------------------------------
# The crashes and misleading messages, each on its own
# ---------------------------------------------------------------------------

def test_funnel_with_mql_rows_and_no_sql_rows():
    leads = pd.DataFrame({"lead_id": ["A", "B", "C"]})
    lifecycle = pd.DataFrame({"lead_id": ["A", "B", "A"], "stage": ["mql", "mql", "won"],
                              "occurred_at": pd.to_datetime(["2025-01-01", "2025-01-02", "2025-02-01"], utc=True)})
    s = funnel_summary(leads, lifecycle)
    assert (s["mql"], s["sql"], s["won"], s["direct_sql"]) == (2, 0, 1, 0)
    assert s["mql_to_won"] == 0.5 and np.isnan(s["sql_to_won"])


def test_leakage_audit_skips_constant_features_and_refuses_with_too_few_positives():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(30), np.zeros(370)].astype(bool)
    frame = pd.DataFrame({"constant": np.zeros(400), "all_missing": np.full(400, np.nan),
                          "signal": y + rng.normal(0, 0.3, 400)})
    audit = leakage_audit(frame, y)
    assert audit["feature"].tolist() == ["signal"]
    # One positive: a value it shares with 39 negatives looks predictive by chance (AUC ~0.9).
    one = np.zeros(200, dtype=bool)
    one[0] = True
    shared = pd.DataFrame({"x": ["a"] * 40 + ["b"] * 160})
    with pytest.raises(AuditSkipped, match="1 positive and 199 negative labels; at least 10"):
        leakage_audit(shared, one)


def test_library_warnings_are_summarised_once_each(capsys):
    with _summarised_warnings("training"):
        for _ in range(7):
            warnings.warn("lbfgs failed to converge (status=1)", UserWarning)
        warnings.warn("X does not have valid feature names", RuntimeWarning)
        warnings.warn("Series.values is deprecated", DeprecationWarning)  # the libraries' own business
    err = capsys.readouterr().err
    assert "8 warning(s) from the libraries during training, 2 distinct" in err
    assert "7 x UserWarning: lbfgs failed to converge" in err and err.count("lbfgs") == 1


def test_examples_on_an_export_with_constant_features_and_no_sql_stage(sparse_dir, tmp_path):
    out = tmp_path / "examples.parquet"
    result = runner.invoke(app, ["examples", "--config", str(SPARSE_CONFIG), "--data", str(sparse_dir),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "became_sql: the data records no `sql` stage; no leakage audit" in result.output
    assert "won:\nleakage audit: single-feature ROC AUC" in result.output
    table = pd.read_parquet(out)
    assert table["n_page_view_pricing_30d"].nunique() == 1  # the CRM has no such kind: constant
    assert {"landing_page", "region_code", "plan", "n_price_simulation_30d", "n_other_30d"} <= set(table.columns)


# ---------------------------------------------------------------------------
# The outcome ladder
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def sparse_trained(sparse_dir, tmp_path_factory):
    """The acceptance run: `train` with the shipped config and source YAML, MLflow on."""
    work = tmp_path_factory.mktemp("sparse_run")
    config = sparse_config(work / "sparse.yaml", sparse_dir)
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return config, result.output


def test_a_won_only_crm_trains_p_won_and_says_why_there_is_no_p_sql(sparse_trained):
    config, output = sparse_trained
    assert "became_sql: skipped (the data records no `sql` stage (0 of" in output
    assert "won is the primary label: cutoffs, score and tier read p_won" in output
    assert "walk-forward backtest, won (primary label), AUC per fold:" in output
    assert "newest fold's test slice, won:" in output and "history is too short" not in output
    assert "registered leadscore-sparse version 1 as @champion" in output
    raw = yaml.safe_load(config.read_text())
    manifest = json.loads((Path(raw["models_dir"]) / raw["name"] / "manifest.json").read_text())
    assert manifest["primary_label"] == "won" and set(manifest["skipped_labels"]) == {"became_sql"}
    assert "sql_auc" not in manifest["metrics"] and np.isfinite(manifest["metrics"]["won_auc"])
    # constant features are left out, and listed
    assert "constant features left out: " in output and "n_page_view_pricing_7d" in output
    assert manifest["params"]["n_constant_features"] > 0


def test_the_model_comes_within_5_percent_of_the_oracle_on_the_newest_fold(sparse_trained):
    config, output = sparse_trained
    raw = yaml.safe_load(config.read_text())
    metrics = json.loads((Path(raw["models_dir"]) / raw["name"] / "manifest.json").read_text())["metrics"]
    print(f"\nwon AUC {metrics['won_auc']:.4f}, oracle {metrics['oracle_won_auc']:.4f}, logistic "
          f"{metrics['logreg_won_auc']:.4f}, rule baseline {metrics['baseline_won_auc']:.4f}")
    assert metrics["won_auc"] >= 0.95 * metrics["oracle_won_auc"]
    assert metrics["won_auc_vs_oracle"] == pytest.approx(metrics["won_auc"] / metrics["oracle_won_auc"])


def _with_a_few_sql_rows(sparse_dir: Path, tmp_path: Path, n: int) -> Path:
    """A copy of the export whose CRM records ``n`` SQLs ("Sales Accepted"), and its source YAML."""
    data = tmp_path / "export"
    data.mkdir()
    for f in sparse_dir.glob("*.csv"):
        (data / f.name).write_bytes(f.read_bytes())
    history = pd.read_csv(data / "lifecycle_history.csv", dtype=str)
    deals = pd.read_csv(data / "closed_deals.csv", dtype=str).head(n)
    extra = pd.DataFrame({"Contact ID": deals["mql_id"], "Stage": "Sales Accepted",
                          "Entered On": deals["won_date"] + " 00:00"})
    pd.concat([history, extra]).to_csv(data / "lifecycle_history.csv", index=False)
    source = yaml.safe_load(SOURCE_YAML.read_text())
    source["tables"]["lifecycle"]["values"]["stage"]["Sales Accepted"] = "sql"
    (data / "source.yaml").write_text(yaml.safe_dump(source))
    return data


def test_a_label_with_too_few_positives_is_skipped_with_its_count(sparse_dir, tmp_path):
    data = _with_a_few_sql_rows(sparse_dir, tmp_path, 5)
    config = sparse_config(tmp_path / "sparse.yaml", data, source=str(data / "source.yaml"),
                           split={"folds": 1}, model={"n_estimators": 20})  # any won model will do: keep it quick
    result = runner.invoke(app, ["train", "--config", str(config), "--no-tracking"])
    assert result.exit_code == 0, result.output
    assert "became_sql: not trained: only 0 positive outcomes among all" in result.output
    assert "won is the primary label" in result.output


def test_training_refuses_only_when_no_label_can_be_trained(sparse_dir, tmp_path):
    config = sparse_config(tmp_path / "sparse.yaml", sparse_dir, model={"min_positives": 100_000})
    result = runner.invoke(app, ["train", "--config", str(config), "--no-tracking"])
    assert result.exit_code == 2
    assert "not trained: no outcome label can be trained: became_sql: the data records no `sql` stage" \
        in result.output
    assert "won: only" in result.output and "The rule baseline remains in use" in result.output


def test_current_value_attributes_are_named_and_those_with_a_history_are_not(trained, sparse_trained):
    note = next(line for line in trained[1].splitlines() if "read at their current value" in line)
    assert "seniority, department, company_size" in note
    note = next(line for line in sparse_trained[1].splitlines() if "read at their current value" in line)
    assert "landing_page, region_code" in note and "plan" not in note


# ---------------------------------------------------------------------------
# The whole path with configuration only
# ---------------------------------------------------------------------------

def test_synth_sparse_writes_the_export_and_the_shipped_mapping(tmp_path):
    out = tmp_path / "a"
    result = runner.invoke(app, ["synth", "--profile", "sparse", "--leads", "300", "--seed", "3", "--out", str(out),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (out / "source.yaml").read_text() == SOURCE_YAML.read_text()
    assert "no SQL stage recorded" in result.output
    again = tmp_path / "b"
    runner.invoke(app, ["synth", "--profile", "sparse", "--leads", "300", "--seed", "3", "--out", str(again),
                        "--no-progress"])
    for f in out.iterdir():
        assert f.read_bytes() == (again / f.name).read_bytes(), f.name
    contacts = pd.read_csv(out / "contacts.csv", dtype=str)
    assert contacts["Create Date"].str.fullmatch(r"\d\d/\d\d/\d{4} \d\d:\d\d").all()  # day-first


@pytest.mark.slow
def test_score_explain_and_monitor_a_won_only_crm_through_its_source(sparse_trained, sparse_dir, tmp_path):
    config, _ = sparse_trained
    raw = yaml.safe_load(config.read_text())
    source = ["--source", raw["source"], "--data", str(sparse_dir)]
    env = {"MLFLOW_TRACKING_URI": raw["tracking"]["tracking_uri"]}
    model = ["--model", "models:/leadscore-sparse@champion"]
    for day in ("2025-05-01", "2025-06-01", "2025-09-24"):
        result = runner.invoke(app, ["score", *model, *source, "--as-of", day, "--out", str(tmp_path / f"{day}.parquet"),
                                     "--no-progress"], env=env)
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["score", *model, *source, "--as-of", "2025-10-01", "--out",
                                 str(tmp_path / "next" / "2025-10-01.parquet"), "--previous",
                                 str(tmp_path / "2025-09-24.parquet"), "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    moved = pd.read_parquet(tmp_path / "next" / "2025-10-01.transitions.parquet")
    assert len(moved) and moved["p_won"].notna().all() and moved["p_sql"].isna().all()
    scores = pd.read_parquet(tmp_path / "2025-06-01.parquet")
    assert scores["p_sql"].isna().all() and scores["p_won"].between(0, 1).all()
    assert (scores.sort_values("p_won")["score"].diff().dropna() >= 0).all()  # the score follows p_won
    assert scores["reasons"].str.contains("Landing page = lp-").any()

    lead = scores.loc[scores["reasons"].str.contains("Landing page = lp-")].sort_values("p_won").iloc[-1]["lead_id"]
    result = runner.invoke(app, ["explain", *model, *source, "--as-of", "2025-06-01", "--lead-id", lead, "--top", "5"],
                           env=env)
    assert result.exit_code == 0, result.output
    assert "Landing page = lp-" in result.output and "p_won" in result.output and "p_sql" not in result.output

    result = runner.invoke(app, ["monitor", *model, *source, "--scores", str(tmp_path), "--out",
                                 str(tmp_path / "monitor.html"), "--json", str(tmp_path / "monitor.json"),
                                 "--no-tracking"], env=env)
    assert result.exit_code in (0, 4, 5), result.output
    doc = json.loads((tmp_path / "monitor.json").read_text())
    assert doc["facts"]["primary_label"] == "won" and doc["facts"]["matured_rows"] > 0
    assert np.isfinite(doc["metrics"]["monitor_realized_won_rate"])
    assert any(row["feature"] == "p_won" for row in doc["psi"])
    assert "realized won rate" in (tmp_path / "monitor.html").read_text()

    # a source without the model's custom attributes is refused by name
    result = runner.invoke(app, ["score", *model, "--data", str(tmp_path / "nowhere"), "--as-of", "2025-06-01",
                                 "--out", str(tmp_path / "x.parquet")], env=env)
    assert result.exit_code == 2 and "attribute landing_page" in result.output


def test_an_attribute_the_crm_overwrites_after_the_outcome_is_named_by_the_audit(sparse_dir, tmp_path):
    """Read at its current value (no attribute history), the plan the CRM sets to Paid when a
    deal is won is the outcome itself; the training note says so and the audit names it."""
    source = yaml.safe_load(SOURCE_YAML.read_text())
    del source["tables"]["attribute_history"]
    source["tables"]["leads"]["attributes"]["plan"]["column"] = "Plan"
    path = tmp_path / "current-plan.yaml"
    path.write_text(yaml.safe_dump(source))
    result = runner.invoke(app, ["examples", "--config", str(SPARSE_CONFIG), "--source", str(path), "--data",
                                 str(sparse_dir), "--out", str(tmp_path / "examples.parquet")])
    assert result.exit_code == 0, result.output
    won_audit = result.output.split("won:\n", 1)[1]
    assert "suspected leakage: plan" in won_audit
    # read as of each moment from its history (the shipped mapping), the plan predicts nothing
    result = runner.invoke(app, ["examples", "--config", str(SPARSE_CONFIG), "--data", str(sparse_dir), "--out",
                                 str(tmp_path / "shipped.parquet")])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "shipped.parquet")
    won = table[table["won"].notna()]
    audit = leakage_audit(won[["plan"]], won["won"].astype(bool)).set_index("feature")
    assert audit.loc["plan", "auc"] < 0.6 and "<- suspected leakage" not in result.output
