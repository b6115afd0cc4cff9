"""Cutoffs: each policy against an answer derived from the data, the report's bootstrap, and properties."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadscore.modeling.cutoff_policies.expected_value import EPS
from leadscore.modeling.cutoffs import (
    POLICIES,
    CutoffError,
    CutoffPolicy,
    Cutoffs,
    choose_cutoffs,
    cutoff_report,
    tradeoff_curve,
)
from leadscore.settings import ConfigError, build

MONDAY = pd.Timestamp("2025-01-06", tz="UTC")


def weeks(index) -> pd.Series:
    """As-of dates: week number -> a UTC Monday."""
    return pd.Series(MONDAY + pd.to_timedelta(np.asarray(index) * 7, unit="D"))


def make_frame(n_leads: int, n_weeks: int = 8, seed: int = 0) -> pd.DataFrame:
    """Leads open for a run of weeks; a lead's p and outcome are correlated across its examples."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, n_weeks, n_leads)
    length = rng.integers(1, n_weeks + 1, n_leads)
    length = np.minimum(length, n_weeks - start)
    lead = np.repeat(np.arange(n_leads), length)
    week = np.concatenate([np.arange(s, s + k) for s, k in zip(start, length, strict=True)])
    base = rng.beta(1.2, 10, n_leads)
    p = np.clip(np.round(base[lead] * rng.uniform(0.7, 1.3, len(lead)), 3), 0, 1)
    y = rng.random(len(lead)) < p
    return pd.DataFrame({"lead_id": [f"L{i:05d}" for i in lead], "as_of": weeks(week), "p": p, "y": y.astype(int)})


# --- brute-force oracles, straight from the documented definitions -----------------------


def rate_at_or_above(p, y, t) -> float:
    m = p >= t
    return y[m].sum() / m.sum()


def recall_at_or_above(p, y, t) -> float:
    return y[p >= t].sum() / y.sum()


def per_week(p, as_of, t, scale) -> float:
    """Mean over the frame's as-of dates of the examples at or above t, times scale: the open
    leads at or above (stock), and the new leads per week when every example is a lead seen once."""
    counts = pd.Series(p >= t).groupby(as_of.to_numpy()).sum()
    return float(counts.sum() * scale / len(counts))


def new_per_week(df, t, scale, into=None) -> float:
    """Leads crossing t per week, by walking each lead's weeks: at or above t on an as-of date
    (other than the first) and not at or above t on the one before (below, or absent); ``into``:
    only those that land below it. Divided by the weeks between the first and last date."""
    dates = sorted(df["as_of"].unique())
    at = {(r.lead_id, r.as_of): r.p for r in df.itertuples()}
    n = 0
    for r in df.itertuples():
        k = dates.index(r.as_of)
        if k == 0 or r.p < t or (into is not None and r.p >= into):
            continue
        before = at.get((r.lead_id, dates[k - 1]))
        n += before is None or before < t
    return n * scale / ((dates[-1] - dates[0]) / pd.Timedelta(days=7))


def oracle_conversion(p, y, target, min_rows):
    supported = [t for t in sorted(set(p.tolist())) if (p >= t).sum() >= min_rows]
    for t in supported:
        if all(rate_at_or_above(p, y, u) >= target for u in supported if u >= t):
            return t
    return None


def oracle_recall(p, y, target):
    return max(t for t in set(p.tolist()) if recall_at_or_above(p, y, t) >= target)


def next_lower(p, t):
    lower = p[p < t]
    return lower.max() if lower.size else None


def next_higher(p, t):
    higher = p[p > t]
    return higher.min() if higher.size else None


# --- conversion_rate -------------------------------------------------------------------------


def test_conversion_rate_on_calibrated_levels():
    # Ten levels of 100 examples each, converting at exactly their own p: the rate at or above
    # level l is the mean of the levels from l up, (l + top) / 2.
    levels = np.round(np.arange(0.05, 1.0, 0.1), 2)
    p = np.repeat(levels, 100)
    y = np.concatenate([np.r_[np.ones(round(lv * 100)), np.zeros(100 - round(lv * 100))] for lv in levels])
    cut = choose_cutoffs(p, y, weeks(np.arange(len(p)) % 4), CutoffPolicy(mql=0.52, sql=0.8))
    for got, target in ((cut.mql, 0.52), (cut.sql, 0.8)):
        expected = min(lv for lv in levels if (lv + levels.max()) / 2 >= target)
        assert got == pytest.approx(expected)
        assert got == oracle_conversion(p, y, target, 30)


def test_conversion_rate_meets_target_and_next_lower_candidate_does_not():
    df = make_frame(3000, seed=1)
    p, y = df["p"].to_numpy(), df["y"].to_numpy()
    policy = CutoffPolicy(mql=0.15, sql=0.25)
    cut = choose_cutoffs(p, y, df["as_of"], policy)
    for t, target in ((cut.mql, 0.15), (cut.sql, 0.25)):
        assert rate_at_or_above(p, y, t) >= target
        higher_supported = [u for u in set(p.tolist()) if u >= t and (p >= u).sum() >= policy.min_rows]
        assert all(rate_at_or_above(p, y, u) >= target for u in higher_supported)
        lower = next_lower(p, t)
        assert lower is not None and rate_at_or_above(p, y, lower) < target
        assert t == oracle_conversion(p, y, target, policy.min_rows)


