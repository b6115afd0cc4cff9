"""Benchmark the point-in-time feature stage: `features_as_of` for every open lead at one as_of
date, against a hand-written DuckDB query and a plain pandas version over the same Parquet files.
Goals: ours <= 1.5x the hand-written DuckDB query; pandas >= 10x slower than ours.

Each approach runs in its own child process (this script, re-invoked with a hidden --run) and
reports its own wall time (from file paths to a pandas DataFrame in memory; interpreter start-up
and imports excluded) and peak resident memory (getrusage of itself, so the interpreter and
imports are included). The references compute the same columns as ours under the same names;
each child also sums every column so the parent can check that the results agree.

    python benchmarks/bench_features.py [--data DIR] [--leads 1000000] [--as-of 2025-06-01]
                                        [--skip-pandas] [--repeat 1] [--threads N]

One more row, "floor", is not a feature implementation: the bare GROUP BY (lead, activity kind)
with one count over the same rows (activities before as_of of the open leads), which any
per-kind feature set has to do. It shows how much of ours is that aggregation. --threads sets
DuckDB's threads for ours, the floor and the hand-written query (pandas uses one core anyway).

If --data does not exist it is generated first with `leadscore synth --leads N --seed 1`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# The reference implementations are written independently of leadscore.features.builder: these lists
# are spelled out here, as an analyst writing the query by hand would.
KINDS = ("page_view_pricing", "page_view_product", "page_view_blog", "page_view_careers", "page_view_docs",
         "content_download", "webinar_registration", "webinar_attendance", "email_open", "email_click",
         "email_unsubscribe", "email_bounce", "trial_signup", "demo_request", "contact_sales", "chat",
         "form_submit")
WINDOWS = (7, 30, 90)
HALF_LIFE_DAYS = 14.0
HAND_RAISERS = ("demo_request", "contact_sales", "trial_signup", "page_view_pricing")
NEGATIVE = ("email_unsubscribe", "email_bounce")
CLOSED = ("sql", "opportunity", "won", "lost")
REGIONS = {
    "north_america": ("US", "CA"),
    "latin_america": ("MX", "BR", "AR", "CL", "CO", "PE"),
    "uk_ireland": ("GB", "IE"),
    "europe": ("DE", "FR", "NL", "SE", "ES", "IT", "BE", "CH", "AT", "DK", "NO", "FI", "PL", "PT", "CZ"),
    "india": ("IN",),
    "apac": ("AU", "NZ", "SG", "JP", "PH", "CN", "HK", "KR", "MY", "ID", "TH", "VN"),
    "middle_east_africa": ("NG", "ZA", "AE", "SA", "IL", "EG", "KE", "QA"),
}
FIT = ("seniority", "department", "company_size_band", "industry", "country", "region", "lead_source",
       "email_domain_type")

APPROACHES = {"ours": "ours (features_as_of)", "floor": "floor (GROUP BY only)", "duckdb": "hand-written DuckDB",
              "pandas": "plain pandas"}


def _paths(data: Path) -> dict[str, str]:
    return {name: str(data / f"{name}.parquet") for name in ("leads", "activities", "lifecycle")}


def _in(values) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# ---------------------------------------------------------------------------
# The approaches and the floor (each called in its own child process)
# ---------------------------------------------------------------------------

def _threads(con) -> None:
    if os.environ.get("BENCH_THREADS"):
        con.execute(f"SET threads = {int(os.environ['BENCH_THREADS'])}")


def run_ours(paths: dict[str, str], as_of: str):
    from leadscore.features.builder import FeatureConfig, connect, features_as_of

    # The references compute the original 83 columns; per-kind recency is not in them.
    t0 = time.perf_counter()
    con = connect(paths)
    _threads(con)
    df = features_as_of(con, as_of=as_of, config=FeatureConfig(recency_types=()))
    return df, time.perf_counter() - t0


def run_floor(paths: dict[str, str], as_of: str):
    """Not features: GROUP BY (lead, kind) with one count over the rows ours aggregates. Only
    the number of groups and of events is returned (moving the groups to pandas would cost more
    than the aggregation; ours keeps them in Arrow)."""
    import duckdb

    t = f"TIMESTAMPTZ '{as_of} 00:00:00+00'"
    sql = f"""
    WITH closed AS (
        SELECT DISTINCT lead_id FROM read_parquet('{paths["lifecycle"]}')
        WHERE stage IN {_in(CLOSED)} AND occurred_at < {t}
    ),
    open_leads AS (
        SELECT lead_id FROM read_parquet('{paths["leads"]}')
        WHERE created_at < {t} AND lead_id NOT IN (SELECT lead_id FROM closed)
    )
    SELECT count(*) AS lead_kinds, sum(n) AS events FROM (
        SELECT a.lead_id, a.activity_type, count(*) AS n
        FROM read_parquet('{paths["activities"]}') a JOIN open_leads o ON o.lead_id = a.lead_id
        WHERE a.occurred_at < {t}
        GROUP BY a.lead_id, a.activity_type
    )
    """
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    _threads(con)
    df = con.execute(sql).df()
    return df, time.perf_counter() - t0


def reference_sql(paths: dict[str, str], as_of: str) -> str:
    """One query, as an analyst would write it: open leads, activities before as_of, GROUP BY lead."""
    t = f"TIMESTAMPTZ '{as_of} 00:00:00+00'"
    per_kind = ",\n            ".join(
        f"count(*) FILTER (WHERE activity_type = '{k}' AND age < {w}) AS n_{k}_{w}d"
        for w in WINDOWS for k in KINDS)
    region = "\n                ".join(f"WHEN upper(l.country) IN {_in(c)} THEN '{r}'" for r, c in REGIONS.items())
    return f"""
    WITH closed AS (
        SELECT DISTINCT lead_id FROM read_parquet('{paths["lifecycle"]}')
        WHERE stage IN {_in(CLOSED)} AND occurred_at < {t}
    ),
    open_leads AS (
        SELECT * FROM read_parquet('{paths["leads"]}')
        WHERE created_at < {t} AND lead_id NOT IN (SELECT lead_id FROM closed)
    ),
    acts AS (
        SELECT lead_id, activity_type, detail,
               (epoch_us({t}) - epoch_us(occurred_at)) / 86400e6 AS age
        FROM read_parquet('{paths["activities"]}')
        WHERE occurred_at < {t} AND lead_id IN (SELECT lead_id FROM open_leads)
    ),
    act AS (
        SELECT lead_id,
            {per_kind},
            count(*) FILTER (WHERE age < 7) AS n_activities_7d,
            count(*) FILTER (WHERE age < 30) AS n_activities_30d,
            count(*) FILTER (WHERE age < 90) AS n_activities_90d,
            count(*) AS n_activities_total,
            min(age) AS days_since_last_activity,
            min(age) FILTER (WHERE activity_type IN {_in(HAND_RAISERS)}) AS days_since_last_hand_raiser,
            count(*) FILTER (WHERE activity_type IN {_in(HAND_RAISERS)}) AS n_hand_raiser_total,
            sum(pow(0.5, age / {HALF_LIFE_DAYS})) FILTER (WHERE activity_type NOT IN {_in(NEGATIVE)})
                AS engagement_decayed,
            sum(pow(0.5, age / {HALF_LIFE_DAYS})) FILTER (WHERE activity_type IN {_in(HAND_RAISERS)})
                AS hand_raiser_decayed,
            count(*) FILTER (WHERE age >= 7 AND age < 28) AS n_prev_21d,
            count(DISTINCT activity_type) AS n_distinct_kinds,
            count(DISTINCT activity_type || ':' || detail) AS n_distinct_assets,
            count(*) FILTER (WHERE activity_type = 'email_open') AS n_opens,
            count(*) FILTER (WHERE activity_type = 'email_click') AS n_clicks,
            count(*) FILTER (WHERE activity_type = 'email_unsubscribe') AS n_unsubscribes,
            count(*) FILTER (WHERE activity_type = 'email_bounce') AS n_email_bounce_total,
            count(*) FILTER (WHERE activity_type = 'page_view_careers') AS n_careers_views_total
        FROM acts GROUP BY lead_id
    ),
    lc AS (
        SELECT lead_id,
            count(*) FILTER (WHERE stage = 'mql') AS n_mql,
            count(*) FILTER (WHERE stage = 'disqualified') AS n_disqualified,
            (epoch_us({t}) - epoch_us(max(occurred_at) FILTER (WHERE stage = 'mql'))) / 86400e6
                AS days_since_last_mql,
            (epoch_us({t}) - epoch_us(max(occurred_at) FILTER (WHERE stage = 'disqualified'))) / 86400e6
                AS days_since_disqualified,
            max(occurred_at) FILTER (WHERE stage = 'mql') > min(occurred_at) FILTER (WHERE stage = 'disqualified')
                AS recycled
        FROM read_parquet('{paths["lifecycle"]}')
        WHERE occurred_at < {t} AND lead_id IN (SELECT lead_id FROM open_leads)
        GROUP BY lead_id
    )
    SELECT
        l.lead_id,
        coalesce(l.seniority, 'missing') AS seniority,
        coalesce(l.department, 'missing') AS department,
        CASE WHEN l.company_size IS NULL THEN 'missing'
             WHEN l.company_size <= 10 THEN '1-10'
             WHEN l.company_size <= 50 THEN '11-50'
             WHEN l.company_size <= 200 THEN '51-200'
             WHEN l.company_size <= 1000 THEN '201-1000'
             WHEN l.company_size <= 5000 THEN '1001-5000'
             ELSE '5001+' END AS company_size_band,
        coalesce(l.industry, 'missing') AS industry,
        coalesce(l.country, 'missing') AS country,
        CASE WHEN l.country IS NULL THEN 'missing'
                {region}
                ELSE 'other' END AS region,
        coalesce(l.lead_source, 'missing') AS lead_source,
        coalesce(l.email_domain_type, 'missing') AS email_domain_type,
        (epoch_us({t}) - epoch_us(l.created_at)) / 86400e6 AS lead_age_days,
        a.* EXCLUDE (lead_id, n_prev_21d, n_opens, n_clicks, n_unsubscribes),
        (coalesce(a.n_activities_7d, 0) + 1.0) / (coalesce(a.n_prev_21d, 0) / 3.0 + 1.0) AS velocity_7d_vs_21d,
        30.0 * coalesce(a.n_opens, 0) / greatest((epoch_us({t}) - epoch_us(l.created_at)) / 86400e6, 1.0)
            AS email_opens_per_30d,
        a.n_clicks / nullif(a.n_opens, 0) AS email_click_to_open,
        coalesce(a.n_unsubscribes, 0) > 0 AS unsubscribed,
        c.n_mql, c.n_disqualified,
        coalesce(c.n_mql, 0) > 0 AS was_mql,
        coalesce(c.recycled, false) AS recycled,
        c.days_since_last_mql, c.days_since_disqualified
    FROM open_leads l
    LEFT JOIN act a ON a.lead_id = l.lead_id
    LEFT JOIN lc c ON c.lead_id = l.lead_id
    ORDER BY l.lead_id
    """


def run_duckdb(paths: dict[str, str], as_of: str):
    import duckdb

    sql = reference_sql(paths, as_of)
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    _threads(con)
    df = con.execute(sql).df()
    return df, time.perf_counter() - t0


def run_pandas(paths: dict[str, str], as_of: str):
    import numpy as np
    import pandas as pd

    t0 = time.perf_counter()
    t = pd.Timestamp(as_of, tz="UTC")
    t_us = t.value // 1000

    def days_before(ts: pd.Series) -> pd.Series:  # exact microseconds, like the SQL versions
        return (t_us - ts.astype("datetime64[us, UTC]").astype("int64")) / 86400e6

    leads = pd.read_parquet(paths["leads"])
    lifecycle = pd.read_parquet(paths["lifecycle"])
    lifecycle = lifecycle[lifecycle["occurred_at"] < t]
    closed = lifecycle.loc[lifecycle["stage"].isin(CLOSED), "lead_id"].unique()
    leads = leads[(leads["created_at"] < t) & ~leads["lead_id"].isin(closed)].sort_values("lead_id")
    open_ids = pd.Index(leads["lead_id"], name="lead_id")

    # Fit columns.
    out = pd.DataFrame(index=open_ids)
    lead_cols = leads.set_index("lead_id")
    for col in ("seniority", "department", "industry", "country", "lead_source", "email_domain_type"):
        out[col] = lead_cols[col].fillna("missing")
    band = pd.cut(lead_cols["company_size"], [-np.inf, 10, 50, 200, 1000, 5000, np.inf],
                  labels=["1-10", "11-50", "51-200", "201-1000", "1001-5000", "5001+"])
    out["company_size_band"] = band.astype(object).where(lead_cols["company_size"].notna(), "missing")
    region_of = {c: r for r, cs in REGIONS.items() for c in cs}
    out["region"] = (lead_cols["country"].str.upper().map(region_of).fillna("other")
                     .where(lead_cols["country"].notna(), "missing"))
    out["lead_age_days"] = days_before(lead_cols["created_at"])
    out = out[list(FIT) + ["lead_age_days"]]

    # Activities before as_of of the open leads.
    acts = pd.read_parquet(paths["activities"])
    acts = acts[(acts["occurred_at"] < t) & acts["lead_id"].isin(open_ids)]
    acts = pd.DataFrame({
        "lead_id": pd.Categorical(acts["lead_id"], categories=open_ids),
        "kind": pd.Categorical(acts["activity_type"], categories=KINDS),
        "detail": acts["detail"],
        "age": days_before(acts["occurred_at"]),
    })
    acts["decay"] = 0.5 ** (acts["age"] / HALF_LIFE_DAYS)
    by_lead = acts.groupby("lead_id", observed=False)

    parts = []
    for w in WINDOWS:
        counts = (acts[acts["age"] < w].groupby(["lead_id", "kind"], observed=False).size()
                  .unstack("kind"))
        counts.columns = [f"n_{k}_{w}d" for k in counts.columns]
        counts[f"n_activities_{w}d"] = counts.sum(axis=1)
        parts.append(counts)
    hand = acts[acts["kind"].isin(HAND_RAISERS)].groupby("lead_id", observed=False)
    kind_totals = acts.groupby(["lead_id", "kind"], observed=False).size().unstack("kind")
    n7 = parts[0]["n_activities_7d"]
    n21 = acts[(acts["age"] >= 7) & (acts["age"] < 28)].groupby("lead_id", observed=False).size()
    assets = acts.dropna(subset=["detail"]).drop_duplicates(["lead_id", "kind", "detail"])
    opens, clicks = kind_totals["email_open"], kind_totals["email_click"]
    parts.append(pd.DataFrame({
        "n_activities_total": by_lead.size(),
        "days_since_last_activity": by_lead["age"].min(),
        "days_since_last_hand_raiser": hand["age"].min(),
        "n_hand_raiser_total": hand.size(),
        "engagement_decayed": acts[~acts["kind"].isin(NEGATIVE)].groupby("lead_id", observed=False)["decay"].sum(),
        "hand_raiser_decayed": hand["decay"].sum(),
        "velocity_7d_vs_21d": (n7 + 1.0) / (n21 / 3.0 + 1.0),
        "n_distinct_kinds": (kind_totals > 0).sum(axis=1),
        "n_distinct_assets": assets.groupby("lead_id", observed=False).size(),
        "email_opens_per_30d": 30.0 * opens / out["lead_age_days"].clip(lower=1.0),
        "email_click_to_open": (clicks / opens).where(opens > 0),
        "unsubscribed": kind_totals["email_unsubscribe"] > 0,
        "n_email_bounce_total": kind_totals["email_bounce"],
        "n_careers_views_total": kind_totals["page_view_careers"],
    }))

    # Lifecycle history.
    lc = lifecycle[lifecycle["lead_id"].isin(open_ids)]
    lc = pd.DataFrame({"lead_id": pd.Categorical(lc["lead_id"], categories=open_ids),
                       "stage": lc["stage"].to_numpy(), "age": days_before(lc["occurred_at"])})
    mql = lc[lc["stage"] == "mql"].groupby("lead_id", observed=False)["age"].agg(["size", "min"])
    dq = lc[lc["stage"] == "disqualified"].groupby("lead_id", observed=False)["age"].agg(["size", "min", "max"])
    parts.append(pd.DataFrame({
        "n_mql": mql["size"],
        "n_disqualified": dq["size"],
        "was_mql": mql["size"] > 0,
        "recycled": mql["min"] < dq["max"],
        "days_since_last_mql": mql["min"],
        "days_since_disqualified": dq["min"],
    }))

    df = pd.concat([out, *parts], axis=1).reset_index()
    return df, time.perf_counter() - t0


RUNNERS = {"ours": run_ours, "floor": run_floor, "duckdb": run_duckdb, "pandas": run_pandas}


def checksums(df) -> dict:
    """Per column: sum and count of non-zero values (numbers), or value counts (strings)."""
    import pandas as pd

    sums = {}
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            v = s.astype("float64")
            sums[col] = [float(v.sum()), int((v.fillna(0) != 0).sum())]
        elif pd.api.types.is_string_dtype(s) or s.dtype == object:
            if col != "lead_id":
                sums[col] = {str(k): int(n) for k, n in s.value_counts().items()}
    return sums


def child(name: str, data: Path, as_of: str) -> None:
    df, wall = RUNNERS[name](_paths(data), as_of)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"wall": wall, "peak_mb": peak_mb, "rows": len(df), "cols": df.shape[1],
                      "checksums": checksums(df)}))


# ---------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------

def spawn(name: str, data: Path, as_of: str, threads: int | None = None) -> dict | str:
    cmd = [sys.executable, __file__, "--run", name, "--data", str(data), "--as-of", as_of]
    env = dict(os.environ, BENCH_THREADS=str(threads)) if threads else None
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"failed (exit {proc.returncode}): {tail}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def disagreements(ref: dict, ours: dict) -> tuple[int, list[str]]:
    shared = sorted(set(ref) & set(ours))
    bad = []
    for col in shared:
        a, b = ref[col], ours[col]
        if isinstance(a, list) and isinstance(b, list):
            if a[1] != b[1] or not math.isclose(a[0], b[0], rel_tol=1e-9, abs_tol=1e-6):
                bad.append(col)
        elif a != b:
            bad.append(col)
    return len(shared), bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/synthetic/bench"),
                    help="directory with leads/activities/lifecycle.parquet (generated if missing)")
    ap.add_argument("--leads", type=int, default=1_000_000, help="leads to generate if --data is missing")
    ap.add_argument("--as-of", default="2025-06-01", help="the as_of date (UTC midnight)")
    ap.add_argument("--skip-pandas", action="store_true", help="skip the (slow, memory hungry) pandas version")
    ap.add_argument("--repeat", type=int, default=1, help="runs of ours and DuckDB; the fastest is shown")
    ap.add_argument("--threads", type=int, help="DuckDB threads for ours, the floor and the hand-written query "
                                                "(default: DuckDB's own, one per core)")
    ap.add_argument("--run", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.run:
        child(args.run, args.data, args.as_of)
        return

    if not args.data.exists():
        print(f"generating {args.leads:,} leads into {args.data} ...", flush=True)
        subprocess.run([sys.executable, "-m", "leadscore.cli.app", "synth", "--leads", str(args.leads), "--seed", "1",
                        "--out", str(args.data), "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    import pyarrow.parquet as pq

    paths = _paths(args.data)
    n_leads = pq.ParquetFile(paths["leads"]).metadata.num_rows
    n_events = pq.ParquetFile(paths["activities"]).metadata.num_rows
    for p in paths.values():  # warm the page cache so the first child does not pay for the disk
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass

    load_before = os.getloadavg()[0]  # 2-core machines: other work skews the timings
    results: dict[str, dict | str] = {}
    for name in ("ours", "floor", "duckdb") + (() if args.skip_pandas else ("pandas",)):
        runs = [spawn(name, args.data, args.as_of, args.threads)
                for _ in range(args.repeat if name != "pandas" else 1)]
        ok = [r for r in runs if isinstance(r, dict)]
        if ok:
            best = min(ok, key=lambda r: r["wall"])
            results[name] = {**best, "peak_mb": max(r["peak_mb"] for r in ok)}
        else:
            results[name] = runs[0]

    print(f"features_as_of {args.as_of} on {args.data}: {n_leads:,} leads, {n_events:,} activity events"
          + (f" (best of {args.repeat})" if args.repeat > 1 else "")
          + f"; DuckDB threads {args.threads or 'default'} of {os.cpu_count()} cores"
          + f"; load average before {load_before:.1f}")
    print(f"  {'':24}{'wall s':>8}{'peak RSS MB':>13}{'rows':>11}{'cols':>6}")
    for name, r in results.items():
        if isinstance(r, str):
            print(f"  {APPROACHES[name]:24}{r}")
        else:
            print(f"  {APPROACHES[name]:24}{r['wall']:8.1f}{r['peak_mb']:13,.0f}{r['rows']:11,}{r['cols']:6}")

    ours, ref = results["ours"], results["duckdb"]
    if isinstance(ours, dict) and isinstance(ref, dict):
        print(f"  ours / DuckDB          {ours['wall'] / ref['wall']:8.2f}x  (goal <= 1.5x)")
    pd_ = results.get("pandas")
    if isinstance(ours, dict) and isinstance(pd_, dict):
        print(f"  pandas / ours          {pd_['wall'] / ours['wall']:8.1f}x  (goal >= 10x)")
    floor = results.get("floor")
    if isinstance(ours, dict) and isinstance(floor, dict):
        print(f"  floor / ours           {floor['wall'] / ours['wall']:8.0%}   (the bare GROUP BY (lead, kind))")
    if isinstance(ours, dict):
        print(f"  ours throughput        {n_events / ours['wall']:>12,.0f} activity events/s")
        for name in ("duckdb", "pandas"):
            r = results.get(name)
            if isinstance(r, dict):
                n, bad = disagreements(r["checksums"], ours["checksums"])
                verdict = "all agree" if not bad else f"{len(bad)} differ: {', '.join(bad)}"
                print(f"  {APPROACHES[name]} vs ours: {n} shared columns, {verdict}")
    failed = False
    if isinstance(ours, dict) and isinstance(ref, dict) and ours["rows"] != ref["rows"]:
        print(f"ERROR: row counts differ: ours {ours['rows']:,}, hand-written DuckDB {ref['rows']:,}",
              file=sys.stderr)
        failed = True
    if any(isinstance(r, str) for r in results.values()):
        failed = True
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
