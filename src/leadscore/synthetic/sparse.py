"""``leadscore synth --profile sparse``: a vendor-style CRM export, the shape real data comes in.

The same hidden world as the default profile (who the leads are, their buying journey, what
they do), seen through a CRM that is not leadscore's contract:

* its own files and column names (``contacts.csv``, ``activities.csv``,
  ``lifecycle_history.csv``, ``closed_deals.csv``, ``plan_changes.csv``), day-first dates in a
  local time zone (America/Sao_Paulo), activity times in epoch milliseconds, its own stage,
  seniority, e-mail type and country names;
* every contact is an MQL when it arrives (marketing hands over qualified leads only, so they
  start further down the journey), won deals sit in a file of their own, and there is **no
  SQL stage** (sales accepts leads without recording it) - nor lost deals;
* two custom attributes: ``Landing Page`` carries real signal (some pages draw buyers, the
  ebook pages draw researchers), ``Region Code`` (a sales territory) carries none; a ``Plan``
  that the CRM overwrites with "Paid" when a deal is won, with its change history;
* activity kinds of its own (catalogue views, a price simulator, WhatsApp messages) and two
  the mapping leaves undeclared (chats and form submissions: counted as ``other``);
* a few thousand contacts over 15 months.

It also writes ``source.yaml`` - a copy of ``pipelines/sources/sparse.yaml``, the mapping
onto the contract - and the oracle: ``truth.parquet`` holds, for weekly as-of dates, the true
P(won within ``won_horizon_days``) of every contact still open in the CRM's eyes (a contact in
a hidden SQL state is open here: nothing records it); :func:`leadscore.synthetic.truth.true_probabilities`
recomputes it from ``latent_leads.parquet`` / ``latent_stages.parquet`` for any date.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from leadscore.io import atomic_path, write_json, write_parquet
from leadscore.synthetic import events as E
from leadscore.synthetic import journey as J
from leadscore.synthetic import population as P
from leadscore.synthetic import world as W
from leadscore.synthetic.generate import HistoryWindow

PROFILE = "sparse"
SOURCE_YAML = Path(__file__).resolve().parents[3] / "pipelines" / "sources" / "sparse.yaml"
TIMEZONE = "America/Sao_Paulo"  # no daylight saving time since 2019: local times map back exactly

# Marketing hands over qualified contacts only: fewer students and competitors, and contacts
# start further down the journey than raw leads do.
PERSONA_P = np.array([0.70, 0.24, 0.04, 0.02])
P_START_DECISION, P_START_CONSIDERATION = 0.08, 0.45

# Landing pages: (page, weight, intent effect). Demo and pricing pages draw buyers; ebook and
# blog pages draw researchers.
LANDING_PAGES = (
    [(f"lp-demo-{i:02d}", 1.0, 0.6) for i in range(1, 5)]
    + [(f"lp-pricing-{i:02d}", 1.2, 0.35) for i in range(1, 4)]
    + [(f"lp-product-{i:02d}", 1.5, 0.0) for i in range(1, 9)]
    + [(f"lp-ebook-{i:02d}", 1.5, -0.45) for i in range(1, 9)]
    + [(f"lp-blog-{i:02d}", 1.0, -0.2) for i in range(1, 6)]
)
REGION_CODES = tuple(f"T{i:02d}" for i in range(1, 13))  # sales territories: no signal
P_TRIAL_PLAN = 0.3

SENIORITY = {"c_level": "C-Level", "vp": "VP", "director": "Director", "manager": "Manager",
             "individual_contributor": "Individual Contributor", "student": "Student"}
EMAIL_TYPE = {"corporate": "Business", "free": "Personal", "student": "Education", "competitor": "Competitor"}
COUNTRY = {"US": "United States", "GB": "United Kingdom", "DE": "Germany", "CA": "Canada", "AU": "Australia",
           "FR": "France", "NL": "Netherlands", "SE": "Sweden", "IN": "India", "BR": "Brazil", "ES": "Spain",
           "SG": "Singapore", "MX": "Mexico", "NG": "Nigeria", "PH": "Philippines", "JP": "Japan"}
SOURCE = {"organic_search": "Organic Search", "paid_search": "Paid Search", "social": "Paid Social",
          "email_campaign": "Email Marketing", "webinar": "Webinar", "referral": "Referrals",
          "direct": "Direct Traffic", "events": "Events", "partner": "Partner",
          "content_syndication": "Content Syndication"}
# The CRM's activity names; the mapping declares catalog views, price simulations and WhatsApp
# messages as kinds of their own and leaves chats and form submissions undeclared.
ACTIVITY = {"page_view_pricing": "Price Simulation", "page_view_product": "Catalog Viewed",
            "page_view_blog": "Blog Post Viewed", "page_view_careers": "Careers Page Viewed",
            "page_view_docs": "Help Center Article", "content_download": "Content Download",
            "webinar_registration": "Event Registration", "webinar_attendance": "Event Attended",
            "email_open": "Marketing Email Opened", "email_click": "Marketing Email Clicked",
            "email_unsubscribe": "Unsubscribed", "email_bounce": "Email Bounced",
            "trial_signup": "Free Trial Started", "demo_request": "Meeting Booked",
            "contact_sales": "WhatsApp Message", "chat": "Chat Started", "form_submit": "Form Submission"}


@dataclass
class SparseConfig(HistoryWindow):
    n_leads: int = 5000
    seed: int = 0
    start: str = "2024-07-01"
    months: int = 15
    won_horizon_days: int = 90


def _utc(seconds: np.ndarray, cfg: SparseConfig) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(seconds, dtype=np.int64) + cfg.epoch_s, unit="s", utc=True)


def _local(seconds: np.ndarray, cfg: SparseConfig, fmt: str) -> np.ndarray:
    return _utc(seconds, cfg).tz_convert(TIMEZONE).strftime(fmt).to_numpy()


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def generate_sparse(cfg: SparseConfig, out_dir: Path | str, progress: bool = True) -> dict:
    """Write the export, its source YAML and the oracle to ``out_dir``; returns the manifest."""
    from leadscore.progress import Progress

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = cfg.n_leads
    if n < 1:
        raise ValueError("n_leads must be at least 1")
    pop_seed, journey_seed, export_seed = np.random.SeedSequence(cfg.seed).spawn(3)
    rng = np.random.default_rng(pop_seed)
    pop = P.sample_population(rng, n, cfg.start_day, cfg.n_days, persona_p=PERSONA_P)
    landing = rng.choice(len(LANDING_PAGES), size=n, p=_weights(LANDING_PAGES))
    effect = np.array([lp[2] for lp in LANDING_PAGES])[landing]
    # The landing page moves intent; buyers' activity volume follows intent (population.py).
    buyers = ~np.isin(pop.persona, (W.PERSONAS.index("student"), W.PERSONAS.index("competitor")))
    pop.intent = pop.intent + effect
    pop.engagement = pop.engagement * np.exp(W.ENGAGEMENT_INTENT_COEF * effect * buyers)
    region = rng.integers(0, len(REGION_CODES), n)
    trial = rng.random(n) < P_TRIAL_PLAN

    with Progress(n, "synth sparse", unit="leads", enabled=progress) as bar:
        rng = np.random.default_rng(journey_seed)
        end_s = cfg.n_days * P.SECONDS_PER_DAY
        Q = J.generator_matrices(pop.fit, pop.intent, pop.persona, pop.hand_raiser)
        start_state = J.initial_state(rng, pop.intent, pop.persona, P_START_DECISION, P_START_CONSIDERATION)
        p_lead, p_state, p_s = J.simulate_paths(rng, Q, start_state, pop.created_s, end_s)
        lc = E.lifecycle_events(rng, pop, p_lead, p_state, p_s, end_s)
        act = E.activity_events(rng, pop, p_lead, p_state, p_s, start_state, end_s)
        bar.advance(n)

    rng = np.random.default_rng(export_seed)
    ids = (10_400_000 + rng.permutation(9 * n)[:n] * 11 + 7).astype(str)  # CRM record ids: numbers
    won = lc.kind == E.WON_EVENT
    won_s = np.full(n, -1, dtype=np.int64)
    won_s[lc.lead[won]] = lc.time_s[won]

    contacts = pd.DataFrame({
        "Record ID": ids,
        "Create Date": _local(pop.created_s, cfg, "%d/%m/%Y %H:%M"),
        "Original Source": _names(np.array([s[0] for s in W.SOURCES], dtype=object), pop.source, SOURCE),
        "Job Seniority": _mapped(P.seniority_of(pop.title), SENIORITY),
        "Email Type": _mapped(np.array(W.EMAIL_DOMAIN_OF_PERSONA, dtype=object)[pop.persona], EMAIL_TYPE),
        "Number of Employees": np.where(pop.company_size > 0, pop.company_size.astype(str), ""),
        "Industry": np.where(pop.industry >= 0, np.array([x[0] for x in W.INDUSTRIES], dtype=object)[pop.industry],
                             "(not set)"),
        "Country/Region": _names(np.array([c[0] for c in W.COUNTRIES], dtype=object), pop.country, COUNTRY),
        "Landing Page": np.array([lp[0] for lp in LANDING_PAGES], dtype=object)[landing],
        "Region Code": np.array(REGION_CODES, dtype=object)[region],
        "Plan": np.where(won_s >= 0, "Paid", np.where(trial, "Trial", "Free")),  # today's value
    })
    _write_csv(contacts, out / "contacts.csv")

    kind = np.array([ACTIVITY[k] for k in W.ACTIVITY_NAMES], dtype=object)[act.kind]
    details = E.detail_vocabulary(int((end_s + 15 * P.SECONDS_PER_DAY) // (30 * P.SECONDS_PER_DAY)) + 1)
    detail = np.where(act.detail >= 0, np.array(details, dtype=object)[np.maximum(act.detail, 0)], "")
    # epoch milliseconds, as event streams export them
    activities = pd.DataFrame({"Contact ID": ids[act.lead], "Timestamp (ms)": (act.time_s + cfg.epoch_s) * 1000,
                               "Event": kind, "Asset": detail})
    _write_csv(activities, out / "activities.csv")

    # Every contact arrives as an MQL; sales' disqualifications are kept; SQL, opportunity and
    # lost are not recorded; won deals go to their own file with the date only.
    dq = lc.kind == E.DISQUALIFIED
    history = pd.DataFrame({
        "Contact ID": np.r_[ids, ids[lc.lead[dq]]],
        "Stage": np.r_[np.full(n, "Marketing Qualified Lead", dtype=object), np.full(int(dq.sum()), "Unqualified")],
        "_s": np.r_[pop.created_s, lc.time_s[dq]],
    }).sort_values(["_s", "Contact ID"], kind="stable")
    history.insert(2, "Entered On", _local(history.pop("_s").to_numpy(), cfg, "%d/%m/%Y %H:%M"))
    _write_csv(history, out / "lifecycle_history.csv")
    deals = pd.DataFrame({"mql_id": ids[lc.lead[won]], "won_date": _local(lc.time_s[won], cfg, "%d/%m/%Y"),
                          "deal_value": np.round(lc.detail[won], 2), "_s": lc.time_s[won]})
    deals = deals.sort_values(["_s", "mql_id"], kind="stable").drop(columns="_s")
    _write_csv(deals, out / "closed_deals.csv")

    # The plan's history: Free or Trial on arrival, Paid when the deal is won (ISO 8601 with offset).
    has_won = np.flatnonzero(won_s >= 0)
    plan = pd.DataFrame({
        "Contact ID": np.r_[ids, ids[has_won]], "Property": "Plan",
        "New Value": np.r_[np.where(trial, "Trial", "Free"), np.full(len(has_won), "Paid", dtype=object)],
        "_s": np.r_[pop.created_s, won_s[has_won]],
    }).sort_values(["_s", "Contact ID"], kind="stable")
    plan["Changed At"] = _utc(plan.pop("_s").to_numpy(), cfg).tz_convert(TIMEZONE).strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_csv(plan, out / "plan_changes.csv")

    # The oracle's inputs and rows (lead ids as the CRM writes them).
    recorded = p_s < end_s
    write_parquet(pd.DataFrame({"lead_id": ids[p_lead[recorded]],
                                "latent_stage": np.array(W.STATE_NAMES)[p_state[recorded].astype(np.int64)],
                                "entered_at": _utc(p_s[recorded], cfg).astype("datetime64[us, UTC]")}),
                  out / "latent_stages.parquet")
    write_parquet(pd.DataFrame({
        "lead_id": ids, "created_at": _utc(pop.created_s, cfg).astype("datetime64[us, UTC]"),
        "persona": np.array(W.PERSONAS)[pop.persona], "fit": pop.fit, "intent": pop.intent,
        "engagement": pop.engagement, "hand_raiser": pop.hand_raiser, "win_probability": J.win_probability(pop.fit),
        "landing_page": contacts["Landing Page"].to_numpy(), "profile": PROFILE}), out / "latent_leads.parquet")
    as_of = _weekly_as_of(cfg)
    p_won = J.won_probabilities(Q, cfg.won_horizon_days)
    t_lead, t_asof, t_state, _, t_pwon = J.truth_rows(p_lead, p_state, p_s, pop.created_s, as_of, p_won, p_won,
                                                      open_states=OPEN_STATES)
    truth = pd.DataFrame({"lead_id": ids[t_lead], "as_of": _utc(as_of[t_asof], cfg).astype("datetime64[us, UTC]"),
                          "latent_stage": np.array(W.STATE_NAMES)[t_state], "p_sql": np.nan, "p_won": t_pwon})
    write_parquet(truth, out / "truth.parquet")

    shutil.copyfile(SOURCE_YAML, out / "source.yaml")
    manifest = {
        "generator": "leadscore.synthetic", "profile": PROFILE, "generator_version": 1, "seed": cfg.seed,
        "n_leads": n, "start": str(cfg.start_day), "observed_until": str(cfg.end_day) + "T00:00:00+00:00",
        "won_horizon_days": cfg.won_horizon_days, "timezone": TIMEZONE,
        "rows": {"contacts": n, "activities": len(activities), "lifecycle_history": len(history),
                 "closed_deals": len(deals), "plan_changes": len(plan), "truth": len(truth)},
        "source": "source.yaml (a copy of pipelines/sources/sparse.yaml)",
    }
    write_json(manifest, out / "manifest.json")
    return manifest


# The hidden states in which this CRM still shows a contact open: all but won (it records no
# SQL and no lost deals).
OPEN_STATES = (W.AWARENESS, W.CONSIDERATION, W.DECISION, W.COLD, W.SQL_WIN, W.SQL_LOSE, W.LOST)


def _weights(table) -> np.ndarray:
    w = np.array([row[1] for row in table], dtype="float64")
    return w / w.sum()


def _names(codes: np.ndarray, index: np.ndarray, names: dict[str, str]) -> np.ndarray:
    """The CRM's display names of coded values; empty where missing."""
    out = np.array([names.get(c, c) for c in codes], dtype=object)[np.maximum(index, 0)]
    return np.where(index >= 0, out, "")


def _mapped(values: np.ndarray, names: dict[str, str]) -> np.ndarray:
    return np.array(["" if v is None else names[v] for v in values], dtype=object)


def _weekly_as_of(cfg: SparseConfig) -> np.ndarray:
    """Mondays 00:00 UTC from the second week on (seconds since the start), as the default profile."""
    from leadscore.synthetic.generate import SynthConfig, weekly_as_of

    return weekly_as_of(SynthConfig(n_leads=1, seed=0, start=cfg.start, months=cfg.months))
