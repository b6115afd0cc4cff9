"""Shared by the scoring and explanation benchmarks: child processes measured alone, a
synthetic CRM, and one small trained model (8,000 leads, tracking off) reused across runs."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LEADSCORE = [sys.executable, "-m", "leadscore.cli.app"]
TABLES = ("leads", "activities", "lifecycle")


# Linux carries the parent's peak RSS into a child across fork/vfork + exec, so a child
# started straight from a benchmark that already holds gigabytes would report the parent's
# peak. A tiny launcher process starts the command instead and reports that child's figure.
_LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_child(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process alone (measured by a launcher)."""
    with tempfile.TemporaryFile("w+") as log, tempfile.NamedTemporaryFile("r") as rss:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, rss.name, *cmd],
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        code = proc.wait()
        wall = time.perf_counter() - start
        if code != 0:
            log.seek(0)
            sys.exit(f"failed: {' '.join(cmd)}\n{log.read()[-3000:]}")
        return wall, int(rss.read()) / 1024


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_data(out: Path, leads: int, seed: int) -> Path:
    if not (out / "leads.parquet").exists():
        print(f"generating {leads:,} synthetic leads (seed {seed}) into {out} ...", flush=True)
        run_child([*LEADSCORE, "synth", "--leads", str(leads), "--seed", str(seed), "--out", str(out), "--no-progress"])
    return out


def ensure_model(work: Path) -> Path:
    """The bundle directory of a model trained on 8,000 synthetic leads (seed 3)."""
    bundle = work / "models" / "leadscore"
    if (bundle / "manifest.json").exists():
        return bundle
    train_data = ensure_data(work / "train-data", 8000, 3)
    raw = yaml.safe_load((REPO / "pipelines" / "train.yaml").read_text())
    raw.update(data=str(train_data), models_dir=str(work / "models"))
    raw["cutoffs"]["bootstrap"] = 200
    config = work / "train.yaml"
    config.write_text(yaml.safe_dump(raw))
    print("training the model (8,000 leads, tracking off) ...", flush=True)
    run_child([*LEADSCORE, "train", "--config", str(config), "--no-tracking"])
    return bundle


def load_average() -> str:
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def parser_for(doc: str, leads: int):
    """The options every model benchmark shares: --data or --leads, --as-of, --workdir."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="An existing synthetic CRM (default: generate --leads into WORKDIR).")
    parser.add_argument("--leads", type=int, default=leads)
    parser.add_argument("--as-of", default="2025-09-01")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/leadscore-bench-score"))
    return parser


def prepare(args) -> tuple[Path, Path]:
    """(bundle directory, data directory): the model trained and the data generated if missing."""
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(load_average(), flush=True)
    bundle = ensure_model(args.workdir)
    data = args.data or ensure_data(args.workdir / f"score-data-{args.leads}", args.leads, 5)
    return bundle, data
