"""Benchmark `leadscore serve` under a bounded loopback load: throughput, latency, the server's
memory, and that every request gets the status it should.

1. A model: by default one trained here on a few thousand synthetic leads (`leadscore synth` +
   `leadscore train` with the tests' small config) into a temporary directory with its own MLflow
   SQLite store; or yours with --model models:/NAME@ALIAS --tracking-uri URI (--data: a synthetic
   CRM to take feature rows from; generated when missing).
2. `leadscore serve` on 127.0.0.1 on a free port, in a child process, behind a random
   LEADSCORE_API_KEY, with --max-rows/--max-bytes; the script waits until GET /ping answers.
3. The load, bounded: first 1 client (the reference), then --clients concurrent clients, each
   sending --requests requests one after another (or for --duration seconds), on keep-alive
   connections. A good request carries --rows (default 1-20; random, seeded) feature rows of leads open at --as-of,
   as dataframe_split or dataframe_records, with the key as Bearer or X-API-Key. A fixed share
   (--bad-share, 10 %) is deliberately bad, spread in: no key and a wrong key (401), too many rows
   and too many bytes, the latter with Content-Length and chunked (413), an empty batch, a body
   that is not JSON, a number sent as text, a wrong JSON type, and a value of the wrong kind
   (true or an infinity in a number, a number in a category, a column twice, an as_of that is no
   timestamp) (400).
4. Printed (stdout): requests per expected status (expected vs got), unexpected statuses and
   connection errors (must be 0: exit 1 otherwise), throughput (requests/s, leads/s), latency
   p50/p90/p99/max of the good requests per concurrency, GET /ping latency during the load, the
   single client's p50 against the in-process Scorer.score of the same rows (loaded the way the
   server loads it; the single client scores each good batch in process just before sending it,
   so both see the same background load, and that time is left out of its throughput), the
   server's peak RSS, the served predictions against the in-process scorer's (to 1e-12: all the
   single client's, --check of the others), and that the server still answers afterwards.
   Progress goes to stderr.
5. The server is stopped with SIGTERM (it must exit cleanly) and temporary files are removed.

The client threads and the server share the machine's cores: on 2 cores the figures are a floor.

    python benchmarks/bench_serve.py [--clients 4] [--requests 100 | --duration 30] [--seed 0] [--workers 1]
                                     [--model models:/leadscore@champion --tracking-uri URI --data DIR]
                                     [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

# This process scores every batch the single client sends in process too, alternating with the
# server. LightGBM's OpenMP threads would spin on the cores for a while after each batch here and
# slow the server down: they sleep instead (and so do those of the training run). The server gets
# the environment as it was given.
SERVER_ENV = dict(os.environ)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model import LEADSCORE, REPO, TABLES, load_average, run_child  # noqa: E402

TOLERANCE = 1e-12
EXPECTED = {"good": 200, "no key": 401, "wrong key": 401, "too many rows": 413, "too many bytes": 413,
            "too many bytes, chunked": 413, "empty batch": 400, "not JSON": 400, "number as text": 400,
            "wrong JSON type": 400, "value of the wrong kind": 400}
BAD_KINDS = [k for k in EXPECTED if k != "good"]
FLOAT_COLUMNS = ("p_sql", "p_won", "fit_score", "engagement_score")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- the model and the rows ------------------------------------------------------------------

def build_model(work: Path, leads: int, seed: int) -> tuple[str, str, Path]:
    """(model URI, tracking URI, data directory): a small model trained and registered in ``work``."""
    data = work / "data"
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    if not (data / "leads.parquet").exists():
        progress(f"generating {leads:,} synthetic leads (seed {seed}) into {data} ...")
        run_child([*LEADSCORE, "synth", "--leads", str(leads), "--seed", str(seed), "--out", str(data),
                   "--no-progress"])
    if not (work / "models" / "leadscore" / "manifest.json").exists():
        raw = yaml.safe_load((REPO / "pipelines" / "train.yaml").read_text())   # as tests/conftest.py writes it
        raw.update(data=str(data), models_dir=str(work / "models"))
        raw.setdefault("tracking", {}).update(tracking_uri=tracking_uri, artifact_location=str(work / "mlartifacts"))
        raw["cutoffs"]["bootstrap"] = 200
        config = work / "train.yaml"
        config.write_text(yaml.safe_dump(raw))
        progress("training and registering the model (tests' small config; 1-2 minutes) ...")
        wall, _ = run_child([*LEADSCORE, "train", "--config", str(config)])
        progress(f"  trained in {wall:.0f} s")
    return "models:/leadscore@champion", tracking_uri, data


def cell(v):
    """One feature value as JSON gives it: exact floats (repr), null for missing, naive ISO time."""
    import pandas as pd

    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp):   # MLflow's schema takes zone-naive timestamps, read as UTC
        return (v.tz_convert("UTC").tz_localize(None) if v.tzinfo else v).isoformat()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# --- requests --------------------------------------------------------------------------------

@dataclass
class Plan:
    """One request: what it is, its body, headers and, for a good one, the rows it carries."""

    kind: str
    body: bytes | None
    headers: dict
    rows: np.ndarray | None = None   # positions in the feature table (good requests)
    chunked: bool = False


@dataclass
class Result:
    kind: str
    status: int | None          # None: no HTTP answer (error says why)
    seconds: float
    n_rows: int = 0
    error: str = ""
    plan: Plan | None = None
    text: str = ""              # the start of an error answer
    local: object = None        # the in-process scorer's answer for the same rows (the reference)
    local_seconds: float = 0.0  # ... and how long it took
    predictions: list | None = None


@dataclass
class Load:
    """Everything the request builder needs, computed once."""

    columns: list[str]
    values: list[list]           # the feature table as JSON values, row by row
    numeric: list[int]           # positions of numeric feature columns
    categorical: list[int]       # positions of categorical feature columns
    key: str
    max_rows: int
    max_bytes: int
    bad_share: float
    seed: int
    url: str = ""
    batch: tuple[int, int] = (1, 20)

    def split(self, positions, numeric_as_text: bool = False, rng=None) -> dict:
        data = [list(self.values[i]) for i in positions]
        if numeric_as_text:   # one number of one row sent as a string
            r, c = int(rng.integers(len(data))), self.numeric[int(rng.integers(len(self.numeric)))]
            data[r][c] = str(data[r][c] if data[r][c] is not None else 3)
        return {"dataframe_split": {"columns": self.columns, "data": data}}

    def records(self, positions) -> dict:
        return {"dataframe_records": [dict(zip(self.columns, self.values[i])) for i in positions]}

    def auth(self, rng) -> dict:
        return {"Authorization": f"Bearer {self.key}"} if rng.random() < 0.5 else {"X-API-Key": self.key}

    def rows(self, rng, n: int | None = None) -> np.ndarray:
        n = n or int(rng.integers(self.batch[0], self.batch[1] + 1))
        return rng.choice(len(self.values), size=n, replace=False)

    def good(self, rng) -> Plan:
        pos = self.rows(rng)
        doc = self.split(pos) if rng.random() < 0.5 else self.records(pos)
        return Plan("good", json.dumps(doc).encode(), self.auth(rng), rows=pos)

    def bad(self, kind: str, rng) -> Plan:
        headers = self.auth(rng)
        if kind in ("no key", "wrong key"):
            plan = self.good(rng)
            wrong = {"Authorization": f"Bearer {secrets.token_urlsafe(16)}"} if rng.random() < 0.5 else \
                {"X-API-Key": self.key[:-1] + ("x" if self.key[-1] != "x" else "y")}
            return Plan(kind, plan.body, {} if kind == "no key" else wrong)
        if kind == "too many rows":
            body = json.dumps(self.split(self.rows(rng, self.max_rows + int(rng.integers(1, 11))))).encode()
            assert len(body) <= self.max_bytes, "raise --max-bytes: a too-many-rows request is over it too"
            return Plan(kind, body, headers)
        if kind.startswith("too many bytes"):   # a good batch padded with whitespace: valid JSON, too long
            body = json.dumps(self.split(self.rows(rng))).encode()
            body = body[:-1] + b" " * (self.max_bytes - len(body) + int(rng.integers(1, 65_536))) + b"}"
            return Plan(kind, body, headers, chunked=kind.endswith("chunked"))
        if kind == "empty batch":
            doc = {"dataframe_split": {"columns": self.columns, "data": []}} if rng.random() < 0.5 else \
                {"dataframe_records": []}
            return Plan(kind, json.dumps(doc).encode(), headers)
        if kind == "not JSON":   # a good body cut short
            body = json.dumps(self.split(self.rows(rng))).encode()
            return Plan(kind, body[:int(rng.integers(1, len(body) - 1))], headers)
        if kind == "number as text":
            return Plan(kind, json.dumps(self.split(self.rows(rng), numeric_as_text=True, rng=rng)).encode(), headers)
        if kind == "value of the wrong kind":
            doc = self.split(self.rows(rng))
            data, columns = doc["dataframe_split"]["data"], list(self.columns)
            r = int(rng.integers(len(data)))
            num, cat = self.numeric[int(rng.integers(len(self.numeric)))], \
                self.categorical[int(rng.integers(len(self.categorical)))]
            variant = int(rng.integers(5))
            if variant == 0:
                data[r][num] = True
            elif variant == 1:
                data[r][num] = "__inf__"
            elif variant == 2:
                data[r][cat] = 5
            elif variant == 3:
                columns[num] = columns[cat]
            else:
                data[r][columns.index("as_of")] = "yesterday"
            doc["dataframe_split"]["columns"] = columns
            return Plan(kind, json.dumps(doc).replace('"__inf__"', "1e400").encode(), headers)
        if kind == "wrong JSON type":
            variants = [{"dataframe_split": "rows"}, {"dataframe_records": 5},
                        {"dataframe_split": {"columns": self.columns, "data": 7}}, {"dataframe_records": [1, 2]},
                        {"dataframe_split": {"columns": "lead_id", "data": [["L1"]]}}]
            return Plan(kind, json.dumps(variants[int(rng.integers(len(variants)))]).encode(), headers)
        raise ValueError(kind)

    def client_plans(self, client: int, clients: int, phase: int):
        """An endless, seeded sequence of one of ``clients`` clients' requests: in every block of
        1/bad_share requests one is bad (at a random place), the bad kinds taking turns across
        the clients (the n-th bad request of client c is kind n * clients + c)."""
        rng = np.random.default_rng([self.seed, phase, client])
        block = max(1, round(1 / self.bad_share)) if self.bad_share > 0 else 0
        turn = client
        while True:
            where = int(rng.integers(block)) if block else -1
            for j in range(block or 1):
                if j == where:
                    yield self.bad(BAD_KINDS[turn % len(BAD_KINDS)], rng)
                    turn += clients
                else:
                    yield self.good(rng)


def send(session, url: str, plan: Plan, timeout: tuple[float, float]) -> Result:
    import requests

    headers = {"Content-Type": "application/json", **plan.headers}
    body = plan.body
    if plan.chunked:   # no Content-Length: the server has to count while reading
        chunks = [body[i:i + 16_384] for i in range(0, len(body), 16_384)]
        body = iter(chunks)
    start = time.perf_counter()
    try:
        r = session.post(url, data=body, headers=headers, timeout=timeout)
        seconds = time.perf_counter() - start
    except requests.RequestException as exc:
        return Result(plan.kind, None, time.perf_counter() - start, plan=plan,
                      error=f"{type(exc).__name__}: {exc}"[:300])
    res = Result(plan.kind, r.status_code, seconds, plan=plan, text=r.text[:200] if r.status_code != 200 else "")
    try:
        doc = r.json()
    except ValueError:
        res.error = f"answer is not JSON: {r.text[:200]!r}"
        return res
    if "Traceback" in r.text or "stack_trace" in doc:
        res.error = f"stack trace in the answer: {r.text[:200]!r}"
    if r.status_code == 200:
        preds = doc.get("predictions") if isinstance(doc, dict) else None
        if not isinstance(preds, list) or (plan.rows is not None and len(preds) != len(plan.rows)):
            res.error = res.error or f"predictions missing or of the wrong length: {r.text[:200]!r}"
        else:
            res.predictions, res.n_rows = preds, len(preds)
    elif not (isinstance(doc, dict) and set(doc) == {"error_code", "message"}):
        res.error = res.error or f"error answer not {{error_code, message}}: {r.text[:200]!r}"
    return res


# --- the server ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, tracking_uri: str, key: str, max_rows: int, max_bytes: int, log: Path,
                 workers: int = 1):
    import requests

    port = free_port()
    env = {**SERVER_ENV, "LEADSCORE_API_KEY": key}
    with open(log, "w") as sink:
        proc = subprocess.Popen([*LEADSCORE, "serve", "--model", model,
                                 *(["--tracking-uri", tracking_uri] if tracking_uri else []),
                                 "--port", str(port), "--max-rows", str(max_rows), "--max-bytes", str(max_bytes),
                                 "--workers", str(workers)],
                                env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    while True:
        try:
            if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                return proc, base, time.perf_counter() - start
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.perf_counter() - start > 180:
            stop_server(proc)
            sys.exit(f"leadscore serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def stop_server(proc) -> tuple[int | None, float]:
    """SIGTERM to the server's process group; (exit code or None if it had to be killed, seconds)."""
    start = time.perf_counter()
    if proc.poll() is not None:
        return proc.returncode, 0.0
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=30), time.perf_counter() - start
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None, time.perf_counter() - start