def test_conversion_rate_ignores_the_thin_top_but_not_with_min_rows_one():
    # 20 top-scored examples that never convert (fewer than min_rows), then a block at 50 %.
    p = np.r_[np.full(20, 0.9), np.full(200, 0.5), np.full(200, 0.1)]
    y = np.r_[np.zeros(20), np.tile([1, 0], 100), np.tile([1] + [0] * 9, 20)]
    as_of = weeks(np.zeros(len(p), dtype=int))
    cut = choose_cutoffs(p, y, as_of, CutoffPolicy(mql=0.2, sql=0.4))
    assert cut.sql == 0.5 and rate_at_or_above(p, y, 0.5) >= 0.4 > rate_at_or_above(p, y, 0.1)
    assert cut.mql == 0.1 and rate_at_or_above(p, y, 0.1) >= 0.2
    with pytest.raises(CutoffError, match=r"top 20 examples .* convert at only 0\.0%"):
        choose_cutoffs(p, y, as_of, CutoffPolicy(mql=0.2, sql=0.4, min_rows=1, unreachable="refuse"))
    # by default the thin top is set aside with a note: the lowest cutoff whose leads convert at the target
    cut = choose_cutoffs(p, y, as_of, CutoffPolicy(mql=0.2, sql=0.4, min_rows=1))
    assert cut.sql == 0.5 and cut.mql == 0.1
    assert any("poorly ranked at the top" in n and "p_sql >= 0.5" in n for n in cut.notes)


def test_conversion_rate_stops_at_the_first_dip_below_target_from_the_top():
    # Cumulative rates from the top: 0.9 -> 40 %, 0.7 -> 11 %, 0.5 -> 34 %. With a 30 % target,
    # p >= 0.5 meets it, but the stricter cut p >= 0.7 does not, so the cutoff stays at 0.9.
    p = np.r_[np.full(40, 0.9), np.full(100, 0.7), np.full(200, 0.5)]
    y = np.r_[np.tile([1, 1, 0, 0, 0], 8), np.zeros(100), np.tile([1, 0], 100)]
    cut = choose_cutoffs(p, y, weeks(np.zeros(len(p), dtype=int)), CutoffPolicy(mql=0.3, sql=0.35))
    assert rate_at_or_above(p, y, 0.5) >= 0.3 > rate_at_or_above(p, y, 0.7)
    assert cut.mql == 0.9 == oracle_conversion(p, y, 0.3, 30)


def test_unreachable_conversion_target_reports_the_best_rate():
    df = make_frame(500, seed=2)
    p, y = df["p"].to_numpy(), df["y"].to_numpy()
    best = max(rate_at_or_above(p, y, t) for t in set(p.tolist()) if (p >= t).sum() >= 30)
    target = min(1.0, best + 0.05)
    refuse = CutoffPolicy(mql=0.01, sql=target, unreachable="refuse")
    with pytest.raises(CutoffError, match=rf"best rate .* is {best:.1%}"):
        choose_cutoffs(p, y, df["as_of"], refuse)
    with pytest.raises(CutoffError, match="sql target"):
        choose_cutoffs(p, y, df["as_of"], refuse)


def test_unreachable_target_falls_back_to_the_best_rate_and_says_so():
    df = make_frame(500, seed=2)
    p, y = df["p"].to_numpy(), df["y"].to_numpy()
    supported = sorted(t for t in set(p.tolist()) if (p >= t).sum() >= 30)
    best = max(rate_at_or_above(p, y, t) for t in supported)
    target = min(1.0, best + 0.05)
    cut = choose_cutoffs(p, y, df["as_of"], CutoffPolicy(mql=0.01, sql=target), probability="p_won")
    assert rate_at_or_above(p, y, cut.sql) == best
    assert cut.sql == min(t for t in supported if rate_at_or_above(p, y, t) == best)
    assert len(cut.notes) == 1 and f"best rate with at least 30 examples at or above is {best:.1%}" in cut.notes[0]
    assert "p_won >=" in cut.notes[0] and "lower the sql target" in cut.notes[0]
    assert Cutoffs.from_dict(cut.to_dict()).notes == cut.notes


def test_conversion_rate_without_positives_reports_zero():
    p = np.linspace(0, 1, 100)
    with pytest.raises(CutoffError, match=r"best rate .* is 0\.0%"):
        choose_cutoffs(p, np.zeros(100), weeks(np.zeros(100, dtype=int)),
                       CutoffPolicy(mql=0.1, sql=0.2, unreachable="refuse"))


def test_conversion_rate_needs_min_rows_examples():
    p, y = np.linspace(0.5, 1, 10), np.ones(10)
    with pytest.raises(CutoffError, match="min_rows=30"):
        choose_cutoffs(p, y, weeks(np.zeros(10, dtype=int)), CutoffPolicy(mql=0.1, sql=0.2))
    cut = choose_cutoffs(p, y, weeks(np.zeros(10, dtype=int)), CutoffPolicy(mql=0.1, sql=0.2, min_rows=5))
    assert cut.mql == cut.sql == p.min()  # everything converts: the lowest candidate meets both


