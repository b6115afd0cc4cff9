"""The engagement features: one entry per feature - what it is, how it is computed, how it reads.

:data:`ENGAGEMENT` lists them in catalogue order. An entry is an :class:`Engagement` feature
(name, kind, description, how it is computed, its phrase) or a :class:`Family` that makes one
feature per activity kind or window. The builder (:mod:`leadscore.features.builder`), the
catalogue and the reasons (:mod:`leadscore.serving.explain`) all read this list: **adding an
engagement feature is adding one entry here.**

How a feature is computed - the building blocks, all over the events strictly before as_of:

* :class:`PerKind` - a SQL aggregate over one lead's activities of one kind (``age``: days
  before as_of), combined over the kinds the entry selects (all, the hand-raisers, the
  non-negative ones, or one kind) by a sum or a minimum. DuckDB computes each distinct
  aggregate once per (lead, kind); numpy combines.
* :class:`Lifecycle` - a SQL aggregate over the lead's lifecycle events (``stage``, ``age``).
* :data:`LEAD_AGE` - days since the lead was created; :data:`DISTINCT_ASSETS` - distinct
  (kind, detail) content items.
* :class:`Derived` - a function of other blocks (e.g. e-mail clicks / opens).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import numpy as np
import pandas as pd

from leadscore.features import phrases as P
from leadscore.features.kinds import NEGATIVE_TYPES

if TYPE_CHECKING:
    from leadscore.features.builder import FeatureConfig


@dataclass(frozen=True)
class PerKind:
    """``sql`` aggregated per (lead, activity kind), then combined over the kinds ``kinds``
    selects - ``"all"`` (every activity), ``"hand_raisers"``, ``"not_negative"`` (neither a
    bounce nor an unsubscribe) or one kind's name - by ``reduce`` (``"sum"`` or ``"min"``;
    a lead with no such activity: 0 for a sum, empty for a minimum)."""

    sql: str
    kinds: str = "all"
    reduce: str = "sum"


@dataclass(frozen=True)
class Lifecycle:
    """A SQL aggregate over a lead's lifecycle events before as_of (columns ``stage``, ``age``)."""

    sql: str


@dataclass(frozen=True)
class LeadValue:
    """A per-lead value the builder provides by name (``lead_age_days``, ``n_distinct_assets``)."""

    name: str


LEAD_AGE = LeadValue("lead_age_days")
DISTINCT_ASSETS = LeadValue("n_distinct_assets")


@dataclass(frozen=True)
class Derived:
    """``fn(**inputs)``: each input a block above, as a pandas Series aligned with the rows."""

    fn: Callable[..., pd.Series]
    inputs: Mapping[str, Block]


Block = Union[PerKind, Lifecycle, LeadValue]


@dataclass(frozen=True)
class Engagement:
    """One engagement feature. ``description``: text, or a function of the feature config
    (a text naming the configured kinds). ``phrase``: how a lead's value reads
    (:mod:`leadscore.features.phrases`)."""

    name: str
    kind: str            # "count" | "numeric" | "flag"
    description: str | Callable[[FeatureConfig], str]
    compute: Block | Derived
    phrase: P.Phrase
    signal: str | None = None  # what a reason groups it under (an activity kind, "activity", "mql"); None: itself

    def describe(self, config: FeatureConfig) -> str:
        return self.description(config) if callable(self.description) else self.description

    def expand(self, config: FeatureConfig) -> tuple[Engagement, ...]:
        return (self,)


@dataclass(frozen=True)
class Family:
    """Features made per activity kind or per window by ``make(config)``; ``phrase_of(name)``
    words one of them (None: a name it does not make)."""

    make: Callable[[FeatureConfig], tuple[Engagement, ...]]
    phrase_of: Callable[[str], P.Phrase | None] = field(default=lambda name: None)
    signal_of: Callable[[str], str | None] = field(default=lambda name: None)

    def expand(self, config: FeatureConfig) -> tuple[Engagement, ...]:
        return self.make(config)


def window_sql(window: int) -> str:
    return f"count(*) FILTER (WHERE age < {window})::INTEGER"


def decay_sql(config: FeatureConfig) -> str:
    return f"sum(pow(0.5, age / {float(config.half_life_days)!r}))"


COUNT = "count(*)::INTEGER"
LAST = "min(age)"
DECAYED = "decayed"  # placeholder: the half-life comes from the config (see :func:`resolve_sql`)


def resolve_sql(sql: str, config: FeatureConfig) -> str:
    return decay_sql(config) if sql == DECAYED else sql


