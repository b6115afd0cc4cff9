"""Point-in-time features: what was known about a lead *as of* a moment, from data strictly before it.

One function, :func:`features_as_of`, serves training (many (lead, as_of) pairs) and scoring
(every open lead at one as_of). It reads only rows whose timestamp is strictly before the
pair's ``as_of``: the lead must have been created before it, and only activities and
lifecycle events before it count. All aggregation is one DuckDB query over the contract
tables, given as DataFrames or as Parquet paths (so 50M activity rows never need to be in
pandas).

Feature groups (see :func:`feature_catalogue` for every column):

* **fit** - who the lead is: seniority, department, company-size band, industry, country,
  region, lead source, e-mail domain type. Missing values are the category ``"missing"``.
* **engagement** - what the lead did and how sales treated it so far: counts per activity
  kind in 7/30/90-day windows, recency, decay-weighted engagement, velocity, breadth,
  e-mail engagement, negative signals, lead age, lifecycle history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from leadscore.contract import ACTIVITY_TYPES, COLUMNS, utc_timestamp

MISSING = "missing"
US_PER_DAY = 86_400_000_000

# Closing stages: a lead with one of these before as_of is no longer an open lead to qualify.
CLOSED_STAGES = ("sql", "opportunity", "won", "lost")

HAND_RAISER_TYPES = ("demo_request", "contact_sales", "trial_signup", "page_view_pricing")
RECENCY_TYPES = ("page_view_pricing", "page_view_product", "page_view_docs", "demo_request", "contact_sales",
                 "trial_signup", "chat", "email_click")
NEGATIVE_TYPES = ("email_unsubscribe", "email_bounce")

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


@dataclass(frozen=True)
class FeatureConfig:
    """Parameters of the engagement features.

    ``windows_days``: look-back windows for per-kind counts. ``half_life_days``: an activity
    this old counts half in the decay-weighted scores. ``hand_raiser_types``: activity kinds
    that signal explicit buying intent. ``recency_types``: activity kinds that get their own
    "days since the last one" feature (where a lead is in its journey shows in how recently
    it looked at prices or docs, not only in how often).
    """

    windows_days: tuple[int, ...] = (7, 30, 90)
    half_life_days: float = 14.0
    hand_raiser_types: tuple[str, ...] = HAND_RAISER_TYPES
    recency_types: tuple[str, ...] = RECENCY_TYPES

    def __post_init__(self):
        if not self.windows_days or any(int(w) != w or w < 1 for w in self.windows_days):
            raise ValueError(f"windows_days must be positive whole days, got {self.windows_days!r}")
        if not self.half_life_days > 0:
            raise ValueError(f"half_life_days must be > 0, got {self.half_life_days!r}")
        for name in ("hand_raiser_types", "recency_types"):
            unknown = sorted(set(getattr(self, name)) - set(ACTIVITY_TYPES))
            if unknown:
                raise ValueError(f"{name}: unknown activity types {unknown}; known: {sorted(ACTIVITY_TYPES)}")


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    group: str  # "fit" | "engagement"
    kind: str  # "categorical" | "count" | "numeric" | "flag"
    description: str

    @property
    def dtype(self) -> str:
        return {"categorical": "str", "count": "int32", "flag": "int8", "numeric": "float64"}[self.kind]


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


def _count_name(kind: str, window: int) -> str:
    return f"n_{kind}_{window}d"


def _recency_name(kind: str) -> str:
    return f"days_since_{kind}"


def engagement_features(config: FeatureConfig) -> tuple[FeatureSpec, ...]:
    specs = []
    for window in config.windows_days:
        for kind, what in ACTIVITY_TYPES.items():
            specs.append(FeatureSpec(_count_name(kind, window), "engagement", "count",
                                     f"times the lead {what.split(' (')[0]} in the last {window} days"))
        specs.append(FeatureSpec(f"n_activities_{window}d", "engagement", "count",
                                 f"activities of any kind in the last {window} days"))
    hl = config.half_life_days
    specs += [
        FeatureSpec("n_activities_total", "engagement", "count", "activities of any kind since the lead was created"),
        FeatureSpec("days_since_last_activity", "engagement", "numeric", "days since the latest activity (empty if none)"),
        FeatureSpec("days_since_last_hand_raiser", "engagement", "numeric",
                    "days since the latest hand-raiser action: " + ", ".join(config.hand_raiser_types)
                    + " (empty if none)"),
    ]
    specs += [
        FeatureSpec(_recency_name(kind), "engagement", "numeric",
                    f"days since the lead last {ACTIVITY_TYPES[kind].split(' (')[0]} (empty if never)")
        for kind in config.recency_types
    ]
    specs += [
        FeatureSpec("n_hand_raiser_total", "engagement", "count", "hand-raiser actions since the lead was created"),
        FeatureSpec("engagement_decayed", "engagement", "numeric",
                    f"activities (bounces and unsubscribes excluded) weighted by 0.5^(age / {hl:g} days)"),
        FeatureSpec("hand_raiser_decayed", "engagement", "numeric",
                    f"hand-raiser actions weighted by 0.5^(age / {hl:g} days)"),
        FeatureSpec("velocity_7d_vs_21d", "engagement", "numeric",
                    "activity rate of the last 7 days over the weekly rate of the 21 days before, (n7 + 1) / (n21 / 3 + 1)"),
        FeatureSpec("n_distinct_kinds", "engagement", "count", "distinct activity kinds so far"),
        FeatureSpec("n_distinct_assets", "engagement", "count",
                    "distinct content items (activity kind, detail) so far: assets, posts, webinars"),
        FeatureSpec("email_opens_per_30d", "engagement", "numeric", "e-mail opens per 30 days of lead age"),
        FeatureSpec("email_click_to_open", "engagement", "numeric", "e-mail clicks / opens so far (empty if no opens)"),
        FeatureSpec("unsubscribed", "engagement", "flag", "has unsubscribed from marketing e-mail"),
        FeatureSpec("n_email_bounce_total", "engagement", "count", "e-mails to the lead that bounced"),
        FeatureSpec("n_careers_views_total", "engagement", "count", "careers-page visits (job seekers)"),
        FeatureSpec("lead_age_days", "engagement", "numeric", "days since the lead was created"),
        FeatureSpec("n_mql", "engagement", "count", "times the lead became an MQL"),
        FeatureSpec("n_disqualified", "engagement", "count", "times sales disqualified the lead"),
        FeatureSpec("was_mql", "engagement", "flag", "has been an MQL"),
        FeatureSpec("recycled", "engagement", "flag", "became an MQL again after a disqualification"),
        FeatureSpec("days_since_last_mql", "engagement", "numeric", "days since the latest MQL (empty if never)"),
        FeatureSpec("days_since_disqualified", "engagement", "numeric",
                    "days since the latest disqualification (empty if never)"),
    ]
    return tuple(specs)


def feature_specs(config: FeatureConfig | None = None) -> tuple[FeatureSpec, ...]:
    return FIT_FEATURES + engagement_features(config or FeatureConfig())


def feature_catalogue(config: FeatureConfig | None = None) -> pd.DataFrame:
    """name, group (fit / engagement), kind, dtype and description of every feature column."""
    return pd.DataFrame([{"name": s.name, "group": s.group, "kind": s.kind, "dtype": s.dtype,
                          "description": s.description} for s in feature_specs(config)])


def feature_names(config: FeatureConfig | None = None) -> list[str]:
    return [s.name for s in feature_specs(config)]


# ---------------------------------------------------------------------------
# DuckDB plumbing
# ---------------------------------------------------------------------------

TableSource = pd.DataFrame | str | Path


def connect(tables: Mapping[str, TableSource]) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with views ``leads``, ``activities``, ``lifecycle``.

    Each table is a DataFrame (contract-typed, e.g. from :func:`leadscore.contract.load_clean`)
    or a Parquet path (a file or a glob), read in place.
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # Output order comes from ORDER BY; not keeping insertion order lets DuckDB stream and spill.
    con.execute("SET preserve_insertion_order = false")
    for name in ("leads", "activities", "lifecycle"):
        if name not in tables:
            raise KeyError(f"missing table {name!r}")
        src = tables[name]
        if isinstance(src, pd.DataFrame):
            con.register(f"_{name}_src", src)
            relation = f"_{name}_src"
        else:
            relation = "read_parquet('" + str(src).replace("'", "''") + "')"
        present = {d[0] for d in con.execute(f"SELECT * FROM {relation} LIMIT 0").description}
        # Typed view of the contract columns: empty or object-typed inputs behave like typed ones,
        # and an absent optional column reads as NULL.
        cols = []
        for spec in COLUMNS[name]:
            sql_type = _SQL_TYPES[spec.kind]
            if spec.name in present:
                cols.append(f"CAST({_quote(spec.name)} AS {sql_type}) AS {spec.name}")
            elif spec.required:
                raise KeyError(f"{name}: missing required column {spec.name!r}")
            else:
                cols.append(f"CAST(NULL AS {sql_type}) AS {spec.name}")
        con.execute(f"CREATE VIEW {name} AS SELECT {', '.join(cols)} FROM {relation}")
    return con


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


def _resolve_pairs(tables, pairs: pd.DataFrame | None, as_of) -> tuple[duckdb.DuckDBPyConnection, pd.DataFrame]:
    """The connection and the (lead_id, as_of_us) frame to compute for: the given pairs (training)
    or every lead open at ``as_of`` (scoring) - exactly one of the two."""
    con = tables if isinstance(tables, duckdb.DuckDBPyConnection) else connect(tables)
    if (pairs is None) == (as_of is None):
        raise ValueError("give exactly one of pairs= or as_of=")
    if pairs is None:
        pairs = open_leads(con, [as_of])
    return con, _pairs_frame(pairs)


# ---------------------------------------------------------------------------
# Open leads
# ---------------------------------------------------------------------------

def open_leads(tables: Mapping[str, TableSource] | duckdb.DuckDBPyConnection, as_of_dates) -> pd.DataFrame:
    """(lead_id, as_of) for every lead open at each date: created before it, not yet SQL/closed."""
    con = tables if isinstance(tables, duckdb.DuckDBPyConnection) else connect(tables)
    dates = pd.DataFrame({"as_of_us": np.array(sorted({_as_of_us(d) for d in np.atleast_1d(as_of_dates)}),
                                               dtype="int64")})
    con.register("_dates", dates)
    out = con.execute(f"""
        WITH closed AS (
            SELECT lead_id, min(epoch_us(occurred_at)) AS closed_us
            FROM lifecycle WHERE stage IN {_sql_list(CLOSED_STAGES)} GROUP BY lead_id
        )
        SELECT l.lead_id, d.as_of_us
        FROM leads l
        JOIN _dates d ON epoch_us(l.created_at) < d.as_of_us
        LEFT JOIN closed c ON c.lead_id = l.lead_id
        WHERE c.closed_us IS NULL OR c.closed_us >= d.as_of_us
        ORDER BY d.as_of_us, l.lead_id
    """).df()
    con.unregister("_dates")
    return _with_as_of(out)


def _with_as_of(frame: pd.DataFrame) -> pd.DataFrame:
    as_of = pd.to_datetime(frame.pop("as_of_us").to_numpy(dtype="int64"), unit="us", utc=True)
    frame.insert(1, "as_of", as_of)
    return frame


# ---------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------

def _fit_sql() -> str:
    size = ["CASE WHEN l.company_size IS NULL THEN 'missing'"]
    for lo, hi in SIZE_BANDS:
        size.append(f" WHEN l.company_size <= {hi} THEN '{lo}-{hi}'")
    size.append(f" ELSE '{SIZE_BANDS[-1][1] + 1}+' END")
    region = ["CASE WHEN l.country IS NULL THEN 'missing'"]
    for name, countries in REGIONS.items():
        region.append(f" WHEN upper(l.country) IN {_sql_list(countries)} THEN '{name}'")
    region.append(" ELSE 'other' END")
    cols = [f"coalesce(l.{c}, '{MISSING}') AS {c}" for c in ("seniority", "department")]
    cols.append("".join(size) + " AS company_size_band")
    cols += [f"coalesce(l.{c}, '{MISSING}') AS {c}" for c in ("industry", "country")]
    cols.append("".join(region) + " AS region")
    cols += [f"coalesce(l.{c}, '{MISSING}') AS {c}" for c in ("lead_source", "email_domain_type")]
    return ",\n            ".join(cols)


def _per_kind_aggregates(config: FeatureConfig) -> str:
    """First stage: one row per (lead, as_of, activity kind) - few aggregates per event."""
    decay = f"pow(0.5, age / {float(config.half_life_days)!r})"
    aggs = [f"count(*) FILTER (WHERE age < {w}) AS w{w}" for w in config.windows_days]
    aggs += [
        "count(*) AS n",
        "min(age) AS last_age",
        f"sum({decay}) AS decayed",
        "count(*) FILTER (WHERE age < 7) AS n7",
        "count(*) FILTER (WHERE age >= 7 AND age < 28) AS n21",
        "count(DISTINCT detail) AS assets",
    ]
    return ",\n                ".join(aggs)


def _activity_aggregates(config: FeatureConfig) -> str:
    """Second stage: pivot the per-kind rows into one row per (lead, as_of)."""
    hand = _sql_list(config.hand_raiser_types)
    neg = _sql_list(NEGATIVE_TYPES)
    aggs = []
    for window in config.windows_days:
        for kind in ACTIVITY_TYPES:
            aggs.append(f"coalesce(sum(w{window}) FILTER (WHERE k = '{kind}'), 0) AS {_count_name(kind, window)}")
        aggs.append(f"sum(w{window}) AS n_activities_{window}d")
    aggs += [
        "sum(n) AS n_activities_total",
        *(f"min(last_age) FILTER (WHERE k = '{kind}') AS {_recency_name(kind)}" for kind in config.recency_types),
        "min(last_age) AS days_since_last_activity",
        f"min(last_age) FILTER (WHERE k IN {hand}) AS days_since_last_hand_raiser",
        f"sum(n) FILTER (WHERE k IN {hand}) AS n_hand_raiser_total",
        f"sum(decayed) FILTER (WHERE k NOT IN {neg}) AS engagement_decayed",
        f"sum(decayed) FILTER (WHERE k IN {hand}) AS hand_raiser_decayed",
        "sum(n7) AS _n7",
        "sum(n21) AS _n21",
        "count(*) AS n_distinct_kinds",
        "sum(assets) AS n_distinct_assets",
        "sum(n) FILTER (WHERE k = 'email_open') AS _opens",
        "sum(n) FILTER (WHERE k = 'email_click') AS _clicks",
        "sum(n) FILTER (WHERE k = 'email_unsubscribe') AS _unsubscribes",
        "sum(n) FILTER (WHERE k = 'email_bounce') AS n_email_bounce_total",
        "sum(n) FILTER (WHERE k = 'page_view_careers') AS n_careers_views_total",
    ]
    return ",\n                ".join(aggs)


def _features_sql(config: FeatureConfig, single_as_of: int | None) -> str:
    """The one feature query. With ``single_as_of`` the history filter is a constant (the
    scoring case, one scan); otherwise activities are joined to the (lead, as_of) pairs."""
    if single_as_of is None:
        acts = """SELECT p.lead_id, p.as_of_us, a.activity_type AS k, a.detail,
                   (p.as_of_us - epoch_us(a.occurred_at)) / 86400000000.0 AS age
            FROM _pairs p JOIN activities a
              ON a.lead_id = p.lead_id AND epoch_us(a.occurred_at) < p.as_of_us"""
        events = """SELECT p.lead_id, p.as_of_us, e.stage,
                   (p.as_of_us - epoch_us(e.occurred_at)) / 86400000000.0 AS age
            FROM _pairs p JOIN lifecycle e
              ON e.lead_id = p.lead_id AND epoch_us(e.occurred_at) < p.as_of_us"""
    else:
        t = int(single_as_of)
        acts = f"""SELECT a.lead_id, {t}::BIGINT AS as_of_us, a.activity_type AS k, a.detail,
                   ({t} - epoch_us(a.occurred_at)) / 86400000000.0 AS age
            FROM activities a
            WHERE epoch_us(a.occurred_at) < {t} AND a.lead_id IN (SELECT lead_id FROM _pairs)"""
        events = f"""SELECT e.lead_id, {t}::BIGINT AS as_of_us, e.stage,
                   ({t} - epoch_us(e.occurred_at)) / 86400000000.0 AS age
            FROM lifecycle e
            WHERE epoch_us(e.occurred_at) < {t} AND e.lead_id IN (SELECT lead_id FROM _pairs)"""
    return f"""
        WITH acts AS ({acts}),
        kind_agg AS (
            SELECT lead_id, as_of_us, k,
                {_per_kind_aggregates(config)}
            FROM acts GROUP BY lead_id, as_of_us, k
        ),
        act_agg AS (
            SELECT lead_id, as_of_us,
                {_activity_aggregates(config)}
            FROM kind_agg GROUP BY lead_id, as_of_us
        ),
        events AS ({events}),
        lc_agg AS (
            SELECT lead_id, as_of_us,
                count(*) FILTER (WHERE stage = 'mql') AS n_mql,
                count(*) FILTER (WHERE stage = 'disqualified') AS n_disqualified,
                min(age) FILTER (WHERE stage = 'mql') AS days_since_last_mql,
                min(age) FILTER (WHERE stage = 'disqualified') AS days_since_disqualified,
                max(age) FILTER (WHERE stage = 'disqualified') AS _first_dq_age,
                min(age) FILTER (WHERE stage = 'mql') AS _last_mql_age
            FROM events GROUP BY lead_id, as_of_us
        )
        SELECT p.lead_id, p.as_of_us,
            {_fit_sql()},
            (p.as_of_us - epoch_us(l.created_at)) / 86400000000.0 AS lead_age_days,
            a.* EXCLUDE (lead_id, as_of_us),
            c.* EXCLUDE (lead_id, as_of_us)
        FROM _pairs p
        JOIN leads l ON l.lead_id = p.lead_id AND epoch_us(l.created_at) < p.as_of_us
        LEFT JOIN act_agg a ON a.lead_id = p.lead_id AND a.as_of_us = p.as_of_us
        LEFT JOIN lc_agg c ON c.lead_id = p.lead_id AND c.as_of_us = p.as_of_us
        ORDER BY p.as_of_us, p.lead_id
    """


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
    con, frame = _resolve_pairs(tables, pairs, as_of)
    single = frame["as_of_us"].iloc[0] if len(frame) and frame["as_of_us"].nunique() == 1 else None
    con.register("_pairs", frame)
    try:
        raw = con.execute(_features_sql(config, single)).df()
    finally:
        con.unregister("_pairs")
    return _finish(raw, config)


def _finish(raw: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    """Derived features, then the catalogue's column order and dtypes."""
    n7, n21 = raw["_n7"].fillna(0), raw["_n21"].fillna(0)
    raw["velocity_7d_vs_21d"] = (n7 + 1.0) / (n21 / 3.0 + 1.0)
    opens, clicks = raw["_opens"].fillna(0), raw["_clicks"].fillna(0)
    raw["email_opens_per_30d"] = 30.0 * opens / raw["lead_age_days"].clip(lower=1.0)
    raw["email_click_to_open"] = (clicks / opens).where(opens > 0)
    raw["unsubscribed"] = raw["_unsubscribes"].fillna(0) > 0
    raw["was_mql"] = raw["n_mql"].fillna(0) > 0
    # Recycled: an MQL after the first disqualification (ages grow into the past).
    raw["recycled"] = raw["_last_mql_age"] < raw["_first_dq_age"]
    for col in ("engagement_decayed", "hand_raiser_decayed"):
        raw[col] = raw[col].fillna(0.0)

    keys = _with_as_of(raw[["lead_id", "as_of_us"]].copy())
    columns = {}
    for spec in feature_specs(config):
        col = raw[spec.name]
        if spec.kind in ("count", "flag"):
            col = col.fillna(0)
        columns[spec.name] = col.astype(spec.dtype)
    return pd.concat([keys, pd.DataFrame(columns, index=keys.index)], axis=1).reset_index(drop=True)
