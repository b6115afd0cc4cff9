"""Stage alerts: which leads changed tier since the previous scoring run, and a webhook for them.

Practice is to notify sales the moment a lead becomes an SQL. The nightly job cannot see a
moment, but it can compare two of its own outputs: the previous run's rows (one per lead open
then) with this run's (one per lead open now). :func:`stage_transitions` does that comparison;
:func:`deliver` POSTs the result to a webhook. The comparison is pure (frames in, frame out);
only :func:`deliver` and :func:`write_undelivered` touch the outside world.

Tiers are ranked ``lead`` < ``MQL`` < ``SQL``; a lead missing from the previous run (created
since, or re-opened) comes from ``"new"``, ranked below ``lead``. A lead in the current run is
a transition when its rank changed in a way sales acts on:

=================  ================================================  =====================
``change``         when                                              ``from_tier`` -> ``to_tier``
=================  ================================================  =====================
``entered SQL``    the rank rose to SQL                              new / lead / MQL -> SQL
``entered MQL``    the rank rose to MQL                              new / lead -> MQL
``dropped to MQL`` the rank fell from SQL to MQL                     SQL -> MQL
``dropped out``    the rank fell from MQL or SQL to lead             MQL / SQL -> lead
=================  ================================================  =====================

Not transitions: a lead whose tier did not change; a new lead that arrives at ``lead``; and a
lead present in the previous run but absent now - it left the open population because it became
a real SQL in the CRM or was closed, which sales already knows about (the CRM did it).

Each row carries the current run's ``as_of``, the previous run's ``as_of`` (``previous_as_of``,
the same for every row: the window the change happened in; NaT only when the previous run was
empty), ``p_sql`` and ``p_won`` before (NaN for new leads) and now (a CRM without an SQL stage
tiers on ``p_won``; the other is empty), the score, the current reasons in words, and the
model version. Rows are ordered by change (the order above) then ``lead_id``, so the
same two inputs always give the same frame - and the same bytes once written.

Delivery (:func:`deliver`): the transitions are POSTed as JSON in batches of
``WebhookConfig.batch_size``::

    {"meta": {"as_of": ..., "model_version": ..., <caller's meta>, "batch": i, "batches": n,
              "rows": k, "total_rows": N, "batch_key": "<sha256 of this batch's transitions>"},
     "transitions": [{"lead_id": ..., "as_of": "2025-06-08T00:00:00+00:00", ...}, ...]}

Timestamps are ISO 8601 strings and NaN/NaT are ``null``. ``batch_key`` (also sent as the
``Idempotency-Key`` header) lets a receiver drop a batch it already has: a retry after a lost
response re-sends the same bytes. Connection errors, timeouts, HTTP 5xx and 429 are retried
``retries`` times, waiting ``backoff_seconds * 2**attempt`` (1, 2, 4 ... s) between attempts;
other 4xx and redirects (3xx, never followed: a POST must not turn into a GET) fail the batch
at once. Every batch is attempted whatever happened to the ones before, so the worst case
takes about ``batches * ((retries + 1) * timeout_seconds + backoff_seconds * (2**retries - 1))``.

Each attempt has a hard deadline (``timeout_seconds`` for connecting, sending and the whole
answer). Plain ``http://`` is refused unless the host is this machine or ``allow_http`` is set.
With a secret in the environment (``LEADSCORE_WEBHOOK_SECRET``, or the variable ``secret_env``
names), every request carries ``X-Leadscore-Signature: t=<unix seconds>,v1=<hex>``, the
HMAC-SHA256 of ``"<t>." + body`` (:func:`signature`); messages never show the URL's credentials
or query string.

Nothing is dropped silently: every row ends up counted in ``DeliveryReport.delivered`` or
``DeliveryReport.failed``; each failed batch adds a line to ``errors`` naming the batch, the HTTP
status or exception, and the URL; and ``DeliveryReport.failed_rows`` carries the undelivered
transitions themselves, which :func:`write_undelivered` writes to a file for a later re-send.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from leadscore.io import jsonable
from leadscore.modeling.cutoffs import TIERS
from leadscore.settings import Positive, Section, Whole

TIER_RANK = {tier: rank for rank, tier in enumerate(TIERS)}
NEW = "new"  # from_tier of a lead absent from the previous run
CHANGES = ("entered SQL", "entered MQL", "dropped to MQL", "dropped out")  # also the output order
TRANSITION_COLUMNS = ("lead_id", "as_of", "previous_as_of", "from_tier", "to_tier", "change", "p_sql_before",
                      "p_sql", "p_won_before", "p_won", "score", "reasons", "change_reasons", "model_version")
PREVIOUS_REQUIRED = ("lead_id", "as_of", "tier", "p_sql")
CURRENT_REQUIRED = ("lead_id", "as_of", "tier", "p_sql", "score", "reasons", "model_version")
OPTIONAL = ("p_won", "score", "change_reasons", "model_version")  # carried when the runs have them


# --------------------------------------------------------------------------------------------
# the pure core: two runs in, transitions out


def previous_run(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    """A previous run's output checked as :func:`stage_transitions` checks it (lead_id, as_of,
    tier, p_sql; score and model_version carried when present), and its as_of."""
    return _checked(frame, "previous", PREVIOUS_REQUIRED)


def _checked(frame: pd.DataFrame, name: str, required: tuple[str, ...]) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    """``frame``'s required columns with lead_id as str and as_of in UTC, and its run time."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} run: missing required column(s) {', '.join(missing)} "
                         f"(has: {', '.join(map(str, frame.columns)) or 'none'})")
    out = frame.loc[:, list(required) + [c for c in OPTIONAL if c in frame.columns and c not in required]].copy()
    if out["lead_id"].isna().any():
        raise ValueError(f"{name} run: {int(out['lead_id'].isna().sum()):,} row(s) without a lead_id")
    out["lead_id"] = out["lead_id"].astype(str)
    dup = out["lead_id"][out["lead_id"].duplicated()].unique()
    if len(dup):
        shown = ", ".join(repr(x) for x in sorted(dup)[:5])
        raise ValueError(f"{name} run: {len(dup):,} duplicate lead_id(s), e.g. {shown}; "
                         "a scoring run has one row per lead")
    bad = out["tier"][~out["tier"].isin(list(TIER_RANK))]
    if len(bad):
        shown = ", ".join(repr(None if pd.isna(x) else x) for x in pd.unique(bad)[:5])
        raise ValueError(f"{name} run: unknown tier value(s) {shown} in {len(bad):,} row(s), e.g. lead "
                         f"{out.at[bad.index[0], 'lead_id']!r}; expected one of {', '.join(TIER_RANK)}")
    try:
        out["as_of"] = pd.to_datetime(out["as_of"], utc=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} run: as_of is not a timestamp: {exc}") from exc
    if out["as_of"].isna().any():
        raise ValueError(f"{name} run: {int(out['as_of'].isna().sum()):,} row(s) without an as_of")
    runs = out["as_of"].unique()
    if len(runs) > 1:
        raise ValueError(f"{name} run: rows from {len(runs)} different as_of values ({min(runs)} ... {max(runs)}); "
                         "compare the outputs of two single runs")
    return out, (pd.Timestamp(runs[0]) if len(runs) else None)


