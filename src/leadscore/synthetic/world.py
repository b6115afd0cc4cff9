"""The parameters of the synthetic B2B world: who the leads are and how they behave.

The product being sold is a B2B SaaS tool for revenue teams. A lead's *fit* comes from who
they are (seniority, department, company size, industry, country, e-mail domain); its
*intent* follows a hidden buying journey (awareness -> consideration -> decision, or gone
cold) modelled as a continuous-time Markov chain. Activities are Poisson processes whose
rates depend on the hidden stage (plus a burst of the stage's typical actions when a lead
enters it, see ``ENTRY_BURSTS``), scaled by the lead's activity volume, which rises with
its intent; becoming an SQL is the chain's absorption. Because SQL
depends on the past only through the hidden stage, the true probability of converting
within H days is computable exactly (see ``journey.py``): that is the oracle.

All rates are per day. Numbers are chosen so the funnel lands where practitioners quote it
(see the tests): a few to 15 % of leads ever become SQL, ~13 % of MQLs, < 50 % of SQLs win.
"""

from __future__ import annotations

import numpy as np

from leadscore.data.contract import ACTIVITY_TYPES

# Hidden journey states. 0-3 are "open" (not yet SQL); SQL_WIN / SQL_LOSE is the SQL
# absorption split by the deal's eventual outcome; WON / LOST are terminal.
AWARENESS, CONSIDERATION, DECISION, COLD, SQL_WIN, SQL_LOSE, WON, LOST = range(8)
STATE_NAMES = ("awareness", "consideration", "decision", "cold", "sql_win", "sql_lose", "won", "lost")
OPEN_STATES = (AWARENESS, CONSIDERATION, DECISION, COLD)

# --- personas (who) ---------------------------------------------------------------------
PERSONAS = ("corporate", "free_mail", "student", "competitor")
PERSONA_P = np.array([0.64, 0.23, 0.10, 0.03])
EMAIL_DOMAIN_OF_PERSONA = ("corporate", "free", "student", "competitor")

# (job title, seniority, department, weight among non-students, fit effect of the role)
TITLES = (
    ("Chief Executive Officer", "c_level", "executive", 2.0),
    ("Founder", "c_level", "executive", 2.5),
    ("Chief Revenue Officer", "c_level", "sales", 0.8),
    ("Chief Marketing Officer", "c_level", "marketing", 0.8),
    ("Chief Technology Officer", "c_level", "engineering", 1.0),
    ("Chief Financial Officer", "c_level", "finance", 0.6),
    ("VP of Sales", "vp", "sales", 1.6),
    ("VP of Marketing", "vp", "marketing", 1.6),
    ("VP of Engineering", "vp", "engineering", 1.0),
    ("VP of Operations", "vp", "operations", 0.8),
    ("Director of Sales", "director", "sales", 2.5),
    ("Marketing Director", "director", "marketing", 2.5),
    ("IT Director", "director", "it", 1.8),
    ("Director of Product", "director", "product", 1.2),
    ("Finance Director", "director", "finance", 0.8),
    ("HR Director", "director", "hr", 0.7),
    ("Sales Manager", "manager", "sales", 4.0),
    ("Marketing Manager", "manager", "marketing", 4.5),
    ("Revenue Operations Manager", "manager", "operations", 2.0),
    ("IT Manager", "manager", "it", 2.5),
    ("Engineering Manager", "manager", "engineering", 2.0),
    ("Product Manager", "manager", "product", 2.5),
    ("HR Manager", "manager", "hr", 1.5),
    ("Account Executive", "individual_contributor", "sales", 4.0),
    ("Marketing Specialist", "individual_contributor", "marketing", 4.5),
    ("Software Engineer", "individual_contributor", "engineering", 4.0),
    ("Data Analyst", "individual_contributor", "it", 3.0),
    ("Accountant", "individual_contributor", "finance", 1.5),
    ("Operations Analyst", "individual_contributor", "operations", 2.0),
    ("Consultant", "individual_contributor", "other", 2.5),
    ("Recruiter", "individual_contributor", "hr", 1.5),
)
STUDENT_TITLES = ("Student", "Graduate Student", "Intern", "MBA Candidate")

SENIORITY_FIT = {"c_level": 0.9, "vp": 0.9, "director": 0.7, "manager": 0.3,
                 "individual_contributor": -0.35, "student": -2.0, None: -0.2}
