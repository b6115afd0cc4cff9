"""`mlflow models serve` on the registered champion answers scoring requests with the batch
job's columns, and bad input gets an error that names the problem, not a stack trace - for a
model trained on event data and for one trained on a flat export (X Education) alike."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.features.builder import features_as_of
from leadscore.serving.registry import load_scorer
from leadscore.training.config import load_pipeline
from leadscore.training.flat import load_config, load_flat
from leadscore.training.flat_pipeline import scoring_rows


@dataclass
class Deployed:
    """A registered champion and five rows to score with it."""

    tracking_uri: str
    name: str
    bundle: Path
    rows: pd.DataFrame
    probability: str
    column: str          # a feature column the model reads, to drop
    numeric: str         # a numeric feature, to send as text
    workers: int = 1     # leadscore serve --workers


@pytest.fixture(scope="module", params=["events", "flat"])
def deployed(request, train_dir) -> Deployed:
    if request.param == "events":
        config, _ = request.getfixturevalue("trained")
        pipeline = load_pipeline(config)
        frame = features_as_of({n: train_dir / f"{n}.parquet" for n in ("leads", "activities", "lifecycle")},
                               as_of="2025-06-01", config=pipeline.features)
        return Deployed(pipeline.tracking.tracking_uri, pipeline.name, Path(pipeline.models_dir) / pipeline.name,
                        frame.sample(5, random_state=0).reset_index(drop=True), "p_sql", "n_demo_request_30d",
                        "lead_age_days")
    config, _ = request.getfixturevalue("flat_trained")
    dataset = load_config(config)
    rows = scoring_rows(load_flat(dataset, scoring=True), pd.Timestamp("2025-06-01", tz="UTC"))
    return Deployed(dataset.tracking_config.tracking_uri, dataset.bundle_name,
                    Path(dataset.models_dir) / dataset.bundle_name, rows.sample(5, random_state=0).reset_index(drop=True),
                    "p_converted", "Lead Source", "Total Time Spent on Website", workers=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status


def _post(url: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(deployed, tmp_path_factory):
    port = _free_port()
    # the server execs `uvicorn` from PATH: the one installed beside this interpreter
    env = {**os.environ, "MLFLOW_TRACKING_URI": deployed.tracking_uri,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                                 f"models:/{deployed.name}@champion", "--env-manager", "local", "-h", "127.0.0.1",
                                 "-p", str(port), "-w", "1"],
                                env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    _wait_for_ping(proc, base, log, "the model server", 180)
    yield base, deployed.bundle
    _stop(proc)


def _wait_for_ping(proc: subprocess.Popen, base: str, log: Path, what: str, seconds: float) -> None:
    """Until ``base/ping`` answers 200; fail with the server's log if it dies or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if _get(f"{base}/ping") == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"{what} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def rows(deployed):
    return deployed.rows


def _payload(frame: pd.DataFrame) -> dict:
    # MLflow's schema takes zone-naive timestamps; the served model reads them as UTC
    naive = frame.assign(as_of=frame["as_of"].dt.tz_localize(None).dt.strftime("%Y-%m-%dT%H:%M:%S"))
    split = json.loads(naive.to_json(orient="split", index=False, date_format="iso"))
    return {"dataframe_split": {"columns": split["columns"], "data": split["data"]}}


def test_the_served_champion_returns_the_batch_jobs_scoring_columns(server, deployed, rows):
    base, bundle = server
    status, body = _post(f"{base}/invocations", _payload(rows))
    assert status == 200, body
    served = pd.DataFrame(body["predictions"])
    scorer, _ = load_scorer(str(bundle))
    assert list(served.columns) == list(scorer.output_columns) and deployed.probability in served.columns
    local = scorer.score(rows)
    assert served["lead_id"].tolist() == local["lead_id"].tolist()
    np.testing.assert_allclose(served[deployed.probability], local[deployed.probability], rtol=1e-9)
    assert served["tier"].tolist() == local["tier"].tolist() and served["reasons"].tolist() == local["reasons"].tolist()


def test_counts_given_as_decimals_score_the_same(trained, rows):
    # Feature rows from a warehouse's DOUBLE columns or a CSV carry counts as float64; the
    # registered model's schema must take them (MLflow refuses double input for an integer column).
    import mlflow

    config, _ = trained
    mlflow.set_tracking_uri(load_pipeline(config).tracking.tracking_uri)
    if "n_demo_request_30d" not in rows:
        pytest.skip("a flat export's numbers are read as decimals already")
    model = mlflow.pyfunc.load_model("models:/leadscore@champion")
    naive = rows.assign(as_of=rows["as_of"].dt.tz_localize(None))
    counts = [c for c in naive.columns if pd.api.types.is_integer_dtype(naive[c])]
    assert counts  # the catalogue has count features
    as_float = model.predict(naive.astype({c: "float64" for c in counts}))
    pd.testing.assert_frame_equal(as_float, model.predict(naive))


