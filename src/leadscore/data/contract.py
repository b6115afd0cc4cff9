"""The data contract: the three CRM tables every stage reads, and their validation.

Tables (Parquet or CSV, one file each in a data directory):

* ``leads``      one row per lead: id, creation time, fit attributes.
* ``activities`` one row per tracked action of a lead (page views, downloads, e-mails ...).
* ``lifecycle``  the stage history of a lead (mql, sql, disqualified, opportunity, won, lost).

Validation is split in two: per-table column rules are declared as pandera schemas;
rules across tables (unknown leads, events before the lead existed) are set operations
in pandas. Every failure is a :class:`Violation` naming table, column, rule and rows, so
that a caller can report it and quarantine exactly those rows (rows in = clean + quarantined).
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa_types

# pandera imports pyspark.pandas when pyspark is installed (the [spark] extra) - at import and
# again when it registers its backends on the first validation - and pyspark then warns on
# every command that it does not support pandas 3 yet. leadscore's Spark path passes Arrow
# batches to the pyfunc and does not use pyspark.pandas, so that one warning is silenced for
# the process (a filter around the import alone misses the second, lazy import).
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
import pandera.pandas as pa  # noqa: E402

# ---------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------

ACTIVITY_TYPES: dict[str, str] = {
    "page_view_pricing": "viewed a pricing page",
    "page_view_product": "viewed a product page",
    "page_view_blog": "read a blog post (detail: post id)",
    "page_view_careers": "viewed the careers pages (job seekers, rarely buyers)",
    "page_view_docs": "read product documentation",
    "content_download": "downloaded gated content: e-book, guide, case study (detail: asset id)",
    "webinar_registration": "registered for a webinar (detail: webinar id)",
    "webinar_attendance": "attended a webinar (detail: webinar id)",
    "email_open": "opened a marketing e-mail",
    "email_click": "clicked a link in a marketing e-mail",
    "email_unsubscribe": "unsubscribed from marketing e-mail",
    "email_bounce": "a marketing e-mail to the lead bounced",
    "trial_signup": "signed up for a product trial",
    "demo_request": "requested a demo",
    "contact_sales": "asked to be contacted by sales",
    "chat": "started a chat conversation on the website",
    "form_submit": "submitted a web form (e.g. the sign-up that created the lead)",
}

STAGES: dict[str, str] = {
    "mql": "marketing qualified: handed to sales",
    "sql": "sales qualified: sales accepted the lead as sales-ready",
    "disqualified": "sales rejected the MQL (back to nurture, or for good)",
    "opportunity": "a deal was opened (amount = expected deal value)",
    "won": "the deal closed as won (amount = deal value)",
    "lost": "the deal (or the SQL) closed as lost",
}

SENIORITY_LEVELS = ("c_level", "vp", "director", "manager", "individual_contributor", "student")
DEPARTMENTS = (
    "executive", "sales", "marketing", "it", "engineering", "product",
    "finance", "operations", "hr", "other",
)
EMAIL_DOMAIN_TYPES = ("corporate", "free", "student", "competitor")

TABLES = ("leads", "activities", "lifecycle")
HISTORY = "attribute_history"  # optional fourth table: lead attributes as they changed over time
OTHER_KIND = "other"  # where a source maps the activity names it does not know (unknown_kinds: other)

# The lead attributes the contract names (fit attributes); sources may declare more.
FIT_ATTRIBUTE_COLUMNS = ("job_title", "seniority", "department", "company_size", "industry", "country",
                         "lead_source", "email_domain_type")
IDENTIFIER = r"[a-z][a-z0-9_]{0,62}"
# Built-in categorical attributes (and features derived from them) whose codes a source may label.
LABELLED_ATTRIBUTES = ("seniority", "department", "company_size_band", "industry", "country", "region", "lead_source")
# Timestamps before this are placeholders (0001-01-01, Excel's 1900-01-01, epoch 0), not CRM
# events; a source YAML sets its own with ``earliest_date``.
EARLIEST_PLAUSIBLE = "1990-01-01"
# Stages that need the lead to have been sales qualified first: when a lead has an sql event,
# an opportunity or a win dated before its first one is out of order.
AFTER_SQL = ("opportunity", "won")


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str  # "string" | "timestamp" | "integer" | "number"
    required: bool = True  # the column must be present
    nullable: bool = False
    description: str = ""


COLUMNS: dict[str, tuple[ColumnSpec, ...]] = {
    "leads": (
        ColumnSpec("lead_id", "string", description="unique lead identifier"),
        ColumnSpec("created_at", "timestamp", description="when the lead was created (UTC)"),
        ColumnSpec("job_title", "string", nullable=True, description="free-text job title"),
        ColumnSpec("seniority", "string", nullable=True, description="one of SENIORITY_LEVELS"),
        ColumnSpec("department", "string", nullable=True, description="one of DEPARTMENTS"),
        ColumnSpec("company_size", "integer", nullable=True, description="employees (>= 1)"),
        ColumnSpec("industry", "string", nullable=True, description="industry name"),
        ColumnSpec("country", "string", nullable=True, description="ISO 3166-1 alpha-2 code"),
        ColumnSpec("lead_source", "string", nullable=True, description="acquisition channel"),
        ColumnSpec("email_domain_type", "string", nullable=True, description="one of EMAIL_DOMAIN_TYPES"),
    ),
    "activities": (
        ColumnSpec("lead_id", "string", description="the lead that acted"),
        ColumnSpec("occurred_at", "timestamp", description="when (UTC)"),
        ColumnSpec("activity_type", "string", description="one of ACTIVITY_TYPES"),
        ColumnSpec("detail", "string", required=False, nullable=True, description="asset / page / webinar id"),
    ),
    "lifecycle": (
        ColumnSpec("lead_id", "string", description="the lead"),
        ColumnSpec("stage", "string", description="one of STAGES"),
        ColumnSpec("occurred_at", "timestamp", description="when the lead entered the stage (UTC)"),
        ColumnSpec("amount", "number", required=False, nullable=True, description="deal value (>= 0)"),
    ),
}

HISTORY_COLUMNS = (
    ColumnSpec("lead_id", "string", description="the lead"),
    ColumnSpec("attribute", "string", description="a lead attribute read as of T from this table"),
    ColumnSpec("value", "string", nullable=True, description="its value from valid_from on (empty: unset)"),
    ColumnSpec("valid_from", "timestamp", description="when the attribute took the value (UTC)"),
)

# The column that identifies a table's rows in messages.
ROW_KEY = {"leads": "lead_id", "activities": "lead_id", "lifecycle": "lead_id", HISTORY: "lead_id"}
TIME_COLUMN = {"leads": "created_at", "activities": "occurred_at", "lifecycle": "occurred_at", HISTORY: "valid_from"}
# Where a mapped source's row came from (file and 0-based row in it); carried through validation
# into the quarantine, never into the clean tables.
SOURCE_FILE, SOURCE_ROW = "_source_file", "_source_row"
PROVENANCE = (SOURCE_FILE, SOURCE_ROW)


@dataclass(frozen=True)
class AttributeSpec:
    """A lead attribute a source declares beyond the contract's: a fit feature of its own.

    ``kind``: ``categorical`` (text; empty is the category ``missing``) or ``numeric``.
    ``label``: how explanations name it ("Landing page = lp-0412").
    """

    name: str
    kind: str = "categorical"
    label: str = ""
    description: str = ""

    def __post_init__(self):
        if not re.fullmatch(IDENTIFIER, str(self.name)):
            raise ValueError(f"attribute name {self.name!r} must be lower-case letters, digits and _ "
                             "(starting with a letter)")
        if self.kind not in ("categorical", "numeric"):
            raise ValueError(f"attribute {self.name}: kind must be categorical or numeric, got {self.kind!r}")

    @property
    def display(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()


@dataclass(frozen=True)
class KindSpec:
    """An activity kind a source declares beyond the built-in vocabulary. ``description``
    reads as a past-tense phrase ("viewed the product catalogue"); ``hand_raiser``: an explicit
    buying signal (counted with demo requests and the like)."""

    name: str
    description: str = ""
    hand_raiser: bool = False

    def __post_init__(self):
        if not re.fullmatch(IDENTIFIER, str(self.name)):
            raise ValueError(f"activity kind {self.name!r} must be lower-case letters, digits and _ "
                             "(starting with a letter)")
        if self.name in ACTIVITY_TYPES:
            raise ValueError(f"activity kind {self.name!r} is built in; map the export's names to it instead")


@dataclass(frozen=True)
class Contract:
    """The tables and columns a data source provides: the built-in contract, plus what a source
    declares - custom lead attributes, activity kinds beyond the vocabulary, and which
    attributes an ``attribute_history`` table gives as of any moment.

    ``Contract()`` is the built-in contract (a data directory of the three tables)."""

    attributes: tuple[AttributeSpec, ...] = ()
    activity_kinds: tuple[KindSpec, ...] = ()
    history_attributes: tuple[str, ...] = ()
    earliest: str = EARLIEST_PLAUSIBLE  # ISO date: earlier timestamps are quarantined as implausible
    value_labels: tuple[tuple[str, str, str], ...] = ()  # (attribute, code, label): how explanations read codes

    def __post_init__(self):
        try:
            pd.Timestamp(self.earliest)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"earliest date {self.earliest!r} is not an ISO date (e.g. 1990-01-01)") from exc
        names = [a.name for a in self.attributes]
        taken = set(FIT_ATTRIBUTE_COLUMNS) | {"lead_id", "created_at", "company_size_band", "region"}
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & taken))
        if clash:
            raise ValueError(f"attribute name(s) {', '.join(clash)} are taken (built-in attributes and features, "
                             "or declared twice)")
        kinds = [k.name for k in self.activity_kinds]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"activity kinds declared twice: {sorted({k for k in kinds if kinds.count(k) > 1})}")
        object.__setattr__(self, "value_labels", tuple(tuple(str(x) for x in t) for t in self.value_labels))
        labelled = set(LABELLED_ATTRIBUTES) | {a.name for a in self.attributes if a.kind == "categorical"}
        unknown = sorted({t[0] for t in self.value_labels} - labelled)
        if unknown:
            raise ValueError(f"value labels for {', '.join(unknown)}: only categorical attributes have codes to label "
                             f"({', '.join(sorted(labelled))})")
        known = set(FIT_ATTRIBUTE_COLUMNS) | set(names)
        unknown = sorted(set(self.history_attributes) - known)
        if unknown:
            raise ValueError(f"attribute history names unknown attribute(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(known))}")

    @property
    def labels(self) -> dict[str, dict[str, str]]:
        """attribute -> {code: label}: how explanations read the codes (value_labels)."""
        out: dict[str, dict[str, str]] = {}
        for attribute, code, label in self.value_labels:
            out.setdefault(attribute, {})[code] = label
        return out

    @property
    def tables(self) -> tuple[str, ...]:
        return TABLES + ((HISTORY,) if self.history_attributes else ())

    @property
    def kinds(self) -> dict[str, str]:
        """Every activity kind the contract accepts, with its description."""
        return {**ACTIVITY_TYPES, **{k.name: k.description or k.name.replace("_", " ") for k in self.activity_kinds}}

    @property
    def numeric_attributes(self) -> tuple[str, ...]:
        return ("company_size", *(a.name for a in self.attributes if a.kind == "numeric"))

    def columns(self, name: str) -> tuple[ColumnSpec, ...]:
        if name == HISTORY:
            return HISTORY_COLUMNS
        if name == "leads" and self.attributes:
            return COLUMNS["leads"] + tuple(
                ColumnSpec(a.name, "string" if a.kind == "categorical" else "number", required=False, nullable=True,
                           description=a.description or a.display) for a in self.attributes)
        return COLUMNS[name]

    def schema(self, name: str) -> pa.DataFrameSchema:
        return _schemas(self)[name]

    def arrow_schema(self, name: str) -> pa_types.Schema:
        return pa_types.schema([(c.name, _ARROW_TYPES[c.kind]) for c in self.columns(name)])


DEFAULT_CONTRACT = Contract()


class ContractError(Exception):
    """A table cannot be checked row by row at all (missing file or required column)."""


# ---------------------------------------------------------------------------
# Violations and the report
# ---------------------------------------------------------------------------

MAX_KEYS_SHOWN = 10


@dataclass
class Violation:
    table: str
    column: str
    rule: str
    message: str
    rows: np.ndarray  # positions (0-based) in the table as read
    values: tuple = ()  # some of the offending values, where showing them helps (unknown names)

    @property
    def count(self) -> int:
        return int(len(self.rows))

    def describe(self, frame: pd.DataFrame) -> str:
        shown = self.rows[:MAX_KEYS_SHOWN]
        key = ROW_KEY[self.table]
        keys = frame[key].iloc[shown] if key in frame.columns else pd.Series([None] * len(shown))
        if SOURCE_FILE in frame.columns:  # a mapped export: name the file and the row in it
            files, rows = frame[SOURCE_FILE].iloc[shown], frame[SOURCE_ROW].iloc[shown]
            parts = [f"{f} row {int(r)}" + (f" (line {int(r) + 2})" if str(f).lower().endswith(".csv") else "")
                     + f" ({key}={_show(k)})" for f, r, k in zip(files, rows, keys)]
        else:
            parts = [f"row {int(r)} ({key}={_show(k)})" for r, k in zip(shown, keys)]
        more = f" and {self.count - len(shown)} more" if self.count > len(shown) else ""
        noun = "row" if self.count == 1 else "rows"
        values = f" (values: {', '.join(repr(v) for v in self.values)})" if self.values else ""
        return (
            f"{self.table}.{self.column} [{self.rule}] {self.message}{values}: "
            f"{self.count} {noun}: {', '.join(parts)}{more}"
        )


def _show(value) -> str:
    return "<missing>" if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA else str(value)


@dataclass
class ValidationReport:
    tables: dict[str, pd.DataFrame]  # as read and typed (positions match Violation.rows)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def failing_rows(self, table: str) -> np.ndarray:
        rows = [v.rows for v in self.violations if v.table == table]
        return np.unique(np.concatenate(rows)) if rows else np.array([], dtype=np.int64)

    def reasons(self, table: str) -> pd.Series:
        """One reason string per failing row of ``table`` (all rules it breaks, '; '-joined)."""
        pieces: dict[int, list[str]] = {}
        for v in self.violations:
            if v.table != table:
                continue
            for r in v.rows:
                pieces.setdefault(int(r), []).append(f"{v.column}: {v.message} [{v.rule}]")
        return pd.Series({r: "; ".join(p) for r, p in sorted(pieces.items())}, dtype="object")

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for name, frame in self.tables.items():
            bad = len(self.failing_rows(name))
            out[name] = {"rows_in": len(frame), "clean": len(frame) - bad, "quarantined": bad}
        return out

    def lines(self) -> list[str]:
        return [v.describe(self.tables[v.table]) for v in self.violations]

    def split(self) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
        """(clean, quarantined) tables; quarantined rows carry ``source_row`` (and, from a
        mapped export, ``source_file``) and ``quarantine_reason``."""
        clean, quarantined = {}, {}
        for name, frame in self.tables.items():
            bad = self.failing_rows(name)
            mask = np.zeros(len(frame), dtype=bool)
            mask[bad] = True
            body = frame.drop(columns=[c for c in PROVENANCE if c in frame.columns])
            clean[name] = body.loc[~mask].reset_index(drop=True)
            q = body.loc[mask].copy()
            if SOURCE_FILE in frame.columns:
                q.insert(0, "source_row", frame[SOURCE_ROW].to_numpy()[bad].astype(np.int64))
                q.insert(0, "source_file", frame[SOURCE_FILE].to_numpy()[bad].astype(object))
            else:
                q.insert(0, "source_row", bad.astype(np.int64))
            q["quarantine_reason"] = self.reasons(name).reindex(bad).to_numpy()
            quarantined[name] = q.reset_index(drop=True)
        return clean, quarantined


# ---------------------------------------------------------------------------
# Reading and typing
# ---------------------------------------------------------------------------


def table_path(data_dir: Path | str, name: str) -> Path:
    data_dir = Path(data_dir)
    candidates = [p for p in (data_dir / f"{name}.parquet", data_dir / f"{name}.csv") if p.exists()]
    if not candidates:
        raise ContractError(f"{name}: no {name}.parquet or {name}.csv in {data_dir}")
    if len(candidates) > 1:
        raise ContractError(f"{name}: both {candidates[0].name} and {candidates[1].name} in {data_dir}; keep one")
    return candidates[0]


_CSV_TEXT = {"dtype": str, "keep_default_na": False, "na_values": [""]}  # cells as text; empty = missing


def read_raw(data_dir: Path | str, name: str) -> pd.DataFrame:
    """Read one contract table as stored (CSV cells stay text until :func:`type_table`)."""
    path = table_path(data_dir, name)
    if path.suffix == ".csv":
        try:
            return pd.read_csv(path, **_CSV_TEXT)
        except Exception as exc:  # pandas raises several parser errors
            raise ContractError(f"{name}: cannot parse {path}: {exc}") from exc
    import pyarrow.parquet as pq

    try:
        return _frame_of(pq.read_table(path))
    except Exception as exc:
        raise ContractError(f"{name}: cannot read {path}: {exc}") from exc


def _frame_of(table) -> pd.DataFrame:
    """A Parquet table or batch as pandas. Integer columns with nulls become objects holding
    ints, not floats, so an id 7 reads as "7" however the rows are batched (pandas would make
    the column float64 only where a batch has a null: "7.0")."""
    return table.to_pandas(integer_object_nulls=True)


@dataclass(frozen=True)
class TimestampFormat:
    """How a timestamp column is written in an export.

    ``format``: ``iso8601`` (the default), ``epoch_s`` / ``epoch_ms`` (seconds / milliseconds
    since 1970-01-01 UTC), or ``strftime`` pattern(s) such as ``%d/%m/%Y %H:%M`` (day first),
    several tried in order (``("%d/%m/%Y %H:%M", "%d/%m/%Y")``). ``timezone``: the zone of
    values written without an offset (default UTC), e.g. ``America/Sao_Paulo``; values with
    an offset are converted whatever it says.
    """

    format: str | tuple[str, ...] = "iso8601"
    timezone: str = "UTC"

    def __post_init__(self):
        import zoneinfo

        patterns = self.patterns
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise ValueError(f"timestamp format must be iso8601, epoch_s, epoch_ms or strftime pattern(s), "
                             f"got {self.format!r}")
        special = [p for p in patterns if p in ("iso8601", "epoch_s", "epoch_ms")]
        if special and len(patterns) > 1:
            raise ValueError(f"{special[0]} cannot be combined with other formats, got {self.format!r}")
        bad = [p for p in patterns if not special and "%" not in p]
        if bad:
            raise ValueError(f"timestamp format {bad[0]!r} is neither iso8601, epoch_s, epoch_ms nor a strftime "
                             "pattern such as %d/%m/%Y")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r} (use an IANA name such as Europe/Berlin)") from exc

    @property
    def patterns(self) -> tuple[str, ...]:
        return (self.format,) if isinstance(self.format, str) else tuple(self.format)

    @property
    def expected(self) -> str:
        what = {"iso8601": "an ISO 8601 timestamp", "epoch_s": "seconds since 1970 (epoch_s)",
                "epoch_ms": "milliseconds since 1970 (epoch_ms)"}.get(
            self.patterns[0], f"a timestamp in format {' or '.join(self.patterns)}")
        zone = f" (naive times in {self.timezone})" if self.timezone != "UTC" else ""
        return f"not {what}{zone}"

    def parse(self, col: pd.Series) -> pd.Series:
        """The cells as UTC timestamps (microseconds); NaT where a cell does not parse."""
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            return col.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        if pd.api.types.is_datetime64_dtype(col.dtype):
            return self._localize(col).astype("datetime64[us, UTC]")
        first = self.patterns[0]
        if first in ("epoch_s", "epoch_ms"):
            num = pd.to_numeric(col, errors="coerce").astype("float64")
            unit = "s" if first == "epoch_s" else "ms"
            return pd.to_datetime(num.where(np.isfinite(num)), unit=unit, utc=True, errors="coerce").astype(
                "datetime64[us, UTC]")
        # as text: a number is not a timestamp here (pandas would read it as an epoch one day)
        text = col.astype("str").astype("object").where(col.notna())
        if first == "iso8601":
            parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601").astype("datetime64[us, UTC]")
            if self.timezone != "UTC":  # values without an offset are local times of the zone
                naive = ~text.astype("str").str.contains(r"(?:Z|[+-]\d\d:?\d\d)\s*$", regex=True, na=False)
                parsed[naive] = self._localize(parsed[naive].dt.tz_localize(None)).astype("datetime64[us, UTC]")
            return parsed
        out = pd.Series(pd.NaT, index=col.index, dtype="datetime64[us, UTC]")
        for pattern in self.patterns:
            todo = out.isna() & text.notna()
            if not todo.any():
                break
            parsed = pd.to_datetime(text[todo], format=pattern, errors="coerce")
            if isinstance(parsed.dtype, pd.DatetimeTZDtype):  # the pattern has %z
                parsed = parsed.dt.tz_convert("UTC")
            elif len(parsed):
                parsed = self._localize(parsed)
            out[todo] = parsed.astype("datetime64[us, UTC]")
        return out

    def _localize(self, naive: pd.Series) -> pd.Series:
        # Ambiguous local times (the hour repeated when clocks go back) are read as standard
        # time; times skipped when clocks go forward move forward to the first valid time.
        return naive.dt.tz_localize(self.timezone, ambiguous=np.zeros(len(naive), dtype=bool),
                                    nonexistent="shift_forward").dt.tz_convert("UTC")


ISO8601 = TimestampFormat()


def type_table(name: str, raw: pd.DataFrame, contract: Contract | None = None,
               formats: dict[str, TimestampFormat] | None = None) -> tuple[pd.DataFrame, list[Violation]]:
    """Cast a raw table to the contract dtypes; cells that do not parse become violations.

    Timestamps are read by ``formats[column]`` (default ISO 8601, naive values in UTC);
    zoned ones are converted to UTC.
    """
    columns = (contract or DEFAULT_CONTRACT).columns(name)
    missing = [c.name for c in columns if c.required and c.name not in raw.columns]
    if missing:
        raise ContractError(
            f"{name}: required column(s) missing: {', '.join(missing)} "
            f"(found: {', '.join(str(c) for c in raw.columns if c not in PROVENANCE)})"
        )
    frame = raw.reset_index(drop=True).copy()
    violations: list[Violation] = []
    for spec in columns:
        if spec.name not in frame.columns:
            frame[spec.name] = pd.Series([None] * len(frame), dtype=_empty_dtype(spec.kind))
            continue
        col = frame[spec.name]
        if not pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_datetime64_any_dtype(col):
            col = col.where(col != "")  # an empty text cell is missing, as in a CSV
        typed, bad_message = _cast(col, spec.kind, (formats or {}).get(spec.name, ISO8601))
        bad = col.notna().to_numpy() & typed.isna().to_numpy()
        if bad.any():
            violations.append(Violation(name, spec.name, "type", bad_message, np.flatnonzero(bad)))
        frame[spec.name] = typed
    return frame, violations


def _empty_dtype(kind: str):
    return {"string": "str", "timestamp": "datetime64[us, UTC]", "integer": "Int64", "number": "float64"}[kind]


def _cast(col: pd.Series, kind: str, timestamp: TimestampFormat = ISO8601) -> tuple[pd.Series, str]:
    if kind == "string":
        return col.astype("str").where(col.notna()), "not text"
    if kind == "timestamp":
        return timestamp.parse(col), timestamp.expected
    if kind == "integer":
        num = pd.to_numeric(col, errors="coerce")
        if num.dtype == object:   # integers beyond 64 bits stay Python ints: read them as floats
            num = pd.to_numeric(col.astype("str").where(col.notna()), errors="coerce").astype("float64")
        if num.dtype.kind == "u":  # a column of whole numbers, one of them at or beyond 2^63
            big = (num > np.iinfo(np.int64).max).to_numpy()
            out = pd.Series(pd.array(np.where(big, 0, num.to_numpy()).astype(np.int64), dtype="Int64"), index=num.index)
            out[big] = pd.NA
            return out, "not a whole number within +-9.2e18"
        num = num.astype("float64") if not pd.api.types.is_integer_dtype(num) else num
        fits = num.abs() < 2.0**63 if num.dtype.kind == "f" else pd.Series(True, index=num.index)
        whole = num.where(np.isfinite(num.astype("float64")) & (num == np.round(num)) & fits)
        return whole.astype("Int64"), "not a whole number within +-9.2e18"
    if kind == "number":
        num = pd.to_numeric(col, errors="coerce").astype("float64")
        return num.where(np.isfinite(num)), "not a number"
    raise ValueError(kind)


# ---------------------------------------------------------------------------
# Per-table rules (pandera)
# ---------------------------------------------------------------------------


def _vocabulary(values) -> pa.Check:
    values = tuple(values)
    shown = ", ".join(values) if len(values) <= 8 else ", ".join(values[:8]) + ", ..."
    return pa.Check.isin(values, name="vocabulary", error=f"unknown value (allowed: {shown})")


@functools.lru_cache(maxsize=16)
def _schemas(contract: Contract) -> dict[str, pa.DataFrameSchema]:
    """The per-table pandera schemas of a contract (cached: contracts are immutable)."""
    schemas = {
        "leads": pa.DataFrameSchema(
            {
                "lead_id": pa.Column(nullable=False, unique=True),
                "created_at": pa.Column(nullable=False),
                "seniority": pa.Column(checks=_vocabulary(SENIORITY_LEVELS), nullable=True),
                "department": pa.Column(checks=_vocabulary(DEPARTMENTS), nullable=True),
                "company_size": pa.Column(
                    checks=pa.Check.ge(1, name="positive", error="employees must be >= 1"), nullable=True
                ),
                "email_domain_type": pa.Column(checks=_vocabulary(EMAIL_DOMAIN_TYPES), nullable=True),
            }
        ),
        "activities": pa.DataFrameSchema(
            {
                "lead_id": pa.Column(nullable=False),
                "occurred_at": pa.Column(nullable=False),
                "activity_type": pa.Column(checks=_vocabulary(contract.kinds), nullable=False),
            }
        ),
        "lifecycle": pa.DataFrameSchema(
            {
                "lead_id": pa.Column(nullable=False),
                "stage": pa.Column(checks=_vocabulary(STAGES), nullable=False),
                "occurred_at": pa.Column(nullable=False),
                "amount": pa.Column(
                    checks=pa.Check.ge(0, name="non_negative", error="amount must be >= 0"), nullable=True
                ),
            }
        ),
    }
    if contract.history_attributes:
        schemas[HISTORY] = pa.DataFrameSchema(
            {
                "lead_id": pa.Column(nullable=False),
                "attribute": pa.Column(checks=_vocabulary(contract.history_attributes), nullable=False),
                "valid_from": pa.Column(nullable=False),
            }
        )
    return schemas


SCHEMAS: dict[str, pa.DataFrameSchema] = _schemas(DEFAULT_CONTRACT)

_PANDERA_RULES = {
    "not_nullable": ("required", "required value is missing"),
    "field_uniqueness": ("unique", "duplicate value"),
}


def _schema_violations(name: str, frame: pd.DataFrame, already_bad: dict[str, set],
                       contract: Contract = DEFAULT_CONTRACT) -> list[Violation]:
    try:
        contract.schema(name).validate(frame, lazy=True)
        return []
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    cases = cases[cases["index"].notna()]
    out = []
    for (column, check), group in cases.groupby(["column", "check"], sort=False):
        rows = np.unique(group["index"].astype(np.int64).to_numpy())
        if check == "not_nullable":
            # A cell that failed to parse is already reported as a type violation.
            rows = np.setdiff1d(rows, np.fromiter(already_bad.get(column, ()), dtype=np.int64))
            if len(rows) == 0:
                continue
        if check in _PANDERA_RULES:
            rule, message = _PANDERA_RULES[check]
        else:
            rule, message = _check_rule(contract.schema(name), column, check)
        shown = tuple(pd.unique(group["failure_case"].astype(str))[:5]) if rule == "vocabulary" else ()
        out.append(Violation(name, column, rule, message, rows, shown))
    return out


def _check_rule(schema: pa.DataFrameSchema, column: str, check: str) -> tuple[str, str]:
    for c in schema.columns[column].checks:
        if c.error == check or c.name == check:
            return c.name, c.error
    return check, check


# ---------------------------------------------------------------------------
# Rules across tables
# ---------------------------------------------------------------------------


def _time_violations(name: str, frame: pd.DataFrame, now: pd.Timestamp, earliest: pd.Timestamp) -> list[Violation]:
    col = TIME_COLUMN[name]
    out = []
    future = (frame[col] > now).fillna(False).to_numpy()
    if future.any():
        out.append(Violation(name, col, "not_in_future", f"timestamp after now ({now.isoformat()})",
                             np.flatnonzero(future)))
    early = (frame[col] < earliest).fillna(False).to_numpy()
    if early.any():
        out.append(Violation(name, col, "plausible_date", f"timestamp before {earliest:%Y-%m-%d}, the earliest "
                             "plausible date (a placeholder? a source YAML can set earliest_date)",
                             np.flatnonzero(early), tuple(pd.unique(frame[col][early].astype(str))[:5])))
    return out


def _order_violations(frame: pd.DataFrame) -> list[Violation]:
    """An opportunity or a win dated before the lead's first sql event (when it has one)."""
    times = _naive_utc(frame["occurred_at"])
    ids = frame["lead_id"].to_numpy(dtype=object)
    sql = pd.Series(times).where((frame["stage"] == "sql").to_numpy())
    first_sql = sql.groupby(ids, dropna=True, sort=False).transform("min").to_numpy() if len(frame) else times
    late = frame["stage"].isin(AFTER_SQL).to_numpy() & (times < first_sql)  # NaT compares False
    if not late.any():
        return []
    return [Violation("lifecycle", "occurred_at", "stage_order", "opportunity or won before the lead's first sql",
                      np.flatnonzero(late), tuple(pd.unique(frame["stage"][late].astype(str))))]