def count_name(kind: str, window: int) -> str:
    return f"n_{kind}_{window}d"


def recency_name(kind: str) -> str:
    return f"days_since_{kind}"


def _did(config: FeatureConfig, kind: str) -> str:
    return config.kinds[kind].split(" (")[0]


def _window_counts(config: FeatureConfig) -> tuple[Engagement, ...]:
    out = []
    for window in config.windows_days:
        out += [Engagement(count_name(kind, window), "count",
                           f"times the lead {_did(config, kind)} in the last {window} days",
                           PerKind(window_sql(window), kinds=kind), _kind_count(config, kind, window))
                for kind in config.kinds]
        out.append(Engagement(f"n_activities_{window}d", "count", f"activities of any kind in the last {window} days",
                              PerKind(window_sql(window)), _all_count(window)))
    return tuple(out)


def _kind_count(config: FeatureConfig, kind: str, window: int) -> P.Phrase:
    if kind in P.ACTIVITY_PHRASES:
        return P.kind_count(kind, window)
    description = config.kinds[kind]  # a declared kind: its description is a past-tense phrase
    return P.text(lambda v: (f"Never {description} in the last {window} days" if P.num(v) == 0
                             else f"{P.capitalised(description)} {P.times(P.num(v))} in the last {window} days"))


def _kind_recency(config: FeatureConfig, kind: str) -> P.Phrase:
    if kind in P.ACTIVITY_PHRASES:
        return P.kind_recency(kind)
    description = config.kinds[kind]
    return P.text(lambda v: f"Never {description}" if P.missing(v) else f"{P.capitalised(description)} {P.ago(P.num(v))}")


def words_of(config: FeatureConfig) -> P.Words:
    """The activity vocabulary of ``config``: the built-in kinds' words, a declared kind's
    description, and the configured hand-raisers."""
    did = dict(P.DID)
    did.update((kind, P.capitalised(d)) for kind, d in config.contract.kinds.items() if kind not in P.ACTIVITY_PHRASES)
    return P.Words(did, tuple(config.hand_raisers))


def _all_count(window: int) -> P.Phrase:
    return P.text(lambda v: f"No activity in the last {window} days" if P.num(v) == 0
                  else f"{P.plural(P.num(v), 'activity', 'activities')} in the last {window} days")


def _window_kind(name: str) -> str | None:
    """``demo_request`` for ``n_demo_request_30d``, ``activity`` for ``n_activities_30d``."""
    head, _, rest = name.partition("_")
    if head != "n" or not rest.endswith("d") or "_" not in rest:
        return None
    kind, _, window = rest[:-1].rpartition("_")
    if not window.isdigit() or not kind:
        return None
    return "activity" if kind == "activities" else kind


def _window_phrase(name: str) -> P.Phrase | None:
    kind = _window_kind(name)
    if kind is None:
        return None
    window = int(name.rpartition("_")[2][:-1])
    if kind == "activity":
        return _all_count(window)
    return P.kind_count(kind, window) if kind in P.ACTIVITY_PHRASES else None


def _recencies(config: FeatureConfig) -> tuple[Engagement, ...]:
    return tuple(Engagement(recency_name(kind), "numeric",
                            f"days since the lead last {_did(config, kind)} (empty if never)",
                            PerKind(LAST, kinds=kind, reduce="min"), _kind_recency(config, kind))
                 for kind in config.recency_kinds)


def _recency_phrase(name: str) -> P.Phrase | None:
    kind = name.removeprefix("days_since_")
    return P.kind_recency(kind) if name.startswith("days_since_") and kind in P.ACTIVITY_PHRASES else None


def _velocity(n7: pd.Series, n21: pd.Series) -> pd.Series:
    return (n7 + 1.0) / (n21 / 3.0 + 1.0)


def _per_30_days(opens: pd.Series, age: pd.Series) -> pd.Series:
    return 30.0 * opens / age.clip(lower=1.0)


def _click_to_open(clicks: pd.Series, opens: pd.Series) -> pd.Series:
    return (clicks / opens).where(opens > 0)


MQL = "count(*) FILTER (WHERE stage = 'mql')"
LAST_MQL = "min(age) FILTER (WHERE stage = 'mql')"