class Memory:
    """The server's memory - its process and, with --workers, its worker processes together:
    peak RSS from /proc (VmHWM, summed over the processes), RSS sampled while the load runs."""

    def __init__(self, pid: int):
        self.pid, self.sampled, self._stop = pid, 0.0, threading.Event()

    def _pids(self) -> list[int]:
        pids, todo = [], [self.pid]
        while todo:   # the process and its descendants, from /proc/<pid>/task/*/children
            pid = todo.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    todo += [int(c) for c in (task / "children").read_text().split()]
                except OSError:
                    pass
        return pids

    def rss_mb(self) -> float:
        return sum(self._status(pid, "VmRSS") or 0.0 for pid in self._pids())

    @staticmethod
    def _status(pid: int, field_name: str) -> float | None:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def peak_mb(self) -> tuple[float, str]:
        pids = self._pids()
        peaks = [self._status(pid, "VmHWM") for pid in pids]
        if any(p is None for p in peaks):
            return self.sampled, "max sampled every 0.1 s"
        return sum(peaks), "VmHWM" + (f", summed over {len(pids)} processes" if len(pids) > 1 else "")

    def __enter__(self):
        def sample():
            while not self._stop.wait(0.1):
                try:
                    self.sampled = max(self.sampled, self.rss_mb())
                except Exception:   # the process is gone
                    return
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# --- the load --------------------------------------------------------------------------------