def stage_transitions(previous: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Leads whose tier changed in a way sales acts on between two scoring runs.

    ``previous`` and ``current`` are two runs' outputs (one row per open lead; ``previous``
    needs lead_id, as_of, tier, p_sql; ``current`` also score, reasons, model_version). Returns
    one row per transition with columns :data:`TRANSITION_COLUMNS` - ``change`` is one of
    :data:`CHANGES`, ``from_tier`` is ``"new"`` for leads absent from ``previous`` - ordered by
    change then lead_id (semantics: module docstring).

    Raises ``ValueError`` naming the frame for missing columns, null or duplicate lead_ids,
    unknown tiers, or rows from several runs, and when ``previous`` is later than ``current``.
    """
    prev, prev_at = _checked(previous, "previous", PREVIOUS_REQUIRED)
    cur, cur_at = _checked(current, "current", CURRENT_REQUIRED)
    if prev_at is not None and cur_at is not None and prev_at > cur_at:
        raise ValueError(f"the previous run (as_of {prev_at.isoformat()}) is later than the current run "
                         f"(as_of {cur_at.isoformat()}); pass the older output as previous")

    for frame in (prev, cur):  # runs written before p_won was carried: empty
        if "p_won" not in frame:
            frame["p_won"] = np.nan
    if "change_reasons" not in cur:   # runs written before change reasons, or without --previous
        cur["change_reasons"] = None
    before = prev.loc[:, ["lead_id", "tier", "p_sql", "p_won"]].rename(
        columns={"tier": "from_tier", "p_sql": "p_sql_before", "p_won": "p_won_before"})
    both = cur.merge(before, on="lead_id", how="left", validate="one_to_one", sort=False)
    both["from_tier"] = both["from_tier"].astype(object).where(both["from_tier"].notna(), NEW)
    for col in ("p_sql_before", "p_won_before", "p_won"):
        both[col] = pd.to_numeric(both[col], errors="coerce").astype("float64")
    rank_from = both["from_tier"].map({NEW: -1, **TIER_RANK}).to_numpy()
    rank_to = both["tier"].map(TIER_RANK).to_numpy()
    change = np.select(
        [(rank_to > rank_from) & (rank_to == 2), (rank_to > rank_from) & (rank_to == 1),
         (rank_to < rank_from) & (rank_to == 1), (rank_to < rank_from) & (rank_to == 0)],
        list(CHANGES), default="")
    both["change"] = change
    out = both.loc[change != ""].rename(columns={"tier": "to_tier"})
    out["previous_as_of"] = pd.Series(prev_at if prev_at is not None else pd.NaT, index=out.index,
                                      dtype=cur["as_of"].dtype)
    out["from_tier"] = out["from_tier"].astype(str)
    out["to_tier"] = out["to_tier"].astype(str)
    out["change"] = out["change"].astype(str)
    order = out["change"].map({c: i for i, c in enumerate(CHANGES)})
    out = (out.assign(_order=order).sort_values(["_order", "lead_id"], kind="mergesort")
           .loc[:, list(TRANSITION_COLUMNS)].reset_index(drop=True))
    return out


# --------------------------------------------------------------------------------------------
# the I/O edge: POST the transitions to a webhook


class WebhookConfig(Section):
    """Where and how to POST transitions (the ``webhook`` section of ``pipelines/score.yaml``).

    ``retries`` is the number of retries after the first attempt (0: no retry) and
    ``backoff_seconds`` the first wait (0: retry at once); the other numbers must be positive.
    """

    url: str
    batch_size: Whole = 500
    timeout_seconds: Positive = 10.0    # the whole attempt: connect, send, the complete answer
    retries: Annotated[int, Field(ge=0)] = 3
    backoff_seconds: Annotated[float, Field(ge=0)] = 1.0
    allow_http: bool = False            # plain http:// to a host that is not this machine
    secret_env: str = "LEADSCORE_WEBHOOK_SECRET"   # the variable holding the signing secret

    @model_validator(mode="after")
    def _web_url(self):
        parts = urllib.parse.urlsplit(self.url.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url must be an http:// or https:// URL with a host, got "
                             f"{_display_url(self.url)!r}")
        if parts.scheme.lower() == "http" and not self.allow_http and not _loopback(parts.hostname):
            raise ValueError(f"webhook url {_display_url(self.url)!r}: use https:// - plain http sends the "
                             "transitions (and any token in the URL) in clear; set allow_http: true only for a "
                             "trusted network")
        object.__setattr__(self, "url", self.url.strip())
        return self

    @property
    def display_url(self) -> str:
        """The URL without credentials or query string: what messages and logs show."""
        return _display_url(self.url)

    def secret(self) -> bytes | None:
        value = os.environ.get(self.secret_env, "")
        return value.encode() if value else None


@dataclass(frozen=True, eq=False)
class DeliveryReport:
    """What :func:`deliver` did. ``delivered + failed`` is always the number of transitions.

    ``attempts`` counts HTTP requests (first tries and retries); ``errors`` has one line per
    failed batch; ``failed_rows`` holds the undelivered transitions (the same columns as the
    input) so the caller can keep them - see :func:`write_undelivered`.
    """

    url: str
    delivered: int = 0
    failed: int = 0
    batches: int = 0
    attempts: int = 0
    retried: int = 0
    errors: tuple[str, ...] = ()
    failed_rows: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.errors

    @property
    def total(self) -> int:
        return self.delivered + self.failed

    def lines(self) -> list[str]:
        """Human-readable summary lines, then one line per error."""
        failed_batches = len(self.errors)
        head = (f"webhook {self.url}: delivered {self.delivered:,} of {_n(self.total, 'transition')} in "
                f"{self.batches - failed_batches:,} of {_n(self.batches, 'batch', 'batches')} "
                f"({_n(self.attempts, 'request')}" + (f", {_n(self.retried, 'retry', 'retries')}" if self.retried else "")
                + ")")
        if self.ok:
            return [head]
        return [head, f"{_n(self.failed, 'transition')} in {_n(failed_batches, 'batch', 'batches')} NOT delivered:",
                *(f"  {e}" for e in self.errors)]


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else many or one + 's'}"


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _display_url(url: str) -> str:
    """The URL without a password or query string (webhook secrets often live there)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "..." if parts.query else "", ""))


