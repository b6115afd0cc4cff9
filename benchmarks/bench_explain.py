"""Benchmark explanations: reasons for --rows leads (default 100,000) from the same model by
four paths, rows per second each.

- raw ``pred_contrib``: LightGBM's native TreeSHAP on the already-prepared feature matrix
  (the p_sql model; contributions only, no words);
- ours, :class:`leadscore.modeling.treeshap.TreeExplainer` on the same matrix (contributions
  only; built once per model, its build time printed apart) - must equal ``pred_contrib`` to
  1e-9 and is meant to be at least 2x its rows/s;
- ``shap.TreeExplainer(booster).shap_values`` on the same matrix (contributions only; for a
  LightGBM booster, shap itself calls ``pred_contrib``, so expect the same speed plus its
  wrapping);
- ours, ``explain_rows``: p_sql/p_won/tier, exact contributions, fit/engagement scores and
  grid, decision sentence and the top-k positive and negative reasons in words per lead - and
  ``Scorer.score``, the same joined into the job's one-line ``reasons`` column.

The two contribution paths are checked to agree within 1e-6 on the benchmarked rows.

    python benchmarks/bench_explain.py [--data DIR | --leads 200000] [--rows 100000] [--top 3]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model import TABLES, parser_for, peak_rss_mb, prepare  # noqa: E402


def main() -> None:
    parser = parser_for(__doc__, leads=200_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()
    bundle, data = prepare(args)

    import numpy as np
    import pandas as pd
    import shap

    from leadscore.features.builder import connect, features_as_of, open_leads
    from leadscore.modeling.model import as_model_frame
    from leadscore.serving.explain import explain_rows
    from leadscore.serving.registry import load_scorer

    scorer, _ = load_scorer(str(bundle))
    con = connect({n: str(data / f"{n}.parquet") for n in TABLES})
    as_of = pd.Timestamp(args.as_of, tz="UTC")
    pairs = open_leads(con, [as_of]).sort_values("lead_id").head(args.rows).reset_index(drop=True)
    rows = features_as_of(con, pairs, config=scorer.feature_config)
    n = len(rows)
    if n < args.rows:
        print(f"note: only {n:,} leads are open at {args.as_of} in {data}")
    m = scorer.sql_model
    X = as_model_frame(rows, m.features, m.levels)
    iteration = m.best_iteration or None
    print(f"\n{n:,} open leads of {data} at {args.as_of}, {len(m.features)} features, "
          f"{m.booster.num_trees() if iteration is None else iteration} trees (p_sql model)", flush=True)

    t = time.perf_counter()
    native = np.asarray(m.booster.predict(X, pred_contrib=True, num_iteration=iteration))
    t_native = time.perf_counter() - t

    from leadscore.modeling.families import lightgbm_matrix
    from leadscore.modeling.treeshap import TreeExplainer

    matrix = lightgbm_matrix(X, m.booster)
    t = time.perf_counter()
    fast = TreeExplainer(m.booster, iteration)
    t_build = time.perf_counter() - t
    for parallel_rows in (10**9, 1):   # both kernels compiled (or loaded from numba's cache) before timing
        fast.contributions(matrix[:10], parallel_rows=parallel_rows)
    t = time.perf_counter()
    exact = fast.contributions(matrix)
    t_fast = time.perf_counter() - t
    fast_diff = float(np.max(np.abs(exact - native)))

    booster = m.booster
    if iteration is not None and iteration < booster.num_trees():
        booster = booster.__class__(model_str=booster.model_to_string(num_iteration=iteration))
    t = time.perf_counter()
    explainer = shap.TreeExplainer(booster)
    theirs = explainer.shap_values(X)
    t_shap = time.perf_counter() - t
    diff = float(np.max(np.abs(native[:, :-1] - np.asarray(theirs))))

    t = time.perf_counter()
    explained, _ = explain_rows(scorer, rows, k=args.top)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    scorer.score(rows, top_reasons=args.top)
    t_score = time.perf_counter() - t

    def line(label: str, seconds: float) -> str:
        return f"  {label:<66} {seconds:7.2f} s {n / seconds:>10,.0f} rows/s {seconds / t_native:6.1f}x raw"

    print(line("raw pred_contrib (contributions only)", t_native))
    print(line("ours: TreeExplainer.contributions (contributions only)", t_fast)
          + f"  = {t_native / t_fast:.2f}x raw's rows/s (built in {t_build:.2f} s)")
    print(line("shap.TreeExplainer.shap_values (contributions only)", t_shap))
    print(line(f"ours: explain_rows (probabilities, contributions, grid, {args.top}+{args.top} reasons)", t_ours))
    print(line("ours: Scorer.score (the job's columns, reasons as one line)", t_score))
    print(f"  ours vs pred_contrib: max |difference| {fast_diff:.2e} (must be <= 1e-9)")
    print(f"  pred_contrib vs shap.TreeExplainer: max |difference| {diff:.2e} (must be <= 1e-6)")
    print(f"  example: {explained['decision'].iloc[0]}")
    print(f"  peak RSS of this process {peak_rss_mb():,.0f} MB")
    if diff > 1e-6:
        sys.exit("native and shap contributions disagree")
    if fast_diff > 1e-9:
        sys.exit("our contributions and pred_contrib disagree")


if __name__ == "__main__":
    main()