def run_phase(load: Load, clients: int, phase: int, n_requests: int | None, duration: float | None,
              timeout: tuple[float, float], reference=None) -> tuple[list[Result], float, list[float]]:
    """(results, wall seconds, /ping latencies while it ran) of ``clients`` clients at once.
    ``reference(rows)``: the in-process scorer, run on a good request's rows just before it is
    sent (one client: the server is idle then), its time left out of the wall seconds."""
    import requests

    results: list[list[Result]] = [[] for _ in range(clients)]
    # every client's requests are built before the clock starts (JSON encoding is not timed)
    if n_requests is not None:
        plans = [[p for p, _ in zip(load.client_plans(c, clients, phase), range(n_requests))] for c in range(clients)]
    else:
        gens = [load.client_plans(c, clients, phase) for c in range(clients)]
        plans = [None] * clients
    barrier = threading.Barrier(clients + 1)
    done = threading.Event()
    deadline = [0.0]

    def one(session, plan: Plan) -> Result:
        local, seconds = None, 0.0
        if reference is not None and plan.kind == "good":
            t = time.perf_counter()
            local = reference(plan.rows)
            seconds = time.perf_counter() - t
        result = send(session, load.url, plan, timeout)
        result.local, result.local_seconds = local, seconds
        return result

    def client(c: int) -> None:
        with requests.Session() as session:
            barrier.wait()
            if plans[c] is not None:
                for plan in plans[c]:
                    results[c].append(one(session, plan))
            else:
                while time.perf_counter() < deadline[0] + sum(r.local_seconds for r in results[c]):
                    results[c].append(one(session, next(gens[c])))

    pings: list[float] = []

    def pinger() -> None:
        base = load.url.rsplit("/", 1)[0]
        with requests.Session() as session:
            while not done.wait(0.25):
                t = time.perf_counter()
                try:
                    ok = session.get(f"{base}/ping", timeout=timeout).status_code == 200
                    pings.append(time.perf_counter() - t if ok else math.inf)
                except requests.RequestException:
                    pings.append(math.inf)   # counted as a failure

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    ping_thread = threading.Thread(target=pinger)
    deadline[0] = time.perf_counter() + (duration or 0)
    barrier.wait()
    start = time.perf_counter()
    deadline[0] = start + (duration or 0)
    ping_thread.start()
    for t in threads:
        t.join()
    done.set()
    everything = [r for rs in results for r in rs]
    wall = time.perf_counter() - start - sum(r.local_seconds for r in everything)
    ping_thread.join()
    return everything, wall, pings


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def ms(s: float) -> str:
    return f"{s * 1000:8.1f} ms" if math.isfinite(s) else "   failed  " if s == math.inf else "     -     "


