"""Explanations: exact SHAP contributions, reasons in words, fit/engagement grid, `leadscore explain`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadscore.features.builder import connect, features_as_of, open_leads
from leadscore.serving.explain import (
    MIN_CONTRIBUTION,
    GridThresholds,
    change_reasons,
    contributions,
    decision_sentence,
    declared_phrases,
    describe,
    explain_lead,
    explain_rows,
    group_scores,
    learn_grid,
    reason_text,
    reasons_line,
    top_reasons,
    value_label,
)
from leadscore.serving.registry import load_scorer
from leadscore.training.config import load_pipeline

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

    from leadscore.modeling.model import as_model_frame

    scorer, _ = model
    m = scorer.sql_model
    trees = m.trees  # the model, or the tree member of a blend
    sample = as_model_frame(open_rows.sample(300, random_state=0), m.features, m.levels)
    ours, base = trees.contributions(sample)
    explainer = shap.TreeExplainer(trees.booster)
    theirs = explainer.shap_values(sample)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(base, np.broadcast_to(explainer.expected_value, base.shape), atol=1e-6)


def signal_sums(contrib_row: pd.Series, reasons_of_row: list[dict]) -> dict[str, float]:
    return {r["signal"]: float(contrib_row[r["features"]].sum()) for r in reasons_of_row}


def test_reasons_are_signals_each_once_with_the_leads_own_values(model, open_rows):
    scorer, _ = model
    rows, contrib = explain_rows(scorer, open_rows.head(200), k=3)
    assert list(contrib.values.columns) == scorer.features  # one per catalogue feature, no encoded columns
    kinds = [k for k in scorer.feature_config.contract.kinds]
    for i, row in rows.iterrows():
        reasons = row["reasons_positive"] + row["reasons_negative"]
        c = contrib.values.iloc[i]
        assert len(row["reasons_positive"]) <= 3 and len(row["reasons_negative"]) <= 3
        assert all(r["contribution"] >= MIN_CONTRIBUTION for r in row["reasons_positive"])
        assert all(r["contribution"] <= -MIN_CONTRIBUTION for r in row["reasons_negative"])
        signals = [r["signal"] for r in reasons]
        assert len(signals) == len(set(signals))
        # each activity kind at most once: no two reasons draw on features of the same kind
        for kind in kinds:
            about = [r for r in reasons if any(f == f"days_since_{kind}" or f.startswith(f"n_{kind}_")
                                               for f in r["features"])]
            assert len(about) <= 1, (kind, about)
        lead = open_rows.iloc[i][scorer.features].to_dict()
        for r in reasons:
            value = open_rows.iloc[i][r["feature"]]
            assert r["value"] == value or (pd.isna(value) and r["value"] is None)
            # reused texts read as the phrase reads this lead's own row
            assert r["text"] == describe(r["feature"], value, lead, declared_phrases(scorer.feature_config))
            assert r["feature"] in r["features"]
            # a signal's contribution is its features' summed; its wording is the one pushing hardest its way
            assert r["contribution"] == pytest.approx(c[r["features"]].sum())
            assert np.sign(r["contribution"]) * c[r["feature"]] == pytest.approx(
                (np.sign(r["contribution"]) * c[r["features"]]).max())
        # every feature of the row belongs to one signal: the signals of all reasons (k = all) add up to the margin
    full, c_full = explain_rows(scorer, open_rows.head(20), k=len(scorer.features), min_contribution=0)
    for i, row in full.iterrows():
        total = sum(r["contribution"] for r in row["reasons_positive"] + row["reasons_negative"])
        assert total + row["base"] == pytest.approx(row["margin"], abs=1e-6)
        features = [f for r in row["reasons_positive"] + row["reasons_negative"] for f in r["features"]]
        assert len(features) == len(set(features))  # no feature counted twice


def test_every_leads_reasons_read_as_its_own_row_says_and_the_one_line_form_is_the_same(model, open_rows):
    # reasons are worded from arrays, each distinct text written once (a row-reading phrase once
    # per value and "latest" recencies); every text must read as the phrase reads the lead's
    # full row, and the one line batch scoring and serving write must be these reasons
    scorer, _ = model
    phrases = declared_phrases(scorer.feature_config)
    leads = open_rows[scorer.features].to_dict("records")
    for frame, k, minimum in ((open_rows, 3, MIN_CONTRIBUTION), (open_rows.head(300), len(scorer.features), 0)):
        rows, _ = explain_rows(scorer, frame, k=k, min_contribution=minimum)
        shown = 0
        for i, row in enumerate(rows.itertuples()):
            for r in row.reasons_positive + row.reasons_negative:
                assert r["text"] == describe(r["feature"], leads[i][r["feature"]], leads[i], phrases)
                shown += 1
        assert shown >= len(frame)
    rows, _ = explain_rows(scorer, open_rows, k=3)
    lines = scorer.score(open_rows, top_reasons=3)["reasons"].tolist()
    assert lines == [reasons_line(p, n) for p, n in zip(rows["reasons_positive"], rows["reasons_negative"])]
    assert any(" | against: " in line for line in lines) and any(line.startswith("against: ") for line in lines)


def test_no_reason_below_the_minimum_and_the_minimum_can_be_set(model, open_rows):
    scorer, _ = model
    frame = open_rows.head(100)
    k = len(scorer.features)
    for minimum in (0.0, 0.05, 0.3):
        rows, _ = explain_rows(scorer, frame, k=k, min_contribution=minimum)
        sizes = [abs(r["contribution"]) for _, row in rows.iterrows()
                 for r in row["reasons_positive"] + row["reasons_negative"]]
        assert sizes and min(sizes) >= minimum
    everything, _ = explain_rows(scorer, frame, k=k, min_contribution=0)
    fewer, _ = explain_rows(scorer, frame, k=k, min_contribution=0.3)
    small = sum(abs(r["contribution"]) < 0.3 for _, row in everything.iterrows()
                for r in row["reasons_positive"] + row["reasons_negative"])
    n_all = sum(len(row["reasons_positive"]) + len(row["reasons_negative"]) for _, row in everything.iterrows())
    n_fewer = sum(len(row["reasons_positive"]) + len(row["reasons_negative"]) for _, row in fewer.iterrows())
    assert small > 0 and n_fewer == n_all - small  # exactly the small ones are left out
    with pytest.raises(ValueError, match="min_contribution"):
        explain_rows(scorer, frame, k=3, min_contribution=-1)


def test_windows_of_one_activity_collapse_into_one_reason():
    # four features about trials pull different ways; they read as one reason, worded by the
    # feature pushing hardest in their net direction (the old trial lowers the odds)
    values = pd.DataFrame([{"n_trial_signup_7d": 0, "n_trial_signup_90d": 4, "days_since_trial_signup": 60.0,
                            "days_since_last_hand_raiser": 60.0, "email_domain_type": "corporate"}])
    contrib = np.array([[-0.10, 0.25, -0.30, -0.20, 0.40]])
    pos, neg = top_reasons(contrib, values, k=3)
    assert [r["signal"] for r in pos[0]] == ["email_domain_type"]
    (trial,) = neg[0]
    assert trial["signal"] == "trial_signup" and trial["contribution"] == pytest.approx(-0.35)
    assert trial["feature"] == "days_since_trial_signup" and trial["text"] == "Signed up for a trial 60 days ago"
    # the latest hand-raiser was that trial: its recency is part of the trial's signal
    assert "days_since_last_hand_raiser" in trial["features"]
    assert reason_text(trial) == "Signed up for a trial 60 days ago: lowers (-0.35)"
    assert reason_text(pos[0][0]).endswith(": raises (+0.40)")


def _both_moments(scorer, frames, days: int = 14):
    """Feature rows of the leads open at AS_OF and ``days`` later, the same leads in the same order."""
    con = connect(frames)
    later = AS_OF + pd.Timedelta(days=days)
    pairs = open_leads(con, [AS_OF, later])
    both = pairs.groupby("lead_id")["as_of"].nunique().loc[lambda n: n == 2].index
    ids = pd.DataFrame({"lead_id": sorted(both)})
    before = features_as_of(con, ids.assign(as_of=AS_OF), config=scorer.feature_config)
    after = features_as_of(con, ids.assign(as_of=later), config=scorer.feature_config)
    return before.set_index("lead_id").loc[ids["lead_id"]].reset_index(), \
        after.set_index("lead_id").loc[ids["lead_id"]].reset_index()


def test_change_reasons_add_up_to_the_margin_change_and_say_what_the_lead_did(model, frames):
    scorer, _ = model
    before, after = _both_moments(scorer, frames)
    assert len(before) > 100
    every = change_reasons(scorer, before, after, k=len(scorer.features), min_change=0)
    total = every["change_reasons"].map(lambda rs: sum(r["contribution"] for r in rs)).to_numpy()
    assert np.max(np.abs(total - (every["margin_after"] - every["margin_before"]).to_numpy())) <= 1e-9
    # the margins are the model's at each moment
    assert np.allclose(every["margin_after"], contributions(scorer.primary_model, after).margin)
    # a lead that requested its first demo in between: the change says so, with what it was before
    first_demo = before["days_since_demo_request"].isna() & after["days_since_demo_request"].notna()
    assert first_demo.any()
    i = int(np.flatnonzero(first_demo.to_numpy())[0])
    demo = [r for r in every["change_reasons"].iloc[i] if r["signal"] == "demo_request"]
    assert demo and demo[0]["before"] is None and demo[0]["after"] is not None
    assert demo[0]["text"].startswith("Requested a demo") and "(was: never requested a demo)" in demo[0]["text"]
    # the top k only, each at least min_change, largest first; one line of text per lead
    top = change_reasons(scorer, before, after, k=2)
    for reasons, line in zip(top["change_reasons"], top["change_line"]):
        moves = [abs(r["contribution"]) for r in reasons]
        assert len(reasons) <= 2 and all(m >= MIN_CONTRIBUTION for m in moves) and moves == sorted(moves, reverse=True)
        assert line == "; ".join(reason_text(r) for r in reasons)


def test_a_lead_whose_row_did_not_change_has_no_change_reasons(model, frames):
    scorer, _ = model
    before, _ = _both_moments(scorer, frames)
    same = change_reasons(scorer, before.head(50), before.head(50), min_change=0)
    assert (same["change_line"] == "").all() and (same["margin_after"] == same["margin_before"]).all()
    with pytest.raises(ValueError, match="same leads in the same order"):
        change_reasons(scorer, before.head(3), before.iloc[[1, 0, 2]])


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
    ("lead_source", "content_syndication", "Came in through content syndication (gated content on other sites)"),
    ("department", "hr", "Department: HR"),
    ("seniority", "individual_contributor", "Seniority: Individual contributor"),
    ("industry", "Financial Services", "Industry: Financial Services"),  # already written for people
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
        "MQL: p_sql 0.31 >= MQL cutoff 0.18 (SQL cutoff 0.45); strongest reasons: Requested a demo today: raises (+1.20)"
    assert decision_sentence(0.5, "SQL", 0.18, 0.45, pos, neg).startswith("SQL: p_sql 0.5 >= SQL cutoff 0.45")
    lead = decision_sentence(0.01, "lead", 0.18, 0.45, pos, neg)
    assert lead.startswith("lead: p_sql 0.01 < MQL cutoff 0.18") and "against: Uses a student e-mail address: lowers" in lead
    # the case a user saw: 'p_sql 0.006 < MQL cutoff 0.006'
    assert decision_sentence(0.0060417, "lead", 0.0064, 0.05, [], []) == "lead: p_sql 0.00604 < MQL cutoff 0.0064"
    assert decision_sentence(0.00639999, "lead", 0.0064, 0.05, [], []) == \
        "lead: p_sql 0.00639999 < MQL cutoff 0.0064"


_NUMBER = r"(\d+(?:\.\d+)?(?:e[-+]\d+)?)"


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.sampled_from([0, 1e-3, 1e-7, 1e-12]))
@settings(max_examples=400, deadline=None)
def test_property_no_decision_line_contradicts_its_verdict(p, a, b, nudge):
    import re

    from leadscore.modeling.cutoffs import CutoffPolicy, Cutoffs

    mql, sql = min(a, b), max(a, b)
    p = min(1.0, max(0.0, p if nudge == 0 else mql - nudge))  # often just below a cutoff
    tier = str(Cutoffs(CutoffPolicy(), mql, sql).tier(p))
    line = decision_sentence(p, tier, mql, sql, [], [])
    if tier == "SQL":
        m = re.fullmatch(rf"SQL: p_sql {_NUMBER} >= SQL cutoff {_NUMBER}", line)
        assert m and float(m[1]) >= float(m[2]), line
    elif tier == "MQL":
        m = re.fullmatch(rf"MQL: p_sql {_NUMBER} >= MQL cutoff {_NUMBER} \(SQL cutoff {_NUMBER}\)", line)
        assert m and float(m[2]) <= float(m[1]) < float(m[3]), line
    else:
        m = re.fullmatch(rf"lead: p_sql {_NUMBER} < MQL cutoff {_NUMBER}", line)
        assert m and float(m[1]) < float(m[2]), line


def test_value_labels_read_codes_for_people_and_a_source_can_override_them():
    assert value_label("lead_source", "paid_search") == "paid search ads"
    assert value_label("department", "it") == "IT"
    assert value_label("industry", "heavy_machinery") == "Heavy machinery"  # no label: the code made readable
    assert value_label("lead_source", "paid_search", {"lead_source": {"paid_search": "Google Ads"}}) == "Google Ads"
    assert value_label("region_code", "T01", {"region_code": {"T01": "North-East"}}) == "North-East"


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
    from leadscore.modeling.baseline import score_baseline

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
                                 "--as-of", "2025-06-01", "--lead-id", lead, "--json", "-", "--top", "2"])
    assert result.exit_code == 0, result.output
    e = json.loads(result.output)
    assert abs(sum(e["contributions"].values()) + e["base"] - e["margin"]) < 1e-6
    assert abs(sum(e["won"]["contributions"].values()) + e["won"]["base"] - e["won"]["margin"]) < 1e-6
    assert e["lead_id"] == lead and e["open"] is True and len(e["reasons_positive"]) <= 2
    assert e["tier"] in ("lead", "MQL", "SQL") and e["decision"].startswith(e["tier"] + ":")
    assert e["baseline"]["tier"] in ("lead", "MQL", "SQL")


def test_explain_prints_the_decision_reasons_and_baseline_rules(model, train_dir, open_rows, tmp_path):
    _, bundle = model
    lead = open_rows["lead_id"].iloc[0]
    js = tmp_path / "out" / "explanation.json"
    result = runner.invoke(app, ["explain", "--model", str(bundle), "--data", str(train_dir),
                                 "--as-of", "2025-06-01", "--lead-id", lead, "--json", str(js)])
    assert result.exit_code == 0, result.output
    for text in (f"lead {lead} as of 2025-06-01", "reasons for:", "reasons against:", "rule baseline:",
                 "fit_score", "calibrated p_sql", "+0.69 doubles the odds", f"json: {js}"):
        assert text in result.output
    # --json PATH: the text on standard output, the same explanation as JSON in the file
    e = json.loads(js.read_text())
    assert e["lead_id"] == lead and e["decision"] in result.output


def test_explain_since_an_earlier_run_shows_the_move_and_what_changed(model, frames, train_dir, tmp_path):
    scorer, bundle = model
    con = connect(frames)
    earlier = AS_OF - pd.Timedelta(days=14)
    both = open_leads(con, [earlier, AS_OF]).groupby("lead_id")["as_of"].nunique().loc[lambda n: n == 2].index
    ids = pd.DataFrame({"lead_id": sorted(both)[:300]})
    before = features_as_of(con, ids.assign(as_of=earlier), config=scorer.feature_config)
    after = features_as_of(con, ids.assign(as_of=AS_OF), config=scorer.feature_config)
    before, after = (f.set_index("lead_id").loc[ids["lead_id"]].reset_index() for f in (before, after))
    moves = change_reasons(scorer, before, after, k=3)
    i = int(np.argmax(np.abs(moves["margin_after"] - moves["margin_before"])))
    lead = moves["lead_id"].iloc[i]
    run = tmp_path / "earlier.parquet"   # what `leadscore score` wrote at the earlier moment (the columns read)
    pd.DataFrame({"lead_id": ["L-other"], "as_of": [earlier], "tier": ["lead"], "p_sql": [0.01]}).to_parquet(run)
    args = ["explain", "--model", str(bundle), "--data", str(train_dir), "--as-of", "2025-06-01", "--lead-id", lead,
            "--since", str(run)]
    result = runner.invoke(app, [*args, "--json", "-"])
    assert result.exit_code == 0, result.output
    since = json.loads(result.output)["since"]
    assert since["as_of"] == earlier.isoformat() and since["change_reasons"] == moves["change_reasons"].iloc[i]
    assert since["margin_after"] - since["margin_before"] == pytest.approx(
        moves["margin_after"].iloc[i] - moves["margin_before"].iloc[i])
    text = runner.invoke(app, args).output
    assert f"since {earlier.isoformat()}: score {since['score']} -> " in text and "what changed:" in text
    assert all(reason_text(r) in text for r in since["change_reasons"]) and since["change_reasons"]
    # a run that is not earlier than --as-of
    later = runner.invoke(app, [*args[:6], "2025-05-01", *args[7:]])
    assert later.exit_code == 2 and "not before --as-of" in later.output


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
