"""Benchmark `leadscore synth`: 1M leads (~50M activity events) - goal <= 60 s and < 4 GB peak RSS.

Runs the real command in a child process and reads its peak resident memory from the OS
(getrusage of children), so the figure is the whole job's, not a sampled estimate.

    python benchmarks/bench_synth.py [--leads 1000000] [--seed 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leads", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="keep the data here (default: a temp dir, removed)")
    args = ap.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_synth_")) / "data"
    cmd = [sys.executable, "-m", "leadscore.cli.app", "synth", "--leads", str(args.leads), "--seed", str(args.seed),
           "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux

    manifest = json.loads((out / "manifest.json").read_text())
    rows = manifest["rows"]
    size_mb = sum(p.stat().st_size for p in out.glob("*.parquet")) / 2**20
    print(f"leadscore synth --leads {args.leads:,} --seed {args.seed}")
    print(f"  wall time          {elapsed:8.1f} s   (goal <= 60 s)")
    print(f"  peak RSS           {peak_mb:8.0f} MB  (goal < 4096 MB)")
    print(f"  leads              {rows['leads']:>12,}")
    print(f"  activity events    {rows['activities']:>12,}  ({rows['activities'] / elapsed:,.0f} rows/s)")
    print(f"  lifecycle events   {rows['lifecycle']:>12,}")
    print(f"  truth rows         {rows['truth']:>12,}")
    total = sum(rows.values())
    print(f"  all rows           {total:>12,}  ({total / elapsed:,.0f} rows/s)")
    print(f"  parquet on disk    {size_mb:8.0f} MB")
    if args.out is None:
        shutil.rmtree(out.parent)


if __name__ == "__main__":
    main()
