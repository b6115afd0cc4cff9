"""How much of a nightly scoring run could reuse the previous night's explanations, exactly.

On the same synthetic CRM, the feature rows of the leads open at --as-of and one day later:

1. rows identical on every feature (what a hash of the feature row would let a run reuse), and
   on the features that do not age by themselves (no days-since, lead age, decay, velocity);
2. rows that take the same branch at every split of the shipped LightGBM model (numbers binned
   by the model's own thresholds, categoricals by level, missing apart): TreeSHAP values and the
   margin depend only on those branches, so such rows have identical contributions - the most an
   exact reuse can save;
3. within one run, how many rows share their features or their branches with another row.

    python benchmarks/bench_row_changes.py [--data DIR | --leads 50000] [--as-of 2025-09-01]
                                           [--workdir /tmp/leadscore-bench-score]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model import TABLES, parser_for, prepare  # noqa: E402


def main() -> None:
    args = parser_for(__doc__, leads=50_000).parse_args()
    bundle, data = prepare(args)

    import numpy as np
    import pandas as pd

    from leadscore.features.builder import connect, features_as_of
    from leadscore.serving.registry import load_scorer

    scorer, _ = load_scorer(str(bundle))
    con = connect({n: str(data / f"{n}.parquet") for n in TABLES})
    day = pd.Timestamp(args.as_of, tz="UTC")
    a, b = (features_as_of(con, as_of=t, config=scorer.feature_config) for t in (day, day + pd.Timedelta(days=1)))
    features = scorer.features
    both = a[["lead_id", *features]].merge(b[["lead_id", *features]], on="lead_id", suffixes=("_a", "_b"))

    def same(columns) -> np.ndarray:
        out = np.ones(len(both), dtype=bool)
        for c in columns:
            x, y = both[f"{c}_a"], both[f"{c}_b"]
            out &= ((x == y) | (x.isna() & y.isna())).to_numpy(dtype=bool)
        return out

    ageing = [c for c in features if c.startswith("days_since") or c == "lead_age_days" or "decayed" in c
              or "velocity" in c]
    print(f"{data}: {len(a):,} open leads at {day:%Y-%m-%d}, {len(b):,} a day later, {len(both):,} open on both")
    print(f"  identical feature row:                     {same(features).mean():6.1%}")
    print(f"  identical on the {len(features) - len(ageing)} features that do not age: "
          f"{same([c for c in features if c not in ageing]).mean():6.1%}")

    model = scorer.primary_model
    booster = model.booster
    dump = booster.dump_model(num_iteration=model.best_iteration or None)
    names = dump["feature_names"]
    thresholds: dict[str, set] = {n: set() for n in names}

    def walk(node) -> None:
        if "split_index" in node:
            if node["decision_type"] == "<=":
                thresholds[names[node["split_feature"]]].add(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in dump["tree_info"]:
        walk(tree["tree_structure"])

    def branches(frame: pd.DataFrame) -> pd.Series:
        X = model.matrix(frame)
        cols = []
        for n in names:
            if n in model.levels:
                cols.append(X[n].cat.codes.to_numpy().astype("int64"))
            else:
                v = X[n].to_numpy(dtype="float64", na_value=np.nan)
                cut = np.searchsorted(np.array(sorted(thresholds[n])), v, side="left")  # x <= t goes left
                cols.append(np.where(np.isnan(v), -1, cut))
        return pd.Series(list(map(tuple, np.column_stack(cols))), index=frame["lead_id"].to_numpy())

    sa, sb = branches(a), branches(b)
    common = sa.index.intersection(sb.index)
    kept = np.array([x == y for x, y in zip(sa.loc[common], sb.loc[common])])
    print(f"  same branch at every split ({len(dump['tree_info'])} trees): {kept.mean():6.1%} "
          f"-> {(~kept).sum() + len(sb.index.difference(sa.index)):,} of {len(b):,} rows to recompute")
    print(f"within the run at {day:%Y-%m-%d}: rows sharing their features with another "
          f"{a[features].astype(str).duplicated(keep=False).mean():.1%}, their branches "
          f"{sa.duplicated(keep=False).mean():.1%}")


if __name__ == "__main__":
    main()
