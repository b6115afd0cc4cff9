"""Cutoffs on a weighted sample of leads: a lead of weight w counts as w copies of itself.

Training may keep every lead with a positive outcome and the others with probability r, each
example then weighing 1 / r. The cutoff module's counts become sums of those weights; these tests
pin that to its meaning (integer weights = replicated leads, for every policy), check that unit
weights change nothing, that the bootstrap sums weights per lead, and that bad weights are refused.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadscore.modeling import cutoff_policies
from leadscore.modeling.cutoffs import (
    CutoffError,
    CutoffPolicy,
    Cutoffs,
    choose_cutoffs,
    cutoff_report,
    tradeoff_curve,
)

from .test_cutoffs import LEVELS, make_frame, weeks

POINT = ("cutoff", "policy", "threshold", "target", "examples", "new_leads_per_week", "open_leads",
         "share_of_examples", "conversion_rate", "recall", "band_new_leads_per_week", "band_open_leads",
         "band_share_of_examples", "band_conversion_rate")  # the report's columns but the bootstrap intervals


# --- data: leads with a weight each, and the same leads replicated --------------------------


@st.composite
def weighted_leads(draw) -> pd.DataFrame:
    """A few leads, each open on some of six weekly as-of dates (p on a coarse grid, so ties are
    common), with one integer weight 1..3 per lead."""
    rows = []
    for lead in range(draw(st.integers(1, 10))):
        w = draw(st.integers(1, 3))
        for week in draw(st.lists(st.integers(0, 5), min_size=1, max_size=5, unique=True)):
            rows.append((f"L{lead}", week, LEVELS[draw(st.integers(0, len(LEVELS) - 1))], int(draw(st.booleans())), w))
    df = pd.DataFrame(rows, columns=["lead_id", "week", "p", "y", "w"])
    return df.assign(as_of=weeks(df["week"]))


def replicated(df: pd.DataFrame) -> pd.DataFrame:
    """Each lead of weight w as w unweighted leads under new distinct ids (L3#0, L3#1, ...)."""
    out = df.loc[df.index.repeat(df["w"])]
    copy = out.groupby(level=0).cumcount().astype(str)
    return out.assign(lead_id=out["lead_id"] + "#" + copy.to_numpy()).reset_index(drop=True)


@st.composite
def targets(draw, name: str) -> CutoffPolicy:
    """A valid policy of each kind, with targets the small frames above can meet (or not)."""
    def pair(low, high):
        a, b = draw(st.floats(low, high)), draw(st.floats(low, high))
        return max(a, b), min(a, b)

    common = {"policy": name, "bootstrap": 100, "seed": draw(st.integers(0, 5))}
    if name == "conversion_rate":
        sql, mql = pair(0.01, 1.0)
        return CutoffPolicy(**common, mql=mql, sql=sql, min_rows=draw(st.integers(1, 12)),
                            unreachable=draw(st.sampled_from(["best", "refuse"])))
    if name == "capacity":  # new leads per week (>= 1) or a share of examples (< 1)
        mql, sql = pair(1.0, 40.0) if draw(st.booleans()) else pair(0.02, 0.98)
        return CutoffPolicy(**common, mql=mql, sql=sql)
    if name == "recall":
        mql, sql = pair(0.01, 1.0)
        return CutoffPolicy(**common, mql=mql, sql=sql)
    if name == "expected_value":
        value, cost = draw(st.floats(100, 5000)), draw(st.floats(0, 400))
        return CutoffPolicy(**common, value_per_sql=value, mql_cost=cost, sql_cost=cost + draw(st.floats(0, 400)))
    raise AssertionError(f"no targets for policy {name!r}: add them to targets() in this file")


def choose(df: pd.DataFrame, policy: CutoffPolicy, with_leads: bool, scale: float, weight=None):
    """(mql, sql, notes, fell_back), or the CutoffError's message."""
    try:
        cut = choose_cutoffs(df["p"], df["y"], df["as_of"], policy, population_scale=scale,
                             lead_id=df["lead_id"] if with_leads else None, weight=weight)
    except CutoffError as exc:
        return str(exc)
    return cut.mql, cut.sql, cut.notes, cut.fell_back


# --- integer weights are replicated leads ---------------------------------------------------


@pytest.mark.parametrize("name", cutoff_policies.names())
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_integer_weights_are_replicated_leads(name, data):
    df = data.draw(weighted_leads())
    policy = data.draw(targets(name))
    with_leads, scale = data.draw(st.booleans()), data.draw(st.sampled_from([1.0, 2.5]))
    rep = replicated(df)

    weighted = choose(df, policy, with_leads, scale, weight=df["w"])
    assert weighted == choose(rep, policy, with_leads, scale)

    if isinstance(weighted, str):  # no cutoffs on this frame: report some from the grid instead
        weighted = sorted(LEVELS[data.draw(st.lists(st.integers(0, len(LEVELS) - 1), min_size=2, max_size=2))])
    cut = Cutoffs(policy, weighted[0], weighted[1])
    a = cutoff_report(cut, df["p"], df["y"], df["as_of"], df["lead_id"], scale, weight=df["w"])
    b = cutoff_report(cut, rep["p"], rep["y"], rep["as_of"], rep["lead_id"], scale)
    pd.testing.assert_frame_equal(a[list(POINT)], b[list(POINT)], check_dtype=False, rtol=1e-9, atol=1e-12)

    n_points = data.draw(st.integers(2, 12))
    lead_id = (df["lead_id"], rep["lead_id"]) if with_leads else (None, None)
    a = tradeoff_curve(df["p"], df["y"], df["as_of"], scale, n_points, lead_id[0], weight=df["w"].to_numpy())
    b = tradeoff_curve(rep["p"], rep["y"], rep["as_of"], scale, n_points, lead_id[1])
    pd.testing.assert_frame_equal(a, b, check_dtype=False, rtol=1e-9, atol=1e-12)


# --- unit and constant weights --------------------------------------------------------------

POLICIES = [
    CutoffPolicy(mql=0.05, sql=0.2, seed=3, bootstrap=200),
    CutoffPolicy(mql=0.05, sql=0.9, min_rows=5, bootstrap=200),  # unreachable: a fallback with notes
    CutoffPolicy(policy="capacity", mql=400, sql=80, bootstrap=200),
    CutoffPolicy(policy="capacity", mql=0.3, sql=0.05, bootstrap=200),
    CutoffPolicy(policy="recall", mql=0.9, sql=0.5, bootstrap=200),
    CutoffPolicy(policy="expected_value", value_per_sql=5000, mql_cost=200, sql_cost=800, bootstrap=200),
]


@pytest.fixture(scope="module")
def frame():
    return make_frame(1500, seed=21)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.policy)
