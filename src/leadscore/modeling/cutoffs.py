"""MQL and SQL cutoffs on calibrated ``p_sql``: chosen by a business policy, reported with intervals.

Examples are (lead, as_of) pairs - every open lead at every weekly as-of date. Two cutoffs
sort them into tiers: ``SQL`` when ``p >= sql``, ``MQL`` when ``mql <= p < sql``, else
``lead``. "At or above" a threshold ``t`` always means the examples with ``p >= t``; the MQL
figures below are for everything at or above the MQL cutoff (the MQL *and* SQL tiers).

Cutoffs are *chosen* on one frame (the calibration slice) by the policy named in the
``cutoffs:`` section of ``pipelines/train.yaml`` and *reported* on another (the out-of-time
test slice) with bootstrap intervals. The policies - ``conversion_rate``, ``capacity``,
``recall``, ``expected_value`` - are one module each in :mod:`leadscore.modeling.cutoff_policies`,
whose docstrings give their semantics; a new policy is a new module there.

Two loads are reported for a threshold ``t``, both for the whole lead base (x ``population_scale``):

* **new leads per week** (flow): with lead ids, an example *arrives* at ``t`` when ``p >= t``
  at its as-of date and the same lead was not at or above ``t`` at the previous as-of date
  (below it, or not an open example then: a new lead). Arrivals on every as-of date but the
  first (whose past is unknown) divided by the weeks from the first to the last as-of date.
  Without lead ids (flat exports: each example is one lead, seen once, in its week) every
  example arrives, and the weeks are the distinct as-of dates.
* **open leads** (stock): the mean over as-of dates of the examples at or above ``t`` - the
  queue of open leads above the cutoff on an average day, not a weekly figure.

**Sampling weights.** Training may build its examples on a sample of leads (every lead with a
positive outcome kept, the others kept with probability ``r``); ``weight`` then gives each example
its lead's inverse inclusion probability (1 for the leads always kept, ``1 / r`` for the others:
how many leads of the full population it stands for, Horvitz-Thompson). Every count below -
examples, positives, arrivals, the bootstrap's per-lead sums - is then the sum of the weights of
the examples counted, so the cutoffs and figures estimate those of the full population: a lead of
weight 3 counts as three copies of itself (``min_rows`` and capacity shares included), and
``population_scale`` multiplies on top. Without weights every example counts once (the figures
are then exactly those of the unweighted arithmetic, with whole-number example counts).

Whatever the policy, the MQL cutoff must not exceed the SQL cutoff; targets that would put it
above are refused (:class:`CutoffError`). Comparisons are exact (``rate >= target`` with the
rate computed as positives / examples), so a target met exactly counts as met.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from leadscore.modeling import cutoff_policies
from leadscore.modeling.cutoff_policies import Choice, CutoffError
from leadscore.modeling.metrics import (
    lead_bootstrap_sums,
    percentile_interval,
    sample_weights,
)
from leadscore.settings import Section, Whole

POLICIES = cutoff_policies.names()
TIERS = ("lead", "MQL", "SQL")  # lowest first; a lead's tier is the highest whose cutoff it reaches
MIN_BOOTSTRAP = 100  # fewer resamples give unstable 2.5 % / 97.5 % percentiles


# ---------------------------------------------------------------------------
# Policy and cutoffs
# ---------------------------------------------------------------------------

def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise CutoffError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class CutoffPolicy(Section):
    """How the cutoffs are chosen: the ``cutoffs:`` section of ``pipelines/train.yaml``.

    ``policy`` is one of :data:`POLICIES` (semantics in :mod:`leadscore.modeling.cutoff_policies`). ``mql`` / ``sql``
    are the targets of the two cutoffs - a conversion rate, a capacity (new leads per week if
    ``>= 1``, share of examples if ``< 1``) or a recall; ``conversion_rate`` without either
    target uses the default targets (4 % and 13 %). ``expected_value`` takes ``value_per_sql`` (value of
    one SQL: deal value x win rate), ``mql_cost`` (one nurture touch) and ``sql_cost`` (one
    sales touch) instead, in one currency. ``min_rows``: fewest examples (their summed weight,
    with sampling weights) at or above a ``conversion_rate`` candidate for its rate to count.
    ``bootstrap``: resamples of leads for the reported intervals, 0 for none, else at least
    :data:`MIN_BOOTSTRAP`;
    ``confidence``: their coverage; ``seed`` makes them reproducible.
    """

    error: ClassVar[type[Exception]] = CutoffError

    policy: str = "conversion_rate"
    mql: float | None = None
    sql: float | None = None
    value_per_sql: float | None = None
    mql_cost: float | None = None
    sql_cost: float | None = None
    bootstrap: Annotated[int, Field(ge=0)] = 1000
    confidence: float = 0.95
    seed: Annotated[int, Field(ge=0)] = 0
    min_rows: Whole = 30
    unreachable: Literal["best", "refuse"] = "best"   # best: fall back to the best rate reachable, with a warning

    def _set(self, name, value):
        object.__setattr__(self, name, value)

    @model_validator(mode="after")
    def _policy_targets(self):
        cutoff_policies.policy_named(self.policy).check(self)
        if self.bootstrap != 0 and self.bootstrap < MIN_BOOTSTRAP:
            raise CutoffError(f"bootstrap must be 0 (no intervals) or at least {MIN_BOOTSTRAP} resamples, "
                              f"got {self.bootstrap}")
        if not 0 < self.confidence < 1:
            raise CutoffError(f"confidence must be in (0, 1), e.g. 0.95, got {self.confidence!r}")
        return self

    def target(self, name: str) -> float:
        """The target of cutoff ``name`` (``"mql"`` or ``"sql"``); NaN for expected_value."""
        value = getattr(self, name)
        return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class Cutoffs:
    """The chosen cutoffs on ``p_sql`` and the policy they were chosen by."""

    policy: CutoffPolicy
    mql: float
    sql: float
    notes: tuple[str, ...] = ()  # where a target could not be met and what was chosen instead
    fell_back: tuple[str, ...] = ()  # the cutoffs ("mql", "sql") whose target the data could not meet

    def __post_init__(self):
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "fell_back", tuple(self.fell_back))
        if not isinstance(self.policy, CutoffPolicy):
            raise CutoffError(f"policy must be a CutoffPolicy, got {type(self.policy).__name__}")
        for name in ("mql", "sql"):
            value = _number(f"{name} cutoff", getattr(self, name))
            if not 0 <= value <= 1:
                raise CutoffError(f"{name} cutoff must be a probability in [0, 1], got {value!r}")
            object.__setattr__(self, name, value)
        if self.mql > self.sql:
            raise CutoffError(f"mql cutoff ({self.mql!r}) must not exceed sql cutoff ({self.sql!r})")

    def tier(self, p) -> np.ndarray:
        """``"SQL"`` where ``p >= sql``, ``"MQL"`` where ``mql <= p < sql``, else ``"lead"``."""
        p = _probabilities(p, "p", allow_scalar=True)
        return np.where(p >= self.sql, "SQL", np.where(p >= self.mql, "MQL", "lead"))

    def to_dict(self) -> dict:
        """JSON-serialisable: ``{"mql": cutoff, "sql": cutoff, "policy": {policy fields}}``."""
        return {"mql": self.mql, "sql": self.sql, "policy": self.policy.as_dict(), "notes": list(self.notes),
                "fell_back": list(self.fell_back)}

    @classmethod
    def from_dict(cls, d) -> Cutoffs:
        """The inverse of :meth:`to_dict`."""
        if not isinstance(d, dict):
            raise CutoffError(f"expected the mapping Cutoffs.to_dict() writes, got {type(d).__name__}")
        missing = sorted({"mql", "sql", "policy"} - set(d))
        if missing or not isinstance(d["policy"], dict):
            raise CutoffError(f"cutoffs record lacks {', '.join(missing) or 'a policy mapping'}; expected "
                              "{'mql': ..., 'sql': ..., 'policy': {...}} as Cutoffs.to_dict() writes it")
        return cls(policy=CutoffPolicy(**d["policy"]), mql=d["mql"], sql=d["sql"], notes=tuple(d.get("notes", ())),
                   fell_back=tuple(d.get("fell_back", ())))


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

def _probabilities(p, name: str = "p", allow_scalar: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(p, dtype="float64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric probabilities without missing values ({exc})") from exc
    if arr.ndim != 1 and not (allow_scalar and arr.ndim == 0):
        raise ValueError(f"{name} must be one-dimensional (one probability per example), got shape {arr.shape}")
    bad = ~((arr >= 0) & (arr <= 1))  # also catches NaN
    if bad.any():
        first = arr[bad].ravel()[0]
        raise ValueError(f"{name} must hold probabilities in [0, 1]; {int(bad.sum())} value(s) are not "
                         f"(e.g. {float(first)!r})")
    return arr


def _length(values, name: str, n: int):
    m = len(values)
    if m != n:
        raise ValueError(f"{name} has {m:,} values but p has {n:,}; give one per example")


def _labels(y, n: int) -> np.ndarray:
    _length(y, "y", n)
    s = y if isinstance(y, pd.Series) else pd.Series(np.asarray(y))
    if s.isna().any():
        raise ValueError(f"y has {int(s.isna().sum()):,} missing label(s); give 0/1 or bool for every example")
    try:
        v = s.to_numpy(dtype="float64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y must be 0/1 or bool, got dtype {s.dtype}") from exc
    bad = (v != 0) & (v != 1)
    if bad.any():
        raise ValueError(f"y must be 0/1 or bool; {int(bad.sum()):,} value(s) are not (e.g. {float(v[bad][0])!r})")
    return v.astype("int64")


def _n_dates(as_of, n: int) -> int:
    _length(as_of, "as_of", n)
    s = as_of if isinstance(as_of, pd.Series) else pd.Series(as_of)
    if not pd.api.types.is_datetime64_any_dtype(s):  # e.g. Timestamps in an object array; strings are refused
        if pd.api.types.infer_dtype(s, skipna=True) not in ("datetime", "datetime64", "empty"):
            raise ValueError(f"as_of must be timestamps (the examples' as-of dates), got {s.dtype} values "
                             f"such as {s.iloc[0]!r}")
        s = pd.to_datetime(s, utc=True)
    if s.isna().any():
        raise ValueError(f"as_of has {int(s.isna().sum()):,} missing value(s); every example needs its as-of date")
    return int(s.nunique())


def _lead_codes(lead_id, n: int) -> tuple[np.ndarray, int]:
    _length(lead_id, "lead_id", n)
    codes, uniques = pd.factorize(lead_id if isinstance(lead_id, pd.Series) else np.asarray(lead_id, dtype=object))
    if (codes < 0).any():
        raise ValueError(f"lead_id has {int((codes < 0).sum()):,} missing value(s); every example needs its lead")
    return codes, len(uniques)


def _weights(weight, n: int) -> np.ndarray | None:
    """Sampling weights: None (every example counts once) or one positive finite float per example."""
    if weight is not None:
        _length(weight, "weight", n)
    return sample_weights(weight, n)


def _scale(population_scale) -> float:
    try:
        value = _number("population_scale", population_scale)
    except CutoffError as exc:
        raise ValueError(str(exc)) from None
    if value <= 0:
        raise ValueError(f"population_scale must be > 0 (leads each example stands for), got {population_scale!r}")
    return value


def _inputs(p, y, as_of, population_scale, weight=None):
    p = _probabilities(p)
    if len(p) == 0:
        raise ValueError("p is empty; cutoffs need at least one example")
    return p, _labels(y, len(p)), _n_dates(as_of, len(p)), _scale(population_scale), _weights(weight, len(p))


def _suffix_sums(x: np.ndarray) -> np.ndarray:
    """``out[i] = x[i:].sum()``, ``out[len(x)] = 0``: with ``x`` in ascending order of ``p``, the
    weight at or above sorted row ``i`` (a count, exact, when ``x`` is integer ones)."""
    out = np.zeros(len(x) + 1, dtype=x.dtype)
    out[:-1] = np.cumsum(x[::-1])[::-1]
    return out


def _ranked(values: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``values`` ascending and, per position, the weight at or above it (:func:`_suffix_sums`);
    without weights every value weighs 1, so the sums are counts."""
    order = np.argsort(values, kind="stable")
    weights = np.ones(len(values), dtype="int64") if w is None else w[order]
    return values[order], _suffix_sums(weights)