DEPARTMENT_FIT = {"executive": 0.3, "sales": 0.45, "marketing": 0.5, "it": 0.2, "engineering": -0.1,
                  "product": 0.1, "finance": -0.15, "operations": 0.15, "hr": -0.5, "other": -0.3, None: 0.0}

# Company size bands: (lower, upper) employees, fit effect.
SIZE_BANDS = ((1, 10, -0.8), (10, 50, -0.3), (50, 200, 0.3), (200, 1000, 0.6), (1000, 5000, 0.45), (5000, 200000, 0.1))
SIZE_MISSING_FIT = -0.2

INDUSTRIES = (  # name, weight, fit effect
    ("Software", 3.0, 0.5), ("Financial Services", 1.6, 0.3), ("Professional Services", 1.6, 0.3),
    ("Telecommunications", 0.7, 0.2), ("Media", 0.8, 0.1), ("Healthcare", 1.3, 0.0),
    ("Manufacturing", 1.5, 0.0), ("Retail", 1.2, 0.0), ("Logistics", 0.7, 0.0),
    ("Education", 1.0, -0.4), ("Government", 0.6, -0.5), ("Non-profit", 0.5, -0.6),
)
INDUSTRY_MISSING_FIT = -0.1

COUNTRIES = (  # ISO code, weight, fit effect
    ("US", 30, 0.3), ("GB", 9, 0.3), ("DE", 7, 0.25), ("CA", 5, 0.3), ("AU", 4, 0.25), ("FR", 5, 0.1),
    ("NL", 3, 0.2), ("SE", 2, 0.2), ("IN", 12, -0.5), ("BR", 5, -0.3), ("ES", 3, 0.0),
    ("SG", 2, 0.1), ("MX", 3, -0.3), ("NG", 2, -0.6), ("PH", 3, -0.5), ("JP", 2, 0.0),
)
COUNTRY_MISSING_FIT = -0.2

SOURCES = (  # name, weight, intent effect
    ("organic_search", 24, 0.1), ("paid_search", 16, 0.0), ("social", 12, -0.3), ("email_campaign", 8, 0.0),
    ("webinar", 7, 0.2), ("referral", 6, 0.45), ("direct", 10, 0.2), ("events", 5, 0.25),
    ("partner", 4, 0.35), ("content_syndication", 8, -0.5),
)

# Drift (``leadscore synth --drift``): from the middle of the history on, the channels change
# what their leads are worth - a partner programme and paid search start bringing buyers,
# referrals and events dry up - for every lead created from then on.
DRIFTED_SOURCE_INTENT = {"organic_search": 0.1, "paid_search": 0.35, "social": -0.3, "email_campaign": 0.0,
                         "webinar": 0.2, "referral": -0.2, "direct": 0.2, "events": -0.3, "partner": 0.7,
                         "content_syndication": 0.3}

EMAIL_FIT = {"corporate": 0.3, "free": -0.6, "student": -1.5, "competitor": -1.5}

# Latent fit = the attributes' effects above + what the CRM does not record (budget, tech
# stack, the champion's clout); latent intent = INTENT_FIT_COEF x fit + the source's effect +
# the lead's own situation (timing, pain).
FIT_NOISE_SD = 0.3
INTENT_FIT_COEF = 0.7
INTENT_NOISE_SD = 0.35

# Missing-value rates, as CRMs leave them.
P_MISSING = {"job_title": 0.08, "department_given_title": 0.05, "company_size": 0.12, "industry": 0.15,
             "country": 0.05, "lead_source": 0.03}

# --- the hidden journey (intent) ---------------------------------------------------------
# Base transition rates per day; multiplied per lead by exp(coef * intent) where noted.
RATES = {
    "aware_to_consider": (0.010, 0.7),   # (base, intent coefficient)
    "aware_to_cold": (0.022, 0.0),
    "consider_to_decide": (0.010, 0.6),
    "consider_to_cold": (0.025, 0.0),
    "consider_to_sql": (0.0008, 1.0),    # x HAND_RAISER_SQL_BOOST for hand-raisers
    "decide_to_sql": (0.015, 0.5),
    "decide_to_cold": (0.050, 0.0),
    "cold_to_aware": (0.002, 0.3),       # re-awakening (recycling)
    "sql_to_close": (0.02, 0.0),         # SQL -> won / lost, mean 50 days
}
HAND_RAISER_P = 0.25
HAND_RAISER_SQL_BOOST = 5.0
# Win probability of an SQL: sigmoid(WIN_INTERCEPT + WIN_FIT * fit).
WIN_INTERCEPT, WIN_FIT = -0.95, 0.9
# Initial hidden stage when the lead is created: P(decision), P(consideration) (rest: awareness).
P_START_DECISION, P_START_CONSIDERATION = 0.035, 0.15

