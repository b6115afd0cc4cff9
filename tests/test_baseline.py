"""The rule baseline: each rule feature by hand, rule-file validation, the wrapper, the CLI."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from leadscore.cli.app import app
from leadscore.features.builder import connect
from leadscore.labels.examples import ExampleConfig, build_examples, matured
from leadscore.modeling.baseline import (
    DEFAULT_RULES,
    RuleBaselineClassifier,
    load_rules,
    parse_rules,
    score_baseline,
    with_baseline_points,
)
from leadscore.settings import ConfigError

from .test_features import AS_OF, _days_before, _lead, _tables

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def rules_dict(**over):
    raw = {
        "fit": {"cap": None, "rules": [
            {"name": "VP", "attribute": "seniority", "values": ["vp"], "points": 20},
            {"name": "Mid size", "attribute": "company_size", "range": [51, 500], "points": 15},
            {"name": "Student", "attribute": "email_domain_type", "values": ["student"], "points": -40},
        ]},
        "engagement": {"cap": None, "half_life_days": None, "rules": [
            {"name": "Blog", "activity": "page_view_blog", "points": 10},
            {"name": "Pricing", "activity": "page_view_pricing", "points": 25, "window_days": 30},
            {"name": "Download", "activity": "content_download", "points": 15, "cap": 30},
            {"name": "Webinar", "activity": "webinar_attendance", "points": 20, "half_life_days": 10},
            {"name": "Unsub", "activity": "email_unsubscribe", "points": -30},
        ]},
        "total_cap": None,
        "thresholds": {"mql": 40, "sql": 100},
        "grid": {"fit": {"A": 30, "B": 10}, "engagement": {"1": 50, "2": 20}},
    }
    for key, value in over.items():
        raw[key] = value
    return raw


def one_lead(acts=(), **fit):
    leads = [_lead("X", "2024-06-01", **fit)]
    return _tables(leads, [("X", at, kind, None) for kind, at in acts], [])


def score(tables, raw):
    return score_baseline(tables, parse_rules(copy.deepcopy(raw)), as_of=AS_OF, rule_points=True).iloc[0]


def test_fit_points_values_and_ranges():
    raw = rules_dict()
    vp, mid, student = (r["points"] for r in raw["fit"]["rules"])
    row = score(one_lead(seniority="vp", company_size=51), raw)
    assert row["fit_points"] == vp + mid
    assert score(one_lead(seniority="manager", company_size=501), raw)["fit_points"] == 0
    assert score(one_lead(email_domain_type="student", company_size=500), raw)["fit_points"] == student + mid
    # Missing attributes fire nothing.
    assert score(one_lead(), raw)["fit_points"] == 0


def test_per_occurrence_points_and_window():
    raw = rules_dict()
    blog = raw["engagement"]["rules"][0]["points"]
    pricing = raw["engagement"]["rules"][1]
    acts = [("page_view_blog", _days_before(d)) for d in (1, 100, 400)]
    acts += [("page_view_pricing", _days_before(d)) for d in (5, pricing["window_days"] - 1, pricing["window_days"] + 1)]
    acts += [("page_view_blog", AS_OF)]  # at as_of: not before it
    row = score(one_lead(acts), raw)
    assert row["rule: Blog"] == 3 * blog
    assert row["rule: Pricing"] == 2 * pricing["points"]
    assert row["engagement_points"] == 3 * blog + 2 * pricing["points"]


def test_rule_cap_and_decay():
    raw = rules_dict()
    download = raw["engagement"]["rules"][2]
    webinar = raw["engagement"]["rules"][3]
    acts = [("content_download", _days_before(d)) for d in (1, 2, 3, 4)]
    acts += [("webinar_attendance", _days_before(d)) for d in (10, 30)]
    row = score(one_lead(acts), raw)
    assert row["rule: Download"] == min(4 * download["points"], download["cap"])
    hl = webinar["half_life_days"]
    assert row["rule: Webinar"] == pytest.approx(webinar["points"] * (0.5 ** (10 / hl) + 0.5 ** (30 / hl)))


def test_group_default_half_life_applies_unless_overridden():
    raw = rules_dict()
    raw["engagement"]["half_life_days"] = 20
    row = score(one_lead([("page_view_blog", _days_before(20)), ("webinar_attendance", _days_before(10))]), raw)
    assert row["rule: Blog"] == pytest.approx(raw["engagement"]["rules"][0]["points"] * 0.5)
    assert row["rule: Webinar"] == pytest.approx(raw["engagement"]["rules"][3]["points"] * 0.5)  # own half-life 10


def test_negative_points_and_negative_cap():
    raw = rules_dict()
    unsub = raw["engagement"]["rules"][4]["points"]
    row = score(one_lead([("email_unsubscribe", _days_before(3)), ("page_view_blog", _days_before(2))]), raw)
    assert row["rule: Unsub"] == unsub
    assert row["engagement_points"] == unsub + raw["engagement"]["rules"][0]["points"]
    raw["engagement"]["rules"][4]["cap"] = 20  # caps the magnitude of a negative rule
    row = score(one_lead([("email_unsubscribe", _days_before(3)), ("email_unsubscribe", _days_before(4))]), raw)
    assert row["rule: Unsub"] == -20


def test_group_and_total_caps():
    acts = [("page_view_blog", _days_before(d)) for d in range(1, 11)]  # 10 blog reads
    raw = rules_dict()
    uncapped = score(one_lead(acts, seniority="vp", company_size=100), raw)
    raw["fit"]["cap"] = 25
    raw["engagement"]["cap"] = 60
    capped = score(one_lead(acts, seniority="vp", company_size=100), raw)
    assert capped["fit_points"] == min(uncapped["fit_points"], 25) == 25
    assert capped["engagement_points"] == 60
    raw["total_cap"] = 70
    assert score(one_lead(acts, seniority="vp", company_size=100), raw)["total_points"] == 70


@pytest.mark.parametrize(("fit_kwargs", "n_blog", "grid", "tier"), [
    ({"seniority": "vp", "company_size": 100}, 6, "A1", "MQL"),  # fit 35, engagement 60: total 95
    ({"seniority": "vp", "company_size": 100}, 7, "A1", "SQL"),  # total 105
    ({"seniority": "vp"}, 2, "B2", "MQL"),  # fit 20, engagement 20: total 40, exactly the MQL threshold
    ({}, 0, "C3", "lead"),
    ({"email_domain_type": "student"}, 5, "C1", "lead"),
])
def test_grid_letters_and_tiers(fit_kwargs, n_blog, grid, tier):
    raw = rules_dict()
    acts = [("page_view_blog", _days_before(d)) for d in range(1, n_blog + 1)]
    row = score(one_lead(acts, **fit_kwargs), raw)
    fit, eng, total = row["fit_points"], row["engagement_points"], row["total_points"]
    (a, b), (one, two) = (raw["grid"]["fit"]["A"], raw["grid"]["fit"]["B"]), (raw["grid"]["engagement"]["1"],
                                                                            raw["grid"]["engagement"]["2"])
    letter = "A" if fit >= a else "B" if fit >= b else "C"
    digit = "1" if eng >= one else "2" if eng >= two else "3"
    assert row["grid"] == letter + digit == grid
    expected_tier = "SQL" if total >= raw["thresholds"]["sql"] else "MQL" if total >= raw["thresholds"]["mql"] else "lead"
    assert row["baseline_tier"] == expected_tier == tier


def test_fired_rules_explain_the_points():
    raw = rules_dict()
    row = score(one_lead([("page_view_pricing", _days_before(2)), ("page_view_blog", _days_before(3))],
                         seniority="vp"), raw)
    assert row["fired_rules"] == "Pricing +25 (1x); VP +20; Blog +10 (1x)"
    assert score(one_lead(), raw)["fired_rules"] == ""


# --- invalid rule files ---------------------------------------------------------------------


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r["engagement"]["rules"][0].update(activity="carrier_pigeon"), r"unknown activity type 'carrier_pigeon'"),
    (lambda r: r["fit"]["rules"][0].update(attribute="shoe_size"), r"unknown attribute 'shoe_size'"),
    (lambda r: r["fit"]["rules"][0].update(values=["vp", "king"]), r"unknown seniority value\(s\) \['king'\]"),
    (lambda r: r["engagement"]["rules"][2].update(cap=-5), r"rules.yaml: engagement rule 3 \(Download\): cap must be >= 0, got -5"),
    (lambda r: r["fit"].update(cap=-1), r"rules.yaml: fit.cap must be >= 0, got -1"),
    (lambda r: r.update(thresholds={"mql": 120, "sql": 100}), r"MQL threshold \(120\) is above the SQL threshold \(100\)"),
    (lambda r: r["engagement"]["rules"][0].update(points="ten"), r"engagement rule 1 \(Blog\): points must be a finite number, got 'ten'"),
    (lambda r: r["engagement"]["rules"][0].update(color="red"), r"unknown key\(s\) color"),
    (lambda r: r["fit"]["rules"][1].update(range=[500, 51]), r"range minimum 500 is above maximum 51"),
    (lambda r: r["fit"]["rules"][1].update(range=None, values=["big"]), r"company_size is numeric"),
    (lambda r: r["engagement"]["rules"][1].update(half_life_days=0), r"engagement rule 2 \(.*\): half_life_days must be > 0"),
    (lambda r: r["fit"]["rules"][0].update(values=[]), r"fit rule 1 \(.*\): values must not be empty"),
    (lambda r: r.update(grid={"engagement": {1: 10, 2: 30}}), r"grid: the A \(1\) bound must not be below the B \(2\)"),
    (lambda r: r.update(grid={"engagement": {3: 10}}), r"grid.engagement: unknown key\(s\) 3; allowed: 1, 2$"),
    (lambda r: r.pop("thresholds"), r"thresholds is required"),
])
def test_invalid_rules_give_specific_errors(mutate, message):
    raw = rules_dict()
    mutate(raw)
    with pytest.raises(ConfigError, match=message):
        parse_rules(raw, "rules.yaml")


def test_malformed_yaml_reports_the_line(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("fit:\n  cap: 10\n  rules:\n    - {name: VP, attribute: seniority, values: [vp, points: 20}\n")
    with pytest.raises(ConfigError, match=r"rules.yaml: line 4"):
        load_rules(path)


def test_rule_errors_point_at_the_rule_line(tmp_path):
    text = (DEFAULT_RULES).read_text().replace("activity: page_view_pricing", "activity: pricing")
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "activity: pricing" in ln)
    with pytest.raises(ConfigError, match=rf"rules.yaml:{line}: engagement rule \d+ \(Pricing page\)"):
        load_rules(path)


def test_default_rules_load():
    rules = load_rules(DEFAULT_RULES)
    assert rules.mql_threshold < rules.sql_threshold and len(rules.engagement_rules) > 10


# --- on synthetic data -----------------------------------------------------------------------


def test_default_rules_give_a_sensible_funnel(funnel_dir):
    """MQL tier is a minority of open leads and converts to SQL far more often than the rest."""
    tables = {n: funnel_dir / f"{n}.parquet" for n in ("leads", "activities", "lifecycle")}
    rules = load_rules(DEFAULT_RULES)
    con = connect(tables)
    ex, _ = build_examples(con, ExampleConfig(start="2025-02-03", end="2025-06-30", cadence_days=21))
    ex = with_baseline_points(con, ex, rules)
    ex = matured(ex, "became_sql")
    qualified = ex["baseline_tier"] != "lead"
    assert 0.03 < qualified.mean() < 0.4
    rate_q, rate_rest = ex.loc[qualified, "became_sql"].mean(), ex.loc[~qualified, "became_sql"].mean()
    assert rate_q > 4 * rate_rest
    # As an estimator on the same rows: points rank leads well above chance.
    y = ex["became_sql"].astype(int).to_numpy()
    clf = RuleBaselineClassifier().fit(ex, y)
    assert roc_auc_score(y, clf.decision_function(ex)) > 0.75
    p = clf.predict_proba(ex)[:, 1]
    assert np.all(np.diff(p[np.argsort(ex["baseline_points"].to_numpy(), kind="stable")]) >= -1e-12)  # monotone
    assert abs(p.mean() - y.mean()) < 1e-6  # isotonic fit keeps the base rate


def test_wrapper_needs_the_points_column():
    with pytest.raises(KeyError, match="baseline_points"):
        RuleBaselineClassifier().fit(pd.DataFrame({"x": [1, 2]}), [0, 1])


def test_cli_baseline(synthetic_dir, tmp_path):
    out = tmp_path / "baseline.csv"
    res = runner.invoke(app, ["baseline", "--data", str(synthetic_dir), "--as-of", "2025-05-01",
                              "--rules", str(DEFAULT_RULES), "--out", str(out)])
    assert res.exit_code == 0, res.output
    scores = pd.read_csv(out)
    assert {"fit_points", "engagement_points", "total_points", "baseline_tier", "grid", "fired_rules"} <= set(scores)
    assert "SQL within 42 days" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("fit: {rules: []}\nengagement: {rules: []}\nthresholds: {mql: 9, sql: 3}\n")
    res = runner.invoke(app, ["baseline", "--data", str(synthetic_dir), "--as-of", "2025-05-01", "--rules", str(bad),
                              "--out", str(out)])
    assert res.exit_code == 2 and "MQL threshold (9) is above the SQL threshold (3)" in res.output