@pytest.fixture(scope="module")
def champion_files(deployed, tmp_path_factory) -> Path:
    """The registered champion's files, downloaded from the registry."""
    import mlflow

    mlflow.set_tracking_uri(deployed.tracking_uri)
    dst = tmp_path_factory.mktemp("champion")
    return Path(mlflow.artifacts.download_artifacts(f"models:/{deployed.name}@champion", dst_path=str(dst)))


def test_the_registered_model_is_code_and_the_bundle_not_a_pickled_class(champion_files):
    # Logged as "models from code": loading runs leadscore's registered_model.py; nothing in
    # the registry copy is a pickle (the bundle's scorer is JSON) or bytecode.
    import yaml

    local = champion_files
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert "python_model" not in flavor
    assert Path(flavor["model_code_path"]).name == "registered_model.py"
    pickles = sorted(p.relative_to(local).as_posix() for p in local.rglob("*")
                     if p.suffix in (".pkl", ".pickle", ".joblib", ".pyc"))
    assert pickles == []


def test_a_tampered_registry_code_file_is_refused_before_any_of_it_runs(deployed, champion_files, tmp_path):
    import shutil

    import mlflow

    from leadscore.cli.app import app
    from leadscore.serving.bundle import BundleError, verify_bundle
    from leadscore.serving.registry import check_model_files

    from .conftest import runner

    canary = tmp_path / "canary"
    copy = tmp_path / "copy"
    shutil.copytree(champion_files, copy)
    code = copy / "code" / "leadscore" / "serving" / "bundle.py"
    code.write_text(code.read_text() + f"\nimport pathlib; pathlib.Path({str(canary)!r}).touch()\n")
    manifest = verify_bundle(next((copy / "artifacts").iterdir()))   # the bundle itself is intact
    with pytest.raises(BundleError, match=r"code/leadscore/serving/bundle\.py: differs from the hash"):
        check_model_files(copy, manifest)
    # registered as a version of its own, leadscore refuses it, and none of it runs
    mlflow.set_tracking_uri(deployed.tracking_uri)
    with mlflow.start_run(run_name="tampered copy") as run:
        mlflow.log_artifacts(str(copy), "scorer")
    uri = f"models:/{deployed.name}-tampered/" + str(mlflow.register_model(
        f"runs:/{run.info.run_id}/scorer", f"{deployed.name}-tampered").version)
    result = runner.invoke(app, ["verify", "--model", uri, "--tracking-uri", deployed.tracking_uri])
    assert result.exit_code == 2 and "differs from the hash" in result.output, result.output
    with pytest.raises(BundleError, match="differs from the hash"):   # what score, explain, monitor call
        load_scorer(uri, deployed.tracking_uri)
    assert not canary.exists()
    # positive control: MLflow's own loader runs the tampered file
    script = f"import mlflow; mlflow.set_tracking_uri({deployed.tracking_uri!r}); mlflow.pyfunc.load_model({uri!r})"
    subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=tmp_path, timeout=300)
    assert canary.exists()


def test_verify_passes_on_the_champion_and_names_what_it_checked(deployed):
    from leadscore.cli.app import app

    from .conftest import runner

    result = runner.invoke(app, ["verify", "--model", f"models:/{deployed.name}@champion",
                                 "--tracking-uri", deployed.tracking_uri])
    assert result.exit_code == 0 and result.output.startswith(f"OK models:/{deployed.name}@champion"), result.output
    assert "code files as recorded" in result.output


