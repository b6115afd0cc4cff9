"""What the registered pyfunc adds on top of the scorer it wraps, per batch-job chunk.

Every scoring path runs ``Scorer.score``: ``leadscore score`` calls it on each chunk, and the
registered MLflow model's ``predict`` (behind ``mlflow models serve``, ``leadscore serve`` and the
Spark UDF) wraps it after MLflow's schema enforcement. This measures, on the same feature rows,
(a) ``Scorer.score`` and (b) ``mlflow.pyfunc.load_model(...).predict`` of the same bundle
registered in a throwaway SQLite store, chunk by chunk, and checks that the outputs are equal -
the evidence for whether the batch job should go through the pyfunc too.

    python benchmarks/bench_pyfunc.py [--data DIR | --leads 50000] [--as-of 2025-09-01]
                                      [--chunk-size 50000] [--workdir /tmp/leadscore-bench-pyfunc]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model import TABLES, load_average, parser_for, prepare  # noqa: E402


def main() -> None:
    parser = parser_for(__doc__, leads=50_000)
    parser.add_argument("--chunk-size", type=int, default=50_000, help="Rows per chunk (the job's default).")
    parser.add_argument("--repeat", type=int, default=3, help="Timed passes over the rows; the best is kept.")
    args = parser.parse_args()
    bundle, data = prepare(args)

    import mlflow
    import numpy as np
    import pandas as pd

    from leadscore.features.builder import connect, features_as_of
    from leadscore.serving import registry as T
    from leadscore.serving.registry import TrackingConfig, load_scorer

    scorer, _ = load_scorer(str(bundle))
    paths = {n: str(data / f"{n}.parquet") for n in TABLES}
    rows = features_as_of(connect(paths), as_of=pd.Timestamp(args.as_of, tz="UTC"), config=scorer.feature_config)
    rows = rows[["lead_id", "as_of", *scorer.features]]
    chunks = [rows.iloc[s:s + args.chunk_size].reset_index(drop=True) for s in range(0, len(rows), args.chunk_size)]
    print(f"{data}: {len(rows):,} open leads at {args.as_of}, {len(chunks)} chunk(s) of <= {args.chunk_size:,}; "
          f"{load_average()}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifact_location=f"{tmp}/artifacts",
                                  experiment="bench-pyfunc", registered_model="bench-pyfunc")
        T.configure(tracking)
        example = rows.head(5)
        with mlflow.start_run():
            version = T.log_model_version(tracking, bundle, example, scorer.score(example))
        served = mlflow.pyfunc.load_model(f"models:/bench-pyfunc/{version.version}")

        def naive(chunk: pd.DataFrame) -> pd.DataFrame:
            # MLflow's schema takes zone-naive timestamps only; the model reads them as UTC. Part of the
            # pyfunc path's cost, so timed with it.
            return chunk.assign(as_of=chunk["as_of"].dt.tz_convert("UTC").dt.tz_localize(None))

        served.predict(naive(example))   # warm up both
        scorer.score(example)

        def best(fn) -> tuple[float, list]:
            times, out = [], None
            for _ in range(args.repeat):
                t = time.perf_counter()
                out = [fn(c) for c in chunks]
                times.append(time.perf_counter() - t)
            return min(times), out

        t_scorer, direct = best(lambda c: scorer.score(c))
        t_pyfunc, through = best(lambda c: served.predict(naive(c)))

    a, b = pd.concat(direct, ignore_index=True), pd.concat(through, ignore_index=True)
    same_columns = list(a.columns) == list(b.columns)
    p = scorer.probability
    max_diff = float(np.max(np.abs(a[p].to_numpy() - b[p].to_numpy()))) if len(a) else 0.0
    same_text = a["tier"].tolist() == b["tier"].tolist() and a["reasons"].tolist() == b["reasons"].tolist()
    n = len(rows)
    print(f"\nbest of {args.repeat} passes over {n:,} rows:")
    print(f"  Scorer.score (the batch job)           {t_scorer:7.2f} s {n / t_scorer:>10,.0f} rows/s")
    print(f"  registered pyfunc predict              {t_pyfunc:7.2f} s {n / t_pyfunc:>10,.0f} rows/s   "
          f"{t_pyfunc / t_scorer:.2f}x the time, +{(t_pyfunc - t_scorer) / max(len(chunks), 1):.2f} s per chunk")
    print(f"  outputs: same columns {same_columns}, max |{p} difference| {max_diff:.1e}, same tiers and reasons "
          f"{same_text}")
    if not (same_columns and same_text and max_diff <= 1e-12):
        sys.exit(1)


if __name__ == "__main__":
    main()
