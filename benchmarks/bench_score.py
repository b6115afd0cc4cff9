"""Benchmark batch scoring on a large synthetic lead base (default 1M leads, ~50M events).

1. A model is trained once (8,000 synthetic leads, tracking off) into WORKDIR/models.
2. In this process, on the feature rows of every lead open at --as-of (the prepared feature
   table `leadscore features` writes):
   - the reference: raw LightGBM ``booster.predict`` of the same model on the already-prepared
     feature matrix (the p_sql model alone, and both the p_sql and p_won models), and raw
     ``pred_contrib`` (LightGBM's TreeSHAP) of the p_sql model - the contributions alone, which
     every run with reasons is compared with;
   - our scoring step without reasons, ``Scorer.predict``: matrix preparation, both models,
     calibration, score 1-99, tier - the output columns from the feature table;
   - our scoring step with reasons, ``Scorer.score`` in the job's chunks: plus exact SHAP
     contributions, fit/engagement scores, grid and the reasons in words.
   Goal: our step without reasons at >= 50 % of raw predict's rows/s.
3. End to end: `leadscore score` in a child process (contract checks, features, scoring with
   reasons, atomic Parquet output) - wall time, leads/s and that child's peak RSS (goal < 2 GB).

    python benchmarks/bench_score.py [--data DIR | --leads 1000000] [--as-of 2025-09-01]
                                     [--chunk-size 50000] [--workdir /tmp/leadscore-bench-score]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model import LEADSCORE, TABLES, parser_for, peak_rss_mb, prepare, run_child  # noqa: E402


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f} rows/s"


def main() -> None:
    parser = parser_for(__doc__, leads=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=50_000, help="Leads per chunk (the job's default).")
    args = parser.parse_args()
    bundle, data = prepare(args)

    import pandas as pd

    from leadscore.features.builder import connect, features_as_of
    from leadscore.modeling.model import as_model_frame
    from leadscore.serving.batch import read_scores
    from leadscore.serving.registry import load_scorer

    scorer, _ = load_scorer(str(bundle))
    paths = {n: str(data / f"{n}.parquet") for n in TABLES}
    t = time.perf_counter()
    rows = features_as_of(connect(paths), as_of=pd.Timestamp(args.as_of, tz="UTC"), config=scorer.feature_config)
    t_features = time.perf_counter() - t
    n = len(rows)
    print(f"\n{data}: {n:,} leads open at {args.as_of}; feature table built in {t_features:.1f} s "
          f"({len(scorer.features)} features)", flush=True)

    def raw_predict(models) -> float:
        mats = [(m, as_model_frame(rows, m.features, m.levels)) for m in models]  # prepared outside the timing
        t0 = time.perf_counter()
        for m, X in mats:
            m.booster.predict(X, raw_score=True, num_iteration=m.best_iteration or None)
        return time.perf_counter() - t0

    def raw_contrib(m) -> float:
        X = as_model_frame(rows, m.features, m.levels)
        t0 = time.perf_counter()
        m.booster.predict(X, pred_contrib=True, num_iteration=m.best_iteration or None)
        return time.perf_counter() - t0

    t_contrib = raw_contrib(scorer.primary_model)
    t_raw_sql = raw_predict([scorer.sql_model])
    t_raw_both = raw_predict([scorer.sql_model, scorer.won_model])
    t = time.perf_counter()
    scorer.predict(rows)
    t_predict = time.perf_counter() - t
    t = time.perf_counter()
    for start in range(0, n, args.chunk_size):
        scorer.score(rows.iloc[start:start + args.chunk_size])
    t_score = time.perf_counter() - t
    rss_in_process = peak_rss_mb()

    print(f"\nin process, {n:,} rows (prepared feature table -> output columns):")
    print(f"  raw LightGBM predict, p_sql model            {t_raw_sql:7.2f} s {_rate(n, t_raw_sql)}")
    print(f"  raw LightGBM predict, p_sql + p_won models   {t_raw_both:7.2f} s {_rate(n, t_raw_both)}")
    print(f"  raw LightGBM pred_contrib, {scorer.primary} model       {t_contrib:7.2f} s {_rate(n, t_contrib)}")
    print(f"  ours without reasons (Scorer.predict)        {t_predict:7.2f} s {_rate(n, t_predict)}   "
          f"{t_raw_sql / t_predict:5.0%} of raw p_sql predict, {t_raw_both / t_predict:5.0%} of raw p_sql + p_won "
          "(goal >= 50 %)")
    print(f"  ours with reasons (Scorer.score, chunks of {args.chunk_size:,}) {t_score:7.2f} s {_rate(n, t_score)}   "
          f"{t_raw_both / t_score:5.1%} of raw p_sql + p_won, {t_score / t_contrib:.2f}x raw pred_contrib's time")
    print(f"  peak RSS of this process                     {rss_in_process:,.0f} MB", flush=True)

    out = args.workdir / "scores.parquet"
    wall, rss = run_child([*LEADSCORE, "score", "--model", str(bundle), "--data", str(data), "--as-of", args.as_of,
                           "--out", str(out), "--chunk-size", str(args.chunk_size), "--no-progress"])
    scored = len(read_scores(out))
    print("\nend to end, `leadscore score` (contract checks, features, scoring with reasons, Parquet output):")
    print(f"  {wall:.1f} s for {scored:,} open leads of {data.name}: {scored / wall:,.0f} leads/s; "
          f"peak RSS {rss:,.0f} MB (goal < 2,048 MB)")
    print(f"  {wall / t_contrib:.2f}x the time of raw pred_contrib alone on the same rows (goal: <= 180 s)")


if __name__ == "__main__":
    main()