def test_the_registered_model_carries_leadscore_and_its_requirements(deployed, champion_files, rows, tmp_path):
    # An environment MLflow rebuilds from the model (env_manager virtualenv/uv/conda) has no
    # leadscore installed: the model brings its code and pins leadscore's own dependencies.
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    uri = deployed.tracking_uri
    rows_file = tmp_path / "rows.parquet"
    rows.assign(as_of=rows["as_of"].dt.tz_localize(None)).to_parquet(rows_file)
    from leadscore.serving.registry import NOT_SERVED

    script = f"""
import sys, mlflow, pandas as pd
assert "leadscore" not in sys.modules
for name in {sorted(NOT_SERVED)!r}:  # not in the model's requirements: it must not import them
    assert name not in sys.modules, name
    sys.modules[name] = None
mlflow.set_tracking_uri({uri!r})
out = mlflow.pyfunc.load_model("models:/{deployed.name}@champion").predict(pd.read_parquet({str(rows_file)!r}))
print(len(out)); print(sys.modules["leadscore"].__file__)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    n, where = done.stdout.split()[-2:]
    assert int(n) == len(rows)
    assert Path(where).parent.parent.name == "code"  # <model>/code/leadscore/__init__.py

    pinned = {Requirement(line).name: Requirement(line) for line in (champion_files / "requirements.txt").read_text().split()
              if not line.startswith("-")}
    declared = [Requirement(r) for r in requires("leadscore") if Requirement(r).marker is None]
    served = [r for r in declared if r.name not in NOT_SERVED]
    assert served and all(str(pinned[r.name].specifier).startswith("==") for r in served)
    assert not NOT_SERVED & set(pinned) and NOT_SERVED <= {r.name for r in declared}


@pytest.mark.parametrize("broken", ["a column dropped", "a number sent as text", "no rows"])
def test_bad_input_gets_an_error_naming_the_problem_not_a_stack_trace(server, deployed, rows, broken):
    base, _ = server
    name = {"a column dropped": deployed.column, "a number sent as text": deployed.numeric}.get(broken, "no rows")
    bad = (rows.drop(columns=[name]) if broken == "a column dropped" else rows.head(0) if broken == "no rows"
           else rows.assign(**{name: "old"}))
    status, body = _post(f"{base}/invocations", _payload(bad))
    assert status == 400
    assert name in body["message"]
    assert "Traceback" not in json.dumps(body) and not body.get("stack_trace")


# --- leadscore serve: the same scorer behind an API key and request limits -------------------

API_KEY = "test-key-123"


@pytest.fixture(scope="module")
def guarded(deployed, tmp_path_factory):
    """`leadscore serve` of the champion: one process for the events model, two worker
    processes for the flat export's (every test below then runs against each)."""
    port = _free_port()
    env = {**os.environ, "LEADSCORE_API_KEY": API_KEY}
    log = tmp_path_factory.mktemp("guarded") / "server.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "leadscore.cli", "serve", "--model",
                                 f"models:/{deployed.name}@champion", "--tracking-uri", deployed.tracking_uri,
                                 "--port", str(port), "--max-rows", "50", "--max-bytes", "200000",
                                 "--workers", str(deployed.workers)],
                                env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    _wait_for_ping(proc, base, log, "leadscore serve", 120)
    yield base
    _stop(proc)