# --- capacity --------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 2.5, 5.0])
def test_capacity_in_leads_per_week_uses_population_scale(scale):
    rng = np.random.default_rng(3)
    n_dates, per_date = 4, 25
    p = rng.permutation(np.linspace(0.01, 0.99, n_dates * per_date))
    as_of = weeks(np.repeat(np.arange(n_dates), per_date))
    y = (rng.random(len(p)) < p).astype(int)
    sql_target, mql_target = 30.0, 60.0
    cut = choose_cutoffs(p, y, as_of, CutoffPolicy(policy="capacity", mql=mql_target, sql=sql_target),
                         population_scale=scale)
    p_desc = np.sort(p)[::-1]
    for got, target in ((cut.sql, sql_target), (cut.mql, mql_target)):
        allowed = min(len(p), math.floor(target * n_dates / scale))  # examples at or above, all dates
        assert got == p_desc[allowed - 1]
        assert per_week(p, as_of, got, scale) <= target
        lower = next_lower(p, got)
        assert lower is None or per_week(p, as_of, lower, scale) > target


def test_capacity_below_one_is_a_share_of_examples():
    df = make_frame(2000, seed=4)
    p, y = df["p"].to_numpy(), df["y"].to_numpy()
    cuts = [choose_cutoffs(p, y, df["as_of"], CutoffPolicy(policy="capacity", mql=0.3, sql=0.1), population_scale=s)
            for s in (1.0, 5.0)]
    assert cuts[0].mql == cuts[1].mql and cuts[0].sql == cuts[1].sql  # a share does not depend on the scale
    for t, target in ((cuts[0].mql, 0.3), (cuts[0].sql, 0.1)):
        assert (p >= t).mean() <= target < (p >= next_lower(p, t)).mean()


def test_capacity_refuses_when_the_top_tie_alone_is_too_many():
    p = np.r_[np.full(50, 0.8), np.linspace(0.01, 0.5, 50)]
    as_of = weeks(np.zeros(100, dtype=int))
    with pytest.raises(CutoffError, match=r"50 examples tied at the highest p_sql .* 50 new leads per week"):
        choose_cutoffs(p, np.zeros(100), as_of, CutoffPolicy(policy="capacity", mql=80, sql=10))


def test_new_leads_per_week_count_leads_entering_between_consecutive_dates():
    # Three weekly as-of dates, cutoff 0.5, counted by hand:
    #   A: 0.2 -> 0.6 -> 0.7   crosses in week 2 (1)
    #   B: 0.6 -> 0.4 -> 0.6   above at the first date (its past unknown: not counted), crosses again in week 3 (1)
    #   C:   - -> 0.9 -> 0.9   new and above in week 2 (1), stays (0)
    #   D: 0.8 -> 0.8 ->   -   never crosses; leaving is not arriving
    #   E:   - ->   - -> 0.3   new, below
    #   F: 0.1 ->   - -> 0.55  gone in week 2, back above in week 3: absent the week before (1)
    # 4 arrivals over 2 weeks = 2 new leads per week; open leads at or above: (2 + 3 + 4) / 3 dates = 3.
    rows = [("A", 0, 0.2), ("A", 1, 0.6), ("A", 2, 0.7), ("B", 0, 0.6), ("B", 1, 0.4), ("B", 2, 0.6),
            ("C", 1, 0.9), ("C", 2, 0.9), ("D", 0, 0.8), ("D", 1, 0.8), ("E", 2, 0.3), ("F", 0, 0.1), ("F", 2, 0.55)]
    df = pd.DataFrame(rows, columns=["lead_id", "week", "p"]).assign(as_of=lambda d: weeks(d["week"]), y=0)
    out = cutoff_report(Cutoffs(CutoffPolicy(mql=0.5, sql=0.85, bootstrap=0), 0.5, 0.85), df["p"], df["y"],
                        df["as_of"], df["lead_id"]).set_index("cutoff")
    assert out.loc["MQL", "new_leads_per_week"] == 2.0 and out.loc["MQL", "open_leads"] == 3.0
    # into the MQL band alone (0.5 <= p < 0.85): A, B and F arrive there; C arrives straight in SQL
    assert out.loc["MQL", "band_new_leads_per_week"] == 1.5
    assert out.loc["SQL", "new_leads_per_week"] == 0.5  # C in week 2 (D was above from the start)
    curve = tradeoff_curve(df["p"], df["y"], df["as_of"], lead_id=df["lead_id"], n_points=13).set_index("threshold")
    assert curve.loc[0.55, "new_leads_per_week"] == 2.0  # A, B (0.4 -> 0.6), C, F
    assert curve.loc[0.1, "new_leads_per_week"] == 1.5  # at the lowest cutoff only new leads arrive: C, E, F


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_capacity_with_lead_ids_counts_new_leads_per_week(scale):
    df = make_frame(3000, seed=12)
    p, y = df["p"].to_numpy(), df["y"].to_numpy()
    target = 40.0 * scale
    cut = choose_cutoffs(p, y, df["as_of"], CutoffPolicy(policy="capacity", mql=target, sql=target / 4),
                         population_scale=scale, lead_id=df["lead_id"])
    for t, goal in ((cut.mql, target), (cut.sql, target / 4)):
        assert new_per_week(df, t, scale) <= goal
        lower = next_lower(p, t)  # the next lower cutoff would send too many new leads a week
        assert lower is None or new_per_week(df, lower, scale) > goal
    # the stock of open leads above the cutoff is larger than the weekly flow into it
    assert per_week(p, df["as_of"], cut.mql, scale) > new_per_week(df, cut.mql, scale)


