"""Explanations: exact SHAP contributions, reasons in words, fit/engagement grid, `leadscore explain`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadscore.config import load_pipeline
from leadscore.explain import (
    GridThresholds,
    contributions,
    decision_sentence,
    describe,
    explain_lead,
    explain_rows,
    group_scores,
    learn_grid,
)
from leadscore.features import connect, features_as_of, open_leads
from leadscore.tracking import load_scorer

from .conftest import app, runner

AS_OF = pd.Timestamp("2025-06-01", tz="UTC")


@pytest.fixture(scope="module")
def model(trained_bundle):
    """(scorer, bundle directory) of the session's training run."""
    scorer, _ = load_scorer(str(trained_bundle))
    return scorer, trained_bundle


@pytest.fixture(scope="module")
def open_rows(model, frames):
    scorer, _ = model
    return features_as_of(connect(frames), as_of=AS_OF, config=scorer.feature_config)


def test_contributions_plus_base_equal_the_margin_for_both_models(model, open_rows):
    scorer, _ = model
    for conversion_model in (scorer.sql_model, scorer.won_model):
        c = contributions(conversion_model, open_rows)
        assert c.values.shape == (len(open_rows), len(conversion_model.features))
        assert c.additivity_error() < 1e-6
        # the margin is the model's own raw score, the one the calibrator turns into p
        np.testing.assert_allclose(c.margin, conversion_model.margin(open_rows), rtol=0, atol=1e-12)
    p = scorer.sql_model.calibrator.predict(contributions(scorer.sql_model, open_rows).margin)
    np.testing.assert_allclose(p, scorer.predict(open_rows)["p_sql"], rtol=0, atol=1e-12)


def test_native_pred_contrib_agrees_with_shap_tree_explainer(model, open_rows):
    import shap

    from leadscore.train import as_model_frame

    scorer, _ = model
    m = scorer.sql_model
    trees = m.trees  # the model, or the tree member of a blend
    sample = as_model_frame(open_rows.sample(300, random_state=0), m.features, m.levels)
    ours, base = trees.contributions(sample)
    explainer = shap.TreeExplainer(trees.booster)
    theirs = explainer.shap_values(sample)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(base, np.broadcast_to(explainer.expected_value, base.shape), atol=1e-6)


def test_categorical_features_are_one_contribution_each_and_reasons_show_the_leads_own_values(model, open_rows):
    scorer, _ = model
    rows, contrib = explain_rows(scorer, open_rows.head(50), k=3)
    assert list(contrib.values.columns) == scorer.features  # one per catalogue feature, no encoded columns
    for i, row in rows.iterrows():
        reasons = row["reasons_positive"] + row["reasons_negative"]
        assert len(row["reasons_positive"]) <= 3 and len(row["reasons_negative"]) <= 3
        assert all(r["contribution"] > 0 for r in row["reasons_positive"])
        assert all(r["contribution"] < 0 for r in row["reasons_negative"])
        for r in reasons:
            value = open_rows.iloc[i][r["feature"]]
            assert r["value"] == value or (pd.isna(value) and r["value"] is None)
            assert r["contribution"] == pytest.approx(contrib.values.iloc[i][r["feature"]])
        # the strongest positive reason is the largest contribution of the row
        if row["reasons_positive"]:
            assert row["reasons_positive"][0]["contribution"] == pytest.approx(contrib.values.iloc[i].max())


def test_fit_and_engagement_scores_sum_the_catalogue_groups(model, open_rows):
    scorer, _ = model
    c = contributions(scorer.sql_model, open_rows.head(200))
    scores = group_scores(c.values, scorer.catalogue)
    fit = scorer.catalogue.loc[scorer.catalogue["group"] == "fit", "name"]
    np.testing.assert_allclose(scores["fit_score"], c.values[fit].sum(axis=1))
    np.testing.assert_allclose(scores["fit_score"] + scores["engagement_score"] + c.base, c.margin, atol=1e-6)


def _with_activity(frames, lead_ids, kind: str, at: pd.Timestamp) -> dict:
    acts = frames["activities"]
    new = pd.DataFrame({c: pd.Series([None] * len(lead_ids), dtype=acts[c].dtype) for c in acts.columns})
    new["lead_id"] = pd.Series(lead_ids, dtype=acts["lead_id"].dtype)
    new["occurred_at"] = pd.Series([at] * len(lead_ids), dtype=acts["occurred_at"].dtype)
    new["activity_type"] = pd.Series([kind] * len(lead_ids), dtype=acts["activity_type"].dtype)
    return {**frames, "activities": pd.concat([acts, new], ignore_index=True)}


def _sample_open(frames, n: int, seed: int) -> list[str]:
    return open_leads(connect(frames), [AS_OF])["lead_id"].sample(n, random_state=seed).tolist()