@dataclass(frozen=True)
class _Arrivals:
    """Which examples arrive at or above a threshold, and over how many weeks (module docstring).

    An example arrives at ``t`` when it counts (``counts``: not on the first as-of date) and
    ``previous < t <= p``; ``previous`` is the lead's ``p`` at the previous as-of date, -inf
    where it was not an example then. An arrival counts its weight ``w`` (1 without weights).
    :meth:`count` bisects two ranked arrays: the weight of counting examples with ``p >= t``
    less that of those with ``min(p, previous) >= t`` (already at or above the date before)."""

    p: np.ndarray
    previous: np.ndarray
    counts: np.ndarray
    weeks: float  # 0 when there is no interval to measure a flow over
    _now: tuple = dataclasses.field(repr=False, default=None)  # (sorted p, weight at or above) of counting rows
    _both: tuple = dataclasses.field(repr=False, default=None)  # the same for min(p, previous)

    @classmethod
    def of(cls, p: np.ndarray, as_of, lead_id=None, w: np.ndarray | None = None) -> _Arrivals:
        if lead_id is None:
            dates = _dates(as_of)
            previous, counts, weeks = np.full(len(p), -np.inf), np.ones(len(p), bool), float(dates.nunique())
        else:
            codes, _ = _lead_codes(lead_id, len(p))
            dates = _dates(as_of)
            days = np.sort(dates.unique())
            k = np.searchsorted(days, dates.to_numpy())
            by_key = pd.Series(p, index=pd.MultiIndex.from_arrays([codes, k])).groupby(level=[0, 1]).max()
            previous = by_key.reindex(pd.MultiIndex.from_arrays([codes, k - 1])).to_numpy(dtype="float64")
            previous = np.where(np.isnan(previous), -np.inf, previous)
            counts = k > 0
            weeks = float((days[-1] - days[0]) / pd.Timedelta(days=7))
        w_counts = None if w is None else w[counts]
        both = np.minimum(p, previous)[counts]
        return cls(p, previous, counts, weeks, _ranked(p[counts], w_counts), _ranked(both, w_counts))

    def arriving(self, threshold: float) -> np.ndarray:
        """Per example: does it arrive at or above ``threshold``?"""
        return self.counts & (self.p >= threshold) & (self.previous < threshold)

    def count(self, thresholds) -> np.ndarray:
        """Arrivals at or above each threshold (all as-of dates together; their weight, with weights)."""
        t = np.asarray(thresholds, dtype="float64")
        (now, now_from), (both, both_from) = self._now, self._both
        arrived = now_from[np.searchsorted(now, t, side="left")] - both_from[np.searchsorted(both, t, side="left")]
        return np.maximum(arrived, 0)  # a no-op on counts; keeps float weights' rounding from going below 0

    def per_week(self, count, scale: float):
        count = np.asarray(count, dtype="float64")
        return count * scale / self.weeks if self.weeks > 0 else np.full(count.shape, np.nan)


