"""The scoring job on a Spark cluster: features -> rule baseline -> registered model -> Parquet.

Runs :func:`leadscore.serving.spark.score_leads_spark` on clean contract tables and writes the
scores (lead_id, as_of, p_sql, p_won, score, tier, fit_score, engagement_score, grid, reasons,
baseline_points, baseline_tier) as Parquet. Every executor needs leadscore installed (or pass
``--env-manager virtualenv``), and MLflow's tracking store must be reachable from the driver
and the executors. With spark-submit::

    spark-submit --master yarn --deploy-mode client \\
        --conf spark.executorEnv.MLFLOW_TRACKING_URI=databricks \\
        "$(python -c 'import leadscore.serving.spark_job as job; print(job.__file__)')" \\
        --tables s3://crm/clean/ --as-of 2025-06-01 \\
        --model models:/leadscore@champion --out s3://crm/scores/2025-06-01/

or, where a job runs a Python entry point (e.g. a Databricks Python wheel task), call
``leadscore.serving.spark_job:main`` with the same arguments.
"""

from __future__ import annotations

import argparse
import sys
import time

TABLES = ("leads", "activities", "lifecycle")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="leadscore.serving.spark_job", description=__doc__.split("\n\n")[0],
        epilog="The tables must be clean contract tables: leadscore validate --quarantine DIR, or a source "
               "mapping's staged output, gives them.")
    parser.add_argument("--tables", required=True,
                        help="Where the clean tables are: leads.parquet, activities.parquet and lifecycle.parquet "
                             "(files or directories) under this path or URI (attribute_history.parquet too when "
                             "the model's source has one).")
    parser.add_argument("--as-of", required=True, help="Score the leads open at this moment (ISO 8601; UTC if no zone).")
    parser.add_argument("--model", required=True, help="The registered model, e.g. models:/leadscore@champion.")
    parser.add_argument("--out", required=True, help="Where to write the scores (a Parquet dataset directory).")
    parser.add_argument("--mode", default="errorifexists", choices=("errorifexists", "overwrite"),
                        help="What to do when --out exists (default: stop with an error).")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI).")
    parser.add_argument("--env-manager", default="local", choices=("local", "virtualenv", "uv", "conda"),
                        help="local: the executors' own Python runs the model; the others rebuild its environment.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, spark=None) -> int:
    """Run the job; ``spark``: a session to use (else the active one, or a new one)."""
    import pandas as pd
    from pyspark.errors import AnalysisException

    from leadscore.data.contract import HISTORY, utc_timestamp
    from leadscore.features.spark import spark_session, timestamps_in_micros
    from leadscore.serving.registry import load_scorer
    from leadscore.serving.spark import score_leads_spark

    args = parse(argv)
    try:
        as_of = utc_timestamp(args.as_of)
    except (ValueError, TypeError) as exc:
        return _error(f"--as-of {args.as_of!r} is not a date or time ({exc})")
    spark = spark or spark_session("leadscore scoring job")
    try:
        scorer, _ = load_scorer(args.model, args.tracking_uri)
    except Exception as exc:  # MLflow's and the bundle's own errors: an unknown model, a tampered copy
        return _error(f"cannot load the model {args.model}: {exc}")
    contract = scorer.feature_config.contract
    names = TABLES + ((HISTORY,) if contract.history_attributes else ())
    base = args.tables.rstrip("/")
    tables = {}
    for name in names:
        path = f"{base}/{name}.parquet"
        try:
            tables[name] = spark.read.parquet(path)
        except AnalysisException as exc:
            return _error(f"table {name}: cannot read {path} ({_first_line(exc)})")
    absent = [a.name for a in contract.attributes if a.name not in tables["leads"].columns]
    if absent:
        return _error(f"{base}/leads.parquet lacks the attribute column(s) the model reads: {', '.join(absent)}")
    start = time.perf_counter()
    try:
        scores = score_leads_spark(spark, tables, as_of, args.model, env_manager=args.env_manager,
                                   tracking_uri=args.tracking_uri, scorer=scorer)
    except (KeyError, ValueError) as exc:   # a required column missing, a flat export's model
        return _error(str(exc).strip("'\""))
    timestamps_in_micros(spark)
    try:
        scores.write.mode(args.mode).parquet(args.out)
    except AnalysisException as exc:
        if "already exists" not in str(exc).lower():
            raise
        return _error(f"{args.out} already exists; nothing was written (--mode overwrite replaces it)")
    written = spark.read.parquet(args.out)
    tiers = written.groupBy("tier").count().toPandas().set_index("tier")["count"]
    print(f"scored {int(tiers.sum()):,} leads open at {pd.Timestamp(as_of):%Y-%m-%d %H:%M} with {args.model} in "
          f"{time.perf_counter() - start:.1f} s: " + ", ".join(f"{t} {int(n):,}" for t, n in tiers.items()))
    print(f"wrote {args.out}")
    return 0


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