def test_capacity_in_new_leads_needs_two_dates():
    p = np.linspace(0.01, 0.99, 50)
    with pytest.raises(CutoffError, match="at least two as-of dates"):
        choose_cutoffs(p, np.zeros(50), weeks(np.zeros(50, dtype=int)), CutoffPolicy(policy="capacity", mql=20, sql=10),
                       lead_id=[f"L{i}" for i in range(50)])


# --- recall ----------------------------------------------------------------------------------


def test_recall_is_the_highest_cutoff_keeping_the_share_of_positives():
    rng = np.random.default_rng(5)
    p = rng.permutation(np.linspace(0.001, 0.999, 400))
    y = (rng.random(400) < p).astype(int)
    cut = choose_cutoffs(p, y, weeks(np.arange(400) % 5), CutoffPolicy(policy="recall", mql=0.9, sql=0.5))
    positives_desc = np.sort(p[y == 1])[::-1]
    for got, target in ((cut.mql, 0.9), (cut.sql, 0.5)):
        needed = math.ceil(target * len(positives_desc))  # positives that must be at or above
        assert got == positives_desc[needed - 1]
        assert recall_at_or_above(p, y, got) >= target > recall_at_or_above(p, y, next_higher(p, got))


def test_recall_needs_positives():
    with pytest.raises(CutoffError, match="positives"):
        choose_cutoffs(np.linspace(0, 1, 50), np.zeros(50), weeks(np.zeros(50, dtype=int)),
                       CutoffPolicy(policy="recall", mql=0.8, sql=0.5))


# --- expected_value --------------------------------------------------------------------------


def test_expected_value_cutoffs_maximise_expected_value():
    policy = CutoffPolicy(policy="expected_value", value_per_sql=2000.0, mql_cost=50.0, sql_cost=300.0)
    rng = np.random.default_rng(6)
    p = np.round(rng.beta(1, 8, 5000), 4)
    cut = choose_cutoffs(p, rng.random(5000) < p, weeks(np.arange(5000) % 10), policy)
    assert (cut.mql, cut.sql) == pytest.approx((50 / 2000, 300 / 2000))
    # Working everything at or above t earns sum(p x value - cost): no threshold on the data beats the cutoff.
    for cost, t in ((policy.mql_cost, cut.mql), (policy.sql_cost, cut.sql)):
        def ev(threshold, cost=cost):
            return (p[p >= threshold] * policy.value_per_sql - cost).sum()
        assert ev(t) >= max(ev(u) for u in np.unique(p)) - 1e-6


def test_expected_value_cutoffs_are_clipped_into_the_unit_interval():
    policy = CutoffPolicy(policy="expected_value", value_per_sql=100.0, mql_cost=0.0, sql_cost=250.0)
    cut = choose_cutoffs(np.array([0.2, 0.7]), np.array([0, 1]), weeks([0, 0]), policy)
    assert cut.mql == EPS and cut.sql == 1.0
    assert list(cut.tier([EPS, 0.999999])) == ["MQL", "MQL"]


# --- mql <= sql, policy validation -----------------------------------------------------------


def test_conflicting_targets_are_refused_after_choosing():
    # The top half of examples (MQL) is more than 1,000 leads a week (SQL: everything here).
    p = np.linspace(0.01, 0.99, 100)
    as_of = weeks(np.arange(100) % 4)
    policy = CutoffPolicy(policy="capacity", mql=0.5, sql=1000)
    cut_mql = choose_cutoffs(p, np.zeros(100), as_of, CutoffPolicy(policy="capacity", mql=0.5, sql=0.5))
    assert cut_mql.mql > p.min()  # the MQL cutoff alone is well above the lowest p, where the SQL one lands
    with pytest.raises(CutoffError, match=r"targets conflict: the MQL cutoff .* mql=0\.5\) is above the SQL cutoff .* sql=1000\)"):
        choose_cutoffs(p, np.zeros(100), as_of, policy)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"policy": "lift"}, r"policy must be one of capacity, conversion_rate, expected_value, recall, got 'lift'"),
    ({"mql": 0.04}, r"missing: sql"),
    ({"policy": "recall", "mql": 0.9}, r"missing: sql"),
    ({"mql": 0.04, "sql": 13}, r"sql must be a conversion rate in \(0, 1\] .* got 13\.0 \(for 13 % write 0\.13\)"),
    ({"mql": 0.0, "sql": 0.1}, r"mql must be a conversion rate in \(0, 1\]"),
    ({"mql": 0.2, "sql": 0.1}, r"mql \(0\.2\) must not exceed sql \(0\.1\)"),
    ({"policy": "recall", "mql": 0.5, "sql": 0.8}, r"mql \(0\.5\) must be at least sql \(0\.8\)"),
    ({"policy": "recall", "mql": 1.5, "sql": 0.8}, r"mql must be a share of positives in \(0, 1\]"),
    ({"policy": "capacity", "mql": 0, "sql": 0.1}, r"mql must be > 0 for policy capacity"),
    ({"policy": "capacity", "mql": 100, "sql": 200}, r"mql \(100\.0\) must be at least sql \(200\.0\)"),
    ({"mql": "4%", "sql": 0.13}, r"mql must be a finite number, got '4%'"),
    ({"mql": float("nan"), "sql": 0.13}, r"mql must be a finite number"),
    ({"mql": 0.04, "sql": 0.13, "value_per_sql": 1000}, r"value_per_sql: only used by policy expected_value, not conversion_rate"),
    ({"policy": "expected_value", "value_per_sql": 1000, "mql_cost": 5}, r"missing: sql_cost"),
    ({"policy": "expected_value", "value_per_sql": 0, "mql_cost": 5, "sql_cost": 50}, r"value_per_sql must be > 0"),
    ({"policy": "expected_value", "value_per_sql": 100, "mql_cost": -1, "sql_cost": 50}, r"mql_cost must be >= 0"),
    ({"policy": "expected_value", "value_per_sql": 100, "mql_cost": 60, "sql_cost": 50},
     r"mql_cost \(60\.0\) must not exceed sql_cost \(50\.0\)"),
    ({"policy": "expected_value", "value_per_sql": 100, "mql_cost": 1, "sql_cost": 5, "sql": 0.2},
     r"sql target\(s\) are not used by policy expected_value"),
    ({"bootstrap": 50}, r"bootstrap must be 0 \(no intervals\) or at least 100 resamples, got 50"),
    ({"bootstrap": 1000.0}, r"bootstrap must be a whole number, got 1000\.0"),
    ({"confidence": 1.0}, r"confidence must be in \(0, 1\)"),
    ({"confidence": 95}, r"confidence must be in \(0, 1\), e\.g\. 0\.95, got 95"),
    ({"seed": -1}, r"seed must be >= 0"),
    ({"min_rows": 0}, r"min_rows must be >= 1"),
])
def test_invalid_policies_name_the_field_and_value(kwargs, message):
    with pytest.raises(CutoffError, match=message):
        CutoffPolicy(**kwargs)