def test_unit_weights_give_exactly_the_unweighted_results(frame, policy):
    ones = np.ones(len(frame))
    for with_leads in (False, True):
        assert choose(frame, policy, with_leads, 2.0, weight=ones) == choose(frame, policy, with_leads, 2.0)
    cut = choose_cutoffs(frame["p"], frame["y"], frame["as_of"], policy, lead_id=frame["lead_id"])
    args = (cut, frame["p"], frame["y"], frame["as_of"], frame["lead_id"], 3.0)
    plain, unit = cutoff_report(*args), cutoff_report(*args, weight=ones)
    pd.testing.assert_frame_equal(unit, plain, check_dtype=False, check_exact=True)  # the intervals too
    assert plain["examples"].dtype.kind == "i" and unit["examples"].dtype.kind == "f"
    for lead_id in (None, frame["lead_id"]):
        args = (frame["p"], frame["y"], frame["as_of"], 3.0, 20, lead_id)
        pd.testing.assert_frame_equal(tradeoff_curve(*args, weight=ones), tradeoff_curve(*args),
                                      check_dtype=False, check_exact=True)


def test_a_constant_weight_scales_counts_and_their_intervals_and_leaves_rates(frame):
    # Every lead's bootstrap sums double with weight 2 (exactly: a power of two), so rates and
    # their intervals are unchanged and loads (estimate and interval) double.
    cut = Cutoffs(POLICIES[0], 0.05, 0.15)
    args = (cut, frame["p"], frame["y"], frame["as_of"], frame["lead_id"], 1.0)
    one, two = cutoff_report(*args), cutoff_report(*args, weight=np.full(len(frame), 2.0))
    for stat in ("conversion_rate", "recall", "band_conversion_rate"):
        for col in (stat, f"{stat}_low", f"{stat}_high"):
            assert (two[col] == one[col]).all(), col
    for stat in ("new_leads_per_week", "open_leads"):
        for col in (stat, f"{stat}_low", f"{stat}_high"):
            assert (two[col] == 2 * one[col]).all(), col
    assert (two["examples"] == 2 * one["examples"]).all()
    assert (two["share_of_examples"] == one["share_of_examples"]).all()


# --- fractional weights against a direct weighted count -------------------------------------


def kept(lead_id: str, r: float) -> bool:
    """Hash-stable sampling of a lead with probability r."""
    return int(hashlib.sha256(lead_id.encode()).hexdigest()[:8], 16) / 16**8 < r


def weighted_new_per_week(df, t, scale) -> float:
    """Weight of the leads crossing t between consecutive as-of dates (walked lead by lead), per week."""
    dates = sorted(df["as_of"].unique())
    at = {(r.lead_id, r.as_of): r.p for r in df.itertuples()}
    total = 0.0
    for r in df.itertuples():
        k = dates.index(r.as_of)
        before = at.get((r.lead_id, dates[k - 1])) if k else None
        total += r.w * (k > 0 and r.p >= t and (before is None or before < t))
    return total * scale / ((dates[-1] - dates[0]) / pd.Timedelta(days=7))


