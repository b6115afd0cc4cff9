"""Benchmark training at scale: `leadscore train` on a sample of the window's leads.

1. Memory at scale: `leadscore train` (pipelines/train.yaml, tracking off) on a large synthetic
   lead base (default 1M leads, ~55M activities, ~33M examples in the window) with
   ``examples.max_examples`` (default 1,000,000) in a child process: wall time, peak RSS
   (goal <= 8 GB on 2 cores), and the sample the run drew.
2. What the sample costs (``--compare-leads``, default 100,000; 0 skips it): the same config on
   a smaller base trained twice - on every example of the window and on the sample - with
   each run's backtest AUCs (the newest fold's and the mean over the folds, P(SQL) and P(won)),
   log loss and ECE, their differences (goal: AUC within 0.005), and each run's time and peak
   RSS. The sampled run's metrics are weighted estimates on its sampled test rows; the full
   run's are on every test row. (The full run on 100k leads needs ~15 GB: it is the reference
   the sample is built to avoid.)

    python benchmarks/bench_train.py [--data DIR | --leads 1000000] [--max-examples 1000000]
                                     [--compare-leads 100000 | --compare-data DIR] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model import LEADSCORE, REPO, ensure_data, load_average, run_child  # noqa: E402

METRICS = ("sql_auc", "backtest_sql_auc_mean", "won_auc", "sql_logloss", "sql_ece")


def train(data: Path, work: Path, name: str, max_examples: int | None) -> tuple[float, float, dict]:
    """(wall s, peak RSS MB, manifest) of `leadscore train` on ``data`` in a child process."""
    raw = yaml.safe_load((REPO / "pipelines" / "train.yaml").read_text())
    raw.update(data=str(data), models_dir=str(work / "models"), name=name)
    raw["examples"]["max_examples"] = max_examples
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump(raw))
    print(f"training {name} on {data} (examples.max_examples {max_examples or 'every example'}) ...", flush=True)
    wall, rss = run_child([*LEADSCORE, "train", "--config", str(config), "--no-tracking"])
    manifest = json.loads((work / "models" / name / "manifest.json").read_text())
    return wall, rss, manifest


def describe(wall: float, rss: float, manifest: dict) -> str:
    s = manifest.get("example_sampling")
    drawn = (f"{s['examples']:,} examples sampled ({s['positive_rate']:.1%} of the {s['positive_leads']:,} leads with "
             f"an outcome, {s['rate']:.2%} of the others)" if s else "every example")
    return f"{wall / 60:.1f} min, peak RSS {rss:,.0f} MB; {drawn}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="An existing large synthetic CRM (default: generate --leads).")
    ap.add_argument("--leads", type=int, default=1_000_000)
    ap.add_argument("--max-examples", type=int, default=1_000_000)
    ap.add_argument("--compare-data", type=Path, help="An existing synthetic CRM for the comparison.")
    ap.add_argument("--compare-leads", type=int, default=100_000, help="0 skips the comparison.")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/leadscore-bench-train"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(load_average(), flush=True)

    data = args.data or ensure_data(args.workdir / f"data-{args.leads}", args.leads, 5)
    wall, rss, manifest = train(data, args.workdir, "at-scale", args.max_examples)
    rows = manifest["data_fingerprint"]["rows"]
    print(f"\n`leadscore train` on {rows['leads']:,} leads, {rows['activities']:,} activities: "
          f"{describe(wall, rss, manifest)} (goal: peak RSS <= 8,192 MB)")
    print("  " + ", ".join(f"{k} {manifest['metrics'][k]:.4f}" for k in METRICS if k in manifest["metrics"]))

    if not (args.compare_leads or args.compare_data):
        return
    small = args.compare_data or ensure_data(args.workdir / f"data-{args.compare_leads}", args.compare_leads, 7)
    runs = {"every example": train(small, args.workdir, "compare-full", None),
            "sampled": train(small, args.workdir, "compare-sampled", args.max_examples)}
    print(f"\non {small} (examples.max_examples {args.max_examples:,} for the sampled run):")
    for name, (wall, rss, manifest) in runs.items():
        print(f"  {name:<14} {describe(wall, rss, manifest)}")
    (_, _, full), (_, _, sampled) = runs.values()
    print(f"  {'metric':<24} {'every example':>14} {'sampled':>10} {'difference':>11}")
    for k in METRICS:
        if k in full["metrics"] and k in sampled["metrics"]:
            a, b = full["metrics"][k], sampled["metrics"][k]
            note = "  (goal: |difference| <= 0.005)" if k.endswith("auc") or k.endswith("auc_mean") else ""
            print(f"  {k:<24} {a:>14.4f} {b:>10.4f} {b - a:>+11.4f}{note}")


if __name__ == "__main__":
    main()