def test_policy_defaults_and_config_build():
    default = CutoffPolicy()
    assert (default.policy, default.mql, default.sql) == ("conversion_rate", 0.04, 0.13)
    built = build(CutoffPolicy, {"policy": "capacity", "mql": 500, "sql": 100, "bootstrap": 0}, "train.yaml: cutoffs")
    assert (built.mql, built.sql, built.bootstrap) == (500.0, 100.0, 0)
    with pytest.raises(ConfigError, match=r"train.yaml: cutoffs: sql must be > 0 for policy capacity"):
        build(CutoffPolicy, {"policy": "capacity", "mql": 500, "sql": -1}, "train.yaml: cutoffs")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) target"):
        build(CutoffPolicy, {"target": 0.1}, "train.yaml: cutoffs")
    assert set(POLICIES) == {"conversion_rate", "capacity", "recall", "expected_value"}


# --- inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"p": np.r_[np.linspace(0, 1, 9), 1.5]}, r"p must hold probabilities in \[0, 1\]; 1 value\(s\) are not \(e\.g\. 1\.5\)"),
    ({"p": np.r_[np.linspace(0, 1, 9), np.nan]}, r"p must hold probabilities in \[0, 1\]"),
    ({"p": np.linspace(0, 1, 9)}, r"y has 10 values but p has 9"),
    ({"y": np.r_[np.zeros(9), 2]}, r"y must be 0/1 or bool; 1 value\(s\) are not \(e\.g\. 2\.0\)"),
    ({"y": pd.Series([0] * 9 + [None], dtype="Int64")}, r"y has 1 missing label"),
    ({"as_of": weeks(np.zeros(9, dtype=int))}, r"as_of has 9 values but p has 10"),
    ({"as_of": ["not a date"] * 10}, r"as_of must be timestamps"),
    ({"as_of": pd.Series([MONDAY] * 9 + [pd.NaT])}, r"as_of has 1 missing value"),
    ({"lead_id": ["a"] * 9}, r"lead_id has 9 values but p has 10"),
    ({"lead_id": ["a"] * 9 + [None]}, r"lead_id has 1 missing value"),
    ({"population_scale": 0}, r"population_scale must be > 0"),
    ({"population_scale": float("inf")}, r"population_scale must be a finite number"),
])
def test_inputs_are_checked_and_the_argument_named(change, message):
    args = {"p": np.linspace(0, 1, 10), "y": np.r_[np.zeros(5), np.ones(5)], "as_of": weeks(np.arange(10) % 2),
            "lead_id": [f"L{i}" for i in range(10)], "population_scale": 1.0, **change}
    cut = Cutoffs(CutoffPolicy(bootstrap=0), mql=0.2, sql=0.6)
    with pytest.raises(ValueError, match=message):
        cutoff_report(cut, **args)
    if "lead_id" not in change:
        args.pop("lead_id")
        with pytest.raises(ValueError, match=message):
            choose_cutoffs(policy=CutoffPolicy(min_rows=1), **args)


def test_inputs_accept_bool_labels_and_plain_arrays():
    p = np.linspace(0.01, 0.99, 60)
    y = p > 0.5
    as_of = np.array(weeks(np.arange(60) % 3).tolist(), dtype=object)  # tz-aware Timestamps in an object array
    a = choose_cutoffs(p, y, as_of, CutoffPolicy(policy="capacity", mql=10, sql=5))
    b = choose_cutoffs(list(p), y.astype(int).tolist(), weeks(np.arange(60) % 3), CutoffPolicy(policy="capacity", mql=10, sql=5))
    assert a == b and (p >= a.mql).sum() == 30  # 10 a week over 3 dates