def test_a_sample_of_leads_weighted_by_inverse_inclusion_estimates_the_full_frame():
    full = make_frame(6000, seed=22)
    r = 0.3
    positive = full.groupby("lead_id")["y"].transform("max") == 1
    sample = full[positive | full["lead_id"].map(lambda lead: kept(lead, r))].copy()
    sample["w"] = np.where(positive[sample.index], 1.0, 1 / r)
    cut = Cutoffs(CutoffPolicy(mql=0.05, sql=0.15, bootstrap=200), 0.05, 0.15)
    got = cutoff_report(cut, sample["p"], sample["y"], sample["as_of"], sample["lead_id"], 2.0, weight=sample["w"])

    p, y, w, as_of = sample["p"].to_numpy(), sample["y"].to_numpy(), sample["w"].to_numpy(), sample["as_of"]
    for (_, row), t in zip(got.iterrows(), (0.05, 0.15), strict=True):  # the direct weighted sums
        at = p >= t
        assert row["examples"] == pytest.approx(w[at].sum())
        assert row["open_leads"] == pytest.approx(w[at].sum() * 2.0 / as_of.nunique())
        assert row["conversion_rate"] == pytest.approx((w * y)[at].sum() / w[at].sum())
        assert row["recall"] == pytest.approx((w * y)[at].sum() / (w * y).sum())
        assert row["share_of_examples"] == pytest.approx(w[at].sum() / w.sum())
        assert row["new_leads_per_week"] == pytest.approx(weighted_new_per_week(sample, t, 2.0))
        for stat in ("new_leads_per_week", "open_leads", "conversion_rate", "recall"):
            assert row[f"{stat}_low"] <= row[stat] <= row[f"{stat}_high"]

    # ... and they estimate the full frame's figures, where the unweighted sample is far off
    quick = Cutoffs(cut.policy.replace(bootstrap=0), 0.05, 0.15)
    truth = cutoff_report(quick, full["p"], full["y"], full["as_of"], full["lead_id"], 2.0)
    naive = cutoff_report(quick, sample["p"], sample["y"], sample["as_of"], sample["lead_id"], 2.0)
    for stat in ("open_leads", "new_leads_per_week", "conversion_rate", "recall"):
        assert got[stat].to_numpy() == pytest.approx(truth[stat].to_numpy(), rel=0.1), stat
    assert (naive["conversion_rate"] > 1.3 * truth["conversion_rate"]).all()

    curve = tradeoff_curve(sample["p"], sample["y"], sample["as_of"], 2.0, 10, sample["lead_id"], weight=sample["w"])
    for _, row in curve.iterrows():
        at = p >= row["threshold"]
        assert row["examples"] == pytest.approx(w[at].sum())
        assert row["conversion_rate"] == pytest.approx((w * y)[at].sum() / w[at].sum())
        assert row["new_leads_per_week"] == pytest.approx(weighted_new_per_week(sample, row["threshold"], 2.0))
    # the thresholds are weighted quantiles: the lowest keeps all; below the next lies at most a
    # tenth of the weight (its rank), and the rank falls within the weight at or below it
    t, rank = curve["threshold"].iloc[1], w.sum() // 10
    assert curve["share_of_examples"].iloc[0] == 1.0 and w[p < t].sum() <= rank < w[p <= t].sum()


# --- bad weights -----------------------------------------------------------------------------


@pytest.mark.parametrize(("weight", "message"), [
    (np.ones(9), r"weight has 9 values but p has 10"),
    (np.r_[np.ones(9), np.nan], r"weight must be positive and finite: 1 of 10 are not, e\.g\. row 9: nan"),
    (np.r_[np.ones(9), np.inf], r"weight must be positive and finite: 1 of 10 are not, e\.g\. row 9: inf"),
    (np.r_[np.ones(8), 0, 0], r"weight must be positive and finite: 2 of 10 are not, e\.g\. row 8: 0\.0"),
    (np.r_[-1.5, np.ones(9)], r"1 of 10 are not, e\.g\. row 0: -1\.5"),
    (pd.Series([1] * 9 + [None], dtype="Int64"), r"1 of 10 are not, e\.g\. row 9: nan"),
    (["1"] * 9 + ["heavy"], r"weight must be numbers, one per row"),
    (np.ones((10, 1)), r"weight must have one value per row: got shape \(10, 1\)"),
])
def test_bad_weights_are_refused_and_named(weight, message):
    p, y, as_of = np.linspace(0, 1, 10), np.r_[np.zeros(5), np.ones(5)], weeks(np.arange(10) % 2)
    lead_id = list("abcdefghij")
    with pytest.raises(ValueError, match=message):
        choose_cutoffs(p, y, as_of, CutoffPolicy(min_rows=1), weight=weight)
    with pytest.raises(ValueError, match=message):
        cutoff_report(Cutoffs(CutoffPolicy(bootstrap=0), 0.2, 0.6), p, y, as_of, lead_id, weight=weight)
    with pytest.raises(ValueError, match=message):
        tradeoff_curve(p, y, as_of, lead_id=lead_id, weight=weight)
