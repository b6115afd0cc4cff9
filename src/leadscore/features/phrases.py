"""How features read in words: the helpers every feature's phrase is made of.

A phrase turns a lead's value into a sentence ("Requested a demo 3 days ago"). It gets the
value, the lead's other feature values (``row``, or None) and the activity vocabulary
(:class:`Words`: the built-in kinds plus what a source declares), so one phrase serves any
source. Each feature's own phrase sits with its definition in :mod:`leadscore.features.registry`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from leadscore.features.kinds import HAND_RAISER_TYPES

# Activity kind -> (what the lead did, as a sentence start; the noun for "no ... in the last N days").
ACTIVITY_PHRASES: dict[str, tuple[str, str]] = {
    "page_view_pricing": ("Visited the pricing page", "pricing-page visits"),
    "page_view_product": ("Viewed product pages", "product-page views"),
    "page_view_blog": ("Read blog posts", "blog reads"),
    "page_view_careers": ("Visited the careers pages", "careers-page visits"),
    "page_view_docs": ("Read the product documentation", "documentation reads"),
    "content_download": ("Downloaded content", "content downloads"),
    "webinar_registration": ("Registered for a webinar", "webinar registrations"),
    "webinar_attendance": ("Attended a webinar", "webinar attendances"),
    "email_open": ("Opened a marketing e-mail", "e-mail opens"),
    "email_click": ("Clicked a link in a marketing e-mail", "e-mail clicks"),
    "email_unsubscribe": ("Unsubscribed from marketing e-mail", "unsubscribes"),
    "email_bounce": ("Had a marketing e-mail bounce", "bounced e-mails"),
    "trial_signup": ("Signed up for a trial", "trial sign-ups"),
    "demo_request": ("Requested a demo", "demo requests"),
    "contact_sales": ("Asked sales to get in touch", "contact-sales requests"),
    "chat": ("Chatted on the website", "website chats"),
    "form_submit": ("Submitted a web form", "form submissions"),
}
DID = {kind: phrases[0] for kind, phrases in ACTIVITY_PHRASES.items()}
HAND_RAISER_NAMES = {"demo_request": "demo", "contact_sales": "contact sales", "trial_signup": "trial",
                     "page_view_pricing": "pricing"}


@dataclass(frozen=True)
class Words:
    """The activity vocabulary phrases name: kind -> what the lead did ("Requested a demo"), and
    the hand-raiser kinds. The built-in one by default; :func:`words_of` adds a source's kinds."""

    did: Mapping[str, str] = field(default_factory=lambda: dict(DID))
    raisers: tuple[str, ...] = HAND_RAISER_TYPES

    def raisers_text(self) -> str:
        return ", ".join(HAND_RAISER_NAMES.get(k, k.replace("_", " ")) for k in self.raisers)


BUILT_IN_WORDS = Words()

Phrase = Callable[[object, "Mapping | None", Words], str]   # (value, row, words) -> text


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def num(value) -> float:
    return float(value)


def whole(n: float) -> int | str:
    """A count or age as a reader takes it: a whole number, or (a value no CRM records, such as
    1e308 sent to the server) three significant digits rather than 309 of them."""
    return int(round(n)) if abs(n) < 1e15 else f"{n:.3g}"


def times(n: float) -> str:
    n = whole(n)
    return "once" if n == 1 else f"{n} times"


def ago(days: float) -> str:
    d = whole(days)
    return "today" if d == 0 else "1 day ago" if d == 1 else f"{d} days ago"


def plural(n: float, one: str, many: str) -> str:
    n = whole(n)
    return f"{n} {one if n == 1 else many}"


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- phrase makers: (value, row, words) -> text ------------------------------------------------

def text(fmt: Callable[[object], str]) -> Phrase:
    """A phrase of the value alone."""
    return lambda v, row=None, words=BUILT_IN_WORDS: fmt(v)


def count(one: str, many: str, zero: str) -> Phrase:
    return text(lambda v: zero if num(v) == 0 else plural(num(v), one, many))


def flag(yes: str, no: str) -> Phrase:
    return text(lambda v: yes if num(v) else no)


def days_or(fmt: str, never: str) -> Phrase:
    return text(lambda v: never if missing(v) else fmt.format(ago=ago(num(v))))


def kind_count(kind: str, window: int) -> Phrase:
    """'Requested a demo twice in the last 30 days' / 'No demo requests in the last 30 days'."""
    did, noun = ACTIVITY_PHRASES[kind]
    return text(lambda v: (f"No {noun} in the last {window} days" if num(v) == 0
                           else f"{did} {times(num(v))} in the last {window} days"))


def kind_recency(kind: str) -> Phrase:
    did, _ = ACTIVITY_PHRASES[kind]
    return text(lambda v: f"Never {lower_first(did)}" if missing(v) else f"{did} {ago(num(v))}")


def reads_row(phrase):
    """Marks a phrase that reads the lead's other feature values (``row``), not its value alone;
    the others are the same text for the same value, and explanations reuse their text."""
    phrase.reads_row = True
    return phrase


def phrase_reads_row(phrase) -> bool:
    while isinstance(phrase, functools.partial):
        phrase = phrase.func
    return getattr(phrase, "reads_row", False)


def latest_kind(days: float, row: Mapping | None, kinds) -> str | None:
    """Which activity kind happened ``days`` ago, from the row's ``days_since_<kind>`` features."""
    if row is None:
        return None
    for kind in kinds:
        other = row.get(f"days_since_{kind}")
        if not missing(other) and abs(float(other) - days) <= 1e-9 * max(1.0, abs(days)):
            return kind
    return None


@reads_row
def last_activity(v, row=None, words: Words = BUILT_IN_WORDS) -> str:
    if missing(v):
        return "No activity yet"
    kind = latest_kind(num(v), row, words.did)
    return f"Last active {ago(num(v))}" + (f" ({lower_first(words.did[kind])})" if kind else "")


@reads_row
def last_hand_raiser(v, row=None, words: Words = BUILT_IN_WORDS) -> str:
    """Names the action when the row tells which hand-raiser it was: 'Requested a demo today
    (the latest hand-raiser action)'."""
    if missing(v):
        return f"No hand-raiser action ({words.raisers_text()}) yet"
    kind = latest_kind(num(v), row, [k for k in words.raisers if k in words.did])
    if kind:
        return f"{words.did[kind]} {ago(num(v))} (the latest hand-raiser action)"
    return f"Last hand-raiser action ({words.raisers_text()}) {ago(num(v))}"


@reads_row
def hand_raiser_decayed(v, row=None, words: Words = BUILT_IN_WORDS) -> str:
    out = f"Recency-weighted hand-raiser actions {num(v):.2f}"
    last = None if row is None else row.get("days_since_last_hand_raiser")
    if num(v) > 0 and not missing(last):
        latest = last_hand_raiser(last, row, words)
        out += f" (latest: {lower_first(latest)})".replace(" (the latest hand-raiser action)", "")
    return out


def hand_raiser_total(v, row=None, words: Words = BUILT_IN_WORDS) -> str:
    if num(v) == 0:
        return f"No hand-raiser action ({words.raisers_text()}) so far"
    return plural(num(v), "hand-raiser action so far", "hand-raiser actions so far")