def _records(frame: pd.DataFrame) -> list[dict]:
    columns = [str(c) for c in frame.columns]
    return [{c: jsonable(v) for c, v in zip(columns, row)} for row in frame.itertuples(index=False, name=None)]


def _uniform(frame: pd.DataFrame, column: str):
    """The single value of ``column`` when every row has the same one, else None."""
    if column not in frame.columns or frame.empty:
        return None
    values = frame[column].dropna().unique()
    return jsonable(values[0]) if len(values) == 1 and frame[column].notna().all() else None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects become errors: urllib would turn a redirected POST into a bodiless GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _describe(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """(human-readable error, retryable?) for an exception raised by one request."""
    if isinstance(exc, urllib.error.HTTPError):
        reason = f" {exc.reason}" if exc.reason else ""
        if 300 <= exc.code < 400:
            where = exc.headers.get("Location") if exc.headers else None
            return (f"HTTP {exc.code}{reason} (redirect{' to ' + _display_url(where) if where else ''} not followed; "
                    "set the webhook URL to the final address)"), False
        return f"HTTP {exc.code}{reason}", exc.code >= 500 or exc.code == 429
    if isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        if isinstance(inner, TimeoutError):
            return f"timed out after {timeout:g} s", True
        if isinstance(inner, BaseException):
            return f"connection error: {type(inner).__name__}: {inner}", True
        return f"connection error: {inner}", True
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s", True
    if isinstance(exc, ValueError):  # e.g. http.client.InvalidURL: retrying cannot help
        return f"invalid request: {type(exc).__name__}: {exc}", False
    return f"connection error: {type(exc).__name__}: {exc}", True


def _runs(messages: list[str]) -> str:
    """``a, a, b`` -> ``a (x2), b``: repeated attempt errors, compactly."""
    out: list[list] = []
    for m in messages:
        if out and out[-1][0] == m:
            out[-1][1] += 1
        else:
            out.append([m, 1])
    return ", ".join(m if k == 1 else f"{m} (x{k})" for m, k in out)


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Leadscore-Signature`` header: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>." + body>`` (as Stripe signs its webhooks). A receiver recomputes it with the shared
    secret, compares in constant time, and refuses a timestamp older than a few minutes."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _post(opener, url: str, body: bytes, key: str, timeout: float, secret: bytes | None = None) -> None:
    """POST once; return on 2xx, raise otherwise (urllib raises HTTPError for >= 300 here).
    ``timeout`` bounds the whole attempt, however slowly the receiver answers."""
    headers = {"Content-Type": "application/json", "Accept": "application/json, */*;q=0.1",
               "User-Agent": "leadscore-alerts/1", "Idempotency-Key": key}
    if secret is not None:
        headers["X-Leadscore-Signature"] = signature(secret, body, int(time.time()))
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    outcome: list = []

    def attempt():
        try:
            with opener.open(request, timeout=timeout) as response:
                response.read()
                outcome.append(response.status)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)   # abandoned, not waited for, past the deadline
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise TimeoutError(f"no complete answer within {timeout:g} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    status = outcome[0]
    if not 200 <= status < 300:  # 1xx-only answers and the like: not an acceptance
        raise urllib.error.HTTPError(url, status, "unexpected status", None, None)


def deliver(transitions: pd.DataFrame, config: WebhookConfig, meta: dict | None = None,
            sleep: Callable[[float], object] = time.sleep) -> DeliveryReport:
    """POST ``transitions`` to ``config.url`` in JSON batches; never raises for delivery failures.

    ``meta`` (e.g. ``{"as_of": ..., "model_version": ..., "run_id": ...}``) goes into every
    batch's ``meta`` next to ``batch``/``batches``/``rows``/``total_rows``/``batch_key``;
    ``as_of`` and ``model_version`` default to the transitions' own when they have one value.
    ``sleep`` is called with each back-off wait (inject a recorder in tests). Payload, retry
    policy and the report: module docstring. An empty frame sends nothing and is ok.
    """
    if not isinstance(transitions, pd.DataFrame):
        raise TypeError(f"transitions: expected a pandas DataFrame, got {type(transitions).__name__}")
    url, shown, secret = config.url, config.display_url, config.secret()
    total = len(transitions)
    frame = transitions.reset_index(drop=True)
    starts = list(range(0, total, config.batch_size))
    n = len(starts)
    base = {k: v for k, v in (("as_of", _uniform(frame, "as_of")),
                              ("model_version", _uniform(frame, "model_version"))) if v is not None}
    base.update({str(k): jsonable(v) for k, v in (meta or {}).items()})
    opener = urllib.request.build_opener(_NoRedirect)

    delivered = attempts = retried = 0
    errors: list[str] = []
    failed_parts: list[pd.DataFrame] = []
    for i, start in enumerate(starts, 1):
        part = frame.iloc[start:start + config.batch_size]
        records = _records(part)
        key = hashlib.sha256(json.dumps(records, sort_keys=True, ensure_ascii=False, allow_nan=False)
                             .encode("utf-8")).hexdigest()
        payload = {"meta": {**base, "batch": i, "batches": n, "rows": len(part), "total_rows": total,
                            "batch_key": key},
                   "transitions": records}
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        history: list[str] = []  # one message per failed attempt
        for attempt in range(config.retries + 1):
            if attempt:
                retried += 1
                sleep(config.backoff_seconds * 2 ** (attempt - 1))
            attempts += 1
            try:
                _post(opener, url, body, key, config.timeout_seconds, secret)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                message, retryable = _describe(exc, config.timeout_seconds)
                history.append(message)
                if not retryable:
                    break
            else:
                delivered += len(part)
                history = []
                break
        if history:
            tries = _n(len(history), "attempt")
            why = f"not retryable, {tries}" if not retryable else f"gave up after {tries}"
            earlier = f"; earlier: {_runs(history[:-1])}" if len(history) > 1 else ""
            errors.append(f"batch {i}/{n} ({_n(len(part), 'transition')}) to POST {shown}: {history[-1]} "
                          f"({why}{earlier})")
            failed_parts.append(part)
    failed_rows = pd.concat(failed_parts, ignore_index=True) if failed_parts else frame.iloc[0:0]
    return DeliveryReport(url=shown, delivered=delivered, failed=total - delivered, batches=n, attempts=attempts,
                          retried=retried, errors=tuple(errors), failed_rows=failed_rows)


def write_undelivered(undelivered: DeliveryReport | pd.DataFrame, path: Path | str) -> Path | None:
    """Write the transitions a delivery could not hand over (Parquet, or CSV by suffix), atomically.

    Takes a :class:`DeliveryReport` (its ``failed_rows``) or the frame itself; returns the path,
    or None - writing nothing - when every transition was delivered. Re-send the file later with
    ``deliver(pd.read_parquet(path), config)``.
    """
    from leadscore.io import write_table

    rows = undelivered.failed_rows if isinstance(undelivered, DeliveryReport) else undelivered
    if rows is None or len(rows) == 0:
        return None
    return write_table(rows, path)