# --- Cutoffs: tiers and serialisation --------------------------------------------------------


def test_tier_boundaries_are_inclusive_at_each_cutoff():
    cut = Cutoffs(CutoffPolicy(), mql=0.04, sql=0.13)
    p = np.array([0.0, np.nextafter(0.04, 0), 0.04, 0.1, np.nextafter(0.13, 0), 0.13, 0.5, 1.0])
    assert cut.tier(p).tolist() == ["lead", "lead", "MQL", "MQL", "MQL", "SQL", "SQL", "SQL"]
    assert str(cut.tier(0.13)) == "SQL"
    with pytest.raises(ValueError, match=r"p must hold probabilities"):
        cut.tier([0.5, np.nan])


def test_cutoffs_must_be_ordered_probabilities():
    with pytest.raises(CutoffError, match=r"mql cutoff \(0\.5\) must not exceed sql cutoff \(0\.2\)"):
        Cutoffs(CutoffPolicy(), mql=0.5, sql=0.2)
    with pytest.raises(CutoffError, match=r"sql cutoff must be a probability in \[0, 1\]"):
        Cutoffs(CutoffPolicy(), mql=0.5, sql=1.2)


@pytest.mark.parametrize("policy", [
    CutoffPolicy(mql=0.05, sql=0.2, seed=3),
    CutoffPolicy(policy="capacity", mql=500, sql=0.01, bootstrap=0),
    CutoffPolicy(policy="recall", mql=0.9, sql=0.5, confidence=0.9),
    CutoffPolicy(policy="expected_value", value_per_sql=5000, mql_cost=20, sql_cost=400),
])
def test_to_dict_round_trips_through_json(policy):
    df = make_frame(800, seed=7)
    cut = choose_cutoffs(df["p"], df["y"], df["as_of"], policy, population_scale=5)
    record = json.loads(json.dumps(cut.to_dict()))
    assert record["policy"]["policy"] == policy.policy and record["mql"] == cut.mql
    again = Cutoffs.from_dict(record)
    assert again == cut
    assert (again.tier(df["p"]) == cut.tier(df["p"])).all()


def test_from_dict_rejects_other_records():
    record = Cutoffs(CutoffPolicy(), mql=0.05, sql=0.2).to_dict()
    with pytest.raises(CutoffError, match="lacks sql"):
        Cutoffs.from_dict({k: v for k, v in record.items() if k != "sql"})
    with pytest.raises(CutoffError, match=r"unknown key\(s\) colour"):
        Cutoffs.from_dict({**record, "policy": {**record["policy"], "colour": "red"}})


# --- report and bootstrap --------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame():
    return make_frame(3000, seed=8)


def report(df, policy=None, scale=4.0, cut=(0.05, 0.15)):
    policy = policy or CutoffPolicy(mql=0.05, sql=0.15)
    return cutoff_report(Cutoffs(policy, *cut), df["p"], df["y"], df["as_of"], df["lead_id"], population_scale=scale)


def test_report_point_estimates_match_a_direct_count(frame):
    out = report(frame).set_index("cutoff")
    p, y, as_of = frame["p"].to_numpy(), frame["y"].to_numpy(), frame["as_of"]
    assert list(out.index) == ["MQL", "SQL"]
    for name, t, target in (("MQL", 0.05, 0.05), ("SQL", 0.15, 0.15)):
        row = out.loc[name]
        assert row["threshold"] == t and row["target"] == target and row["policy"] == "conversion_rate"
        assert row["examples"] == (p >= t).sum()
        assert row["open_leads"] == pytest.approx(per_week(p, as_of, t, 4.0))
        assert row["new_leads_per_week"] == pytest.approx(new_per_week(frame, t, 4.0))
        assert row["share_of_examples"] == pytest.approx((p >= t).mean())
        assert row["conversion_rate"] == pytest.approx(rate_at_or_above(p, y, t))
        assert row["recall"] == pytest.approx(recall_at_or_above(p, y, t))
    band = (p >= 0.05) & (p < 0.15)
    assert out.loc["MQL", "band_conversion_rate"] == pytest.approx(y[band].mean())
    assert out.loc["MQL", "band_open_leads"] == pytest.approx(band.sum() / as_of.nunique() * 4.0)
    assert out.loc["MQL", "band_new_leads_per_week"] == pytest.approx(new_per_week(frame, 0.05, 4.0, into=0.15))
    assert out.loc["SQL", "band_new_leads_per_week"] == out.loc["SQL", "new_leads_per_week"]
    assert out.loc["SQL", "band_conversion_rate"] == out.loc["SQL", "conversion_rate"]


def test_report_target_is_nan_for_expected_value(frame):
    out = report(frame, CutoffPolicy(policy="expected_value", value_per_sql=1000, mql_cost=50, sql_cost=150, bootstrap=0))
    assert out["target"].isna().all()


def test_bootstrap_intervals_contain_the_estimate_and_are_reproducible(frame):
    a, b = report(frame), report(frame)
    pd.testing.assert_frame_equal(a, b)
    for stat in ("new_leads_per_week", "open_leads", "conversion_rate", "recall", "band_conversion_rate"):
        assert (a[f"{stat}_low"] <= a[stat]).all() and (a[stat] <= a[f"{stat}_high"]).all()
        assert (a[f"{stat}_low"] < a[f"{stat}_high"]).all()
    other = report(frame, CutoffPolicy(mql=0.05, sql=0.15, seed=1))
    assert not np.allclose(other["conversion_rate_low"], a["conversion_rate_low"])
    narrower = report(frame, CutoffPolicy(mql=0.05, sql=0.15, confidence=0.5))
    assert (narrower["recall_high"] - narrower["recall_low"] < a["recall_high"] - a["recall_low"]).all()