ENGAGEMENT: tuple[Engagement | Family, ...] = (
    Family(_window_counts, _window_phrase, lambda name: _window_kind(name)),
    Engagement("n_activities_total", "count", "activities of any kind since the lead was created", PerKind(COUNT),
               P.count("activity since the lead was created", "activities since the lead was created",
                       "No activity since the lead was created"),
               signal="activity"),
    Engagement("days_since_last_activity", "numeric", "days since the latest activity (empty if none)",
               PerKind(LAST, reduce="min"), P.last_activity,
               signal="activity"),
    Engagement("days_since_last_hand_raiser", "numeric",
               lambda c: "days since the latest hand-raiser action: " + ", ".join(c.hand_raisers) + " (empty if none)",
               PerKind(LAST, kinds="hand_raisers", reduce="min"), P.last_hand_raiser,
               signal="hand_raiser"),
    Family(_recencies, _recency_phrase,
           lambda name: name.removeprefix("days_since_") if name.startswith("days_since_") else None),
    Engagement("n_hand_raiser_total", "count", "hand-raiser actions since the lead was created",
               PerKind(COUNT, kinds="hand_raisers"), P.hand_raiser_total,
               signal="hand_raiser"),
    Engagement("n_hand_raiser_30d", "count", "hand-raiser actions in the last 30 days",
               PerKind(window_sql(30), kinds="hand_raisers"),
               P.count("hand-raiser action in the last 30 days", "hand-raiser actions in the last 30 days",
                       "No hand-raiser action in the last 30 days"), signal="hand_raiser"),
    Engagement("engagement_decayed", "numeric",
               lambda c: f"activities (bounces and unsubscribes excluded) weighted by 0.5^(age / {c.half_life_days:g} days)",
               PerKind(DECAYED, kinds="not_negative"), P.text(lambda v: f"Recency-weighted engagement {P.num(v):.1f}"),
               signal="activity"),
    Engagement("hand_raiser_decayed", "numeric",
               lambda c: f"hand-raiser actions weighted by 0.5^(age / {c.half_life_days:g} days)",
               PerKind(DECAYED, kinds="hand_raisers"), P.hand_raiser_decayed,
               signal="hand_raiser"),
    Engagement("velocity_7d_vs_21d", "numeric",
               "activity rate of the last 7 days over the weekly rate of the 21 days before, (n7 + 1) / (n21 / 3 + 1)",
               Derived(_velocity, {"n7": PerKind(window_sql(7)),
                                   "n21": PerKind("count(*) FILTER (WHERE age >= 7 AND age < 28)::INTEGER")}),
               P.text(lambda v: (f"Activity picking up: {P.num(v):.1f}x the weekly rate of the 3 weeks before"
                                 if P.num(v) > 1 else
                                 f"Activity slowing or flat: {P.num(v):.1f}x the weekly rate of the 3 weeks before"))),
    Engagement("n_distinct_kinds", "count", "distinct activity kinds so far", PerKind("1"),
               P.count("kind of activity so far", "different kinds of activity so far", "No activity so far")),
    Engagement("n_distinct_assets", "count",
               "distinct content items (activity kind, detail) so far: assets, posts, webinars", DISTINCT_ASSETS,
               P.count("content item engaged with", "distinct content items engaged with", "No content engaged with")),
    Engagement("email_opens_per_30d", "numeric", "e-mail opens per 30 days of lead age",
               Derived(_per_30_days, {"opens": PerKind(COUNT, kinds="email_open"), "age": LEAD_AGE}),
               P.text(lambda v: f"Opens {P.num(v):.1f} marketing e-mails a month"),
               signal="email_open"),
    Engagement("email_click_to_open", "numeric", "e-mail clicks / opens so far (empty if no opens)",
               Derived(_click_to_open, {"clicks": PerKind(COUNT, kinds="email_click"),
                                        "opens": PerKind(COUNT, kinds="email_open")}),
               P.text(lambda v: ("Has not opened a marketing e-mail" if P.missing(v)
                                 else f"Clicks in {100 * P.num(v):.0f} % of the e-mails opened")),
               signal="email_click"),
    Engagement("unsubscribed", "flag", "has unsubscribed from marketing e-mail",
               Derived(lambda n: n > 0, {"n": PerKind(COUNT, kinds="email_unsubscribe")}),
               P.flag("Unsubscribed from marketing e-mail", "Still subscribed to marketing e-mail"),
               signal="email_unsubscribe"),
    Engagement("n_email_bounce_total", "count", "e-mails to the lead that bounced", PerKind(COUNT, kinds="email_bounce"),
               P.count("bounced e-mail", "bounced e-mails", "No bounced e-mails"),
               signal="email_bounce"),
    Engagement("n_careers_views_total", "count", "careers-page visits (job seekers)",
               PerKind(COUNT, kinds="page_view_careers"),
               P.text(lambda v: ("No careers-page visits" if P.num(v) == 0
                                 else f"Visited the careers pages {P.times(P.num(v))}")),
               signal="page_view_careers"),
    Engagement("lead_age_days", "numeric", "days since the lead was created", LEAD_AGE,
               P.text(lambda v: f"Lead created {P.ago(P.num(v))}")),
    Engagement("n_mql", "count", "times the lead became an MQL", Lifecycle(MQL),
               P.text(lambda v: "Never an MQL before" if P.num(v) == 0 else f"Was an MQL {P.times(P.num(v))} before"),
               signal="mql"),
    Engagement("n_disqualified", "count", "times sales disqualified the lead",
               Lifecycle("count(*) FILTER (WHERE stage = 'disqualified')"),
               P.text(lambda v: ("Never disqualified by sales" if P.num(v) == 0
                                 else f"Disqualified by sales {P.times(P.num(v))}")),
               signal="disqualified"),
    Engagement("was_mql", "flag", "has been an MQL", Derived(lambda n: n.fillna(0) > 0, {"n": Lifecycle(MQL)}),
               P.flag("Has been an MQL before", "Never an MQL before"),
               signal="mql"),
    Engagement("recycled", "flag", "became an MQL again after a disqualification",
               # an MQL after the first disqualification (ages grow into the past)
               Derived(lambda last_mql, first_dq: last_mql < first_dq,
                       {"last_mql": Lifecycle(LAST_MQL),
                        "first_dq": Lifecycle("max(age) FILTER (WHERE stage = 'disqualified')")}),
               P.flag("Recycled: an MQL again after a disqualification", "Not recycled"),
               signal="disqualified"),
    Engagement("days_since_last_mql", "numeric", "days since the latest MQL (empty if never)", Lifecycle(LAST_MQL),
               P.days_or("Became an MQL {ago}", "Never an MQL"),
               signal="mql"),
    Engagement("days_since_disqualified", "numeric", "days since the latest disqualification (empty if never)",
               Lifecycle("min(age) FILTER (WHERE stage = 'disqualified')"),
               P.days_or("Disqualified by sales {ago}", "Never disqualified by sales"),
               signal="disqualified"),
)