def _arrow_ids(ids: pd.Series) -> pa_types.Array:
    """The ids as an Arrow string array: straight from an Arrow-backed column (no Python string
    per value: tens of millions of activity rows), through objects otherwise."""
    array = pa_types.array(ids.array, type=pa_types.string(), from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa_types.ChunkedArray) else array


def _naive_utc(times: pd.Series) -> np.ndarray:
    """datetime64[us] values in UTC (the contract's unit: nanoseconds would overflow before
    1677), without the per-value objects a zoned column converts to."""
    naive = times.dt.tz_localize(None) if times.dt.tz is not None else times
    return naive.to_numpy().astype("datetime64[us]")


@dataclass(frozen=True)
class LeadKeys:
    """What the rules of activities and lifecycle events need from the leads table, per
    distinct lead id, built once: whether some row with that id failed the contract, and the
    created_at of its clean row. The last entry stands for "no such lead" (position -1)."""

    ids: pa_types.Array
    quarantined: np.ndarray
    created: np.ndarray  # datetime64[us], UTC; NaT when the id has no clean row

    @classmethod
    def of(cls, leads: pd.DataFrame, bad_rows: np.ndarray) -> LeadKeys:
        bad = np.zeros(len(leads), dtype=bool)
        bad[bad_rows] = True
        rows = pd.DataFrame({"id": leads["lead_id"].to_numpy(dtype=object), "bad": bad,
                             "created": _naive_utc(leads["created_at"])})
        rows = rows[rows["id"].notna()]
        rows["created"] = rows["created"].where(~rows["bad"])
        per_id = rows.groupby("id", sort=False).agg(bad=("bad", "any"), created=("created", "max"))
        return cls(ids=_arrow_ids(per_id.index.to_series()),
                   quarantined=np.append(per_id["bad"].to_numpy(dtype=bool), False),
                   created=np.append(per_id["created"].to_numpy().astype("datetime64[us]"), np.datetime64("NaT", "us")))

    @functools.cached_property
    def _index(self) -> pd.Index:
        """The ids' hash table, built once for all the batches looked up in it (Arrow's
        ``index_in`` builds it again on every call: 55 times for 54.8M activities)."""
        return pd.Index(pd.array(self.ids, dtype=pd.ArrowDtype(pa_types.string())))

    def positions(self, ids: pa_types.Array) -> np.ndarray:
        """Each id's position among :attr:`ids`; -1 for an unknown or missing id. Each distinct
        id is looked up once (a batch of activities names far fewer leads than it has rows)."""
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(ids)
        found = self._index.get_indexer(pd.array(encoded.dictionary, dtype=pd.ArrowDtype(pa_types.string())))
        at = np.append(found, -1)[encoded.indices.fill_null(len(found)).to_numpy(zero_copy_only=False)]
        return at.astype(np.int64, copy=False)