def test_bootstrap_intervals_narrow_as_data_grows():
    small, large = report(make_frame(500, seed=9)), report(make_frame(8000, seed=9))
    for stat in ("new_leads_per_week", "open_leads", "conversion_rate", "recall"):
        # loads grow with the data; compare their relative width
        scale_small = small[stat] if stat.endswith("leads") or "week" in stat else 1
        scale_large = large[stat] if stat.endswith("leads") or "week" in stat else 1
        width_small = (small[f"{stat}_high"] - small[f"{stat}_low"]) / scale_small
        width_large = (large[f"{stat}_high"] - large[f"{stat}_low"]) / scale_large
        assert (width_large < 0.6 * width_small).all()


def test_bootstrap_resamples_leads_not_examples():
    # Copying every example of a lead k times adds no information about leads: resampling
    # leads gives the same rate intervals (and k times the counts); resampling rows would not.
    df = make_frame(1500, n_weeks=1, seed=10)  # one example per lead
    k = 5
    copies = df.loc[df.index.repeat(k)].reset_index(drop=True)
    one, many = report(df, scale=1.0), report(copies, scale=1.0)
    for stat in ("conversion_rate", "recall"):
        for col in (stat, f"{stat}_low", f"{stat}_high"):
            assert many[col].to_numpy() == pytest.approx(one[col].to_numpy())
    for col in ("open_leads", "open_leads_low", "open_leads_high"):
        assert many[col].to_numpy() == pytest.approx(k * one[col].to_numpy())
    assert one["new_leads_per_week"].isna().all()  # one as-of date: no week to count arrivals in


def test_bootstrap_zero_leaves_intervals_empty(frame):
    out = report(frame, CutoffPolicy(mql=0.05, sql=0.15, bootstrap=0))
    lows = [c for c in out.columns if c.endswith(("_low", "_high"))]
    assert len(lows) == 10 and out[lows].isna().all().all()
    assert out["conversion_rate"].notna().all()


# --- trade-off curve -------------------------------------------------------------------------


def test_tradeoff_curve_matches_direct_counts_and_is_monotone(frame):
    curve = tradeoff_curve(frame["p"], frame["y"], frame["as_of"], population_scale=5.0, n_points=20,
                           lead_id=frame["lead_id"])
    p, y, as_of = frame["p"].to_numpy(), frame["y"].to_numpy(), frame["as_of"]
    assert 2 <= len(curve) <= 20 and curve["threshold"].is_monotonic_increasing
    assert curve["threshold"].iloc[0] == p.min() and curve["recall"].iloc[0] == 1.0
    assert (np.diff(curve["open_leads"]) < 0).all() and (np.diff(curve["recall"]) <= 0).all()
    for _, row in curve.iloc[[1, len(curve) // 2, -1]].iterrows():
        t = row["threshold"]
        assert row["open_leads"] == pytest.approx(per_week(p, as_of, t, 5.0))
        assert row["new_leads_per_week"] == pytest.approx(new_per_week(frame, t, 5.0))
        assert row["conversion_rate"] == pytest.approx(rate_at_or_above(p, y, t))
        assert row["recall"] == pytest.approx(recall_at_or_above(p, y, t))
        assert row["share_of_examples"] == pytest.approx((p >= t).mean())
    with pytest.raises(ValueError, match="n_points"):
        tradeoff_curve(p, y, as_of, n_points=1)


# --- properties ------------------------------------------------------------------------------

LEVELS = np.round(np.linspace(0, 1, 41), 3)  # a coarse grid, so ties are common


@st.composite
def scored(draw, min_size=1):
    n = draw(st.integers(min_size, 150))
    p = LEVELS[draw(st.lists(st.integers(0, len(LEVELS) - 1), min_size=n, max_size=n))]
    y = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=int)
    as_of = weeks(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)))
    return p, y, as_of


@settings(max_examples=150, deadline=None)
@given(scored(), st.floats(0.01, 1.0), st.floats(0.01, 1.0))
def test_property_recall_cutoff_keeps_the_target_and_is_highest(data, a, b):
    p, y, as_of = data
    if y.sum() == 0:
        return
    high, low = max(a, b), min(a, b)
    cut = choose_cutoffs(p, y, as_of, CutoffPolicy(policy="recall", mql=high, sql=low))
    for t, target in ((cut.mql, high), (cut.sql, low)):
        assert recall_at_or_above(p, y, t) >= target
        above = next_higher(p, t)
        assert above is None or recall_at_or_above(p, y, above) < target
        assert t == oracle_recall(p, y, target)