def _dates(as_of) -> pd.Series:
    s = as_of if isinstance(as_of, pd.Series) else pd.Series(as_of)
    return pd.to_datetime(s, utc=True).reset_index(drop=True)


# ---------------------------------------------------------------------------
# Counting at or above thresholds
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Sorted:
    """``p`` sorted ascending with suffix sums of ``w`` and ``w * y``: examples and positives at or
    above any threshold by bisection - counts (int64) without weights, summed weights with them."""

    p: np.ndarray
    n_from: np.ndarray  # n_from[i]: examples among sorted rows i..n-1 (n_from[n] = 0)
    pos_from: np.ndarray  # pos_from[i]: positives among sorted rows i..n-1 (pos_from[n] = 0)

    @classmethod
    def of(cls, p: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> _Sorted:
        order = np.argsort(p, kind="stable")
        weights = np.ones(len(p), dtype="int64") if w is None else w[order]
        return cls(p[order], _suffix_sums(weights), _suffix_sums(y[order] * weights))

    @property
    def n(self) -> int | float:
        return self.n_from[0].item()

    @property
    def positives(self) -> int | float:
        return self.pos_from[0].item()

    def at_or_above(self, thresholds) -> tuple[np.ndarray, np.ndarray]:
        """(examples, positives) with ``p >= t`` for each threshold ``t``."""
        i = np.searchsorted(self.p, np.asarray(thresholds, dtype="float64"), side="left")
        return self.n_from[i], self.pos_from[i]

    def quantiles(self, levels) -> np.ndarray:
        """The ``p`` of the example at each (weighted) rank ``levels`` from the bottom, 0-based: the
        sorted row whose examples, stacked in order (a weight-w row as w copies), cover that rank."""
        below_or_at = self.n_from[0] - self.n_from[1:]  # examples in sorted rows 0..i
        rows = np.searchsorted(below_or_at, np.asarray(levels), side="right")
        return self.p[np.minimum(rows, len(self.p) - 1)]

    def candidates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct ``p`` values ascending, with (examples, positives) at or above each."""
        values = np.unique(self.p)
        return (values, *self.at_or_above(values))


def _per_date(count, n_dates: int, scale: float):
    """Open leads: a count over all as-of dates as the mean per date, for the whole lead base."""
    return np.asarray(count, dtype="float64") * scale / n_dates


def _ratio(num, den):
    num, den = np.asarray(num, dtype="float64"), np.asarray(den, dtype="float64")
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


# ---------------------------------------------------------------------------
# Choosing
# ---------------------------------------------------------------------------

def choose_cutoffs(p, y, as_of, policy: CutoffPolicy, population_scale: float = 1.0,
                   probability: str = "p_sql", lead_id=None, *, weight=None) -> Cutoffs:
    """Choose the MQL and SQL cutoffs on ``p`` by ``policy`` (semantics: module docstring).

    ``p``: calibrated ``p_sql`` per example; ``y``: 0/1 or bool outcomes; ``as_of``: each
    example's as-of timestamp; ``lead_id``: each example's lead (new leads per week follow a
    lead from one as-of date to the next; None: each example is a lead seen once);
    ``population_scale``: leads each example stands for (1 / the sampled share of leads);
    ``weight``: per example, its sampling weight (module docstring; None: 1 each).
    ``probability``: the name of ``p`` in messages (``p_sql``, ``p_won``). Raises
    :class:`CutoffError` when a target cannot be met (with ``unreachable: refuse``) or the two
    cutoffs conflict; with ``unreachable: best`` a fallback is described in ``Cutoffs.notes``.
    """
    if not isinstance(policy, CutoffPolicy):
        raise TypeError(f"policy must be a CutoffPolicy, got {type(policy).__name__}")
    p, y, n_dates, scale, w = _inputs(p, y, as_of, population_scale, weight)
    rule = cutoff_policies.policy_named(policy.policy)
    if not rule.needs_data:
        return Cutoffs(policy=policy, **rule.choose(policy, None))
    choice = Choice(_Sorted.of(p, y, w), lambda: _Arrivals.of(p, as_of, lead_id, w), scale, probability)
    chosen = rule.choose(policy, choice)
    notes, fell_back = choice.notes, choice.fell_back
    if chosen["mql"] > chosen["sql"] and notes:  # a fallback moved the SQL cutoff below the MQL one
        notes.append(f"the SQL cutoff fell below the MQL cutoff; the MQL cutoff is set to it ({probability} >= "
                     f"{chosen['sql']:.4g}), so no lead is MQL without being SQL")
        chosen["mql"] = chosen["sql"]
    if chosen["mql"] > chosen["sql"]:
        raise CutoffError(
            f"the targets conflict: the MQL cutoff ({probability} >= {chosen['mql']:.4g}, from mql={policy.mql:g}) is "
            f"above the SQL cutoff ({probability} >= {chosen['sql']:.4g}, from sql={policy.sql:g}) under policy "
            f"{policy.policy}; set the MQL target so it admits at least the leads the SQL target does")
    return Cutoffs(policy=policy, mql=chosen["mql"], sql=chosen["sql"], notes=tuple(notes), fell_back=tuple(fell_back))


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

def cutoff_report(cutoffs: Cutoffs, p, y, as_of, lead_id, population_scale: float = 1.0, *,
                  weight=None) -> pd.DataFrame:
    """The cutoffs on a frame (the test slice): one row per cutoff, ``MQL`` then ``SQL``.

    Columns: ``cutoff``, ``policy``, ``threshold`` (the cutoff on p), ``target`` (the policy's
    target, NaN for expected_value), ``examples`` (at or above, on this frame),
    ``new_leads_per_week`` (leads arriving at or above the cutoff per week, the flow: module
    docstring), ``open_leads`` (open leads at or above on an average as-of date, the stock),
    ``share_of_examples``, ``conversion_rate`` (observed rate at or above), ``recall`` (share
    of all positives at or above); and for the tier band alone (MQL row: ``mql <= p < sql``;
    SQL row: ``p >= sql``, the same as at or above) ``band_new_leads_per_week`` (arrivals at or
    above the cutoff that land in the band), ``band_open_leads``, ``band_share_of_examples``,
    ``band_conversion_rate``. Both loads are for the whole lead base (x ``population_scale``).
    ``new_leads_per_week``, ``open_leads``, ``conversion_rate``, ``recall`` and
    ``band_conversion_rate`` have ``_low`` / ``_high``: the percentile bootstrap interval at
    ``policy.confidence`` from ``policy.bootstrap`` resamples of *leads* with replacement (a
    lead's examples are correlated, so they move together), seeded by ``policy.seed``; the
    as-of dates stay fixed. NaN without resamples, where a rate has no examples (or no
    positives) to divide by, and for new leads per week on a frame of one as-of date.
    ``weight``: sampling weights (module docstring): every count, and every lead's sums in the
    bootstrap, is then a sum of weights, and ``examples`` a float.
    """
    if not isinstance(cutoffs, Cutoffs):
        raise TypeError(f"cutoffs must be Cutoffs, got {type(cutoffs).__name__}")
    p, y, n_dates, scale, w = _inputs(p, y, as_of, population_scale, weight)
    codes, n_leads = _lead_codes(lead_id, len(p))
    arrivals = _Arrivals.of(p, as_of, lead_id)  # only its per-example arrivals are used; the columns carry w
    policy = cutoffs.policy
    n = len(p) if w is None else float(w.sum())

    at_mql, at_sql = p >= cutoffs.mql, p >= cutoffs.sql
    new_mql, new_sql = arrivals.arriving(cutoffs.mql), arrivals.arriving(cutoffs.sql)
    # columns summed per example, per cutoff: at or above, positives there, arrivals (and into the band); all positives
    columns = np.column_stack([at_mql, y * at_mql, new_mql, new_mql & ~at_sql,
                               at_sql, y * at_sql, new_sql, new_sql, y]).astype("float64")
    if w is not None:
        columns *= w[:, None]
    point = columns.sum(axis=0)[None, :]
    boot = (lead_bootstrap_sums(codes, n_leads, columns, policy.bootstrap, policy.seed)
            if policy.bootstrap else np.full((0, columns.shape[1]), np.nan))
    sql_k = 4

    def stats(t: np.ndarray, k: int, band: bool = False) -> dict[str, np.ndarray]:
        """Statistics of the rows counted in columns k (examples) .. k + 3 (arrivals into the band)."""
        examples, positives, new = t[:, k], t[:, k + 1], t[:, k + 2]
        if band:
            examples, positives, new = examples - t[:, sql_k], positives - t[:, sql_k + 1], t[:, k + 3]
        return {"new_leads_per_week": arrivals.per_week(new, scale), "open_leads": _per_date(examples, n_dates, scale),
                "examples": examples, "conversion_rate": _ratio(positives, examples),
                "recall": _ratio(positives, t[:, 8])}

    rows = []
    for name, k, threshold in (("MQL", 0, cutoffs.mql), ("SQL", sql_k, cutoffs.sql)):
        is_band = name == "MQL"
        est, band = stats(point, k), stats(point, k, band=is_band)
        row = {"cutoff": name, "policy": policy.policy, "threshold": threshold,
               "target": policy.target(name.lower()),
               "examples": int(est["examples"][0]) if w is None else float(est["examples"][0])}
        for key in ("new_leads_per_week", "open_leads", "share_of_examples", "conversion_rate", "recall"):
            row[key] = float(est["examples"][0] / n) if key == "share_of_examples" else float(est[key][0])
            if key != "share_of_examples":
                row[f"{key}_low"], row[f"{key}_high"] = percentile_interval(stats(boot, k)[key], policy.confidence)
        row["band_new_leads_per_week"] = float(band["new_leads_per_week"][0])
        row["band_open_leads"] = float(band["open_leads"][0])
        row["band_share_of_examples"] = float(band["examples"][0] / n)
        row["band_conversion_rate"] = float(band["conversion_rate"][0])
        row["band_conversion_rate_low"], row["band_conversion_rate_high"] = percentile_interval(
            stats(boot, k, band=is_band)["conversion_rate"], policy.confidence)
        rows.append(row)
    return pd.DataFrame(rows)


def tradeoff_curve(p, y, as_of, population_scale: float = 1.0, n_points: int = 50, lead_id=None, *,
                   weight=None) -> pd.DataFrame:
    """What each threshold would give on a frame: the data of the report's cutoff trade-off plot.

    Thresholds are ``p`` values at the quantile levels 0, 1/n_points, ..., 1 - 1/n_points (the
    threshold that keeps about the top 100 %, ..., the top 1/n_points of examples), duplicates
    dropped, ascending. Columns: ``threshold``, ``examples``, ``new_leads_per_week``,
    ``open_leads``, ``share_of_examples``, ``conversion_rate``, ``recall`` - all for the
    examples at or above the threshold, as in :func:`cutoff_report` (``lead_id``, ``weight``: as
    in :func:`choose_cutoffs`; with weights the quantiles, too, are of the weighted examples).
    """
    if isinstance(n_points, bool) or not isinstance(n_points, numbers.Integral) or n_points < 2:
        raise ValueError(f"n_points must be a whole number >= 2, got {n_points!r}")
    p, y, n_dates, scale, w = _inputs(p, y, as_of, population_scale, weight)
    s = _Sorted.of(p, y, w)
    thresholds = np.unique(s.quantiles((np.arange(n_points) * s.n) // n_points))
    n_ge, pos_ge = s.at_or_above(thresholds)
    arrivals = _Arrivals.of(p, as_of, lead_id, w)
    return pd.DataFrame({
        "threshold": thresholds,
        "examples": n_ge,
        "new_leads_per_week": arrivals.per_week(arrivals.count(thresholds), scale),
        "open_leads": _per_date(n_ge, n_dates, scale),
        "share_of_examples": n_ge / s.n,
        "conversion_rate": _ratio(pos_ge, n_ge),
        "recall": _ratio(pos_ge, np.full(len(n_ge), s.positives)),
    })
