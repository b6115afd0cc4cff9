"""The hidden buying journey: a continuous-time Markov chain per lead, and its exact oracle.

States (see ``world``): awareness, consideration, decision, cold (open), then SQL split by
the deal's eventual outcome (sql_win / sql_lose), then won / lost. Whether a lead becomes
an SQL in (T, T+H] depends on everything before T only through its hidden state at T, so

    P(SQL in (T, T+H] | state s at T) = 1 - sum_j expm(Q_open * H)[s, j]

where Q_open is the generator restricted to the open states (its rows leak exactly the SQL
rate). Winning within H2 adds the SQL -> won step: expm of the generator on
{open states, sql_win, won} read at column ``won``.
"""

from __future__ import annotations

import numpy as np

from leadscore.synthetic import world as W

SECONDS_PER_DAY = 86_400


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def win_probability(fit: np.ndarray) -> np.ndarray:
    return _sigmoid(W.WIN_INTERCEPT + W.WIN_FIT * fit)


def generator_matrices(fit, intent, persona, hand_raiser) -> np.ndarray:
    """Per-lead CTMC generators, shape (n, 8, 8), rates per day."""
    n = len(fit)
    Q = np.zeros((n, 8, 8))

    def rate(key):
        base, coef = W.RATES[key]
        return base * np.exp(coef * intent)

    can_buy = ~np.isin(persona, (W.PERSONAS.index("student"), W.PERSONAS.index("competitor")))
    student = persona == W.PERSONAS.index("student")
    q = win_probability(fit)
    sql_c = rate("consider_to_sql") * np.where(hand_raiser, W.HAND_RAISER_SQL_BOOST, 1.0) * can_buy
    sql_d = rate("decide_to_sql") * can_buy

    Q[:, W.AWARENESS, W.CONSIDERATION] = rate("aware_to_consider")
    Q[:, W.AWARENESS, W.COLD] = W.RATES["aware_to_cold"][0]
    Q[:, W.CONSIDERATION, W.DECISION] = rate("consider_to_decide") * ~student
    Q[:, W.CONSIDERATION, W.COLD] = W.RATES["consider_to_cold"][0]
    Q[:, W.CONSIDERATION, W.SQL_WIN] = sql_c * q
    Q[:, W.CONSIDERATION, W.SQL_LOSE] = sql_c * (1 - q)
    Q[:, W.DECISION, W.SQL_WIN] = sql_d * q
    Q[:, W.DECISION, W.SQL_LOSE] = sql_d * (1 - q)
    Q[:, W.DECISION, W.COLD] = W.RATES["decide_to_cold"][0]
    Q[:, W.COLD, W.AWARENESS] = rate("cold_to_aware")
    Q[:, W.SQL_WIN, W.WON] = W.RATES["sql_to_close"][0]
    Q[:, W.SQL_LOSE, W.LOST] = W.RATES["sql_to_close"][0]
    idx = np.arange(8)
    Q[:, idx, idx] = -Q.sum(axis=2)
    return Q


def initial_state(rng, intent, persona, p_start_decision: float = W.P_START_DECISION,
                  p_start_consideration: float = W.P_START_CONSIDERATION) -> np.ndarray:
    """The hidden stage a lead is created in (defaults: the world's; a funnel whose every row is
    already an MQL starts further down)."""
    u = rng.random(len(intent))
    p_decide = np.clip(p_start_decision * np.exp(0.5 * intent), 0, 0.3)
    p_consider = p_start_consideration
    state = np.where(u < p_decide, W.DECISION, np.where(u < p_decide + p_consider, W.CONSIDERATION, W.AWARENESS))
    state[persona == W.PERSONAS.index("student")] = W.AWARENESS
    return state.astype(np.int8)


def simulate_paths(rng, Q, start_state, created_s, end_s):
    """Simulate each lead's path from creation until absorption or past ``end_s``.

    Returns (lead, state, entered_s) arrays sorted by lead then time. The first transition
    past ``end_s`` is kept so that the close of an SQL seen before the end is known.
    """
    n = len(created_s)
    lead = np.arange(n)
    state = start_state.astype(np.int64)
    t = created_s.astype(np.float64) / SECONDS_PER_DAY
    end_d = end_s / SECONDS_PER_DAY
    out_lead, out_state, out_t = [lead], [state.copy()], [t.copy()]
    active = np.ones(n, dtype=bool)
    while True:
        active &= (t < end_d) & ~np.isin(state, (W.WON, W.LOST))
        if not active.any():
            break
        i = np.flatnonzero(active)
        rows = Q[i, state[i], :].copy()
        rows[np.arange(len(i)), state[i]] = 0.0
        total = rows.sum(axis=1)
        t[i] = t[i] + rng.exponential(1.0, len(i)) / total
        cum = np.cumsum(rows, axis=1) / total[:, None]
        nxt = (rng.random(len(i))[:, None] > cum).sum(axis=1)
        state[i] = nxt
        out_lead.append(i)
        out_state.append(nxt)
        out_t.append(t[i].copy())
    lead = np.concatenate(out_lead)
    st = np.concatenate(out_state).astype(np.int8)
    # Whole seconds; the first row of each lead is its exact creation time.
    entered_s = np.concatenate([created_s.astype(np.int64)]
                               + [np.floor(x * SECONDS_PER_DAY).astype(np.int64) for x in out_t[1:]])
    order = np.lexsort((entered_s, lead))
    return lead[order], st[order], entered_s[order]


