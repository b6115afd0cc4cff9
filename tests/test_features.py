"""Point-in-time features: strictly-before-T semantics, hand-checked values, one code path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadscore.data.contract import ACTIVITY_TYPES
from leadscore.features.builder import (
    FeatureConfig,
    feature_catalogue,
    feature_names,
    features_as_of,
    open_leads,
)

from .conftest import ts

AS_OF = ts("2025-03-01")


def _tables(leads, activities, lifecycle):
    return {
        "leads": pd.DataFrame(leads),
        "activities": pd.DataFrame(activities, columns=["lead_id", "occurred_at", "activity_type", "detail"]),
        "lifecycle": pd.DataFrame(lifecycle, columns=["lead_id", "stage", "occurred_at", "amount"]),
    }


def _lead(lead_id, created, **fit):
    base = {"lead_id": lead_id, "created_at": ts(created), "job_title": None, "seniority": None, "department": None,
            "company_size": None, "industry": None, "country": None, "lead_source": None, "email_domain_type": None}
    base.update(fit)
    return base


def _days_before(days, hours=0.0):
    return AS_OF - pd.Timedelta(days=days, hours=hours)


@pytest.fixture
def hand_tables():
    leads = [
        _lead("A", "2024-12-01", seniority="vp", company_size=250, country="de", email_domain_type="corporate",
              lead_source="referral", industry="Software", department="sales"),
        _lead("B", "2025-01-15"),
        _lead("LATE", "2025-03-01"),  # created exactly at as_of: does not exist yet
        _lead("SQL", "2025-01-01"),
    ]
    acts = [
        ("A", _days_before(2), "page_view_pricing", None),
        ("A", _days_before(5), "demo_request", None),
        ("A", _days_before(10), "email_open", None),
        ("A", _days_before(12), "email_open", None),
        ("A", _days_before(12, 1), "email_click", None),
        ("A", _days_before(20), "content_download", "ebook-01"),
        ("A", _days_before(25), "content_download", "ebook-01"),
        ("A", _days_before(40), "content_download", "guide-02"),
        ("A", _days_before(60), "page_view_careers", None),
        ("A", AS_OF, "demo_request", None),  # at as_of: not before it
        ("B", _days_before(1), "email_unsubscribe", None),
        ("SQL", _days_before(3), "demo_request", None),
    ]
    lc = [
        ("A", "mql", _days_before(70), None),
        ("A", "disqualified", _days_before(50), None),
        ("A", "mql", _days_before(4), None),
        ("SQL", "sql", _days_before(1), None),
    ]
    return _tables(leads, acts, lc)


def test_open_leads_at_as_of(hand_tables):
    pairs = open_leads(hand_tables, [AS_OF])
    # LATE is created at as_of (not before); SQL became an SQL before as_of; a disqualified lead is open.
    assert pairs["lead_id"].tolist() == ["A", "B"]
    later = open_leads(hand_tables, [AS_OF + pd.Timedelta(seconds=1)])
    assert later["lead_id"].tolist() == ["A", "B", "LATE"]
    before_sql = open_leads(hand_tables, [_days_before(1)])
    assert "SQL" in before_sql["lead_id"].tolist()


def test_hand_computed_values(hand_tables):
    cfg = FeatureConfig(half_life_days=10.0)
    f = features_as_of(hand_tables, as_of=AS_OF, config=cfg).set_index("lead_id")
    a = f.loc["A"]
    assert a["n_demo_request_7d"] == 1 and a["n_page_view_pricing_7d"] == 1
    assert a["n_content_download_30d"] == 2 and a["n_content_download_90d"] == 3
    assert a["n_activities_7d"] == 2 and a["n_activities_30d"] == 7 and a["n_activities_total"] == 9
    assert a["days_since_last_activity"] == pytest.approx(2.0)
    assert a["days_since_last_hand_raiser"] == pytest.approx(2.0)
    assert a["n_hand_raiser_total"] == 2
    ages = np.array([2, 5, 10, 12, 12 + 1 / 24, 20, 25, 40, 60])
    assert a["engagement_decayed"] == pytest.approx(np.sum(0.5 ** (ages / 10.0)))
    assert a["hand_raiser_decayed"] == pytest.approx(0.5 ** 0.2 + 0.5 ** 0.5)
    # velocity: 2 in the last 7 days, 3 in the 21 days before (10, 12, 12+1h; 20 and 25 too: ages 7..28)
    n21 = int(((ages >= 7) & (ages < 28)).sum())
    assert a["velocity_7d_vs_21d"] == pytest.approx((2 + 1) / (n21 / 3 + 1))
    assert a["n_distinct_kinds"] == 6
    assert a["n_distinct_assets"] == 2
    assert a["email_click_to_open"] == pytest.approx(0.5)
    assert a["email_opens_per_30d"] == pytest.approx(30 * 2 / (AS_OF - ts("2024-12-01")).days)
    assert a["n_careers_views_total"] == 1 and a["unsubscribed"] == 0
    assert a["lead_age_days"] == pytest.approx((AS_OF - ts("2024-12-01")).days)
    assert (a["n_mql"], a["n_disqualified"], a["was_mql"], a["recycled"]) == (2, 1, 1, 1)
    assert a["days_since_last_mql"] == pytest.approx(4.0) and a["days_since_disqualified"] == pytest.approx(50.0)
    # Fit: bands, regions, missing as a category.
    assert (a["company_size_band"], a["region"], a["seniority"]) == ("201-1000", "europe", "vp")
    b = f.loc["B"]
    assert (b["seniority"], b["company_size_band"], b["region"], b["industry"]) == ("missing",) * 4
    assert b["unsubscribed"] == 1 and b["n_activities_total"] == 1
    assert np.isnan(b["email_click_to_open"]) and np.isnan(b["days_since_last_mql"])
    assert b["recycled"] == 0 and b["was_mql"] == 0


def test_columns_and_dtypes_follow_the_catalogue(synthetic_dir):
    cfg = FeatureConfig(windows_days=(3, 14))
    tables = {n: synthetic_dir / f"{n}.parquet" for n in ("leads", "activities", "lifecycle")}
    f = features_as_of(tables, as_of="2025-05-01", config=cfg)
    cat = feature_catalogue(cfg)
    assert list(f.columns) == ["lead_id", "as_of", *cat["name"]]
    assert [str(f[c].dtype) for c in cat["name"]] == list(cat["dtype"])
    assert set(cat["group"]) == {"fit", "engagement"}
    assert cat["description"].str.len().gt(0).all()
    assert "n_demo_request_14d" in set(cat["name"]) and "n_demo_request_30d" not in set(cat["name"])
    # Fit features never have missing values: missing is a category.
    fit = cat.loc[cat["group"] == "fit", "name"]
    assert f[fit].notna().all().all()


def test_training_and_scoring_paths_agree(synthetic_dir):
    """The join path (many as-of dates) and the single-date scan give identical rows."""
    tables = {n: pd.read_parquet(synthetic_dir / f"{n}.parquet") for n in ("leads", "activities", "lifecycle")}
    dates = [ts("2025-02-03"), ts("2025-05-05")]
    many = features_as_of(tables, open_leads(tables, dates))
    for d in dates:
        single = features_as_of(tables, as_of=d)
        part = many[many["as_of"] == d].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, single)
    # Files and DataFrames give the same answer too.
    from_files = features_as_of({n: synthetic_dir / f"{n}.parquet" for n in tables}, as_of=dates[1])
    pd.testing.assert_frame_equal(from_files, features_as_of(tables, as_of=dates[1]))


def test_config_is_validated():
    with pytest.raises(ValueError, match="hand_raiser_types"):
        FeatureConfig(hand_raiser_types=("demo_request", "smoke_signal"))
    with pytest.raises(ValueError, match="half_life_days"):
        FeatureConfig(half_life_days=0)
    with pytest.raises(ValueError, match="windows_days"):
        FeatureConfig(windows_days=(7, -1))


# --- point-in-time property -------------------------------------------------------------

KINDS = sorted(ACTIVITY_TYPES)
STAGES_OPEN = ["mql", "disqualified"]


@st.composite
def histories(draw):
    """A few leads with random activities and lifecycle events around AS_OF."""
    n_leads = draw(st.integers(1, 4))
    leads, acts, lc = [], [], []
    for i in range(n_leads):
        created = AS_OF - pd.Timedelta(hours=draw(st.integers(1, 24 * 200)))
        leads.append(_lead(f"L{i}", "2020-01-01", seniority=draw(st.sampled_from([None, "vp", "manager"]))))
        leads[-1]["created_at"] = created
        span = int((AS_OF - created) / pd.Timedelta(hours=1))
        for _ in range(draw(st.integers(0, 8))):
            at = created + pd.Timedelta(hours=draw(st.integers(0, span + 24 * 30)))
            acts.append((f"L{i}", at, draw(st.sampled_from(KINDS)), draw(st.sampled_from([None, "x-1", "x-2"]))))
        for _ in range(draw(st.integers(0, 3))):
            at = created + pd.Timedelta(hours=draw(st.integers(0, span + 24 * 30)))
            lc.append((f"L{i}", draw(st.sampled_from(STAGES_OPEN)), at, None))
    return _tables(leads, acts, lc)


future_events = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 24 * 90), st.sampled_from(KINDS), st.sampled_from(
        ["sql", "won", "lost", "mql", "disqualified", "opportunity"])), min_size=1, max_size=6)


def _rows(tables):
    return features_as_of(tables, as_of=AS_OF)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables=histories(), extra=future_events)
def test_events_at_or_after_as_of_change_nothing(tables, extra):
    before = _rows(tables)
    acts, lc = tables["activities"], tables["lifecycle"]
    n = len(tables["leads"])
    new_acts = [(f"L{i % n}", AS_OF + pd.Timedelta(hours=h), kind, None) for i, h, kind, _ in extra]
    new_lc = [(f"L{i % n}", stage, AS_OF + pd.Timedelta(hours=h), None) for i, h, _, stage in extra]
    grown = dict(tables)
    grown["activities"] = pd.concat([acts, pd.DataFrame(new_acts, columns=acts.columns)], ignore_index=True)
    grown["lifecycle"] = pd.concat([lc, pd.DataFrame(new_lc, columns=lc.columns)], ignore_index=True)
    pd.testing.assert_frame_equal(_rows(grown), before)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables=histories(), data=st.data())
def test_removing_a_past_event_changes_that_lead(tables, data):
    before = _rows(tables).set_index("lead_id")
    candidates = [(name, i) for name in ("activities", "lifecycle")
                  for i in np.flatnonzero((tables[name]["occurred_at"] < AS_OF).to_numpy())]
    if not candidates:
        return
    name, i = data.draw(st.sampled_from(candidates))
    lead = tables[name]["lead_id"].iloc[i]
    shrunk = dict(tables)
    shrunk[name] = tables[name].drop(index=tables[name].index[i]).reset_index(drop=True)
    after = _rows(shrunk).set_index("lead_id")
    cols = feature_names()
    # Other leads are untouched; this lead differs in at least one feature.
    others = before.index.drop(lead)
    pd.testing.assert_frame_equal(after.loc[others, cols], before.loc[others, cols])
    assert not after.loc[[lead], cols].equals(before.loc[[lead], cols])


def test_pair_order_and_asset_counting_do_not_change_rows(synthetic_dir, monkeypatch):
    """Shuffled pairs give the same sorted rows; the exact DISTINCT pass used for large detail
    catalogues counts the same distinct assets as the detail bitmaps."""
    from leadscore.features import builder as features

    tables = {n: pd.read_parquet(synthetic_dir / f"{n}.parquet") for n in ("leads", "activities", "lifecycle")}
    pairs = open_leads(tables, [ts("2025-02-03"), ts("2025-05-05")])
    expected = features_as_of(tables, pairs)
    shuffled = pairs.sample(frac=1.0, random_state=0).reset_index(drop=True)
    pd.testing.assert_frame_equal(features_as_of(tables, shuffled), expected)
    monkeypatch.setattr(features, "MAX_DETAIL_CODES", 0)
    pd.testing.assert_frame_equal(features_as_of(tables, pairs), expected)


def test_activity_kinds_outside_the_catalogue_count_in_totals_only(hand_tables):
    acts = hand_tables["activities"]
    extra = pd.DataFrame([("B", _days_before(3), "podcast_listen", "ep-1"),
                          ("B", _days_before(4), "podcast_listen", "ep-1")], columns=acts.columns)
    tables = dict(hand_tables, activities=pd.concat([acts, extra], ignore_index=True))
    b = features_as_of(tables, as_of=AS_OF).set_index("lead_id").loc["B"]
    assert b["n_activities_total"] == 3 and b["n_activities_7d"] == 3 and b["n_distinct_kinds"] == 2
    assert b["n_distinct_assets"] == 1 and b["days_since_last_activity"] == pytest.approx(1.0)
    assert b["engagement_decayed"] == pytest.approx(0.5 ** (3 / 14) + 0.5 ** (4 / 14))  # unsubscribe excluded


def test_hand_raiser_actions_in_the_last_30_days_counts_the_configured_hand_raisers():
    """The registry's n_hand_raiser_30d: hand-raiser actions with age < 30 days, of the kinds the
    feature config calls hand-raisers; its reason groups with the other hand-raiser features."""
    from leadscore.serving.explain import describe, signal_of

    acts = [
        ("X", _days_before(1), "page_view_pricing", None),
        ("X", _days_before(3), "page_view_blog", None),       # not a hand-raiser
        ("X", _days_before(29, 23), "demo_request", None),     # 29 days 23 hours: in
        ("X", _days_before(30), "contact_sales", None),        # exactly 30 days: out
        ("X", _days_before(45), "trial_signup", None),
        ("X", AS_OF, "demo_request", None),                    # at as_of: not before it
        ("Y", _days_before(2), "email_open", None),
    ]
    tables = _tables([_lead("X", "2024-12-01"), _lead("Y", "2024-12-01")], acts, [])
    f = features_as_of(tables, as_of=AS_OF).set_index("lead_id")
    assert f.loc["X", "n_hand_raiser_30d"] == 2 and f.loc["Y", "n_hand_raiser_30d"] == 0
    assert f["n_hand_raiser_30d"].dtype == "int32"
    assert f.loc["X", "n_hand_raiser_total"] == 4
    no_pricing = FeatureConfig(hand_raiser_types=("demo_request", "contact_sales", "trial_signup"))
    assert features_as_of(tables, as_of=AS_OF, config=no_pricing).set_index("lead_id").loc["X", "n_hand_raiser_30d"] == 1
    assert "n_hand_raiser_30d" in feature_names()
    assert describe("n_hand_raiser_30d", 2) == "2 hand-raiser actions in the last 30 days"
    assert describe("n_hand_raiser_30d", 0) == "No hand-raiser action in the last 30 days"
    assert signal_of("n_hand_raiser_30d") == signal_of("n_hand_raiser_total") == "hand_raiser"