def test_a_demo_request_just_before_as_of_is_among_the_top_positive_reasons(model, frames):
    scorer, _ = model
    leads = _sample_open(frames, 12, seed=1)
    con = connect(_with_activity(frames, leads, "demo_request", AS_OF - pd.Timedelta(hours=1)))
    before = connect(frames)
    for lead in leads:
        e = explain_lead(scorer, con, lead, AS_OF, k=3)
        texts = [r["text"] for r in e["reasons_positive"]]
        # "Requested a demo today (...)", or the recency reason naming it: "Last active today (requested a demo)"
        assert any("requested a demo" in t.lower() and "today" in t.lower() for t in texts), (lead, texts)
        assert e["p_sql"] > explain_lead(scorer, before, lead, AS_OF)["p_sql"]


def test_a_student_email_lead_has_that_reason_among_its_negative_ones(model, frames):
    scorer, _ = model
    leads = _sample_open(frames, 12, seed=2)
    student = frames["leads"].copy()
    student.loc[student["lead_id"].isin(leads), "email_domain_type"] = "student"
    con = connect({**frames, "leads": student})
    k = len(scorer.features)  # every reason against, not only the top three
    for lead in leads:
        e = explain_lead(scorer, con, lead, AS_OF, k=k)
        negative = {r["feature"]: r for r in e["reasons_negative"]}
        assert "email_domain_type" in negative, (lead, e["reasons_negative"])
        assert negative["email_domain_type"]["text"] == "Uses a student e-mail address"
        assert negative["email_domain_type"]["contribution"] < 0


@pytest.mark.parametrize("feature, value, text", [
    ("n_page_view_pricing_30d", 4, "Visited the pricing page 4 times in the last 30 days"),
    ("n_page_view_pricing_30d", 1, "Visited the pricing page once in the last 30 days"),
    ("n_page_view_pricing_30d", 1e308, "Visited the pricing page 1e+308 times in the last 30 days"),  # not 309 digits
    ("n_demo_request_7d", 0, "No demo requests in the last 7 days"),
    ("days_since_demo_request", 3.2, "Requested a demo 3 days ago"),
    ("days_since_demo_request", float("nan"), "Never requested a demo"),
    ("email_domain_type", "student", "Uses a student e-mail address"),
    ("industry", "missing", "Industry unknown"),
    ("unsubscribed", 1, "Unsubscribed from marketing e-mail"),
    ("n_activities_7d", 5, "5 activities in the last 7 days"),
    ("days_since_last_hand_raiser", None, "No hand-raiser action (demo, contact sales, trial, pricing) yet"),
    ("Total Time Spent on Website", 123.456, "Total Time Spent on Website = 123"),   # no phrase: name = value
    ("Lead Origin", None, "Lead Origin = missing"),
])
def test_phrases_put_the_leads_value_into_words(feature, value, text):
    assert describe(feature, value) == text


def test_the_latest_hand_raiser_is_named_from_the_leads_other_values():
    row = pd.Series({"days_since_last_hand_raiser": 2.0, "days_since_page_view_pricing": 5.0,
                     "days_since_contact_sales": 2.0, "days_since_demo_request": np.nan})
    assert describe("days_since_last_hand_raiser", 2.0, row) == \
        "Asked sales to get in touch 2 days ago (the latest hand-raiser action)"
    assert describe("days_since_last_hand_raiser", 7.0, row).startswith("Last hand-raiser action")


def test_decision_sentence_states_the_rule_that_decided_the_tier():
    pos = [{"text": "Requested a demo today", "contribution": 1.2}]
    neg = [{"text": "Uses a student e-mail address", "contribution": -0.4}]
    assert decision_sentence(0.31, "MQL", 0.18, 0.45, pos, neg) == \
        "MQL: p_sql 0.310 >= MQL cutoff 0.180 (SQL cutoff 0.450); strongest reasons: Requested a demo today (+1.20)"
    assert decision_sentence(0.5, "SQL", 0.18, 0.45, pos, neg).startswith("SQL: p_sql 0.500 >= SQL cutoff 0.450")
    lead = decision_sentence(0.01, "lead", 0.18, 0.45, pos, neg)
    assert lead.startswith("lead: p_sql 0.010 < MQL cutoff 0.180") and "against: Uses a student" in lead


@given(st.lists(st.sampled_from(["A1", "A2", "A3", "B1", "B2", "B3", "C1", "C2", "C3"]), min_size=30, max_size=300),
       st.integers(0, 2**31 - 1))
@settings(max_examples=60, deadline=None)
def test_grid_thresholds_give_the_baselines_shares_and_are_monotone(baseline, seed):
    rng = np.random.default_rng(seed)
    fit, eng = rng.normal(size=len(baseline)), rng.normal(size=len(baseline))  # continuous: no ties
    grid = learn_grid(fit, eng, baseline)
    cells = pd.Series(grid.cells(fit, eng))
    base = pd.Series(baseline)
    for pos, classes in ((0, "AB"), (1, "12")):
        for c in classes:  # share per letter / digit within one example of the baseline's
            assert abs((cells.str[pos] == c).sum() - (base.str[pos] == c).sum()) <= 1
    order = np.argsort(fit)
    assert (np.diff(pd.Series(cells.str[0].to_numpy()[order]).map({"C": 0, "B": 1, "A": 2}).to_numpy()) >= 0).all()


