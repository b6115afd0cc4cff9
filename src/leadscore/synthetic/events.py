"""Observable events from hidden paths: the lifecycle stage history and the activity stream.

Times are int64 seconds since the world's start; everything at or after ``end_s`` (the end
of the observed data) is dropped by the caller's filters here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leadscore.synthetic import world as W
from leadscore.synthetic.population import SECONDS_PER_DAY, Population

STAGE_CODES = ("mql", "sql", "disqualified", "opportunity", "won", "lost")
MQL, SQL, DISQUALIFIED, OPPORTUNITY, WON_EVENT, LOST_EVENT = range(6)


@dataclass
class Events:
    lead: np.ndarray   # local lead index
    time_s: np.ndarray
    kind: np.ndarray   # stage code or activity index
    detail: np.ndarray | None = None  # int index into a detail vocabulary, -1 none; or amounts

    def keep(self, mask) -> "Events":
        return Events(self.lead[mask], self.time_s[mask], self.kind[mask],
                      None if self.detail is None else self.detail[mask])

    @staticmethod
    def concat(parts) -> "Events":
        return Events(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("lead", "time_s", "kind", "detail")))

    def sorted(self, mask=None) -> "Events":
        """The events (where ``mask``) ordered by lead, time, kind - one packed int64 sort key."""
        idx = np.arange(len(self.lead)) if mask is None else np.flatnonzero(mask)
        key = (self.lead[idx].astype(np.int64) << 37) | (self.time_s[idx] << 5) | self.kind[idx]
        return self.keep(idx[np.argsort(key, kind="stable")])


def _days(rng, shape, scale, size):
    return (rng.gamma(shape, scale, size) * SECONDS_PER_DAY).astype(np.int64)


# ---------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------


def lifecycle_events(rng, pop: Population, path_lead, path_state, path_s, end_s) -> Events:
    """mql / sql / disqualified / opportunity / won / lost rows (detail = amount, NaN if none)."""
    n = len(pop)
    first_of_lead = np.r_[True, path_lead[1:] != path_lead[:-1]]
    is_sql = np.isin(path_state, (W.SQL_WIN, W.SQL_LOSE))
    sql_s = np.full(n, np.iinfo(np.int64).max)
    sql_s[path_lead[is_sql]] = path_s[is_sql]
    close_mask = np.isin(path_state, (W.WON, W.LOST))
    close_s = np.full(n, np.iinfo(np.int64).max)
    close_s[path_lead[close_mask]] = path_s[close_mask]
    won = np.zeros(n, dtype=bool)
    won[path_lead[path_state == W.WON]] = True

    parts = [_mql_events(rng, pop, path_lead, path_state, path_s, first_of_lead, sql_s)]

    has_sql = sql_s < end_s
    lead = np.flatnonzero(has_sql)
    parts.append(Events(lead, sql_s[lead], np.full(len(lead), SQL), np.full(len(lead), np.nan)))

    # Deals: every SQL heading for a win gets an opportunity; most losing ones do too.
    will_win = np.zeros(n, dtype=bool)
    will_win[path_lead[path_state == W.SQL_WIN]] = True
    gets_opp = has_sql & (will_win | (rng.random(n) < W.P_OPPORTUNITY_IF_LOST))
    lead = np.flatnonzero(gets_opp)
    gap = np.where(close_s[lead] < np.iinfo(np.int64).max, close_s[lead] - sql_s[lead], 60 * SECONDS_PER_DAY)
    opp_s = sql_s[lead] + np.minimum(_days(rng, 2.0, 4.0, len(lead)), gap // 2)
    size = np.where(pop.company_size[lead] > 0, pop.company_size[lead], 50)
    amount = np.round(np.exp(rng.normal(W.DEAL_LOG_MEAN + 0.35 * np.log10(size / 100), W.DEAL_LOG_SD)), -2)
    parts.append(Events(lead, opp_s, np.full(len(lead), OPPORTUNITY), amount))
    deal_amount = np.full(n, np.nan)
    deal_amount[lead] = amount

    closed = np.flatnonzero(close_s < np.iinfo(np.int64).max)
    kind = np.where(won[closed], WON_EVENT, LOST_EVENT)
    parts.append(Events(closed, close_s[closed], kind, np.where(won[closed], deal_amount[closed], np.nan)))

    events = Events.concat(parts)
    return events.sorted(events.time_s < end_s)


def _mql_events(rng, pop, path_lead, path_state, path_s, first_of_lead, sql_s) -> Events:
    """MQLs fire when marketing's rules notice a lead (on creation for good fit, when it starts
    researching or deciding); sales works each MQL ~6 weeks, then disqualifies it unless it
    became an SQL. A disqualified lead can be re-qualified later (recycling)."""
    student = pop.persona[path_lead] == W.PERSONAS.index("student")
    competitor = pop.persona[path_lead] == W.PERSONAS.index("competitor")
    p = np.where(path_state == W.CONSIDERATION, W.P_MQL_ON_CONSIDER,
                 np.where(path_state == W.DECISION, W.P_MQL_ON_DECIDE, 0.0))
    on_create = W.P_MQL_ON_CREATE * np.exp(pop.fit[path_lead]) / (1 + W.P_MQL_ON_CREATE * np.exp(pop.fit[path_lead]))
    p = np.where(first_of_lead, np.maximum(p, on_create), p)
    p = np.clip(p * np.where(student, W.P_MQL_STUDENT_BOOST, 1.0) * np.where(competitor, 0.5, 1.0), 0, 0.95)
    fires = (rng.random(len(p)) < p) & np.isin(path_state, W.OPEN_STATES)
    cand_lead = path_lead[fires]
    cand_s = path_s[fires] + _days(rng, W.MQL_DELAY_SHAPE, W.MQL_DELAY_SCALE, int(fires.sum()))
    ok = cand_s < sql_s[cand_lead]
    cand_lead, cand_s = cand_lead[ok], cand_s[ok]
    order = np.lexsort((cand_s, cand_lead))
    cand_lead, cand_s = cand_lead[order], cand_s[order]
    work_s = (np.clip(rng.normal(W.DISQUALIFY_AFTER_MEAN, W.DISQUALIFY_AFTER_SD, len(cand_s)), 21, 70)
              * SECONDS_PER_DAY).astype(np.int64)

    # Accept candidates in order per lead: one open MQL at a time.
    group_start = np.r_[0, np.flatnonzero(cand_lead[1:] != cand_lead[:-1]) + 1]
    rank = np.arange(len(cand_lead)) - np.repeat(group_start, np.diff(np.r_[group_start, len(cand_lead)]))
    busy_until = np.full(len(pop), -1, dtype=np.int64)
    mql_idx, dq_idx = [], []
    for r in range(int(rank.max()) + 1 if len(rank) else 0):
        c = np.flatnonzero(rank == r)
        c = c[cand_s[c] >= busy_until[cand_lead[c]]]
        lead = cand_lead[c]
        dq_s = cand_s[c] + work_s[c]
        converted = sql_s[lead] <= dq_s
        busy_until[lead] = np.where(converted, np.iinfo(np.int64).max, dq_s)
        mql_idx.append(c)
        dq_idx.append(c[~converted])
    mql = np.concatenate(mql_idx) if mql_idx else np.array([], dtype=np.int64)
    dq = np.concatenate(dq_idx) if dq_idx else np.array([], dtype=np.int64)
    lead = np.r_[cand_lead[mql], cand_lead[dq]]
    time_s = np.r_[cand_s[mql], cand_s[dq] + work_s[dq]]
    kind = np.r_[np.full(len(mql), MQL), np.full(len(dq), DISQUALIFIED)]
    return Events(lead, time_s, kind, np.full(len(lead), np.nan))


# ---------------------------------------------------------------------------
# Activities
# ---------------------------------------------------------------------------


def detail_vocabulary(n_months: int) -> list[str]:
    """Every value the ``detail`` column can take: blog posts, content assets, webinars."""
    blog = [f"blog-{i:03d}" for i in range(1, W.N_BLOG_POSTS + 1)]
    webinars = [f"webinar-m{m:02d}-{k}" for m in range(n_months + 1) for k in range(1, W.N_WEBINARS_PER_MONTH + 1)]
    return blog + list(W.CONTENT_ASSETS) + webinars


def activity_events(rng, pop: Population, path_lead, path_state, path_s, start_state, end_s) -> Events:
    n_types = len(W.ACTIVITY_NAMES)
    A = W.A
    # Intervals of constant hidden state, clipped to the observed window.
    same_next = np.r_[path_lead[1:] == path_lead[:-1], False]
    left_s = np.where(same_next, np.r_[path_s[1:], 0], end_s)
    left_s = np.minimum(left_s, end_s)
    keep = left_s > path_s
    i_lead, i_state, i_from = path_lead[keep], path_state[keep], path_s[keep]
    length_d = (left_s[keep] - i_from) / SECONDS_PER_DAY

    style = pop.hand_raiser.astype(np.int64)
    rates = (W.BASE_ACTIVITY_RATES[i_state] * W.PERSONA_ACTIVITY_MULT[pop.persona[i_lead]]
             * W.STYLE_ACTIVITY_MULT[style[i_lead]] * (pop.engagement[i_lead] * W.ACTIVITY_SCALE)[:, None])
    counts = rng.poisson(rates * length_d[:, None]).ravel()
    interval = np.repeat(np.repeat(np.arange(len(i_lead)), n_types), counts)
    kind = np.repeat(np.tile(np.arange(n_types), len(i_lead)), counts)
    offset = (rng.random(len(interval)) * (left_s[keep] - i_from)[interval]).astype(np.int64)
    time_s = i_from[interval] + offset
    lead = i_lead[interval]
    state = i_state[interval]

    # Stage-entry signatures: a burst of the new stage's typical actions in its first days.
    first = np.r_[True, path_lead[1:] != path_lead[:-1]][keep]
    b_lead, b_time, b_kind, b_state = _entry_bursts(rng, pop, i_lead, i_state, i_from, left_s[keep], first, style)
    lead = np.concatenate([lead, b_lead])
    time_s = np.concatenate([time_s, b_time])
    kind = np.concatenate([kind, b_kind])
    state = np.concatenate([state, b_state])

    # Derived events: clicks follow opens, attendance follows registration.
    opens = np.flatnonzero(kind == A["email_open"])
    clicked = opens[rng.random(len(opens)) < np.array(W.P_CLICK_GIVEN_OPEN)[state[opens]]]
    click_s = time_s[clicked] + rng.exponential(600, len(clicked)).astype(np.int64)
    regs = np.flatnonzero(kind == A["webinar_registration"])
    webinar_s = time_s[regs] + (rng.uniform(1, 14, len(regs)) * SECONDS_PER_DAY).astype(np.int64)
    attended = rng.random(len(regs)) < np.array(W.P_ATTEND_GIVEN_REGISTRATION)[state[regs]]

    # The form that created the lead, chosen by the stage the lead started in.
    n = len(pop)
    create_kind = np.empty(n, dtype=np.int64)
    for s, options in W.CREATION_ACTIVITY.items():
        m = start_state == s
        create_kind[m] = np.array([A[o] for o in options])[rng.integers(0, len(options), int(m.sum()))]

    bounced = rng.random(n) < np.array([W.P_BOUNCE[p] for p in W.PERSONAS])[pop.persona]
    bounce_lead = np.flatnonzero(bounced)
    bounce_s = pop.created_s[bounce_lead] + rng.exponential(10 * SECONDS_PER_DAY, len(bounce_lead)).astype(np.int64)

    lead = np.concatenate([lead, lead[clicked], np.arange(n), bounce_lead])
    time_s = np.concatenate([time_s, click_s, pop.created_s, bounce_s])
    kind = np.concatenate([kind, np.full(len(clicked), A["email_click"]), create_kind,
                           np.full(len(bounce_lead), A["email_bounce"])])

    attend_lead = lead[regs[attended]]
    lead = np.r_[lead, attend_lead]
    time_s = np.r_[time_s, webinar_s[attended]]
    kind = np.r_[kind, np.full(len(attend_lead), A["webinar_attendance"])]
    # The webinar both rows refer to: one of a month's sessions, by the session's date.
    session = np.full(len(lead), -1, dtype=np.int64)
    session_of_reg = (webinar_s // (30 * SECONDS_PER_DAY)) * W.N_WEBINARS_PER_MONTH + rng.integers(
        0, W.N_WEBINARS_PER_MONTH, len(regs))
    session[regs] = session_of_reg
    session[len(lead) - len(attend_lead):] = session_of_reg[attended]

    # E-mail stops after the first unsubscribe or bounce.
    stop_s = np.full(n, np.iinfo(np.int64).max)
    for k in ("email_unsubscribe", "email_bounce"):
        m = kind == A[k]
        np.minimum.at(stop_s, lead[m], time_s[m])
    email = np.isin(kind, [A[k] for k in W.EMAIL_KINDS + ("email_bounce",)])
    ok = ~(email & (time_s > stop_s[lead])) & (time_s < end_s) & (time_s >= pop.created_s[lead])

    detail = _details(rng, kind, session)
    return Events(lead, time_s, kind, detail).sorted(ok)


def _entry_bursts(rng, pop: Population, i_lead, i_state, i_from, i_left, first, style):
    """Events of the first days in a new hidden stage (see ``world.ENTRY_BURSTS``): (lead,
    time, kind, state) arrays. Only events before the lead leaves the stage are kept."""
    n_types = len(W.ACTIVITY_NAMES)
    out = []
    for s, (p, mix, spread_days) in W.ENTRY_BURSTS.items():
        idx = np.flatnonzero((i_state == s) & ~(first & (s == W.AWARENESS)))  # re-awakening, not creation
        idx = idx[rng.random(len(idx)) < p]
        mean = np.zeros(n_types)
        for name, m in mix.items():
            mean[W.A[name]] = m
        lead = i_lead[idx]
        rates = (mean[None, :] * W.PERSONA_ACTIVITY_MULT[pop.persona[lead]] * W.STYLE_ACTIVITY_MULT[style[lead]]
                 * np.sqrt(pop.engagement[lead])[:, None])
        counts = rng.poisson(rates).ravel()
        row = np.repeat(np.repeat(idx, n_types), counts)
        kind = np.repeat(np.tile(np.arange(n_types), len(idx)), counts)
        time_s = i_from[row] + (rng.exponential(spread_days, len(row)) * SECONDS_PER_DAY).astype(np.int64)
        out.append((row, time_s, kind))
    # Entering the decision stage: often a hand-raise. The lead's first interval already has
    # its creating form (a demo request, trial or contact-sales form for leads that start there).
    idx = np.flatnonzero((i_state == W.DECISION) & ~first)
    lead = i_lead[idx]
    names = list(W.DECISION_HAND_RAISE_MIX)
    mix = np.array([W.DECISION_HAND_RAISE_MIX[k] for k in names])
    kind = np.array([W.A[k] for k in names])[rng.choice(len(names), len(idx), p=mix / mix.sum())]
    p = np.array(W.P_DECISION_HAND_RAISE)[style[lead]] * np.minimum(W.PERSONA_ACTIVITY_MULT[pop.persona[lead], kind], 1.0)
    raised = rng.random(len(idx)) < p
    row = idx[raised]
    time_s = i_from[row] + (rng.exponential(W.DECISION_HAND_RAISE_DELAY_DAYS, len(row)) * SECONDS_PER_DAY).astype(np.int64)
    out.append((row, time_s, kind[raised]))
    row = np.concatenate([o[0] for o in out])
    time_s = np.concatenate([o[1] for o in out])
    kind = np.concatenate([o[2] for o in out])
    ok = time_s < i_left[row]
    row, time_s, kind = row[ok], time_s[ok], kind[ok]
    return i_lead[row], time_s, kind, i_state[row]


def _details(rng, kind, session) -> np.ndarray:
    """Index into :func:`detail_vocabulary` per event (-1: none)."""
    A = W.A
    detail = np.full(len(kind), -1, dtype=np.int64)
    blog = kind == A["page_view_blog"]
    post_w = 1.0 / np.arange(1, W.N_BLOG_POSTS + 1) ** 0.8
    detail[blog] = rng.choice(W.N_BLOG_POSTS, int(blog.sum()), p=post_w / post_w.sum())
    dl = kind == A["content_download"]
    asset_w = 1.0 / np.arange(1, len(W.CONTENT_ASSETS) + 1) ** 0.6
    detail[dl] = W.N_BLOG_POSTS + rng.choice(len(W.CONTENT_ASSETS), int(dl.sum()), p=asset_w / asset_w.sum())
    web = session >= 0
    detail[web] = W.N_BLOG_POSTS + len(W.CONTENT_ASSETS) + session[web]
    return detail