@settings(max_examples=150, deadline=None)
@given(scored(), st.floats(0.01, 1.0), st.integers(1, 10))
def test_property_conversion_rate_matches_the_definition(data, target, min_rows):
    p, y, as_of = data
    expected = oracle_conversion(p, y, target, min_rows)
    policy = CutoffPolicy(mql=target, sql=target, min_rows=min_rows, unreachable="refuse")
    fallback = choose_cutoffs(p, y, as_of, policy.replace(unreachable="best")) \
        if (p >= p.min()).sum() >= min_rows else None
    if expected is None:
        with pytest.raises(CutoffError):
            choose_cutoffs(p, y, as_of, policy)
        if fallback is not None:  # the lowest cutoff that meets the target on its own, else the best rate
            supported = [t for t in sorted(set(p.tolist())) if (p >= t).sum() >= min_rows]
            rates = {t: rate_at_or_above(p, y, t) for t in supported}
            meets = [t for t in supported if rates[t] >= target]
            best = max(rates.values())
            assert fallback.sql == (meets[0] if meets else min(t for t in supported if rates[t] == best))
            assert fallback.notes
        return
    cut = choose_cutoffs(p, y, as_of, policy)
    assert cut.sql == cut.mql == expected and rate_at_or_above(p, y, expected) >= target
    assert (fallback.mql, fallback.sql) == (cut.mql, cut.sql) and not fallback.notes


@settings(max_examples=150, deadline=None)
@given(scored(), st.floats(0.05, 60.0), st.sampled_from([1.0, 2.0, 5.0]))
def test_property_capacity_cutoff_is_the_lowest_within_capacity(data, target, scale):
    p, y, as_of = data
    policy = CutoffPolicy(policy="capacity", mql=target, sql=target)
    fits = [t for t in set(p.tolist()) if
            (per_week(p, as_of, t, scale) if target >= 1 else (p >= t).mean()) <= target]
    if not fits:
        with pytest.raises(CutoffError, match="tied at the highest"):
            choose_cutoffs(p, y, as_of, policy, population_scale=scale)
        return
    cut = choose_cutoffs(p, y, as_of, policy, population_scale=scale)
    assert cut.sql == min(fits)
    tiers = cut.tier(p)
    assert set(tiers.tolist()) <= {"lead", "SQL"}  # equal cutoffs: no MQL band


@settings(max_examples=100, deadline=None)
@given(scored(min_size=2), st.floats(1.0, 40.0), st.data())
def test_property_capacity_with_lead_ids_keeps_every_stricter_cut_within_the_flow(data, target, draw):
    p, y, as_of = data
    lead = np.array(draw.draw(st.lists(st.integers(0, 12), min_size=len(p), max_size=len(p))))
    df = pd.DataFrame({"lead_id": lead, "as_of": as_of, "p": p, "y": y}).drop_duplicates(["lead_id", "as_of"])
    if df["as_of"].nunique() < 2:
        return
    p, y = df["p"].to_numpy(), df["y"].to_numpy()
    policy = CutoffPolicy(policy="capacity", mql=target, sql=target)
    values = sorted(set(p.tolist()))
    flow = {t: new_per_week(df, t, 1.0) for t in values}
    within = [t for t in values if all(flow[u] <= target for u in values if u >= t)]
    if not within:
        with pytest.raises(CutoffError, match="tied at the highest"):
            choose_cutoffs(p, y, df["as_of"], policy, lead_id=df["lead_id"])
        return
    cut = choose_cutoffs(p, y, df["as_of"], policy, lead_id=df["lead_id"])
    assert cut.sql == cut.mql == min(within)


def test_a_policy_is_one_module_in_the_policies_package(tmp_path):
    """A module dropped into leadscore.modeling.cutoff_policies is a policy the config accepts
    and choose_cutoffs runs - nothing else to edit (run in a fresh interpreter, whose registry
    has not been read yet)."""
    (tmp_path / "top_share.py").write_text(
        "import numpy as np\n"
        "from leadscore.modeling.cutoff_policies import CutoffError, Policy\n\n"
        "class TopShare(Policy):\n"
        "    name = 'top_share'\n\n"
        "    def check(self, cfg):\n"
        "        if not (0 < cfg.sql <= cfg.mql < 1):\n"
        "            raise CutoffError('top_share needs 0 < sql <= mql < 1')\n\n"
        "    def choose(self, cfg, choice):\n"
        "        values, n_ge, _ = choice.sorted.candidates()\n"
        "        share = n_ge / choice.sorted.n\n"
        "        return {k: float(values[np.flatnonzero(share <= getattr(cfg, k))[0]]) for k in ('mql', 'sql')}\n")
    script = (
        "import sys, numpy as np, pandas as pd\n"
        "import leadscore.modeling.cutoff_policies as cp\n"
        f"cp.__path__.append({str(tmp_path)!r})\n"
        "from leadscore.modeling.cutoffs import POLICIES, CutoffError, CutoffPolicy, choose_cutoffs\n"
        "assert 'top_share' in POLICIES, POLICIES\n"
        "p = np.arange(1, 101) / 100.0\n"
        "cut = choose_cutoffs(p, p > 0.5, pd.Series([pd.Timestamp('2025-01-06', tz='UTC')] * 100),\n"
        "                     CutoffPolicy(policy='top_share', mql=0.2, sql=0.1))\n"
        "print(cut.mql, cut.sql)\n"
        "try:\n"
        "    CutoffPolicy(policy='top_share', mql=0.1, sql=0.2)\n"
        "except CutoffError as exc:\n"
        "    print('refused:', exc)\n")
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "0.81 0.91"   # the top 20 % and the top 10 % of 100 distinct scores
    assert lines[1] == "refused: top_share needs 0 < sql <= mql < 1"