# --- marketing and sales process (observed lifecycle) -----------------------------------
P_MQL_ON_CREATE = 0.30        # x exp(fit) / (1 + ...) : marketing's fit rules MQL some new leads
P_MQL_ON_CONSIDER = 0.65      # engagement rules fire when the lead starts researching
P_MQL_ON_DECIDE = 0.85
P_MQL_STUDENT_BOOST = 1.6     # students download a lot: the point rules over-qualify them
MQL_DELAY_SHAPE, MQL_DELAY_SCALE = 2.0, 2.5     # days from stage entry to the MQL event
DISQUALIFY_AFTER_MEAN, DISQUALIFY_AFTER_SD = 42.0, 7.0  # sales works an MQL ~6 weeks
P_OPPORTUNITY_IF_LOST = 0.6
DEAL_LOG_MEAN, DEAL_LOG_SD = np.log(14000.0), 0.55

# --- activity rates per hidden state ------------------------------------------------------
ACTIVITY_NAMES = tuple(ACTIVITY_TYPES)
A = {name: i for i, name in enumerate(ACTIVITY_NAMES)}
# Activity kinds generated as Poisson processes (clicks, attendance, bounces and the creating
# form are derived, see events.py).
_BASE = {  # awareness, consideration, decision, cold, sql(win), sql(lose), won, lost
    # Awareness: reading (blog, newsletter). Consideration: evaluating the product (product
    # pages, docs, webinars, downloads). Decision: pricing, trials, demos, talking to sales.
    # Cold: near silence - the odd newsletter open or blog visit.
    "page_view_pricing":    (0.005, 0.030, 0.30, 0.0008, 0.10, 0.10, 0.01, 0.004),
    "page_view_product":    (0.025, 0.160, 0.30, 0.0020, 0.10, 0.10, 0.05, 0.004),
    "page_view_blog":       (0.150, 0.120, 0.06, 0.0040, 0.03, 0.03, 0.03, 0.008),
    "page_view_careers":    (0.0006, 0.0006, 0.0005, 0.0006, 0.0003, 0.0003, 0.0005, 0.0005),
    "page_view_docs":       (0.008, 0.090, 0.15, 0.0010, 0.15, 0.15, 0.20, 0.004),
    "content_download":     (0.020, 0.060, 0.03, 0.0010, 0.02, 0.02, 0.01, 0.002),
    "webinar_registration": (0.006, 0.025, 0.010, 0.0005, 0.005, 0.005, 0.005, 0.001),
    "email_open":           (0.140, 0.200, 0.30, 0.0120, 0.30, 0.30, 0.10, 0.020),
    "email_unsubscribe":    (0.0015, 0.0008, 0.0005, 0.0030, 0.0003, 0.0008, 0.0003, 0.002),
    "trial_signup":         (0.0003, 0.004, 0.04, 0.0, 0.01, 0.01, 0.0, 0.0),
    "demo_request":         (0.0001, 0.0015, 0.05, 0.0, 0.01, 0.01, 0.0, 0.0),
    "contact_sales":        (0.0001, 0.0015, 0.04, 0.0, 0.02, 0.02, 0.005, 0.0),
    "chat":                 (0.002, 0.010, 0.05, 0.0003, 0.02, 0.02, 0.01, 0.001),
    "form_submit":          (0.004, 0.010, 0.02, 0.0003, 0.005, 0.005, 0.002, 0.0005),
}
BASE_ACTIVITY_RATES = np.zeros((8, len(ACTIVITY_NAMES)))
for _name, _rates in _BASE.items():
    BASE_ACTIVITY_RATES[:, A[_name]] = _rates