def batched_expm(M: np.ndarray) -> np.ndarray:
    """exp(M) for a stack of small matrices: scaling and squaring with a Taylor series."""
    norm = np.abs(M).sum(axis=2).max()
    squarings = max(0, int(np.ceil(np.log2(norm / 0.25)))) if norm > 0 else 0
    X = M / (2.0**squarings)
    k = M.shape[-1]
    eye = np.broadcast_to(np.eye(k), M.shape)
    E = eye.copy()
    for order in range(16, 0, -1):  # Horner: I + X/1 (I + X/2 (I + ...))
        E = eye + (X @ E) / order
    for _ in range(squarings):
        E = E @ E
    return E


_WON_STATES = (W.AWARENESS, W.CONSIDERATION, W.DECISION, W.COLD, W.SQL_WIN, W.WON)


def conversion_probabilities(Q: np.ndarray, horizon_days: float, won_horizon_days: float):
    """(p_sql, p_won), each (n, 4): the probability from each open state of becoming an SQL
    within ``horizon_days`` and of closing won within ``won_horizon_days``."""
    open_idx = np.array(W.OPEN_STATES)
    Q_open = Q[:, open_idx[:, None], open_idx[None, :]]
    p_sql = 1.0 - batched_expm(Q_open * horizon_days).sum(axis=2)
    won_idx = np.array(_WON_STATES)
    Q_won = Q[:, won_idx[:, None], won_idx[None, :]]
    p_won = batched_expm(Q_won * won_horizon_days)[:, :4, -1]
    return np.clip(p_sql, 0.0, 1.0), np.clip(p_won, 0.0, 1.0)


def won_probabilities(Q: np.ndarray, won_horizon_days: float) -> np.ndarray:
    """(n, 8): the probability from every hidden state of closing won within the horizon -
    for a CRM that records no SQL, a lead in a hidden SQL state is still open."""
    won_idx = np.array(_WON_STATES)
    Q_won = Q[:, won_idx[:, None], won_idx[None, :]]
    reach = batched_expm(Q_won * won_horizon_days)[:, :, -1]
    out = np.zeros((len(Q), 8))
    out[:, won_idx] = reach
    return np.clip(out, 0.0, 1.0)


def truth_rows(path_lead, path_state, path_entered_s, created_s, as_of_s, p_sql, p_won, open_states=W.OPEN_STATES):
    """Oracle rows for every (lead, as_of) with the lead created before as_of and still open.

    ``path_*`` sorted by lead then time; ``as_of_s`` sorted ascending; ``p_sql``/``p_won``
    per lead and hidden state (from :func:`conversion_probabilities`, or
    :func:`won_probabilities`) for the same leads; ``open_states``: the hidden states in
    which the CRM still shows the lead open. Returns (lead, as_of index, state, p_sql, p_won).
    """
    as_of_s = np.asarray(as_of_s, dtype=np.int64)
    n_rows = len(path_lead)
    same_next = np.r_[path_lead[1:] == path_lead[:-1], False]
    left_s = np.where(same_next, np.r_[path_entered_s[1:], 0], np.iinfo(np.int64).max)
    is_open = np.isin(path_state, open_states)
    # A lead exists at T when created_at < T; a state holds at T when entered <= T < left.
    lo_time = np.maximum(path_entered_s, created_s[path_lead] + 1)
    first = np.searchsorted(as_of_s, lo_time, side="left")
    last = np.searchsorted(as_of_s, left_s, side="left")  # exclusive
    count = np.where(is_open, np.maximum(last - first, 0), 0)
    row = np.repeat(np.arange(n_rows), count)
    offset = np.arange(len(row)) - np.repeat(np.cumsum(count) - count, count)
    as_of_idx = first[row] + offset
    lead = path_lead[row]
    state = path_state[row].astype(np.int64)
    return lead, as_of_idx, state, p_sql[lead, state], p_won[lead, state]