def engagement_features(config: FeatureConfig) -> tuple[Engagement, ...]:
    """Every engagement feature of ``config``, in catalogue order."""
    return tuple(f for entry in ENGAGEMENT for f in entry.expand(config))


def blocks(features) -> list[Block]:
    """The distinct blocks the features need (their own and their derived inputs'), in order."""
    out: dict[Block, None] = {}
    for f in features:
        inputs = f.compute.inputs.values() if isinstance(f.compute, Derived) else (f.compute,)
        out.update(dict.fromkeys(inputs))
    return list(out)


def kind_mask(selector: str, kinds: list, config: FeatureConfig) -> np.ndarray | None:
    """Which of ``kinds`` (activity kind names, possibly None) a :class:`PerKind` selector takes;
    None: all of them."""
    if selector == "all":
        return None
    if selector == "hand_raisers":
        return np.isin(kinds, config.hand_raisers)
    if selector == "not_negative":  # as SQL's "k NOT IN (...)" would: a NULL kind is neither
        return np.array([k is not None and k not in NEGATIVE_TYPES for k in kinds])
    return np.array([k == selector for k in kinds])


@functools.lru_cache(maxsize=4096)
def signal_of(name: str) -> str:
    """The signal a reason groups a feature under: its entry's ``signal``, the activity kind of
    a per-kind feature (``n_demo_request_7d``, ``days_since_demo_request`` -> ``demo_request``;
    ``n_activities_7d`` -> ``activity``), else the feature itself."""
    for entry in ENGAGEMENT:
        if isinstance(entry, Engagement) and entry.name == name:
            return entry.signal or name
    for entry in ENGAGEMENT:
        if isinstance(entry, Family) and (signal := entry.signal_of(name)) is not None:
            return signal
    return name


@functools.lru_cache(maxsize=4096)
def phrase_of(name: str) -> P.Phrase | None:
    """The built-in phrase of an engagement feature of the default vocabulary (None: not one)."""
    for entry in ENGAGEMENT:
        if isinstance(entry, Engagement):
            if entry.name == name:
                return entry.phrase
        elif (phrase := entry.phrase_of(name)) is not None:
            return phrase
    return None