def _post_with(url: str, payload, headers: dict | None = None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_leadscore_serve_answers_with_the_batch_scores_only_with_the_key(guarded, deployed, rows):
    url = f"{guarded}/invocations"
    assert _post_with(url, _payload(rows))[0] == 401
    assert _post_with(url, _payload(rows), {"Authorization": "Bearer wrong"})[0] == 401
    status, body = _post_with(url, _payload(rows), {"Authorization": f"Bearer {API_KEY}"})
    assert status == 200, body
    served = pd.DataFrame(body["predictions"])
    scorer, _ = load_scorer(str(deployed.bundle))
    local = scorer.score(rows)
    assert served["lead_id"].tolist() == local["lead_id"].tolist()
    np.testing.assert_allclose(served[deployed.probability], local[deployed.probability], rtol=1e-12)
    assert served["tier"].tolist() == local["tier"].tolist() and served["reasons"].tolist() == local["reasons"].tolist()
    assert _post_with(url, _payload(rows), {"X-API-Key": API_KEY})[0] == 200


@pytest.mark.parametrize("case", ["too many rows", "too many bytes", "no rows", "a number sent as text", "not JSON"])
def test_leadscore_serve_refuses_what_it_cannot_take_with_a_named_reason(guarded, deployed, rows, case):
    url, key = f"{guarded}/invocations", {"X-API-Key": API_KEY}
    if case == "too many rows":
        status, body = _post_with(url, _payload(pd.concat([rows] * 11, ignore_index=True)), key)
        assert status == 413 and "55 rows in one request; at most 50" in body["message"]
    elif case == "too many bytes":
        status, body = _post_with(url, None, key, raw=b'{"dataframe_records": [' + b" " * 300_000 + b"]}")
        assert status == 413 and "at most 200,000" in body["message"]
    elif case == "no rows":
        status, body = _post_with(url, _payload(rows.head(0)), key)
        assert status == 400 and "no rows" in body["message"]
    elif case == "a number sent as text":
        status, body = _post_with(url, _payload(rows.assign(**{deployed.numeric: "old"})), key)
        assert status == 400 and deployed.numeric in body["message"]
    else:
        status, body = _post_with(url, None, key, raw=b"{nope")
        assert status == 400 and "not JSON" in body["message"]
    assert "Traceback" not in json.dumps(body) and set(body) == {"error_code", "message"}


def _raw_payload(rows: pd.DataFrame, edit) -> bytes:
    """The JSON of ``rows`` after ``edit(columns, data)`` changed it in place."""
    split = _payload(rows)["dataframe_split"]
    edit(split["columns"], split["data"])
    return json.dumps({"dataframe_split": split}).replace('"__inf__"', "1e400").encode()


def _set(column: str, row: int, value):
    def edit(columns, data):
        data[row][columns.index(column)] = value
    return edit


def _categorical(deployed) -> str:
    scorer, _ = load_scorer(str(deployed.bundle))
    return next(c for c in scorer.features if any(c in m.levels for m in scorer.models.values()))


@pytest.mark.parametrize("case, says", [
    ("an infinite number", "must be a finite number, got inf in row(s) [1]"),
    ("true as a number", "is numeric: give a number or null, got True in row(s) [2]"),
    ("a number as a category", "is a category: give text or null, got 5 in row(s) [0]"),
    ("a column twice", "given more than once"),
    ("an as_of that is no timestamp", "as_of must be an ISO 8601 timestamp such as 2025-09-01T06:00:00 (UTC unless "
                                      "zoned), got 'yesterday' in row(s) [3]"),
    ("an as_of that is a number", "got 5 in row(s) [0]"),
])
def test_leadscore_serve_refuses_values_of_the_wrong_kind_naming_column_and_rows(guarded, deployed, rows, case, says):
    """Values JSON can carry that would otherwise score as missing (true, a number for a
    category), overflow the reasons (1e400) or fail to parse: 400 naming the column, not 500."""
    key = {"X-API-Key": API_KEY}
    category = _categorical(deployed)
    edit = {"an infinite number": _set(deployed.numeric, 1, "__inf__"),
            "true as a number": _set(deployed.numeric, 2, True),
            "a number as a category": _set(category, 0, 5),
            "a column twice": lambda columns, data: columns.__setitem__(columns.index(deployed.numeric), category),
            "an as_of that is no timestamp": _set("as_of", 3, "yesterday"),
            "an as_of that is a number": _set("as_of", 0, 5)}[case]
    status, body = _post_with(f"{guarded}/invocations", None, key, raw=_raw_payload(rows, edit))
    assert status == 400, body
    assert says in body["message"] and set(body) == {"error_code", "message"}
    if case not in ("a column twice",) and "as_of" not in case:
        assert repr(deployed.numeric if "number" in case and "category" not in case else category) in body["message"]


def test_leadscore_serve_reads_as_of_in_any_iso_form(guarded, deployed, rows):
    key = {"X-API-Key": API_KEY}
    day = rows["as_of"].dt.tz_convert("UTC").iloc[0].strftime("%Y-%m-%d")
    mixed = _raw_payload(rows, lambda columns, data: [_set("as_of", i, form)(columns, data) for i, form in enumerate(
        [day, day + "T00:00:00Z", day + "T02:00:00+02:00"])])
    status, body = _post_with(f"{guarded}/invocations", None, key, raw=mixed)
    assert status == 200, body
    assert [p["as_of"] for p in body["predictions"][:3]] == [day + "T00:00:00+0000"] * 3


def test_leadscore_serve_will_not_listen_beyond_loopback_without_a_key(deployed, monkeypatch):
    from leadscore.cli.app import app

    from .conftest import runner

    monkeypatch.delenv("LEADSCORE_API_KEY", raising=False)
    result = runner.invoke(app, ["serve", "--model", str(deployed.bundle), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "without an API key" in result.output


def _workers(pid: int) -> list[int]:
    """The worker processes of `leadscore serve --workers` (uvicorn spawns them)."""
    children = [int(c) for task in Path(f"/proc/{pid}/task").glob("*") for c in (task / "children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_restarted_workers_serve_the_same_model_after_its_bundle_is_gone(deployed, rows, tmp_path):
    """With --workers, each worker reads a private copy of the verified bundle: workers that die
    and are restarted serve the very model the server started with, though a retraining or a
    clean-up removed the bundle directory meanwhile."""
    if deployed.workers < 2:
        pytest.skip("the events model is served by one process")
    bundle = shutil.copytree(deployed.bundle, tmp_path / "bundle")
    port, log = _free_port(), tmp_path / "server.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "leadscore.cli", "serve", "--model", str(bundle),
                                 "--port", str(port), "--workers", "2"],
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_ping(proc, base, log, "leadscore serve --workers 2", 120)
        status, before = _post(f"{base}/invocations", _payload(rows))
        assert status == 200, before
        shutil.rmtree(bundle)
        deadline = time.monotonic() + 60
        while len(_workers(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        killed = _workers(proc.pid)
        assert len(killed) == 2
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        _wait_for_ping(proc, base, log, "the restarted workers", 120)
        assert not set(_workers(proc.pid)) & set(killed)
        for _ in range(6):
            status, after = _post(f"{base}/invocations", _payload(rows))
            assert status == 200 and after == before, after
    finally:
        _stop(proc)
    assert proc.returncode is not None