def compare(served: list, local) -> str:
    """'' when the served predictions equal the in-process scorer's, else what differs."""
    for i, (got, want) in enumerate(zip(served, local.to_dict(orient="records"))):
        for col, w in want.items():
            g = got.get(col)
            if col == "as_of":
                w = w.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S%z")
            elif isinstance(w, np.generic):
                w = w.item()
            if col in FLOAT_COLUMNS:
                if g is None or not abs(g - w) <= TOLERANCE:
                    return f"row {i} {col}: served {g!r}, in process {w!r}"
            elif g != w and not (g is None and (w is None or (isinstance(w, float) and math.isnan(w)))):
                return f"row {i} {col}: served {g!r}, in process {w!r}"
        if set(got) != set(want):
            return f"row {i}: served columns {sorted(got)} != {sorted(want)}"
    return ""


def _rows_per_request(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        rows = (int(low), int(high or low))
    except ValueError:
        sys.exit(f"--rows {text!r}: give LO-HI or one number of rows per request")
    if not 1 <= rows[0] <= rows[1]:
        sys.exit(f"--rows {text!r}: need 1 <= LO <= HI")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="Concurrent clients (1 client runs first as the "
                        "reference). Default: 4.")
    parser.add_argument("--requests", type=int, default=100, help="Requests per client per phase. Default: 100.")
    parser.add_argument("--duration", type=float, help="Seconds per phase instead of --requests.")
    parser.add_argument("--bad-share", type=float, default=0.1, help="Share of deliberately bad requests "
                        "(one in every 1/share, spread in). Default: 0.1.")
    parser.add_argument("--workers", type=int, default=1, help="The server's --workers (processes). Default: 1.")
    parser.add_argument("--max-rows", type=int, default=50, help="The server's --max-rows. Default: 50.")
    parser.add_argument("--max-bytes", type=int, default=262_144, help="The server's --max-bytes. Default: 262144.")
    parser.add_argument("--timeout", type=float, default=30.0, help="Per-request read timeout (s). Default: 30.")
    parser.add_argument("--rows", default="1-20", help="Feature rows per good request, LO-HI (drawn uniformly) or "
                        "one number: --rows 1 for single-lead requests, what a CRM form-submit webhook sends. "
                        "Default: 1-20.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the requests (batch sizes, rows, kinds).")
    parser.add_argument("--check", type=int, default=50, help="Good answers of the concurrent clients whose "
                        "predictions are compared with the in-process scorer (the single client's all are). "
                        "Default: 50.")
    parser.add_argument("--model", help="A registered model (models:/NAME@ALIAS) or bundle directory to serve "
                        "instead of training a small one.")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for --model.")
    parser.add_argument("--data", type=Path, help="A synthetic CRM (leads, activities, lifecycle) to take the "
                        "feature rows from (default: the training data, or --leads generated).")
    parser.add_argument("--leads", type=int, default=4000, help="Synthetic leads to train on / take rows from. "
                        "Default: 4000.")
    parser.add_argument("--as-of", default="2025-09-01", help="The leads open at this date are the rows sent.")
    parser.add_argument("--workdir", type=Path, help="Keep the model and data here and reuse them next time "
                        "(default: a temporary directory, removed at the end).")
    args = parser.parse_args()
    if args.clients < 1 or (args.duration is None and args.requests < 1) or not 0 <= args.bad_share < 1:
        parser.error("--clients and --requests must be >= 1, --bad-share in [0, 1)")
    if _rows_per_request(args.rows)[1] > args.max_rows:
        parser.error(f"--rows {args.rows}: more than --max-rows {args.max_rows} rows would be refused with 413")
    if args.max_rows < 20:
        parser.error("--max-rows must be at least 20: a good request carries up to 20 leads")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="leadscore-bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    server: list = []   # the server's Popen, once started
    try:
        failures = bench(args, work, server)
    finally:
        if server and server[0].poll() is None:   # interrupted: do not leave the server behind
            stop_server(server[0])
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


