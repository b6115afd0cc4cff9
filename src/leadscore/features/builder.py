"""Point-in-time features: what was known about a lead *as of* a moment, from data strictly before it.

One function, :func:`features_as_of`, serves training (many (lead, as_of) pairs) and scoring
(every open lead at one as_of). It reads only rows whose timestamp is strictly before the
pair's ``as_of``: the lead must have been created before it, and only activities and
lifecycle events before it count. All aggregation of events runs in DuckDB over the contract
tables, given as DataFrames or as Parquet paths (so 50M activity rows never need to be in
pandas); numpy only pivots the per-(pair, kind) aggregates into columns.

Feature groups (see :func:`feature_catalogue` for every column):

* **fit** - who the lead is: seniority, department, company-size band, industry, country,
  region, lead source, e-mail domain type, and the attributes a source declares (landing
  page, plan, ...). Missing values are the category ``"missing"``. With an attribute history
  table, the attributes it covers are read as they were at as_of, not as they are now.
* **engagement** - what the lead did and how sales treated it so far: counts per activity
  kind (built-in and declared) in 7/30/90-day windows, recency, decay-weighted engagement,
  velocity, breadth, e-mail engagement, negative signals, lead age, lifecycle history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from leadscore.data.contract import DEFAULT_CONTRACT, HISTORY, Contract, utc_timestamp
from leadscore.features import registry as R
from leadscore.features.kinds import HAND_RAISER_TYPES, RECENCY_TYPES
from leadscore.settings import Section, Whole

MISSING = "missing"
US_PER_DAY = 86_400_000_000

# Closing stages: a lead with one of these before as_of is no longer an open lead to qualify.
CLOSED_STAGES = ("sql", "opportunity", "won", "lost")


SIZE_BANDS = ((1, 10), (11, 50), (51, 200), (201, 1000), (1001, 5000))  # then 5001+

REGIONS = {
    "north_america": ("US", "CA"),
    "latin_america": ("MX", "BR", "AR", "CL", "CO", "PE"),
    "uk_ireland": ("GB", "IE"),
    "europe": ("DE", "FR", "NL", "SE", "ES", "IT", "BE", "CH", "AT", "DK", "NO", "FI", "PL", "PT", "CZ"),
    "india": ("IN",),
    "apac": ("AU", "NZ", "SG", "JP", "PH", "CN", "HK", "KR", "MY", "ID", "TH", "VN"),
    "middle_east_africa": ("NG", "ZA", "AE", "SA", "IL", "EG", "KE", "QA"),
}


class FeatureConfig(Section):
    """Parameters of the engagement features.

    ``windows_days``: look-back windows for per-kind counts. ``half_life_days``: an activity
    this old counts half in the decay-weighted scores. ``hand_raiser_types``: activity kinds
    that signal explicit buying intent. ``recency_types``: activity kinds that get their own
    "days since the last one" feature (where a lead is in its journey shows in how recently
    it looked at prices or docs, not only in how often).
    """

    windows_days: Annotated[tuple[Whole, ...], Field(min_length=1)] = (7, 30, 90)
    half_life_days: Annotated[float, Field(gt=0)] = 14.0
    hand_raiser_types: tuple[str, ...] = HAND_RAISER_TYPES
    recency_types: tuple[str, ...] = RECENCY_TYPES
    contract: Contract = DEFAULT_CONTRACT  # the data source's declarations (never from the YAML)

    @field_validator("contract", mode="before")
    @classmethod
    def _declared_in_the_source(cls, value):
        if not isinstance(value, Contract):
            raise ValueError("custom attributes and activity kinds are declared in the source YAML, "
                             "not in the features section")
        return value

    @model_validator(mode="after")
    def _known_kinds(self):
        for name in ("hand_raiser_types", "recency_types"):
            unknown = sorted(set(getattr(self, name)) - set(self.contract.kinds))
            if unknown:
                raise ValueError(f"{name}: unknown activity types {unknown}; known: {sorted(self.contract.kinds)}")
        if self.contract.attributes or self.contract.activity_kinds:
            self._check_declared_names()
        return self

    def _check_declared_names(self) -> None:
        """A declared attribute or kind must not produce a feature name the built-in features,
        the key columns or the query's own columns already use."""
        builtin = {s.name for s in feature_specs(FeatureConfig(windows_days=self.windows_days,
                                                                 half_life_days=self.half_life_days))}
        reserved = builtin | {"lead_id", "as_of", "as_of_us", "pair", "k"}
        for a in self.contract.attributes:
            if a.name in reserved:
                raise ValueError(f"attribute {a.name!r} is a built-in feature or column name; rename it")
        for kind in self.contract.activity_kinds:
            made = [R.count_name(kind.name, w) for w in self.windows_days] + [R.recency_name(kind.name)]
            clash = [m for m in made if m in reserved]
            if clash:
                raise ValueError(f"activity kind {kind.name!r} would make the feature(s) {', '.join(clash)}, which "
                                 "already exist; rename it")

    @property
    def kinds(self) -> dict[str, str]:
        """Activity kinds with features of their own: the built-in ones and the declared ones."""
        return self.contract.kinds

    @property
    def hand_raisers(self) -> tuple[str, ...]:
        declared = tuple(k.name for k in self.contract.activity_kinds if k.hand_raiser)
        return tuple(dict.fromkeys((*self.hand_raiser_types, *declared)))

    @property
    def recency_kinds(self) -> tuple[str, ...]:
        declared = tuple(k.name for k in self.contract.activity_kinds)
        return tuple(dict.fromkeys((*self.recency_types, *declared)))


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    group: str  # "fit" | "engagement"
    kind: str  # "categorical" | "count" | "numeric" | "flag"
    description: str

    @property
    def dtype(self) -> str:
        return {"categorical": "str", "count": "int32", "flag": "int8", "numeric": "float64"}[self.kind]


