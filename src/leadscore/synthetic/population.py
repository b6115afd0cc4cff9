"""Who the leads are: fit attributes with plausible joint distributions, arrival times, latents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leadscore.synthetic import world as W

SECONDS_PER_DAY = 86_400


@dataclass
class Population:
    """Column arrays, one entry per lead, ordered by creation time."""

    created_s: np.ndarray       # int64 seconds since the world's start
    persona: np.ndarray         # int8 index into PERSONAS
    title: np.ndarray           # int16 index into TITLES / STUDENT_TITLES (offset), -1 missing
    department_missing: np.ndarray  # bool: the CRM lost the department
    company_size: np.ndarray    # int64 employees, -1 missing
    industry: np.ndarray        # int8 index into INDUSTRIES, -1 missing
    country: np.ndarray         # int8 index into COUNTRIES, -1 missing
    source: np.ndarray          # int8 index into SOURCES, -1 missing
    fit: np.ndarray             # latent fit (float)
    intent: np.ndarray          # latent buying propensity (float)
    engagement: np.ndarray      # activity volume multiplier (float)
    hand_raiser: np.ndarray     # bool

    def __len__(self) -> int:
        return len(self.created_s)

    def take(self, idx) -> "Population":
        return Population(**{k: v[idx] for k, v in self.__dict__.items()})


def arrival_weights(start: np.datetime64, n_days: int) -> np.ndarray:
    """Daily lead-arrival intensity: growth, weekday pattern, summer and December dips."""
    days = start + np.arange(n_days).astype("timedelta64[D]")
    weekday = (days.astype("datetime64[D]").view("int64") - 4) % 7  # 0 = Monday
    month = days.astype("datetime64[M]").astype(int) % 12 + 1
    w = 1.0 + 0.35 * np.arange(n_days) / n_days
    w *= np.where(weekday >= 5, 0.35, 1.0)
    w *= np.select([np.isin(month, (7, 8)), month == 12, np.isin(month, (1, 9, 10))], [0.8, 0.7, 1.15], 1.0)
    return w / w.sum()


def sample_population(rng: np.random.Generator, n: int, start: np.datetime64, n_days: int,
                      persona_p: np.ndarray | None = None, drift_after_s: int | None = None) -> Population:
    """``persona_p``: the persona mix (default ``world.PERSONA_P``). ``drift_after_s``: leads
    created from then on (seconds since the start) take the drifted channel effects."""
    persona = rng.choice(len(W.PERSONAS), size=n, p=W.PERSONA_P if persona_p is None else persona_p).astype(np.int8)
    student = persona == W.PERSONAS.index("student")
    competitor = persona == W.PERSONAS.index("competitor")
    free_mail = persona == W.PERSONAS.index("free_mail")

    # Arrival: a day by the seasonal intensity, a time of day mostly in business hours.
    day = rng.choice(n_days, size=n, p=arrival_weights(start, n_days))
    hour = np.where(rng.random(n) < 0.75, np.clip(rng.normal(14.0, 3.0, n), 0, 23.99), rng.uniform(0, 24, n))
    created_s = day.astype(np.int64) * SECONDS_PER_DAY + (hour * 3600).astype(np.int64)

    # Job title -> seniority and department. Free-mail leads skew junior and to small firms.
    title_w = np.array([t[3] for t in W.TITLES])
    title = rng.choice(len(W.TITLES), size=n, p=title_w / title_w.sum()).astype(np.int16)
    student_title = len(W.TITLES) + rng.integers(0, len(W.STUDENT_TITLES), n)
    title = np.where(student, student_title, title).astype(np.int16)
    title[rng.random(n) < W.P_MISSING["job_title"]] = -1
    department_missing = rng.random(n) < W.P_MISSING["department_given_title"]

    # Company size: log-normal employees; smaller for free-mail leads, none for students.
    log_size = np.where(free_mail, rng.normal(2.3, 1.3, n), rng.normal(5.0, 1.9, n))
    company_size = np.clip(np.exp(log_size), 1, 200_000).astype(np.int64)
    company_size[student | (rng.random(n) < W.P_MISSING["company_size"])] = -1

    industry = _categorical(rng, n, [x[1] for x in W.INDUSTRIES], W.P_MISSING["industry"])
    industry[student] = W.INDUSTRIES.index(next(x for x in W.INDUSTRIES if x[0] == "Education"))
    industry[student & (rng.random(n) < 0.5)] = -1
    country = _categorical(rng, n, [x[1] for x in W.COUNTRIES], W.P_MISSING["country"])
    source = _categorical(rng, n, [x[1] for x in W.SOURCES], W.P_MISSING["lead_source"])

    fit = _fit(title, department_missing, company_size, industry, country, persona) + rng.normal(0, W.FIT_NOISE_SD, n)
    effects = np.array([x[2] for x in W.SOURCES])
    if drift_after_s is not None:
        drifted = np.array([W.DRIFTED_SOURCE_INTENT[x[0]] for x in W.SOURCES])
        effects = np.where((created_s >= drift_after_s)[:, None], drifted[None, :], effects[None, :])
        source_effect = np.where(source >= 0, effects[np.arange(n), np.maximum(source, 0)], 0.0)
    else:
        source_effect = np.where(source >= 0, effects[source], 0.0)
    intent = W.INTENT_FIT_COEF * fit + source_effect + rng.normal(0, W.INTENT_NOISE_SD, n)
    # Buyers' activity volume rises with their intent; students and competitors are active for
    # their own reasons (coursework, job hunting, competitive research), not for buying.
    engagement = np.exp(W.ENGAGEMENT_INTENT_COEF * np.where(student | competitor, W.NON_BUYER_INTEREST, intent)
                        + rng.normal(0, W.ENGAGEMENT_SD, n))
    hand_raiser = (rng.random(n) < W.HAND_RAISER_P) & ~student & ~competitor

    order = np.argsort(created_s, kind="stable")
    pop = Population(created_s, persona, title, department_missing, company_size, industry, country, source,
                     fit, intent, engagement, hand_raiser)
    return pop.take(order)


def _categorical(rng, n, weights, p_missing) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    out = rng.choice(len(w), size=n, p=w / w.sum()).astype(np.int8)
    out[rng.random(n) < p_missing] = -1
    return out


def seniority_of(title: np.ndarray) -> np.ndarray:
    """Seniority labels (object array, None where the title is missing)."""
    table = np.array([t[1] for t in W.TITLES] + ["student"] * len(W.STUDENT_TITLES) + [None], dtype=object)
    return table[title]  # index -1 hits the trailing None


def department_of(title: np.ndarray, department_missing: np.ndarray) -> np.ndarray:
    table = np.array([t[2] for t in W.TITLES] + [None] * len(W.STUDENT_TITLES) + [None], dtype=object)
    out = table[title]
    out[department_missing] = None
    return out


def title_names() -> list[str]:
    return [t[0] for t in W.TITLES] + list(W.STUDENT_TITLES)


def _fit(title, department_missing, company_size, industry, country, persona) -> np.ndarray:
    # Lookup tables indexed by title (the trailing entry serves index -1 = missing title).
    seniority = [t[1] for t in W.TITLES] + ["student"] * len(W.STUDENT_TITLES) + [None]
    department = [t[2] for t in W.TITLES] + [None] * len(W.STUDENT_TITLES) + [None]
    seniority_fit = np.array([W.SENIORITY_FIT[s] for s in seniority])
    department_fit = np.array([W.DEPARTMENT_FIT[d] for d in department])
    f = seniority_fit[title] + np.where(department_missing, W.DEPARTMENT_FIT[None], department_fit[title])
    band_fit = np.full(len(title), W.SIZE_MISSING_FIT)
    for lo, hi, eff in W.SIZE_BANDS:
        band_fit[(company_size >= lo) & (company_size < hi)] = eff
    f += band_fit
    f += np.where(industry >= 0, np.array([x[2] for x in W.INDUSTRIES])[industry], W.INDUSTRY_MISSING_FIT)
    f += np.where(country >= 0, np.array([x[2] for x in W.COUNTRIES])[country], W.COUNTRY_MISSING_FIT)
    f += np.array([W.EMAIL_FIT[W.EMAIL_DOMAIN_OF_PERSONA[p]] for p in range(len(W.PERSONAS))])[persona]
    return f - 0.6  # centre corporate leads near zero