def bench(args, work: Path, server: list) -> list[str]:
    """Run the benchmark, print the figures; the failures found (empty: all well)."""
    args.t0, load_at_start = time.perf_counter(), load_average()
    progress(load_at_start)
    if args.model:
        model, tracking_uri = args.model, args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if not tracking_uri and not Path(model).is_dir():
            sys.exit("--model models:/... needs --tracking-uri (or MLFLOW_TRACKING_URI)")
        data = args.data
        if data is None:
            data = work / f"rows-{args.leads}"
            if not (data / "leads.parquet").exists():
                progress(f"generating {args.leads:,} synthetic leads (seed 5) into {data} ...")
                run_child([*LEADSCORE, "synth", "--leads", str(args.leads), "--seed", "5", "--out", str(data),
                           "--no-progress"])
    else:
        model, tracking_uri, data = build_model(work, args.leads, 3)
        data = args.data or data


    from leadscore.features.builder import features_as_of
    from leadscore.serving.registry import load_scorer

    progress(f"loading {model} in process (as the server does) and the feature rows of leads open at {args.as_of} ...")
    t = time.perf_counter()
    scorer, _ = load_scorer(model, tracking_uri=tracking_uri or None)
    t_load = time.perf_counter() - t
    table = features_as_of({n: data / f"{n}.parquet" for n in TABLES}, as_of=args.as_of,
                           config=scorer.feature_config).reset_index(drop=True)
    categorical = {c for m in scorer.models.values() for c in m.levels}
    columns = list(table.columns)
    load = Load(columns=columns, values=[[cell(v) for v in row] for row in table.itertuples(index=False)],
                numeric=[i for i, c in enumerate(columns) if c in scorer.features and c not in categorical],
                categorical=[i for i, c in enumerate(columns) if c in categorical],
                key=secrets.token_urlsafe(24), max_rows=args.max_rows, max_bytes=args.max_bytes,
                bad_share=args.bad_share, seed=args.seed, batch=_rows_per_request(args.rows))
    if len(table) < load.batch[1] or len(table) <= args.max_rows + 10:
        sys.exit(f"only {len(table)} leads open at {args.as_of}: too few to sample batches from")
    scorer.score(table.head(load.batch[1]))   # warm up

    log = work / "server.log"
    progress("starting leadscore serve ...")
    proc, base, t_start = start_server(model, tracking_uri, load.key, args.max_rows, args.max_bytes, log,
                                       args.workers)
    server.append(proc)
    load.url = f"{base}/invocations"
    memory = Memory(proc.pid)
    rss_idle = memory.rss_mb()
    timeout = (5.0, args.timeout)
    import requests

    with requests.Session() as s:   # warm-up, not counted
        for plan in [p for p, _ in zip(load.client_plans(0, 1, 99), range(10)) if p.kind == "good"][:5]:
            send(s, load.url, plan, timeout)

    phases = [1] if args.clients == 1 else [1, args.clients]
    per_phase: dict[int, tuple[list[Result], float, list[float]]] = {}
    with memory:
        for i, c in enumerate(phases):
            what = f"{args.requests} requests each" if args.duration is None else f"{args.duration:g} s"
            progress(f"load: {c} client{'s' if c > 1 else ''}, {what}"
                     + (" (each good batch also scored in process just before it is sent)" if c == 1 else "") + " ...")
            per_phase[c] = run_phase(load, c, i, None if args.duration else args.requests, args.duration, timeout,
                                     reference=(lambda pos: scorer.score(table.iloc[pos])) if c == 1 else None)
            progress(f"  {len(per_phase[c][0])} requests in {per_phase[c][1]:.1f} s")

    # after the load: still answering?
    after = []
    try:
        after.append(requests.get(f"{base}/ping", timeout=timeout).status_code)
        good = next(p for p in load.client_plans(0, 1, 98) if p.kind == "good")
        with requests.Session() as s:
            r = send(s, load.url, good, timeout)
        after.append(r.status)
    except requests.RequestException as exc:
        after.append(f"{type(exc).__name__}")
    rss_now = memory.rss_mb()
    peak, peak_how = memory.peak_mb()

    # served predictions against the in-process scorer: all the single client's, a sample of the rest
    progress("comparing the served predictions with the in-process scorer's ...")
    everything = [r for c in phases for r in per_phase[c][0]]
    ref = [r for r in per_phase[1][0] if r.kind == "good" and r.predictions is not None]
    rest = [r for c in phases[1:] for r in per_phase[c][0] if r.kind == "good" and r.predictions is not None]
    rng = np.random.default_rng(args.seed)
    sample = [rest[i] for i in sorted(rng.choice(len(rest), min(args.check, len(rest)), replace=False))]
    for r in sample:
        r.local = scorer.score(table.iloc[r.plan.rows])
    mismatches, max_diff = [], 0.0
    for r in ref + sample:
        diff = compare(r.predictions, r.local)
        if diff:
            mismatches.append(diff)
        for got, want in zip(r.predictions, r.local[list(FLOAT_COLUMNS)].to_dict(orient="records")):
            max_diff = max([max_diff] + [abs(got[c] - w) for c, w in want.items() if got.get(c) is not None])
    compared, answered = len(ref) + len(sample), len(ref) + len(rest)

    code, t_stop = stop_server(proc)
    server_log = log.read_text()

    # --- figures ---
    failures: list[str] = []
    print(f"\n`leadscore serve` {model}: {len(table):,} leads open at {args.as_of} to send, "
          f"{len(scorer.features)} features; --workers {args.workers} --max-rows {args.max_rows} "
          f"--max-bytes {args.max_bytes:,}; "
          "the clients and the server share the cores")
    print(f"  {load_at_start} at the start; the server's OMP_WAIT_POLICY: "
          f"{SERVER_ENV.get('OMP_WAIT_POLICY') or 'PASSIVE (leadscore serve sets it when unset)'}")
    print(f"  server answered /ping {t_start:.1f} s after start (in process the model loads in {t_load:.1f} s); "
          f"RSS idle {rss_idle:,.0f} MB")
    print(f"\nrequests per expected status, {'/'.join(map(str, phases))} client(s) "
          f"({'%d each' % args.requests if args.duration is None else '%g s' % args.duration}, "
          f"{args.bad_share:.0%} bad, seed {args.seed}):")
    print(f"  {'kind':<26}{'expect':>7}{'sent':>7}{'got it':>8}   other")
    unexpected, errors = [], []
    for kind, want in EXPECTED.items():
        rs = [r for r in everything if r.kind == kind]
        ok = [r for r in rs if r.status == want and not r.error]
        other = {}
        for r in rs:
            if r not in ok:
                label = str(r.status) if r.status is not None else "no answer"
                other[label] = other.get(label, 0) + 1
                (errors if r.status is None else unexpected).append(r)
        print(f"  {kind:<26}{want:>7}{len(rs):>7}{len(ok):>8}   "
              + (", ".join(f"{v} x {k}" for k, v in other.items()) or "-"))
    print(f"  {'total':<26}{'':>7}{len(everything):>7}{len(everything) - len(unexpected) - len(errors):>8}")
    if unexpected or errors:
        print(f"\n  !!! {len(unexpected)} UNEXPECTED STATUS(ES), {len(errors)} CONNECTION ERROR(S) !!!")
        for r in (unexpected + errors)[:10]:
            print(f"    {r.kind}: {r.status} {r.error or r.text}")
        failures.append(f"{len(unexpected)} unexpected statuses, {len(errors)} connection errors")
    else:
        print("  unexpected statuses: 0, connection errors: 0")

    print(f"\nthroughput and latency of the good requests (200, {args.rows} lead(s) each):")
    print(f"  {'clients':>7} {'requests':>9} {'req/s':>8} {'leads/s':>9}   {'p50':>11} {'p90':>11} {'p99':>11} "
          f"{'max':>11}   /ping p50, max during the load")
    p50 = {}
    for c in phases:
        rs, wall, pings = per_phase[c]
        good = [r.seconds for r in rs if r.kind == "good" and r.status == 200]
        leads = sum(r.n_rows for r in rs if r.kind == "good" and r.status == 200)
        p50[c] = pct(good, 50)
        print(f"  {c:>7} {len(rs):>9} {len(rs) / wall:>8.1f} {leads / wall:>9,.0f}   {ms(p50[c])} {ms(pct(good, 90))} "
              f"{ms(pct(good, 99))} {ms(max(good, default=math.nan))}   "
              f"{ms(pct(pings, 50))}, {ms(max(pings, default=math.nan))}")
    failed_pings = sum(p == math.inf for c in phases for p in per_phase[c][2])
    if failed_pings:
        print(f"  !!! {failed_pings} GET /ping FAILED during the load !!!")
        failures.append(f"{failed_pings} GET /ping failed during the load")
    if len(phases) > 1:
        c = phases[-1]
        r1, rc = per_phase[1], per_phase[c]
        print(f"  {c} clients vs 1: {len(rc[0]) / rc[1] / (len(r1[0]) / r1[1]):.2f}x the requests/s, "
              f"{p50[c] / p50[1]:.2f}x the p50 latency")
    local_p50 = pct([r.local_seconds for r in ref], 50)
    per_batch = pct([r.seconds / r.local_seconds for r in ref], 50)
    print(f"\nsingle client p50 {ms(p50[1]).strip()} vs in-process Scorer.score of the same {len(ref)} batches "
          f"(each timed just before it was sent) p50 {ms(local_p50).strip()}: {p50[1] / local_p50:.2f}x; "
          "batch by batch "
          f"median {per_batch:.2f}x (the server reads a request into arrays and scores them without the frame "
          "Scorer.score takes, then adds HTTP and JSON both ways; bench_one_lead.py times that path in process)")
    print(f"\nserver memory: peak RSS {peak:,.0f} MB ({peak_how}), max sampled during the load "
          f"{memory.sampled:,.0f} MB, {rss_now:,.0f} MB after it")

    print(f"\npredictions of {compared} good answers (of {answered}: all the single client's, "
          f"{len(sample)} of the others) vs the in-process scorer: "
          + (f"all equal (p_sql, p_won, fit, engagement within {TOLERANCE:g}, max |diff| {max_diff:.1e}; "
             "score, tier, grid, reasons, lead_id, as_of identical)" if not mismatches and compared
             else f"{len(mismatches)} DIFFER, e.g. {mismatches[:3]}" if mismatches else "none to compare"))
    if mismatches or not compared:
        failures.append(f"{len(mismatches)} of {compared} compared answers differ from the in-process scorer")

    alive = after == [200, 200]
    print(f"after the load: GET /ping {after[0]}, a good batch {after[1] if len(after) > 1 else '-'}"
          + ("" if alive else "   !!! NOT ANSWERING !!!"))
    if not alive:
        failures.append(f"server not answering after the load: {after}")
    tracebacks = server_log.count("Traceback")
    clean = code in (0, -signal.SIGTERM, 128 + signal.SIGTERM)   # uvicorn re-raises SIGTERM once shut down
    print(f"shutdown: SIGTERM -> {'exit %s' % code if code is not None else 'killed after 30 s'} in {t_stop:.1f} s"
          f"{' (graceful: uvicorn re-raises the signal after shutting down)' if code == -signal.SIGTERM else ''}; "
          f"{tracebacks} traceback(s) in the server's log")
    print(f"{load_average()} at the end; {time.perf_counter() - args.t0:.0f} s in all")
    if not clean:
        failures.append(f"the server did not exit cleanly on SIGTERM (exit {code})")
    if tracebacks:
        failures.append(f"{tracebacks} traceback(s) in the server's log:\n{server_log[-2000:]}")
    return failures


if __name__ == "__main__":
    main()
