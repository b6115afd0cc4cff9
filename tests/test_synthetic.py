"""The synthetic funnel: determinism, rates in the bands practice quotes, and an exact oracle."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from leadscore.data.funnel import funnel_summary
from leadscore.synthetic import SynthConfig, generate, load_latent, true_probabilities
from leadscore.synthetic import journey as J
from leadscore.synthetic import world as W


def digests(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_same_seed_gives_byte_identical_files(tmp_path):
    generate(SynthConfig(n_leads=1500, seed=3), tmp_path / "a", progress=False)
    generate(SynthConfig(n_leads=1500, seed=3), tmp_path / "b", progress=False)
    generate(SynthConfig(n_leads=1500, seed=4), tmp_path / "c", progress=False)
    a, b, c = digests(tmp_path / "a"), digests(tmp_path / "b"), digests(tmp_path / "c")
    assert set(a) >= {"leads.parquet", "activities.parquet", "lifecycle.parquet", "truth.parquet", "manifest.json"}
    assert a == b
    assert a["activities.parquet"] != c["activities.parquet"]
    assert a["leads.parquet"] != c["leads.parquet"]


def test_funnel_rates_in_practice_bands(funnel_dir):
    s = funnel_summary(pd.read_parquet(funnel_dir / "leads.parquet"), pd.read_parquet(funnel_dir / "lifecycle.parquet"))
    assert 0.04 <= s["sql_rate"] <= 0.15
    assert 0.10 <= s["mql_to_sql"] <= 0.20
    assert s["sql_to_won"] < 0.5
    assert s["direct_sql"] > 0          # some hand-raisers skip the MQL stage
    assert s["recycled"] > 0            # some disqualified MQLs are re-qualified later
    assert s["mql_rate"] < 0.5          # MQLs are a minority of leads


def test_about_fifty_events_per_lead(funnel_dir):
    n = len(pd.read_parquet(funnel_dir / "activities.parquet", columns=["activity_type"]))
    assert 35 <= n / 20_000 <= 70


def test_events_lie_in_the_observed_window(synthetic_dir):
    leads = pd.read_parquet(synthetic_dir / "leads.parquet")
    created = leads.set_index("lead_id")["created_at"]
    end = pd.Timestamp("2025-10-01", tz="UTC")
    for name in ("activities", "lifecycle"):
        t = pd.read_parquet(synthetic_dir / f"{name}.parquet")
        assert (t["occurred_at"] < end).all()
        assert (t["occurred_at"].to_numpy() >= created.reindex(t["lead_id"]).to_numpy()).all()
    assert leads["created_at"].is_monotonic_increasing
    assert leads["lead_id"].is_unique


def test_lifecycle_is_coherent(synthetic_dir):
    lc = pd.read_parquet(synthetic_dir / "lifecycle.parquet")
    first = lc.groupby(["lead_id", "stage"])["occurred_at"].min().unstack()
    # won / lost / opportunity only after an SQL; a lead closes at most once.
    for stage in ("won", "lost", "opportunity"):
        has = first[stage].notna()
        assert (first.loc[has, "sql"] <= first.loc[has, stage]).all(), stage
    assert not (first["won"].notna() & first["lost"].notna()).any()
    assert (lc[lc["stage"] == "sql"].groupby("lead_id").size() == 1).all()
    # Each disqualification follows an MQL by roughly six weeks.
    mql = lc[lc["stage"] == "mql"].sort_values(["lead_id", "occurred_at"])
    dq = lc[lc["stage"] == "disqualified"].sort_values(["lead_id", "occurred_at"])
    gaps = []
    for lead, d in dq.groupby("lead_id"):
        m = mql[mql["lead_id"] == lead]["occurred_at"]
        for t in d["occurred_at"]:
            gaps.append((t - m[m < t].max()).days)
    assert 21 <= min(gaps) and max(gaps) <= 70 and 35 <= np.median(gaps) <= 49
    # Money only on deals.
    assert lc.loc[lc["stage"].isin(["mql", "sql", "disqualified", "lost"]), "amount"].isna().all()
    assert (lc.loc[lc["stage"] == "won", "amount"] > 0).all()


def test_personas_behave(funnel_dir):
    leads = pd.read_parquet(funnel_dir / "leads.parquet")
    lc = pd.read_parquet(funnel_dir / "lifecycle.parquet")
    sql = set(lc.loc[lc["stage"] == "sql", "lead_id"])
    leads["sql"] = leads["lead_id"].isin(sql)
    rate = leads.groupby("email_domain_type")["sql"].mean()
    assert rate["student"] == 0 and rate["competitor"] == 0
    assert rate["corporate"] > rate["free"] > 0
    by_seniority = leads.groupby("seniority")["sql"].mean()
    assert by_seniority["vp"] > by_seniority["individual_contributor"]
    # Hand-raisers: a demo request marks a far likelier buyer.
    acts = pd.read_parquet(funnel_dir / "activities.parquet", columns=["lead_id", "activity_type"])
    demo = set(acts.loc[acts["activity_type"] == "demo_request", "lead_id"])
    leads["demo"] = leads["lead_id"].isin(demo)
    r = leads.groupby("demo")["sql"].mean()
    assert r[True] > 3 * r[False]
    # Careers-page visitors skew towards students (job seekers).
    careers = set(acts.loc[acts["activity_type"] == "page_view_careers", "lead_id"])
    students = set(leads.loc[leads["email_domain_type"] == "student", "lead_id"])
    assert len(careers & students) / len(careers) > 2 * len(students) / len(leads)


def test_missing_fit_values_exist_where_crms_leave_them(synthetic_dir):
    leads = pd.read_parquet(synthetic_dir / "leads.parquet")
    for col in ("job_title", "company_size", "industry", "country", "lead_source"):
        assert 0.01 < leads[col].isna().mean() < 0.4, col
    assert leads["lead_id"].notna().all() and leads["created_at"].notna().all()


# --- the oracle -------------------------------------------------------------------------


def test_batched_expm_matches_closed_forms():
    rng = np.random.default_rng(0)
    # Diagonal: exp of the diagonal.
    d = rng.uniform(-3, 1, (5, 4))
    D = np.zeros((5, 4, 4))
    D[:, range(4), range(4)] = d
    np.testing.assert_allclose(J.batched_expm(D)[:, range(4), range(4)], np.exp(d), rtol=1e-12)
    # Two-state chain a -> b at rate lam: P(still in a after t) = exp(-lam t).
    lam, t = 0.37, 11.0
    Q = np.array([[[-lam, lam], [0.0, 0.0]]])
    np.testing.assert_allclose(J.batched_expm(Q * t)[0], [[np.exp(-lam * t), 1 - np.exp(-lam * t)], [0, 1]],
                               atol=1e-13)
    # Semigroup: exp(2M) = exp(M)^2 for random generators.
    M = rng.uniform(0, 0.2, (6, 5, 5))
    M[:, range(5), range(5)] = 0.0
    M[:, range(5), range(5)] = -M.sum(axis=2)
    E = J.batched_expm(M * 30)
    np.testing.assert_allclose(J.batched_expm(M * 60), E @ E, atol=1e-10)
    np.testing.assert_allclose(E.sum(axis=2), 1.0, atol=1e-10)


def test_oracle_agrees_with_hypoexponential_formula():
    """awareness -> consideration -> decision -> SQL with no way back has a closed form."""
    a, b, c = 0.05, 0.03, 0.11
    Q = np.zeros((1, 8, 8))
    Q[0, W.AWARENESS, W.CONSIDERATION] = a
    Q[0, W.CONSIDERATION, W.DECISION] = b
    Q[0, W.DECISION, W.SQL_WIN] = c
    Q[0, range(8), range(8)] = -Q[0].sum(axis=1)
    H = 40.0
    p_sql, _ = J.conversion_probabilities(Q, H, H)
    hypo = 1 - (b * c * np.exp(-a * H) / ((b - a) * (c - a)) + a * c * np.exp(-b * H) / ((a - b) * (c - b))
                + a * b * np.exp(-c * H) / ((a - c) * (b - c)))
    np.testing.assert_allclose(p_sql[0, W.AWARENESS], hypo, rtol=1e-10)
    np.testing.assert_allclose(p_sql[0, W.DECISION], 1 - np.exp(-c * H), rtol=1e-10)


def test_library_oracle_reproduces_truth_table(synthetic_dir):
    truth = pd.read_parquet(synthetic_dir / "truth.parquet")
    latent = load_latent(synthetic_dir)
    for as_of in truth["as_of"].drop_duplicates().iloc[[3, 40, -1]]:
        expected = truth[truth["as_of"] == as_of].reset_index(drop=True)
        got = true_probabilities(latent, as_of, horizon_days=42, won_horizon_days=120)
        pd.testing.assert_frame_equal(got.sort_values("lead_id").reset_index(drop=True),
                                      expected.sort_values("lead_id").reset_index(drop=True), check_dtype=False)


def test_oracle_covers_exactly_the_open_leads(synthetic_dir):
    leads = pd.read_parquet(synthetic_dir / "leads.parquet")
    lc = pd.read_parquet(synthetic_dir / "lifecycle.parquet")
    as_of = pd.Timestamp("2025-03-03", tz="UTC")
    got = true_probabilities(load_latent(synthetic_dir), as_of)
    sql_before = set(lc.loc[(lc["stage"] == "sql") & (lc["occurred_at"] < as_of), "lead_id"])
    open_leads = set(leads.loc[leads["created_at"] < as_of, "lead_id"]) - sql_before
    assert set(got["lead_id"]) == open_leads


@pytest.mark.parametrize("as_of", ["2024-06-03", "2024-11-04", "2025-04-07"])
def test_oracle_is_calibrated_against_realised_outcomes(funnel_dir, as_of):
    """Sum of true probabilities ~ number of leads that did convert within the horizon."""
    as_of = pd.Timestamp(as_of, tz="UTC")
    latent = load_latent(funnel_dir)
    truth = true_probabilities(latent, as_of, horizon_days=42, won_horizon_days=120)
    lc = pd.read_parquet(funnel_dir / "lifecycle.parquet")

    def realised(stage, days):
        ev = lc[(lc["stage"] == stage) & (lc["occurred_at"] > as_of)
                & (lc["occurred_at"] <= as_of + pd.Timedelta(days=days))]
        return truth["lead_id"].isin(set(ev["lead_id"])).to_numpy()

    for p, y in ((truth["p_sql"].to_numpy(), realised("sql", 42)), (truth["p_won"].to_numpy(), realised("won", 120))):
        sd = np.sqrt((p * (1 - p)).sum())
        assert abs(y.sum() - p.sum()) < 4 * sd, (y.sum(), p.sum(), sd)
        # And it ranks: the top decile by true p converts far more than the rest.
        top = p >= np.quantile(p, 0.9)
        assert y[top].mean() > 5 * y[~top].mean()