def _reference_violations(name: str, frame: pd.DataFrame, keys: LeadKeys) -> list[Violation]:
    """known_lead, lead_quarantined and (for events) after_lead_created. Attribute history
    rows may predate the lead's creation in the CRM (an imported record keeps its values)."""
    out = []
    ids = _arrow_ids(frame["lead_id"])
    at = keys.positions(ids)
    present = ~ids.is_null().to_numpy(zero_copy_only=False)
    unknown = present & (at < 0)
    if unknown.any():
        out.append(Violation(name, "lead_id", "known_lead", "lead_id not in leads", np.flatnonzero(unknown)))

    quarantined = keys.quarantined[at]
    if quarantined.any():
        out.append(
            Violation(name, "lead_id", "lead_quarantined", "its lead failed the contract", np.flatnonzero(quarantined))
        )

    if name == HISTORY:
        return out
    col = TIME_COLUMN[name]
    early = _naive_utc(frame[col]) < keys.created[at]  # NaT compares False
    if early.any():
        out.append(
            Violation(name, col, "after_lead_created", "timestamp before the lead's created_at", np.flatnonzero(early))
        )
    return out


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------


def utc_timestamp(value) -> pd.Timestamp:
    """A timestamp in UTC, by the contract's rule: naive means UTC, zoned is converted."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _table_violations(name: str, raw: pd.DataFrame, now: pd.Timestamp, contract: Contract = DEFAULT_CONTRACT,
                      formats: dict[str, TimestampFormat] | None = None) -> tuple[pd.DataFrame, list[Violation]]:
    """Type one table and check its own rows (types, required values, vocabularies, ranges,
    uniqueness, not in the future); the rules that read other tables come after."""
    frame, type_bad = type_table(name, raw, contract, formats)
    already = {}
    for v in type_bad:
        already.setdefault(v.column, set()).update(v.rows.tolist())
    found = (type_bad + _schema_violations(name, frame, already, contract)
             + _time_violations(name, frame, now, utc_timestamp(contract.earliest)))
    if name == HISTORY:
        found += _history_violations(frame, contract)
    if name == "lifecycle":
        found += _order_violations(frame)
    return frame, found


def _history_violations(frame: pd.DataFrame, contract: Contract) -> list[Violation]:
    """Two values of one attribute at one moment cannot both hold; a numeric attribute's value
    must be a number."""
    out = []
    keys = frame[["lead_id", "attribute", "valid_from"]]
    twice = keys.notna().all(axis=1).to_numpy() & keys.duplicated(keep=False).to_numpy()
    if twice.any():
        out.append(Violation(HISTORY, "valid_from", "unique_change",
                             "two values of one attribute of one lead at the same moment", np.flatnonzero(twice)))
    numeric = frame["attribute"].isin(contract.numeric_attributes).to_numpy()
    value = frame["value"]
    parsed = pd.to_numeric(value.where(numeric), errors="coerce")
    bad = numeric & value.notna().to_numpy() & parsed.isna().to_numpy()
    if bad.any():
        out.append(Violation(HISTORY, "value", "type", "not a number (the attribute is numeric)", np.flatnonzero(bad)))
    # the leads table's rules for the same attribute
    small = (frame["attribute"] == "company_size").to_numpy() & (parsed < 1).fillna(False).to_numpy()
    if small.any():
        out.append(Violation(HISTORY, "value", "positive", "employees must be >= 1", np.flatnonzero(small)))
    for attribute, allowed in (("seniority", SENIORITY_LEVELS), ("department", DEPARTMENTS),
                               ("email_domain_type", EMAIL_DOMAIN_TYPES)):
        rows = (frame["attribute"] == attribute).to_numpy() & value.notna().to_numpy() & ~value.isin(allowed).to_numpy()
        if rows.any():
            out.append(Violation(HISTORY, "value", "vocabulary", f"unknown {attribute} (allowed: {', '.join(allowed)})",
                                 np.flatnonzero(rows), tuple(pd.unique(value[rows].astype(str))[:5])))
    return out


def validate_tables(raw: dict[str, pd.DataFrame], now: pd.Timestamp | None = None, contract: Contract | None = None,
                    formats: dict[str, dict[str, TimestampFormat]] | None = None) -> ValidationReport:
    """Check the tables against the contract (the built-in one by default). ``now`` bounds
    timestamps (default: current UTC time); ``formats``: per table, how timestamp columns are
    written."""
    return _validate(raw, now, contract or DEFAULT_CONTRACT, formats or {})[0]


def _validate(raw: dict[str, pd.DataFrame], now: pd.Timestamp | None, contract: Contract,
              formats: dict[str, dict[str, TimestampFormat]]) -> tuple[ValidationReport, LeadKeys]:
    """:func:`validate_tables`, and the lead keys its reference checks used."""
    now = pd.Timestamp.now(tz="UTC") if now is None else utc_timestamp(now)
    typed: dict[str, pd.DataFrame] = {}
    violations: list[Violation] = []
    for name in contract.tables:
        typed[name], found = _table_violations(name, raw[name], now, contract, formats.get(name))
        violations += found

    report = ValidationReport(tables=typed, violations=violations)
    keys = LeadKeys.of(typed["leads"], report.failing_rows("leads"))
    for name in contract.tables[1:]:
        report.violations += _reference_violations(name, typed[name], keys)
    return report, keys


class ContractDirectory:
    """The plain data source: one directory holding leads, activities and lifecycle as
    ``.parquet`` or ``.csv`` files with the contract's columns and values. (A CRM export of
    another shape is read through a source mapping, :mod:`leadscore.sources.mapping`; both
    offer the same methods.)"""

    contract = DEFAULT_CONTRACT

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return str(self.path)

    def read(self, name: str) -> pd.DataFrame:
        return read_raw(self.path, name)

    def batches(self, name: str, batch_rows: int):
        return _raw_batches(self.path, name, batch_rows)

    def formats(self, name: str) -> dict[str, TimestampFormat]:
        return {}

    def notes(self) -> list[str]:
        return []


def as_source(data):
    """A data source: a mapped export (anything with ``read``/``batches``/``formats``/``contract``)
    as it is, a path as a :class:`ContractDirectory`."""
    return data if hasattr(data, "batches") and hasattr(data, "contract") else ContractDirectory(data)


def validate_source(source, now: pd.Timestamp | None = None) -> ValidationReport:
    source = as_source(source)
    tables = source.contract.tables
    return validate_tables({name: source.read(name) for name in tables}, now=now, contract=source.contract,
                           formats={name: source.formats(name) for name in tables})


def validate_dir(data_dir, now: pd.Timestamp | None = None) -> ValidationReport:
    """:func:`validate_source` of a data directory (or any source)."""
    return validate_source(data_dir, now)


def load_clean(data, now: pd.Timestamp | None = None) -> tuple[dict[str, pd.DataFrame], ValidationReport]:
    """Read, type and validate a data directory or source; return the clean tables and the report."""
    report = validate_source(data, now=now)
    clean, _ = report.split()
    return clean, report


# ---------------------------------------------------------------------------
# Large data: validate activities batch by batch, stage the clean tables as Parquet
# ---------------------------------------------------------------------------

_ARROW_TYPES = {"string": pa_types.string(), "timestamp": pa_types.timestamp("us", tz="UTC"),
                "integer": pa_types.int64(), "number": pa_types.float64()}
ARROW_SCHEMAS = {name: pa_types.schema([(c.name, _ARROW_TYPES[c.kind]) for c in COLUMNS[name]]) for name in TABLES}


@dataclass
class StagedTables:
    """The clean rows of a data directory as Parquet files (contract columns, contract types),
    with the same accounting as :class:`ValidationReport`."""

    paths: dict[str, Path]
    counts: dict[str, dict[str, int]]
    quarantined: dict[str, pd.DataFrame]  # as ValidationReport.split()[1]: source_row, quarantine_reason


def _raw_batches(data_dir: Path | str, name: str, batch_rows: int):
    """The table as stored, ``batch_rows`` rows at a time (CSV cells stay text)."""
    import pyarrow.parquet as pq

    path = table_path(data_dir, name)
    try:
        if path.suffix == ".csv":
            yield from pd.read_csv(path, **_CSV_TEXT, chunksize=batch_rows)
        else:
            parquet = pq.ParquetFile(path)
            if parquet.metadata.num_rows == 0:  # no batches: still check its columns
                yield _frame_of(parquet.schema_arrow.empty_table())
            for batch in parquet.iter_batches(batch_size=batch_rows):
                yield _frame_of(batch)
    except ContractError:
        raise
    except Exception as exc:  # unreadable file or unparsable CSV
        raise ContractError(f"{name}: cannot read {path}: {exc}") from exc


def _write_clean(frame: pd.DataFrame, name: str, writer, contract: Contract = DEFAULT_CONTRACT):
    table = pa_types.Table.from_pandas(frame[[c.name for c in contract.columns(name)]], preserve_index=False)
    writer.write_table(table.cast(contract.arrow_schema(name)).replace_schema_metadata(None))


def stage_clean(data, out_dir: Path | str, now: pd.Timestamp | None = None,
                batch_rows: int = 1_000_000) -> StagedTables:
    """Validate like :func:`load_clean`, holding at most ``batch_rows`` activities in memory.

    ``data``: a data directory or a source (:func:`as_source`). Leads, lifecycle events (and
    attribute history) are checked whole (their rules compare rows); activities, the big
    table, batch by batch - every activity rule reads one row and the leads, so the result is
    the one :func:`load_clean` gives. Clean rows go to ``out_dir/<table>.parquet``;
    quarantined rows keep their position in the file as read (``source_row``) and their reasons.
    """
    import pyarrow.parquet as pq

    from leadscore.io import PARQUET_OPTIONS

    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    source = as_source(data)
    contract = source.contract
    now = pd.Timestamp.now(tz="UTC") if now is None else utc_timestamp(now)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # leads and lifecycle whole; activities stand in as an empty table of the contract columns
    empty = pd.DataFrame({c.name: pd.Series(dtype="str") for c in COLUMNS["activities"] if c.required})
    whole = [name for name in contract.tables if name != "activities"]
    report, keys = _validate({**{name: source.read(name) for name in whole}, "activities": empty}, now, contract,
                             {name: source.formats(name) for name in contract.tables})
    clean, quarantined = report.split()
    counts = report.counts()
    paths = {name: out_dir / f"{name}.parquet" for name in contract.tables}
    for name in whole:
        with pq.ParquetWriter(paths[name], contract.arrow_schema(name), **PARQUET_OPTIONS) as writer:
            _write_clean(clean[name], name, writer, contract)

    parts, offset, n_bad = [], 0, 0
    formats = source.formats("activities")
    with pq.ParquetWriter(paths["activities"], contract.arrow_schema("activities"), **PARQUET_OPTIONS) as writer:
        for raw in source.batches("activities", batch_rows):
            frame, found = _table_violations("activities", raw, now, contract, formats)
            found += _reference_violations("activities", frame, keys)
            good, bad = ValidationReport(tables={"activities": frame}, violations=found).split()
            _write_clean(good["activities"], "activities", writer, contract)
            if len(bad["activities"]):
                q = bad["activities"]
                if SOURCE_FILE not in frame.columns:  # positions in the table as read
                    q["source_row"] += offset
                parts.append(q)
                n_bad += len(q)
            offset += len(frame)
    quarantined["activities"] = (pd.concat(parts, ignore_index=True) if parts else quarantined["activities"])
    counts["activities"] = {"rows_in": offset, "clean": offset - n_bad, "quarantined": n_bad}
    return StagedTables(paths=paths, counts=counts, quarantined=quarantined)