@dataclass(frozen=True)
class Ratio:
    """A derived numeric feature ``numerator / denominator`` of two numeric columns (time per
    visit, pages per visit): empty where either is missing or the denominator is not > 0.
    Computed where the feature rows are built and by the scorer when its input lacks it, so a
    caller sends only the raw columns."""

    name: str
    numerator: str
    denominator: str
    description: str = ""

    def compute(self, frame: pd.DataFrame) -> pd.Series:
        num = pd.to_numeric(frame[self.numerator], errors="coerce").astype("float64")
        den = pd.to_numeric(frame[self.denominator], errors="coerce").astype("float64")
        return (num / den.where(den > 0)).astype("float64")


def with_ratios(frame: pd.DataFrame, ratios) -> pd.DataFrame:
    """``frame`` with each ratio's column added where it is absent (present ones are kept)."""
    absent = {r.name: r.compute(frame) for r in ratios if r.name not in frame.columns}
    return frame.assign(**absent) if absent else frame


# ---------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------

FIT_FEATURES = (
    FeatureSpec("seniority", "fit", "categorical", "seniority level from the job title"),
    FeatureSpec("department", "fit", "categorical", "department"),
    FeatureSpec("company_size_band", "fit", "categorical", "company size band (employees)"),
    FeatureSpec("industry", "fit", "categorical", "industry"),
    FeatureSpec("country", "fit", "categorical", "country (ISO code)"),
    FeatureSpec("region", "fit", "categorical", "region of the country"),
    FeatureSpec("lead_source", "fit", "categorical", "acquisition channel"),
    FeatureSpec("email_domain_type", "fit", "categorical", "e-mail domain: corporate, free, student or competitor"),
)