# Multipliers per persona on each activity kind (1 where not listed).
_PERSONA_MULT = {
    "student": {"page_view_pricing": 0.2, "demo_request": 0.0, "contact_sales": 0.0, "trial_signup": 0.8,
                "content_download": 2.5, "page_view_blog": 1.5, "page_view_careers": 6.0, "page_view_docs": 1.5,
                "webinar_registration": 2.0},
    "competitor": {"page_view_pricing": 2.5, "page_view_docs": 2.0, "page_view_product": 1.5,
                   "demo_request": 0.0, "contact_sales": 0.0, "trial_signup": 0.5, "email_open": 0.5},
    "free_mail": {"trial_signup": 1.5, "demo_request": 0.6, "contact_sales": 0.5, "email_open": 0.8},
}
PERSONA_ACTIVITY_MULT = np.ones((len(PERSONAS), len(ACTIVITY_NAMES)))
for _p, _mult in _PERSONA_MULT.items():
    for _name, _m in _mult.items():
        PERSONA_ACTIVITY_MULT[PERSONAS.index(_p), A[_name]] = _m

# Style: hand-raisers ask for demos and prices; researchers read.
_HAND_RAISER_MULT = {"demo_request": 2.5, "contact_sales": 2.0, "page_view_pricing": 2.5, "trial_signup": 1.5,
                     "chat": 2.5, "page_view_blog": 0.6, "content_download": 0.7}
_RESEARCHER_MULT = {"page_view_blog": 1.3, "content_download": 1.3, "webinar_registration": 1.3,
                    "demo_request": 0.6, "contact_sales": 0.6}
STYLE_ACTIVITY_MULT = np.ones((2, len(ACTIVITY_NAMES)))  # row 0 researcher, row 1 hand-raiser
for _row, _mult in ((0, _RESEARCHER_MULT), (1, _HAND_RAISER_MULT)):
    for _name, _m in _mult.items():
        STYLE_ACTIVITY_MULT[_row, A[_name]] = _m

# Overall activity volume, tuned so 1M leads give ~50M events over 21 months.
ACTIVITY_SCALE = 1.0
ENGAGEMENT_SD = 0.35          # per-lead log-normal activity volume
ENGAGEMENT_INTENT_COEF = 0.6  # high-intent leads are more active: intent shows as intensity
NON_BUYER_INTEREST = 0.0      # students' and competitors' stand-in for intent in their activity volume

# Stage-entry signatures: the first days of a new hidden stage show as a burst. With
# probability p the lead, on entering the stage, does a handful of the stage's typical
# actions (mean counts below, x persona and style multipliers, x sqrt(engagement)),
# spread over an exponential number of days with the given mean; whatever would fall
# after the lead has left the stage again is not emitted.
ENTRY_BURSTS = {  # stage: (p, {kind: mean count}, mean spread in days)
    # awareness entered again from cold (not at creation): the lead comes back to the site
    AWARENESS: (0.7, {"page_view_blog": 1.5, "email_open": 1.0, "page_view_product": 0.5}, 2.0),
    CONSIDERATION: (0.6, {"page_view_product": 2.0, "page_view_docs": 1.2, "content_download": 0.5,
                          "webinar_registration": 0.3}, 2.0),
    DECISION: (0.75, {"page_view_pricing": 2.5, "page_view_product": 1.0, "page_view_docs": 0.8}, 1.5),
}
# Entering the decision stage: a hand-raise (demo request, trial, contact sales) with this
# probability for researchers / hand-raisers, if the persona does that kind of thing at all.
P_DECISION_HAND_RAISE = (0.45, 0.8)
DECISION_HAND_RAISE_MIX = {"demo_request": 0.4, "trial_signup": 0.35, "contact_sales": 0.25}
DECISION_HAND_RAISE_DELAY_DAYS = 1.0

P_CLICK_GIVEN_OPEN = (0.08, 0.14, 0.22, 0.04, 0.2, 0.2, 0.1, 0.03)
P_ATTEND_GIVEN_REGISTRATION = (0.30, 0.45, 0.55, 0.2, 0.5, 0.5, 0.4, 0.2)
P_BOUNCE = {"corporate": 0.02, "free_mail": 0.06, "student": 0.04, "competitor": 0.02}
EMAIL_KINDS = ("email_open", "email_click", "email_unsubscribe")

# The form that created the lead, by its starting hidden stage.
CREATION_ACTIVITY = {AWARENESS: ("form_submit", "content_download"),
                     CONSIDERATION: ("webinar_registration", "content_download", "form_submit"),
                     DECISION: ("demo_request", "contact_sales", "trial_signup")}

N_BLOG_POSTS = 180
CONTENT_ASSETS = tuple(
    f"{kind}-{i:02d}" for kind, n in (("ebook", 10), ("guide", 8), ("report", 4), ("case-study", 6), ("template", 4))
    for i in range(1, n + 1)
)
N_WEBINARS_PER_MONTH = 3
