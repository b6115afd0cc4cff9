"""Benchmark the features on Spark against DuckDB: every lead open at --as-of, the same tables.

1. DuckDB (``features_as_of``) in this process: wall time from the Parquet paths to a DataFrame.
2. Spark in local mode (``features_spark``, written as Parquet by ``write_features``, the path
   ``leadscore features --engine spark`` takes): the session's start-up, then the features job
   alone, with the driver's memory set by --driver-memory.
3. Equality: Spark's rows read back against DuckDB's - every column of every lead, the largest
   difference of the float columns and the number of differing values of the others.

On one machine DuckDB wins; the point is that the numbers are the same and the path runs.

    python benchmarks/bench_spark.py [--data DIR | --leads 1000000] [--as-of 2025-09-01]
                                     [--master local[2]] [--driver-memory 6g]
                                     [--workdir /tmp/leadscore-bench-score]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model import TABLES, ensure_data, load_average, parser_for  # noqa: E402


def main() -> None:
    parser = parser_for(__doc__, leads=1_000_000)
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2]: both cores).")
    parser.add_argument("--driver-memory", default="6g", help="spark.driver.memory (local mode: all of Spark).")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.data or ensure_data(args.workdir / f"score-data-{args.leads}", args.leads, 5)
    print(load_average(), flush=True)

    import numpy as np
    import pandas as pd

    from leadscore.features.builder import FeatureConfig, features_as_of
    from leadscore.features.spark import write_features

    paths = {n: str(data / f"{n}.parquet") for n in TABLES}
    as_of = pd.Timestamp(args.as_of, tz="UTC")
    t = time.perf_counter()
    duck = features_as_of(paths, as_of=as_of)
    t_duck = time.perf_counter() - t
    print(f"\n{data}: {len(duck):,} leads open at {args.as_of}, {duck.shape[1] - 2} features")
    print(f"  DuckDB                      {t_duck:8.1f} s  {len(duck) / t_duck:>10,.0f} leads/s", flush=True)

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    t = time.perf_counter()
    spark = (SparkSession.builder.master(args.master).appName("bench_spark")
             .config("spark.driver.memory", args.driver_memory)
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    t_start = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="bench-spark-", dir=args.workdir) as work:
        out = Path(work) / "features.parquet"
        t = time.perf_counter()
        n = write_features(spark, paths, as_of, out, FeatureConfig())
        t_spark = time.perf_counter() - t
        print(f"  Spark {args.master:<10} start   {t_start:8.1f} s")
        print(f"  Spark {args.master:<10} features{t_spark:8.1f} s  {n / t_spark:>10,.0f} leads/s   "
              f"{t_spark / t_duck:.1f}x DuckDB's time", flush=True)
        got = pd.read_parquet(out)
    spark.stop()

    print("\nequality, Spark against DuckDB:")
    same_columns = list(got.columns) == list(duck.columns)
    same_dtypes = same_columns and (got.dtypes == duck.dtypes).all()
    print(f"  rows {len(got):,} vs {len(duck):,}; columns {'equal' if same_columns else 'DIFFER'}"
          f"; dtypes {'equal' if same_dtypes else 'DIFFER'}")
    if not same_columns or len(got) != len(duck):
        sys.exit("Spark's rows differ from DuckDB's")
    worst, differing = 0.0, {}
    for col in duck.columns:
        a, b = got[col], duck[col]
        if b.dtype == "float64":
            both = a.notna() & b.notna()
            worst = max(worst, float(np.max(np.abs(a[both].to_numpy() - b[both].to_numpy()), initial=0.0)))
            missing = int((a.isna() != b.isna()).sum())
            if missing:
                differing[col] = missing
        else:
            bad = int((a.astype(str).to_numpy() != b.astype(str).to_numpy()).sum())
            if bad:
                differing[col] = bad
    print(f"  float columns: max |difference| {worst:.1e} (goal <= 1e-9)")
    print(f"  other columns and missing values: {sum(differing.values()):,} differing values"
          + (f" in {', '.join(differing)}" if differing else ""))
    print(load_average())
    if worst > 1e-9 or differing or not same_dtypes:
        sys.exit("Spark's features differ from DuckDB's")


if __name__ == "__main__":
    main()
