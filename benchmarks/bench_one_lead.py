"""One lead at a time, in process: what the served path pays per request before any HTTP.

On the feature rows of leads open at --as-of, each of --requests single-row frames scored by
``Scorer.predict`` (probabilities, score, tier) and ``Scorer.score`` (plus exact contributions and
the reasons in words), and each lead's JSON request read and scored as ``leadscore serve`` does
(``RequestPlan.read`` + ``RequestPlan.score``: the same answer, on arrays), p50 and p99 per call;
then one batch of --batch rows with reasons for comparison. Run it at two commits (``PYTHONPATH=<checkout>/src``) to compare them.

    python benchmarks/bench_one_lead.py [--data DIR | --leads 50000] [--as-of 2025-09-01]
                                        [--requests 200] [--batch 20000] [--workdir /tmp/leadscore-bench-score]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model import TABLES, load_average, parser_for, prepare  # noqa: E402


def main() -> None:
    parser = parser_for(__doc__, leads=50_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    bundle, data = prepare(args)

    import numpy as np
    import pandas as pd

    import leadscore
    from leadscore.features.builder import connect, features_as_of
    from leadscore.serving.registry import load_scorer
    from leadscore.serving.request import RequestPlan

    scorer, _ = load_scorer(str(bundle))
    con = connect({n: str(data / f"{n}.parquet") for n in TABLES})
    rows = features_as_of(con, as_of=pd.Timestamp(args.as_of, tz="UTC"), config=scorer.feature_config)
    rows = rows[["lead_id", "as_of", *scorer.features]]
    singles = [rows.iloc[[i]].reset_index(drop=True) for i in range(min(args.requests, len(rows)))]
    for s in singles[:5]:
        scorer.score(s)   # warm up

    def per_call(fn) -> str:
        times = []
        for s in singles:
            t = time.perf_counter()
            fn(s)
            times.append(time.perf_counter() - t)
        p50, p99 = np.percentile(np.array(times) * 1000, [50, 99])
        return f"p50 {p50:6.1f} ms, p99 {p99:6.1f} ms"

    print(f"leadscore from {Path(leadscore.__file__).parent}; {len(singles)} single-lead calls; {load_average()}")
    print(f"  Scorer.predict, one lead               {per_call(scorer.predict)}")
    print(f"  Scorer.score (with reasons), one lead  {per_call(scorer.score)}")
    plan = RequestPlan(scorer)
    bodies = {id(s): json.dumps({"dataframe_split": {
        "columns": list(s.columns),
        "data": [[None if pd.isna(v) else v.isoformat() if isinstance(v, pd.Timestamp) else
                  v.item() if isinstance(v, np.generic) else v for v in s.iloc[0].tolist()]]}}).encode()
        for s in singles}
    print(f"  served path (JSON request -> answer)   {per_call(lambda s: plan.score(plan.read(bodies[id(s)], 1)))}")
    batch = rows.iloc[:args.batch]
    t = time.perf_counter()
    scorer.score(batch)
    print(f"  Scorer.score, {len(batch):,} rows at once      {time.perf_counter() - t:6.2f} s")


if __name__ == "__main__":
    main()
