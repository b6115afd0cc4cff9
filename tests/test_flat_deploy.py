"""A one-row-per-lead export is deployable: `train` writes a bundle and registers a champion;
`score` and `explain` read the export's rows through the one scoring path; rows that cannot be
scored are quarantined with their reason (rows in = scored + quarantined)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.cli.app import app
from leadscore.serving.registry import load_scorer
from leadscore.training.flat import load_config

from .conftest import runner


@pytest.fixture(scope="module")
def deployed(flat_trained):
    config, output = flat_trained
    dataset = load_config(config)
    return config, output, dataset


def test_train_evaluates_writes_a_bundle_and_registers_a_champion(deployed):
    config, output, dataset = deployed
    # no date column: the random split is the only evaluation, and the output says so
    assert "the export has no date column, so this is the best evaluation available" in output
    assert "mean over 3 stratified folds, converted:" in output and "converted_auc" in output
    # the rule baseline (pipelines/rules-xeducation.yaml) is evaluated beside the model, on the same folds
    assert "rule baseline 0." in output and any(line.startswith("baseline ") for line in output.splitlines())
    assert f"registered {dataset.bundle_name} version 1 as @champion" in output
    bundle = Path(dataset.models_dir) / dataset.bundle_name
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["primary_label"] == "converted" and manifest["flat"] is True
    assert 0.8 < manifest["metrics"]["converted_auc"] < 0.95 and "logreg_converted_auc" in manifest["metrics"]
    assert "Tags" not in {c["name"] for c in manifest["feature_catalogue"]}   # excluded columns stay out
    scorer, _ = load_scorer(f"models:/{dataset.bundle_name}@champion", dataset.tracking_config.tracking_uri)
    assert scorer.flat and scorer.probability == "p_converted" and 0 < scorer.cutoffs.mql < scorer.cutoffs.sql


def test_score_writes_every_row_and_quarantines_what_it_cannot_read(deployed, xeducation_csv, tmp_path):
    config, _, dataset = deployed
    raw = pd.read_csv(xeducation_csv, dtype=str, keep_default_na=False)
    raw = raw.drop(columns=["Converted"]).head(300)                 # leads to score: no outcome yet
    raw.loc[7, "TotalVisits"] = "lots"                             # a broken number
    raw.loc[9, "Prospect ID"] = raw.loc[8, "Prospect ID"]          # an id twice
    export = tmp_path / "new_leads.csv"
    raw.to_csv(export, index=False)
    out = tmp_path / "scores.parquet"
    result = runner.invoke(app, ["score", "--model", f"models:/{dataset.bundle_name}@champion", "--flat", str(config),
                                 "--data", str(export), "--as-of", "2025-06-01", "--out", str(out),
                                 "--tracking-uri", dataset.tracking_config.tracking_uri])
    assert result.exit_code == 0, result.output
    assert "300 rows in = 297 scored + 3 quarantined" in result.output
    scores = pd.read_parquet(out)
    quarantined = pd.read_parquet(tmp_path / "scores.quarantine.parquet")
    assert quarantined["row"].tolist() == [9, 10, 11]               # file lines (the header is line 1)
    assert "'TotalVisits' is not a finite number" in quarantined.loc[0, "reason"]
    assert "appears more than once" in quarantined.loc[1, "reason"]
    assert len(scores) + len(quarantined) == len(raw) and scores["lead_id"].is_unique
    assert scores["score"].between(1, 99).all() and set(scores["tier"]) <= {"lead", "MQL", "SQL"}
    assert scores["p_converted"].between(0, 1).all() and scores["reasons"].str.len().gt(0).all()
    assert (scores["as_of"] == pd.Timestamp("2025-06-01", tz="UTC")).all()
    assert scores["model_version"].eq(f"{dataset.bundle_name}/1").all()
    # the rule baseline beside every score; a working professional who came by reference scores its points
    assert set(scores["baseline_tier"]) <= {"lead", "MQL", "SQL"} and scores["baseline_points"].notna().all()
    kept = raw.drop(index=[7, 8, 9]).reset_index(drop=True)
    pro = (kept["What is your current occupation"] == "Working Professional").to_numpy()
    assert pro.any() and (scores.loc[pro, "baseline_points"] >= 25 - 15 - 10).all()
    # the same rows through the bundle give the same probabilities: one scoring path
    scorer, _ = load_scorer(str(Path(dataset.models_dir) / dataset.bundle_name))
    again = runner.invoke(app, ["score", "--model", str(Path(dataset.models_dir) / dataset.bundle_name), "--flat",
                                str(config), "--data", str(export), "--as-of", "2025-06-01",
                                "--out", str(tmp_path / "again.parquet")])
    assert again.exit_code == 0, again.output
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "again.parquet")["p_converted"], scores["p_converted"])


def test_explain_a_lead_of_the_export_in_words(deployed, xeducation_csv):
    config, _, dataset = deployed
    lead = pd.read_csv(xeducation_csv, nrows=3)["Prospect ID"].iloc[2]
    result = runner.invoke(app, ["explain", "--model", f"models:/{dataset.bundle_name}@champion", "--flat", str(config),
                                 "--lead-id", lead, "--tracking-uri", dataset.tracking_config.tracking_uri])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"lead {lead}" in out and "p_converted" in out and "reasons for:" in out
    # reasons name the export's columns with the lead's values, and add up to the margin
    assert any(f"{column} = " in out or f"{column} not given" in out
               for column in ("Lead Source", "Total Time Spent on Website", "Lead Origin", "Last Activity"))
    as_json = runner.invoke(app, ["explain", "--model", f"models:/{dataset.bundle_name}@champion", "--flat",
                                  str(config), "--lead-id", lead, "--json", "-",
                                  "--tracking-uri", dataset.tracking_config.tracking_uri])
    e = json.loads(as_json.output)
    assert e["margin"] == pytest.approx(e["base"] + sum(e["contributions"].values()), abs=1e-9)
    assert e["baseline"]["tier"] in ("lead", "MQL", "SQL") and "rule baseline:" in out
    missing = runner.invoke(app, ["explain", "--model", f"models:/{dataset.bundle_name}@champion", "--flat",
                                  str(config), "--lead-id", "nobody", "--tracking-uri",
                                  dataset.tracking_config.tracking_uri])
    assert missing.exit_code == 1 and "'nobody' is not a row of" in missing.output


def test_flat_rules_name_the_export_s_columns(tmp_path):
    from leadscore.modeling.baseline import load_rules, score_flat_baseline
    from leadscore.settings import ConfigError

    rules = tmp_path / "rules.yaml"
    rules.write_text("fit:\n  rules:\n    - {name: Pro, attribute: job, values: [pro], points: 20}\n"
                     "engagement:\n  cap: 30\n  rules:\n    - {name: Busy, attribute: visits, range: [5, 100], points: 40}\n"
                     "thresholds: {mql: 20, sql: 50}\n")
    columns = {"job": "categorical", "visits": "numeric"}
    ruleset = load_rules(rules, columns=columns)
    frame = pd.DataFrame({"job": ["pro", "student", "pro"], "visits": [7.0, 9.0, np.nan]})
    b = score_flat_baseline(ruleset, frame)
    assert b["total_points"].tolist() == [50.0, 30.0, 20.0]            # the engagement cap holds
    assert b["baseline_tier"].tolist() == ["SQL", "MQL", "MQL"] and b["fired_rules"][0] == "Busy +40; Pro +20"  # rule points; the cap is on the group
    rules.write_text(rules.read_text().replace("attribute: visits", "attribute: vists"))
    with pytest.raises(ConfigError, match=r"rules.yaml:7: engagement rule 1 \(Busy\): unknown column 'vists'"):
        load_rules(rules, columns=columns)


def test_an_event_model_refuses_flat_rows(trained_bundle, deployed, tmp_path):
    config, _, _ = deployed
    result = runner.invoke(app, ["score", "--model", str(trained_bundle), "--flat", str(config),
                                 "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 2 and "was trained on event data" in result.output


def test_monitor_reads_outcomes_from_the_export(deployed, xeducation_csv, tmp_path):
    config, _, dataset = deployed
    uri = dataset.tracking_config.tracking_uri
    export = tmp_path / "leads.csv"
    pd.read_csv(xeducation_csv, dtype=str, keep_default_na=False).head(1500).to_csv(export, index=False)
    for as_of in ("2025-05-01", "2025-06-01"):
        done = runner.invoke(app, ["score", "--model", f"models:/{dataset.bundle_name}@champion", "--flat", str(config),
                                   "--data", str(export), "--as-of", as_of, "--out", str(tmp_path / "scores" / f"{as_of}.parquet"),
                                   "--tracking-uri", uri])
        assert done.exit_code == 0, done.output
    result = runner.invoke(app, ["monitor", "--model", f"models:/{dataset.bundle_name}@champion", "--flat", str(config),
                                 "--data", str(export), "--scores", str(tmp_path / "scores"), "--out",
                                 str(tmp_path / "monitor.html"), "--json", str(tmp_path / "monitor.json"),
                                 "--tracking-uri", uri, "--no-tracking"])
    assert result.exit_code in (0, 4, 5), result.output
    assert "rows: 3,000 scored, 3,000 matured, 0 immature" in result.output
    report = json.loads((tmp_path / "monitor.json").read_text())
    assert report["facts"]["primary_label"] == "converted" and report["facts"]["probability"] == "p_converted"
    overall = next(r for r in report["by_tier"] if r["tier"] == "all")
    y = pd.read_csv(export)["Converted"]
    assert overall["realized_rate"] == pytest.approx(y.mean())        # the export's own outcomes, every row
    assert {r["feature"] for r in report["psi"]} >= {"Lead Source", "p_converted", "score"}
    assert (tmp_path / "monitor.html").read_text().count("converted") > 0


def test_a_ratio_is_derived_in_the_feature_stage_and_by_the_registered_model(deployed, xeducation_csv):
    import mlflow

    from leadscore.training.flat import load_flat
    from leadscore.training.flat_pipeline import scoring_rows

    config, _, dataset = deployed
    data = load_flat(dataset, xeducation_csv)
    total, visits = data.features["Total Time Spent on Website"], data.features["TotalVisits"]
    ratio = data.features["Time Per Visit"]
    zero = visits.eq(0)
    assert zero.any() and ratio[zero].isna().all() and ratio[visits.isna()].isna().all()
    both = visits.gt(0)
    np.testing.assert_allclose(ratio[both], total[both] / visits[both], rtol=1e-12)
    assert "Time Per Visit" in set(data.catalogue["name"])
    scorer, _ = load_scorer(f"models:/{dataset.bundle_name}@champion", dataset.tracking_config.tracking_uri)
    assert "Time Per Visit" in scorer.features
    rows = scoring_rows(data, pd.Timestamp("2025-06-01", tz="UTC")).head(200)
    mlflow.set_tracking_uri(dataset.tracking_config.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{dataset.bundle_name}@champion")
    assert "Time Per Visit" not in model.metadata.get_input_schema().input_names()   # callers send raw columns
    raw = rows.drop(columns=["Time Per Visit"]).assign(as_of=rows["as_of"].dt.tz_localize(None))
    served = model.predict(raw)
    np.testing.assert_allclose(served["p_converted"], scorer.predict(rows)["p_converted"], rtol=1e-12)


def test_a_ratio_of_a_column_that_is_not_numeric_is_refused(tmp_path, xeducation_csv):
    from leadscore.settings import ConfigError
    from leadscore.training.flat import load_config

    from .conftest import write_flat_config

    config = write_flat_config(tmp_path / "x.yaml", xeducation_csv,
                               ratios={"Odd": {"numerator": "Country", "denominator": "TotalVisits"}})
    with pytest.raises(ConfigError, match=r"ratios.Odd.numerator 'Country' is not one of the numeric columns"):
        load_config(config)