def fit_features(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """The built-in fit features, then the source's declared attributes (name = attribute)."""
    return FIT_FEATURES + tuple(FeatureSpec(a.name, "fit", a.kind, a.description or a.display)
                                for a in config.contract.attributes)


def engagement_features(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    """The engagement features of :mod:`leadscore.features.registry`, in its order."""
    return tuple(FeatureSpec(f.name, "engagement", f.kind, f.describe(config)) for f in R.engagement_features(config))


def feature_specs(config: FeatureConfig | None = None) -> tuple[FeatureSpec, ...]:
    config = config or FeatureConfig()
    return fit_features(config) + engagement_features(config)


def feature_catalogue(config: FeatureConfig | None = None) -> pd.DataFrame:
    """name, group (fit / engagement), kind, dtype and description of every feature column."""
    return pd.DataFrame([{"name": s.name, "group": s.group, "kind": s.kind, "dtype": s.dtype,
                          "description": s.description} for s in feature_specs(config)])


def feature_names(config: FeatureConfig | None = None) -> list[str]:
    return [s.name for s in feature_specs(config)]


def point_in_time_features(config: FeatureConfig | None = None) -> list[str]:
    """The features that cannot carry information from after as_of by construction: the
    engagement features, counted from timestamped events strictly before it. Lead attributes
    can leak an outcome the CRM wrote back into them - read at their current value, or from
    an attribute history whose ``valid_from`` is not when the change happened (a backfill, an
    import) - so the leakage audit keeps them."""
    return [s.name for s in feature_specs(config or FeatureConfig()) if s.group == "engagement"]


# ---------------------------------------------------------------------------
# DuckDB plumbing
# ---------------------------------------------------------------------------

TableSource = pd.DataFrame | str | Path


def connect(tables: Mapping[str, TableSource], contract: Contract | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with views ``leads``, ``activities``, ``lifecycle`` (and
    ``attribute_history`` when the contract has one).

    Each table is a DataFrame (contract-typed, e.g. from :func:`leadscore.data.contract.load_clean`)
    or a Parquet path (a file or a glob), read in place. ``contract``: the source's (declared
    attributes are columns of ``leads``); the built-in one by default.
    """
    contract = contract or DEFAULT_CONTRACT
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # Output order comes from ORDER BY; not keeping insertion order lets DuckDB stream and spill.
    con.execute("SET preserve_insertion_order = false")
    for name in contract.tables:
        if name not in tables:
            raise KeyError(f"missing table {name!r}")
        src = tables[name]
        if isinstance(src, pd.DataFrame):
            con.register(f"_{name}_src", src)
            relation = f"_{name}_src"
        else:
            relation = "read_parquet('" + str(src).replace("'", "''") + "')"
        present = {d[0] for d in con.execute(f"SELECT * FROM {relation} LIMIT 0").description}
        con.execute(f"CREATE VIEW {name} AS {typed_table_sql(name, relation, present, contract)}")
    return con


def typed_table_sql(name: str, relation: str, present, contract: Contract) -> str:
    """The contract's columns of table ``name`` read from ``relation`` (whose columns are
    ``present``), typed: empty or object-typed inputs behave like typed ones, and an absent
    optional column reads as NULL."""
    cols = []
    for spec in contract.columns(name):
        sql_type = _SQL_TYPES[spec.kind]
        if spec.name in present:
            cols.append(f"CAST({_quote(spec.name)} AS {sql_type}) AS {spec.name}")
        elif spec.required:
            raise KeyError(f"{name}: missing required column {spec.name!r}")
        else:
            cols.append(f"CAST(NULL AS {sql_type}) AS {spec.name}")
    return f"SELECT {', '.join(cols)} FROM {relation}"


def check_source(config: FeatureConfig, contract: Contract) -> None:
    """Refuse data whose source lacks what a model's features read (its attributes, its
    attribute history); the message names what is missing."""
    need = config.contract
    have = {a.name: a.kind for a in contract.attributes}
    missing = [f"attribute {a.name}" for a in need.attributes if have.get(a.name) != a.kind]
    missing += [f"activity kind {k.name}" for k in need.activity_kinds if k.name not in contract.kinds]
    if set(need.history_attributes) != set(contract.history_attributes):
        missing.append("an attribute history of " + ", ".join(need.history_attributes) if need.history_attributes
                       else "attributes read at their current value, not from an attribute history ("
                            + ", ".join(contract.history_attributes) + ")")
    if missing:
        raise ValueError(f"the model's features read {'; '.join(missing)}, which the data source does not give "
                         "(give the source YAML the model was trained with: --source)")


_SQL_TYPES = {"string": "VARCHAR", "timestamp": "TIMESTAMPTZ", "integer": "BIGINT", "number": "DOUBLE"}


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _sql_list(values: Sequence[str]) -> str:
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def _as_of_us(as_of) -> int:
    return int(utc_timestamp(as_of).value // 1000)  # Timestamp.value is in nanoseconds


def _pairs_frame(pairs: pd.DataFrame) -> pd.DataFrame:
    missing = {"lead_id", "as_of"} - set(pairs.columns)
    if missing:
        raise ValueError(f"pairs need columns lead_id and as_of; missing {sorted(missing)}")
    as_of = pd.to_datetime(pairs["as_of"], utc=True).astype("datetime64[us, UTC]")
    return pd.DataFrame({"lead_id": pairs["lead_id"].astype(str).to_numpy(),
                         "as_of_us": as_of.astype("int64").to_numpy()})


def _resolve_pairs(tables, pairs: pd.DataFrame | None, as_of,
                   contract: Contract | None = None) -> tuple[duckdb.DuckDBPyConnection, pd.DataFrame]:
    """The connection and the (lead_id, as_of_us) frame to compute for: the given pairs (training)
    or every lead open at ``as_of`` (scoring) - exactly one of the two."""
    con = tables if isinstance(tables, duckdb.DuckDBPyConnection) else connect(tables, contract)
    if (pairs is None) == (as_of is None):
        raise ValueError("give exactly one of pairs= or as_of=")
    if pairs is None:
        pairs = open_leads(con, [as_of])
    return con, _pairs_frame(pairs)


# ---------------------------------------------------------------------------
# Open leads
# ---------------------------------------------------------------------------

def open_leads(tables: Mapping[str, TableSource] | duckdb.DuckDBPyConnection, as_of_dates,
               max_age_days: int | None = None) -> pd.DataFrame:
    """(lead_id, as_of) for every lead open at each date: created before it, not yet SQL/closed
    - and, with ``max_age_days``, at most that old then (``lead_age_days``)."""
    con = tables if isinstance(tables, duckdb.DuckDBPyConnection) else connect(tables)
    age = "" if max_age_days is None else \
        f"JOIN leads l ON l.lead_id = p.lead_id WHERE {LEAD_AGE_SQL} <= {int(max_age_days)}"
    con.register("_dates", _dates_frame(as_of_dates))
    try:
        out = con.execute(f"SELECT p.lead_id, p.as_of_us FROM ({open_leads_sql()}) p {age} "
                          "ORDER BY p.as_of_us, p.lead_id").df()
    finally:
        con.unregister("_dates")
    return _with_as_of(out)


def _dates_frame(as_of_dates) -> pd.DataFrame:
    return pd.DataFrame({"as_of_us": np.array(sorted({_as_of_us(d) for d in np.atleast_1d(as_of_dates)}),
                                              dtype="int64")})


LEAD_AGE_SQL = "(p.as_of_us - epoch_us(l.created_at)) / 86400000000.0"  # days, of pair p's lead l


def open_leads_sql() -> str:
    """(lead_id, as_of_us) of the leads open at each date of ``_dates``, in no particular order."""
    return f"""
        WITH closed AS (
            SELECT lead_id, min(epoch_us(occurred_at)) AS closed_us
            FROM lifecycle WHERE stage IN {_sql_list(CLOSED_STAGES)} GROUP BY lead_id
        )
        SELECT l.lead_id, d.as_of_us
        FROM leads l
        JOIN _dates d ON epoch_us(l.created_at) < d.as_of_us
        LEFT JOIN closed c ON c.lead_id = l.lead_id
        WHERE c.closed_us IS NULL OR c.closed_us >= d.as_of_us
    """


def _with_as_of(frame: pd.DataFrame) -> pd.DataFrame:
    as_of = pd.to_datetime(frame.pop("as_of_us").to_numpy(dtype="int64"), unit="us", utc=True)
    frame.insert(1, "as_of", as_of)
    return frame


# ---------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------

def history_sql(contract: Contract) -> tuple[str, str]:
    """(CTE, join) giving, per (lead_id, as_of_us) of ``_pairs``, the value of every
    attribute the attribute history covers as it was at as_of: the latest change strictly
    before it (a change made later is invisible). ("", "") without a history table."""
    if not contract.history_attributes:
        return "", ""
    cols = ",\n                ".join(
        f"arg_max_null(h.value, epoch_us(h.valid_from)) FILTER (WHERE h.attribute = {_sql_list([a])[1:-1]}) "
        f"AS {_quote(a)}" for a in contract.history_attributes)
    cte = f"""
        as_of_values AS (
            SELECT p.lead_id, p.as_of_us,
                {cols}
            FROM _pairs p JOIN {HISTORY} h ON h.lead_id = p.lead_id AND epoch_us(h.valid_from) < p.as_of_us
            GROUP BY p.lead_id, p.as_of_us
        ),"""
    join = "LEFT JOIN as_of_values hv ON hv.lead_id = p.lead_id AND hv.as_of_us = p.as_of_us"
    return cte, join


def attribute_sql(contract: Contract, name: str) -> str:
    """The SQL value of lead attribute ``name`` at as_of: from the attribute history when it
    covers the attribute, else the leads table (``l``), typed as the contract types it."""
    if name not in contract.history_attributes:
        return f"l.{_quote(name)}"
    value = f"hv.{_quote(name)}"
    if name in contract.numeric_attributes:
        number = f"TRY_CAST({value} AS DOUBLE)"   # "250.0", "1e3": numbers, as the contract reads them
        # A whole number of employees: rounded half away from zero (as DuckDB casts "10.5"), the
        # same in every engine (Spark's ANSI cast of "250.0" to BIGINT gives NULL).
        return f"TRY_CAST(ROUND({number}) AS BIGINT)" if name == "company_size" else number
    return value


def _fit_sql(contract: Contract) -> str:
    def attr(name: str) -> str:
        return attribute_sql(contract, name)

    size = [f"CASE WHEN {attr('company_size')} IS NULL THEN 'missing'"]
    for lo, hi in SIZE_BANDS:
        size.append(f" WHEN {attr('company_size')} <= {hi} THEN '{lo}-{hi}'")
    size.append(f" ELSE '{SIZE_BANDS[-1][1] + 1}+' END")
    region = [f"CASE WHEN {attr('country')} IS NULL THEN 'missing'"]
    for name, countries in REGIONS.items():
        region.append(f" WHEN upper({attr('country')}) IN {_sql_list(countries)} THEN '{name}'")
    region.append(" ELSE 'other' END")
    cols = [f"coalesce({attr(c)}, '{MISSING}') AS {c}" for c in ("seniority", "department")]
    cols.append("".join(size) + " AS company_size_band")
    cols += [f"coalesce({attr(c)}, '{MISSING}') AS {c}" for c in ("industry", "country")]
    cols.append("".join(region) + " AS region")
    cols += [f"coalesce({attr(c)}, '{MISSING}') AS {c}" for c in ("lead_source", "email_domain_type")]
    for a in contract.attributes:
        if a.kind == "categorical":
            cols.append(f"coalesce(CAST({attr(a.name)} AS VARCHAR), '{MISSING}') AS {_quote(a.name)}")
        else:
            cols.append(f"CAST({attr(a.name)} AS DOUBLE) AS {_quote(a.name)}")
    return ",\n            ".join(cols)


# How the query runs: every history row (activity or lifecycle event) is tagged once, by a join
# on lead_id, with the integer id ``pair`` of the (lead, as_of) pair it counts for; all grouping
# is then by that integer instead of (lead_id, as_of) strings. DuckDB aggregates activities to
# one row per (pair, activity kind) - a few aggregates per event - and numpy pivots those rows
# into one column per kind by scattering on the pair id (a SQL pivot with a FILTER aggregate
# per kind and window costs several times more). Pair ids number the pairs in output order.

# Distinct content items are counted with a bitmap of detail codes per (pair, kind) when the
# activities have at most this many distinct details (a content catalogue); with more, by a
# separate exact DISTINCT pass (slower, and the bitmaps would take too much memory).
MAX_DETAIL_CODES = 1024


def _pairs_table(con: duckdb.DuckDBPyConnection, pairs: pd.DataFrame | None, as_of) -> pa.Table:
    """``lead_id``, ``as_of_us`` and ``pair`` (the row number) of the pairs to compute for,
    sorted by (as_of_us, lead_id): the given pairs (training) or every lead open at ``as_of``
    (scoring) - exactly one of the two."""
    if (pairs is None) == (as_of is None):
        raise ValueError("give exactly one of pairs= or as_of=")
    if pairs is None:
        con.register("_dates", _dates_frame([as_of]))
        try:
            table = con.sql(open_leads_sql()).to_arrow_table()
        finally:
            con.unregister("_dates")
    else:
        table = pa.Table.from_pandas(_pairs_frame(pairs), preserve_index=False)
    # Sorted here, not by ORDER BY: DuckDB's Arrow results do not keep the ORDER BY order when
    # preserve_insertion_order is off (see connect()).
    table = table.select(["lead_id", "as_of_us"]).sort_by([("as_of_us", "ascending"), ("lead_id", "ascending")])
    return table.append_column("pair", pa.array(np.arange(len(table), dtype=np.int64)))


def _detail_codes(con: duckdb.DuckDBPyConnection) -> list[str] | None:
    """The distinct activity details, if there are at most MAX_DETAIL_CODES of them."""
    rows = con.execute(f"SELECT DISTINCT detail FROM activities WHERE detail IS NOT NULL "
                       f"LIMIT {MAX_DETAIL_CODES + 1}").fetchall()
    return sorted(r[0] for r in rows) if len(rows) <= MAX_DETAIL_CODES else None


def _history_sql(table: str, columns: str, single_as_of: int | None) -> str:
    """Rows of ``table`` (activities or lifecycle) from before each pair's as_of, with the pair
    id and their ``age`` in days. With ``single_as_of`` the history filter is a constant (the
    scoring case); otherwise it is part of the join (training: a lead's rows count for each of
    its later as_of dates)."""
    before = "p.as_of_us" if single_as_of is None else str(int(single_as_of))
    return f"""SELECT p.pair, {columns},
                   (p.as_of_us - epoch_us(h.occurred_at)) / 86400000000.0 AS age
            FROM {table} h JOIN _pairs p ON h.lead_id = p.lead_id
            WHERE epoch_us(h.occurred_at) < {before}"""


class Plan:
    """What one feature build computes: the registry's engagement features for ``config`` and
    the distinct blocks they need, each with the SQL column alias it is computed as."""

    def __init__(self, config: FeatureConfig):
        self.config = config
        self.features = R.engagement_features(config)
        self.blocks = R.blocks(self.features)
        per_kind = dict.fromkeys(R.resolve_sql(b.sql, config) for b in self.blocks if isinstance(b, R.PerKind))
        self.kind_alias = {sql: f"a{i}" for i, sql in enumerate(per_kind)}
        lifecycle = dict.fromkeys(b.sql for b in self.blocks if isinstance(b, R.Lifecycle))
        self.lifecycle_alias = {sql: f"lc{i}" for i, sql in enumerate(lifecycle)}

    def alias(self, block: R.PerKind) -> str:
        return self.kind_alias[R.resolve_sql(block.sql, self.config)]


def per_kind_sql(plan: Plan, single_as_of: int | None, details: list[str] | None) -> str:
    """One row per (pair, activity kind) with every per-kind aggregate the features need and,
    given the detail codes, its distinct details (a bitmap of codes, counted)."""
    aggs = [f"{sql} AS {alias}" for sql, alias in plan.kind_alias.items()]
    columns = "h.activity_type AS k"
    if details is not None:
        if details:
            code = f"enum_code(detail::ENUM{_sql_list(details)})"
            aggs.append(f"coalesce(bit_count(bitstring_agg({code}, 0, {len(details) - 1})), 0)::INTEGER AS assets")
            columns += ", h.detail"
        else:
            aggs.append("0 AS assets")
    sep = ",\n                "
    return f"""
        SELECT pair, k,
                {sep.join(aggs)}
        FROM ({_history_sql("activities", columns, single_as_of)})
        GROUP BY pair, k
    """


def per_lead_sql(plan: Plan, single_as_of: int | None, distinct_assets: bool) -> str:
    """One row per pair whose lead existed at as_of: fit attributes, lead age and the lifecycle
    aggregates; with ``distinct_assets`` also the distinct (kind, detail) items, in a pass of
    their own (count(DISTINCT ...) per (pair, kind) costs more)."""
    contract = plan.config.contract
    assets = f"""
        assets AS (
            SELECT pair, count(*) AS n_distinct_assets
            FROM (SELECT DISTINCT pair, k, detail
                  FROM ({_history_sql("activities", "h.activity_type AS k, h.detail", single_as_of)})
                  WHERE detail IS NOT NULL)
            GROUP BY pair
        ),""" if distinct_assets else ""
    history_cte, history_join = history_sql(contract)
    lifecycle = ",\n                ".join(["pair", *(f"{sql} AS {alias}" for sql, alias in plan.lifecycle_alias.items())])
    return f"""
        WITH {assets}{history_cte}
        lc_agg AS (
            SELECT {lifecycle}
            FROM ({_history_sql("lifecycle", "h.stage", single_as_of)})
            GROUP BY pair
        )
        SELECT p.pair, p.lead_id, p.as_of_us,
            {_fit_sql(contract)},
            {LEAD_AGE_SQL} AS lead_age_days,
            {"s.n_distinct_assets," if distinct_assets else ""}
            {", ".join(f"c.{alias}" for alias in plan.lifecycle_alias.values())}
        FROM _pairs p
        JOIN leads l ON l.lead_id = p.lead_id AND epoch_us(l.created_at) < p.as_of_us
        {"LEFT JOIN assets s ON s.pair = p.pair" if distinct_assets else ""}
        LEFT JOIN lc_agg c ON c.pair = p.pair
        {history_join}
    """


def _pivot_kinds(per_kind: pa.Table, row_of_pair: np.ndarray, n_rows: int, plan: Plan) -> dict:
    """Each :class:`~leadscore.features.registry.PerKind` block's values per output row (and
    ``"assets"``, the distinct content items, when the bitmaps counted them), from the
    (pair, kind) rows.

    Vectorised scatter, batch by batch (no copy of the whole result): a block of one kind takes
    that kind's values at its pairs' output rows (``row_of_pair``; -1: no output row); a block
    over several kinds adds a pair's rows up (``np.add.at``) or takes their minimum. A pair
    without activities keeps 0 for a sum and NaN for a minimum."""
    config = plan.config
    kinds = list(config.kinds)
    kinds += [k for k in pc.unique(per_kind["k"]).to_pylist() if k not in config.kinds]  # NULL too
    kind_blocks = [b for b in plan.blocks if isinstance(b, R.PerKind)]
    if "assets" in per_kind.column_names:
        kind_blocks.append("assets")
    types = {f.name: f.type for f in per_kind.schema}

    def initial(block) -> np.ndarray:
        if block == "assets":
            return np.zeros(n_rows, dtype=np.int64)
        if block.reduce == "min":
            return np.full(n_rows, np.inf)
        return np.zeros(n_rows, dtype=np.float64 if pa.types.is_floating(types[plan.alias(block)]) else np.int64)

    cols = {block: initial(block) for block in kind_blocks}
    single = {}   # kind index -> its one-kind blocks: assigned, not reduced (one row per (pair, kind))
    many = []     # (block, mask of kinds or None for all)
    for block in kind_blocks:
        selector = "all" if block == "assets" else block.kinds
        if block != "assets" and selector not in ("all", "hand_raisers", "not_negative"):
            if selector in kinds:
                single.setdefault(kinds.index(selector), []).append(block)
        else:
            many.append((block, R.kind_mask(selector, kinds, config)))

    for batch in per_kind.to_batches():
        row = row_of_pair[batch["pair"].to_numpy()]
        k = pc.dictionary_encode(batch["k"])
        to_kind = np.array([kinds.index(name) for name in k.dictionary.to_pylist()] + [kinds.index(None)]
                           if None in kinds else [kinds.index(name) for name in k.dictionary.to_pylist()])
        kind = to_kind[pc.fill_null(k.indices, len(k.dictionary)).to_numpy()]
        values = {name: batch[name].to_numpy() for name in batch.column_names if name not in ("pair", "k")}
        keep = row >= 0  # False: a pair without an output row (history from before the lead existed)
        if not keep.all():
            values = {name: v[keep] for name, v in values.items()}
            row, kind = row[keep], kind[keep]
        for block, mask in many:
            source = values["assets" if block == "assets" else plan.alias(block)]
            sel = slice(None) if mask is None else mask[kind]
            out = cols[block]
            if block != "assets" and block.reduce == "min":
                np.minimum.at(out, row[sel], source[sel])
            else:
                np.add.at(out, row[sel], source[sel].astype(out.dtype, copy=False))
        for i, of_kind in single.items():
            sel = np.flatnonzero(kind == i)
            at = row[sel]
            for block in of_kind:
                cols[block][at] = values[plan.alias(block)][sel]
    for block, values in cols.items():
        if block != "assets" and block.reduce == "min":
            values[np.isinf(values)] = np.nan
    return cols


def features_as_of(
    tables: Mapping[str, TableSource] | duckdb.DuckDBPyConnection,
    pairs: pd.DataFrame | None = None,
    *,
    as_of=None,
    config: FeatureConfig | None = None,
) -> pd.DataFrame:
    """Feature rows for (lead, as_of) pairs, from data strictly before each ``as_of``.

    Give either ``pairs`` (columns ``lead_id``, ``as_of``; training) or ``as_of`` (every lead
    open at that moment; scoring). Pairs whose lead did not exist yet at ``as_of`` get no
    row. Output: ``lead_id``, ``as_of``, then the catalogue's columns in catalogue order,
    sorted by (as_of, lead_id).
    """
    config = config or FeatureConfig()
    plan = Plan(config)
    con = tables if isinstance(tables, duckdb.DuckDBPyConnection) else connect(tables, config.contract)
    table = _pairs_table(con, pairs, as_of)
    as_of_us = table["as_of_us"]
    single = as_of_us[0].as_py() if len(table) and pc.count_distinct(as_of_us).as_py() == 1 else None
    con.register("_pairs", table)
    try:
        details = _detail_codes(con)
        per_kind = con.sql(per_kind_sql(plan, single, details)).to_arrow_table()
        per_lead = con.sql(per_lead_sql(plan, single, distinct_assets=details is None)).to_arrow_table()
    finally:
        con.unregister("_pairs")
    return assemble(per_lead, per_kind, len(table), plan)


def assemble(per_lead: pa.Table, per_kind: pa.Table, n_pairs: int, plan: Plan) -> pd.DataFrame:
    """The feature rows from the two aggregates of :func:`per_lead_sql` and
    :func:`per_kind_sql` (pair ids in ``range(n_pairs)``, numbered in output order), whichever
    engine computed them."""
    per_lead = per_lead.take(np.argsort(per_lead["pair"].to_numpy()))  # output order
    row_of_pair = np.full(n_pairs, -1, dtype=np.int64)
    row_of_pair[per_lead["pair"].to_numpy()] = np.arange(len(per_lead))
    activity = _pivot_kinds(per_kind, row_of_pair, len(per_lead), plan)
    return _finish(per_lead.drop_columns(["pair"]).to_pandas(), activity, plan)


def _finish(raw: pd.DataFrame, activity: dict, plan: Plan) -> pd.DataFrame:
    """Each feature's values (derived ones computed), in the catalogue's column order and dtypes.
    ``raw``: the per-lead columns; ``activity``: the per-kind blocks' values, aligned with its rows."""
    def value(block) -> pd.Series:
        if isinstance(block, R.PerKind):
            return pd.Series(activity[block], index=raw.index, copy=False)
        if isinstance(block, R.Lifecycle):
            return raw[plan.lifecycle_alias[block.sql]]
        if block == R.DISTINCT_ASSETS and "assets" in activity:
            return pd.Series(activity["assets"], index=raw.index, copy=False)
        return raw[block.name]

    columns = {"lead_id": raw["lead_id"],
               "as_of": pd.Series(pd.to_datetime(raw["as_of_us"].to_numpy(dtype="int64"), unit="us", utc=True),
                                  index=raw.index)}
    engagement = {f.name: f for f in plan.features}
    for spec in feature_specs(plan.config):
        f = engagement.get(spec.name)
        if f is None:
            values = raw[spec.name]
        elif isinstance(f.compute, R.Derived):
            values = f.compute.fn(**{name: value(block) for name, block in f.compute.inputs.items()})
        else:
            values = value(f.compute)
        if spec.kind in ("count", "flag") and values.hasnans:
            values = values.fillna(0)
        columns[spec.name] = values.astype(spec.dtype)
    # copy=False: the columns are new arrays already; consolidating them would copy all of them.
    return pd.DataFrame(columns, copy=False).reset_index(drop=True)