def test_grid_without_a_baseline_uses_thirds():
    score = np.arange(300.0)
    grid = learn_grid(score, -score)
    cells = pd.Series(grid.cells(score, -score))
    assert cells.str[0].value_counts().to_dict() == {"A": 100, "B": 100, "C": 100}
    assert GridThresholds(fit=(1.0, 0.0), engagement=(1.0, 0.0)).cells([2.0, 0.5, -1], [0.0, 5, -3]).tolist() == \
        ["A2", "B1", "C3"]


def test_training_stores_a_grid_comparable_with_the_baselines(model, frames, open_rows):
    from leadscore.baseline import score_baseline

    scorer, bundle = model
    assert scorer.grid is not None
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["grid"] == scorer.grid.to_dict()
    rows, _ = explain_rows(scorer, open_rows, k=1)
    base = score_baseline(connect(frames), scorer.rules, open_rows[["lead_id", "as_of"]], explain=False)
    # learned on training examples to the baseline's shares: on newer open leads, roughly the same letters
    ours = pd.Series(rows["grid"]).str[0].value_counts(normalize=True)
    theirs = base["grid"].str[0].value_counts(normalize=True)
    for letter in "ABC":
        assert abs(ours.get(letter, 0) - theirs.get(letter, 0)) < 0.2, (ours, theirs)


def test_training_logs_the_global_view(trained, model):
    import mlflow
    from mlflow.tracking import MlflowClient

    config, _ = trained
    _, bundle = model
    importance = pd.read_csv(bundle / "shap_importance.csv")
    assert list(importance.columns) == ["feature", "group", "mean_abs_shap"]
    assert importance["mean_abs_shap"].is_monotonic_decreasing and set(importance["group"]) <= {"fit", "engagement"}
    html = (bundle / "report.html").read_text()
    assert "Why the model scores as it does" in html and 'alt="shap beeswarm"' in html
    mlflow.set_tracking_uri(load_pipeline(config).tracking.tracking_uri)
    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("leadscore").experiment_id],
                             order_by=["attributes.start_time ASC"])[0]
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    top = importance["feature"].iloc[0]
    assert {"shap_importance.png", "shap_beeswarm.png", "shap_groups.png", f"shap_dependence_{top}.png"} <= plots


@given(data=st.data())
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_explain_json_contributions_add_up_for_any_lead(data, model, train_dir, open_rows):
    _, bundle = model
    lead = data.draw(st.sampled_from(sorted(open_rows["lead_id"])))
    result = runner.invoke(app, ["explain", "--model", str(bundle), "--data", str(train_dir),
                                 "--as-of", "2025-06-01", "--lead-id", lead, "--json", "--top", "2"])
    assert result.exit_code == 0, result.output
    e = json.loads(result.output)
    assert abs(sum(e["contributions"].values()) + e["base"] - e["margin"]) < 1e-6
    assert abs(sum(e["won"]["contributions"].values()) + e["won"]["base"] - e["won"]["margin"]) < 1e-6
    assert e["lead_id"] == lead and e["open"] is True and len(e["reasons_positive"]) <= 2
    assert e["tier"] in ("lead", "MQL", "SQL") and e["decision"].startswith(e["tier"] + ":")
    assert e["baseline"]["tier"] in ("lead", "MQL", "SQL")


def test_explain_prints_the_decision_reasons_and_baseline_rules(model, train_dir, open_rows):
    _, bundle = model
    lead = open_rows["lead_id"].iloc[0]
    result = runner.invoke(app, ["explain", "--model", str(bundle), "--data", str(train_dir),
                                 "--as-of", "2025-06-01", "--lead-id", lead])
    assert result.exit_code == 0, result.output
    for text in (f"lead {lead} as of 2025-06-01", "reasons for:", "reasons against:", "rule baseline:",
                 "fit_score", "calibrated p_sql"):
        assert text in result.output


def test_explain_refuses_unknown_leads_and_models_by_name(model, train_dir, tmp_path):
    _, bundle = model
    args = ["--data", str(train_dir), "--as-of", "2025-06-01"]
    result = runner.invoke(app, ["explain", "--model", str(bundle), *args, "--lead-id", "NOPE"])
    assert result.exit_code == 1 and "'NOPE' is not in the leads table" in result.output
    result = runner.invoke(app, ["explain", "--model", str(tmp_path / "nothing"), *args, "--lead-id", "L0000001"])
    assert result.exit_code == 2 and "not a bundle directory" in result.output
    early = runner.invoke(app, ["explain", "--model", str(bundle), "--data", str(train_dir), "--as-of", "2023-01-01",
                                "--lead-id", "L0000001"])
    assert early.exit_code == 1 and "not before as_of" in early.output
