"""Stage alerts: transitions between two scoring runs, and webhook delivery to a real local server."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadscore.serving.alerts import (
    CHANGES,
    TRANSITION_COLUMNS,
    DeliveryReport,
    WebhookConfig,
    deliver,
    stage_transitions,
    write_undelivered,
)

DAY1, DAY2 = pd.Timestamp("2025-06-01", tz="UTC"), pd.Timestamp("2025-06-08", tz="UTC")
RANK = {"new": -1, "lead": 0, "MQL": 1, "SQL": 2}


def run(tiers: dict[str, str], as_of: pd.Timestamp, version: str = "leadscore/3") -> pd.DataFrame:
    """A scoring run's output with the given tiers (p_sql and score follow the tier)."""
    ids = list(tiers)
    p = [{"lead": 0.05, "MQL": 0.3, "SQL": 0.7}[tiers[i]] + 0.001 * k for k, i in enumerate(ids)]
    return pd.DataFrame({
        "lead_id": ids, "as_of": as_of, "p_sql": p, "p_won": [x / 3 for x in p],
        "score": np.array([max(1, min(99, round(100 * x))) for x in p], dtype="int16"),
        "tier": [tiers[i] for i in ids], "fit_score": 50.0, "engagement_score": 50.0, "grid": "B2",
        "reasons": [f"reasons for {i}" for i in ids], "baseline_points": 40, "baseline_tier": "lead",
        "model_version": version, "run_id": "run-" + as_of.strftime("%Y%m%d")})


# ---- the hand-built two-day example ---------------------------------------------------------

BEFORE = {"L1": "lead", "L2": "lead", "L3": "MQL", "L4": "SQL", "L5": "SQL", "L6": "MQL",
          "L7": "MQL", "L8": "SQL", "L9": "lead", "L10": "SQL"}
AFTER = {"L1": "MQL",    # entered MQL
         "L2": "SQL",    # entered SQL, skipping MQL
         "L3": "SQL",    # entered SQL from MQL
         "L4": "MQL",    # dropped to MQL
         "L5": "lead",   # dropped out from SQL
         "L6": "lead",   # dropped out from MQL
         "L7": "MQL",    # unchanged MQL
         "L8": "SQL",    # unchanged SQL
         "L9": "lead",   # unchanged lead
         # L10 disappeared (became a real SQL in the CRM): no alert
         "N1": "SQL",    # new, straight to SQL
         "N2": "MQL",    # new, straight to MQL
         "N3": "lead"}   # new at lead: no alert


def test_transitions_on_a_hand_built_two_day_example():
    moved = stage_transitions(run(BEFORE, DAY1), run(AFTER, DAY2, "leadscore/4"))
    assert list(moved.columns) == list(TRANSITION_COLUMNS)
    assert set(moved[["lead_id", "from_tier", "to_tier", "change"]].itertuples(index=False, name=None)) == {
        ("L1", "lead", "MQL", "entered MQL"),
        ("L2", "lead", "SQL", "entered SQL"),
        ("L3", "MQL", "SQL", "entered SQL"),
        ("L4", "SQL", "MQL", "dropped to MQL"),
        ("L5", "SQL", "lead", "dropped out"),
        ("L6", "MQL", "lead", "dropped out"),
        ("N1", "new", "SQL", "entered SQL"),
        ("N2", "new", "MQL", "entered MQL"),
    }
    # ordered by change, then lead_id
    assert list(moved["lead_id"]) == ["L2", "L3", "N1", "L1", "N2", "L4", "L5", "L6"]
    row = moved.set_index("lead_id")
    assert (row["as_of"] == DAY2).all() and (row["previous_as_of"] == DAY1).all()
    assert math.isnan(row.at["N1", "p_sql_before"]) and row.at["L2", "p_sql_before"] == pytest.approx(0.051)
    assert row.at["L2", "p_sql"] == pytest.approx(0.701)
    assert row.at["L2", "reasons"] == "reasons for L2" and set(row["model_version"]) == {"leadscore/4"}
    assert row.at["L2", "score"] == 70


def test_transitions_are_deterministic_whatever_the_input_order(tmp_path):
    prev, cur = run(BEFORE, DAY1), run(AFTER, DAY2)
    a = stage_transitions(prev, cur)
    b = stage_transitions(prev.sample(frac=1, random_state=1), cur.sample(frac=1, random_state=2))
    pd.testing.assert_frame_equal(a, b)
    a.to_parquet(tmp_path / "a.parquet"), b.to_parquet(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_no_transitions_gives_an_empty_frame_with_the_columns():
    same = stage_transitions(run(BEFORE, DAY1), run(BEFORE, DAY2))
    assert same.empty and list(same.columns) == list(TRANSITION_COLUMNS)
    assert same["change"].value_counts().empty
    first = stage_transitions(run({}, DAY1).iloc[0:0], run({"a": "SQL", "b": "lead"}, DAY2))
    assert list(first["from_tier"]) == ["new"] and first["previous_as_of"].isna().all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text("abcdefghij0123456789", min_size=1, max_size=4),
                       st.tuples(st.sampled_from(["absent", "lead", "MQL", "SQL"]),
                                 st.sampled_from(["absent", "lead", "MQL", "SQL"])),
                       max_size=40))
def test_transition_properties(leads):
    prev = run({k: a for k, (a, _) in leads.items() if a != "absent"}, DAY1)
    cur = run({k: b for k, (_, b) in leads.items() if b != "absent"}, DAY2)
    moved = stage_transitions(prev, cur)
    assert list(moved.columns) == list(TRANSITION_COLUMNS)
    assert moved["lead_id"].is_unique
    present = set(cur["lead_id"])
    for r in moved.itertuples(index=False):
        assert r.lead_id in present  # nobody absent from the current run
        assert RANK[r.to_tier] != RANK[r.from_tier]
        assert r.to_tier == leads[r.lead_id][1]
        assert r.from_tier == ("new" if leads[r.lead_id][0] == "absent" else leads[r.lead_id][0])
        if r.change.startswith("entered"):
            assert r.to_tier in ("MQL", "SQL") and r.change == f"entered {r.to_tier}"
            assert RANK[r.to_tier] > RANK[r.from_tier]
        else:
            assert RANK[r.to_tier] < RANK[r.from_tier] and r.from_tier in ("MQL", "SQL")
            assert r.change == ("dropped to MQL" if r.to_tier == "MQL" else "dropped out")
    rank_before = {k: RANK["new" if a == "absent" else a] for k, (a, _) in leads.items()}
    rose = {k for k, (_, b) in leads.items() if b in ("MQL", "SQL") and RANK[b] > rank_before[k]}
    fell = {k for k, (a, b) in leads.items() if b != "absent" and a in ("MQL", "SQL") and RANK[b] < RANK[a]}
    assert set(moved.loc[moved["change"].str.startswith("entered"), "lead_id"]) == rose
    assert set(moved.loc[~moved["change"].str.startswith("entered"), "lead_id"]) == fell
    keys = list(zip(moved["change"].map(CHANGES.index), moved["lead_id"]))
    assert keys == sorted(keys)


# ---- input validation -------------------------------------------------------------------------

def test_missing_columns_name_the_frame_and_the_columns():
    prev, cur = run(BEFORE, DAY1), run(AFTER, DAY2)
    with pytest.raises(ValueError, match=r"previous run: missing required column\(s\) tier, p_sql"):
        stage_transitions(prev.drop(columns=["tier", "p_sql"]), cur)
    with pytest.raises(ValueError, match=r"current run: missing required column\(s\) reasons"):
        stage_transitions(prev, cur.drop(columns=["reasons"]))


def test_duplicate_lead_ids_are_named():
    prev, cur = run(BEFORE, DAY1), run(AFTER, DAY2)
    with pytest.raises(ValueError, match=r"current run: 1 duplicate lead_id\(s\), e.g. 'L3'"):
        stage_transitions(prev, pd.concat([cur, cur[cur["lead_id"] == "L3"]]))
    with pytest.raises(ValueError, match=r"previous run: 2 duplicate lead_id\(s\), e.g. 'L1', 'L2'"):
        stage_transitions(pd.concat([prev, prev.head(2)]), cur)


def test_unknown_tiers_are_named():
    prev, cur = run(BEFORE, DAY1), run(AFTER, DAY2)
    cur.loc[cur["lead_id"] == "L4", "tier"] = "sql"
    with pytest.raises(ValueError, match=r"current run: unknown tier value\(s\) 'sql'.*lead 'L4'"):
        stage_transitions(prev, cur)
    prev.loc[0, "tier"] = None
    with pytest.raises(ValueError, match=r"previous run: unknown tier value\(s\) None"):
        stage_transitions(prev, run(AFTER, DAY2))


def test_previous_later_than_current_is_refused():
    with pytest.raises(ValueError, match=r"previous run \(as_of 2025-06-08T00:00:00\+00:00\) is later"):
        stage_transitions(run(BEFORE, DAY2), run(AFTER, DAY1))


def test_rows_from_several_runs_are_refused():
    mixed = pd.concat([run({"a": "SQL"}, DAY1), run({"b": "SQL"}, DAY2)])
    with pytest.raises(ValueError, match=r"previous run: rows from 2 different as_of values"):
        stage_transitions(mixed, run(AFTER, DAY2))


@pytest.mark.parametrize("kwargs, message", [
    ({"url": "ftp://example.com/x"}, "http:// or https://"),
    ({"url": "http:///nohost"}, "with a host"),
    ({"url": "https://h/x", "batch_size": 0}, r"batch_size must be >= 1, got 0"),
    ({"url": "https://h/x", "batch_size": 2.5}, r"batch_size must be a whole number, got 2\.5"),
    ({"url": "https://h/x", "batch_size": True}, r"batch_size must be a whole number, got True"),
    ({"url": "https://h/x", "timeout_seconds": 0}, r"timeout_seconds must be > 0, got 0"),
    ({"url": "https://h/x", "retries": -1}, r"retries must be >= 0, got -1"),
    ({"url": "https://h/x", "backoff_seconds": float("nan")}, r"backoff_seconds must be a finite number, got nan"),
    ({"url": "https://h/x", "allow_http": "yes"}, r"allow_http must be true or false, got 'yes'"),
    ({"url": "https://h/x", "secret": "s3cr3t"}, r"unknown key\(s\) secret; allowed: .*secret_env"),
])
def test_webhook_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WebhookConfig(**kwargs)


# ---- webhook delivery against a local HTTP server -----------------------------------------------

class _Hook(BaseHTTPRequestHandler):
    """Answers POSTs with the next status in ``script`` (then ``default``), recording each body."""

    script: ClassVar[list] = []
    default: ClassVar[int] = 200
    delay: ClassVar[float] = 0.0
    received: ClassVar[list] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        with cls.lock:
            cls.received.append({"body": json.loads(body), "headers": dict(self.headers), "path": self.path})
            status = cls.script.pop(0) if cls.script else cls.default
        if cls.delay:
            time.sleep(cls.delay)
        payload = b'{"ok": true}' if status < 300 else b'{"error": "nope"}'
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def hook(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    handler = type("Hook", (_Hook,), {"script": [], "received": [], "default": 200, "delay": 0.0,
                                      "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/alerts"
    server.shutdown()
    server.server_close()
    thread.join(5)


def transitions(n: int) -> pd.DataFrame:
    """``n`` transitions: a mix of entered / dropped rows, with NaN p_sql_before for new leads."""
    before = {f"L{i:04d}": "lead" if i % 3 else "SQL" for i in range(n) if i % 5}  # every 5th is new
    after = {f"L{i:04d}": ("SQL" if i % 2 else "MQL") if i % 5 == 0 else "SQL" if i % 3 else "lead"
             for i in range(n)}
    moved = stage_transitions(run(before, DAY1), run(after, DAY2))
    assert len(moved) == n
    return moved


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def test_all_rows_are_delivered_in_batches_as_json(hook):
    handler, url = hook
    moved = transitions(23)
    sleeps = Sleeps()
    report = deliver(moved, WebhookConfig(url=url, batch_size=10), meta={"run_id": "r-42"}, sleep=sleeps)
    assert report.ok and (report.delivered, report.failed, report.batches, report.attempts) == (23, 0, 3, 3)
    assert report.errors == () and report.failed_rows.empty and sleeps == []
    assert len(report.lines()) == 1 and "delivered 23 of 23 transitions in 3 of 3 batches" in report.lines()[0]
    bodies = [r["body"] for r in handler.received]
    assert [len(b["transitions"]) for b in bodies] == [10, 10, 3]
    assert {r["headers"]["Content-Type"] for r in handler.received} == {"application/json"}
    assert {r["path"] for r in handler.received} == {"/alerts"}
    for i, body in enumerate(bodies, 1):
        meta = body["meta"]
        assert (meta["batch"], meta["batches"], meta["rows"], meta["total_rows"]) == (i, 3, len(body["transitions"]), 23)
        assert meta["as_of"] == "2025-06-08T00:00:00+00:00" and meta["model_version"] == "leadscore/3"
        assert meta["run_id"] == "r-42" and len(meta["batch_key"]) == 64
        assert handler.received[i - 1]["headers"]["Idempotency-Key"] == meta["batch_key"]
    posted = [t for b in bodies for t in b["transitions"]]
    assert [t["lead_id"] for t in posted] == list(moved["lead_id"])
    assert list(posted[0]) == list(TRANSITION_COLUMNS)
    first = posted[0]
    expected = moved.iloc[0]
    assert first["as_of"] == "2025-06-08T00:00:00+00:00" and first["previous_as_of"] == "2025-06-01T00:00:00+00:00"
    assert first["p_sql"] == pytest.approx(expected["p_sql"]) and first["score"] == int(expected["score"])
    new = [t for t in posted if t["from_tier"] == "new"]
    assert new and all(t["p_sql_before"] is None for t in new)
    assert all(isinstance(t["p_sql_before"], float) for t in posted if t["from_tier"] != "new")


def test_transient_503s_are_retried_with_growing_back_off(hook):
    handler, url = hook
    handler.script = [503, 503]
    sleeps = Sleeps()
    report = deliver(transitions(5), WebhookConfig(url=url, retries=3, backoff_seconds=0.5), sleep=sleeps)
    assert report.ok and report.delivered == 5 and report.failed == 0
    assert (report.batches, report.attempts, report.retried) == (1, 3, 2)
    assert sleeps == [0.5, 1.0]
    assert len(handler.received) == 3
    assert len({json.dumps(r["body"], sort_keys=True) for r in handler.received}) == 1  # the same bytes resent
    assert "2 retries" in report.lines()[0]


def test_429_is_retried(hook):
    handler, url = hook
    handler.script = [429]
    report = deliver(transitions(3), WebhookConfig(url=url, backoff_seconds=0.0), sleep=Sleeps())
    assert report.ok and report.attempts == 2


def test_a_server_that_always_fails_is_reported(hook, tmp_path):
    handler, url = hook
    handler.default = 500
    sleeps = Sleeps()
    moved = transitions(12)
    report = deliver(moved, WebhookConfig(url=url, batch_size=5, retries=2, backoff_seconds=1.0), sleep=sleeps)
    assert not report.ok
    assert (report.delivered, report.failed, report.batches, report.attempts) == (0, 12, 3, 9)
    assert sleeps == [1.0, 2.0] * 3
    assert len(report.errors) == 3
    for i, error in enumerate(report.errors, 1):
        assert f"batch {i}/3" in error and "HTTP 500" in error and url in error and "gave up after 3 attempts" in error
    lines = report.lines()
    assert "delivered 0 of 12 transitions in 0 of 3 batches" in lines[0] and "NOT delivered" in lines[1]
    pd.testing.assert_frame_equal(report.failed_rows, moved)
    path = write_undelivered(report, tmp_path / "undelivered.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), moved)


def test_a_partial_failure_keeps_exactly_the_failed_rows(hook, tmp_path):
    handler, url = hook
    handler.script = [200, 400, 200]
    moved = transitions(9)
    report = deliver(moved, WebhookConfig(url=url, batch_size=3, retries=2), sleep=Sleeps())
    assert (report.delivered, report.failed, report.batches, report.attempts) == (6, 3, 3, 3)
    assert report.delivered + report.failed == len(moved)
    pd.testing.assert_frame_equal(report.failed_rows, moved.iloc[3:6].reset_index(drop=True))
    assert write_undelivered(deliver(moved.iloc[0:0], WebhookConfig(url=url)), tmp_path / "none.parquet") is None
    assert not (tmp_path / "none.parquet").exists()


def test_a_400_is_not_retried(hook):
    handler, url = hook
    handler.default = 400
    sleeps = Sleeps()
    report = deliver(transitions(4), WebhookConfig(url=url, retries=3), sleep=sleeps)
    assert not report.ok and report.failed == 4 and report.attempts == 1 and sleeps == []
    assert len(handler.received) == 1
    assert "HTTP 400" in report.errors[0] and url in report.errors[0] and "not retryable" in report.errors[0]


def test_a_timeout_is_retried_and_reported(hook):
    handler, url = hook
    handler.delay = 0.5
    report = deliver(transitions(2), WebhookConfig(url=url, timeout_seconds=0.1, retries=1, backoff_seconds=0.0),
                     sleep=Sleeps())
    assert not report.ok and report.failed == 2 and report.attempts == 2
    assert "timed out after 0.1 s" in report.errors[0]


def test_connection_refused_is_reported_not_raised():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on leaving the block: nothing listens there
    url = f"http://127.0.0.1:{port}/alerts"
    sleeps = Sleeps()
    report = deliver(transitions(7), WebhookConfig(url=url, batch_size=5, retries=2, backoff_seconds=0.25), sleep=sleeps)
    assert not report.ok and (report.delivered, report.failed, report.batches, report.attempts) == (0, 7, 2, 6)
    assert sleeps == [0.25, 0.5, 0.25, 0.5]
    assert all("connection error" in e and "refused" in e.lower() and url in e for e in report.errors)


def test_an_empty_frame_sends_nothing(hook):
    handler, url = hook
    report = deliver(transitions(0), WebhookConfig(url=url))
    assert report.ok and (report.delivered, report.failed, report.batches, report.attempts) == (0, 0, 0, 0)
    assert handler.received == [] and isinstance(report, DeliveryReport)


def test_secrets_in_the_url_are_not_echoed():
    report = deliver(transitions(1), WebhookConfig(url="http://user:s3cret@127.0.0.1:9/hook?token=abc", retries=0))
    text = "\n".join(report.lines())
    assert "s3cret" not in text and "abc" not in text and "127.0.0.1:9/hook" in text


# ---- issue 21: webhooks done properly ------------------------------------------------------------

class _Trickle(BaseHTTPRequestHandler):
    """Answers with a body sent one byte every 0.2 s: each read is quick, the whole takes long."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"ok": true, "padding": "' + b"x" * 40 + b'"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


def test_a_slow_receiver_cannot_hold_an_attempt_past_its_deadline():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
        started = time.monotonic()
        report = deliver(transitions(1), WebhookConfig(url=url, timeout_seconds=1.0, retries=0), sleep=Sleeps())
        took = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    # the answer would take ~10 s to arrive; the attempt gives up at its 1 s deadline
    assert not report.ok and "timed out after 1 s" in report.errors[0]
    assert took < 5, took


def test_batches_are_signed_with_a_timestamped_hmac_the_receiver_can_verify(hook, monkeypatch):
    import hashlib
    import hmac

    handler, url = hook
    monkeypatch.setenv("LEADSCORE_WEBHOOK_SECRET", "whsec_test")
    assert deliver(transitions(3), WebhookConfig(url=url, batch_size=2), sleep=Sleeps()).ok
    for got in handler.received:
        header = got["headers"]["X-Leadscore-Signature"]
        parts = dict(p.split("=", 1) for p in header.split(","))
        body = json.dumps(got["body"], ensure_ascii=False, allow_nan=False).encode()
        expected = hmac.new(b"whsec_test", f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(parts["v1"], expected)
        assert abs(int(parts["t"]) - time.time()) < 60
    monkeypatch.delenv("LEADSCORE_WEBHOOK_SECRET")
    handler.received.clear()
    assert deliver(transitions(1), WebhookConfig(url=url), sleep=Sleeps()).ok
    assert "X-Leadscore-Signature" not in handler.received[0]["headers"]


@pytest.mark.parametrize("url, allowed", [
    ("http://hooks.example.com/x", False), ("https://hooks.example.com/x", True), ("http://127.0.0.1:9/x", True),
    ("http://localhost:9/x", True), ("http://[::1]:9/x", True),
])
def test_plain_http_is_refused_unless_loopback_or_explicitly_allowed(url, allowed):
    if allowed:
        WebhookConfig(url=url)
    else:
        with pytest.raises(ValueError, match="https"):
            WebhookConfig(url=url)
        assert WebhookConfig(url=url, allow_http=True).url == url


def test_cli_webhook_flag_overrides_only_the_url_and_errors_never_print_secrets(tmp_path):
    from leadscore.serving.batch import load_scoring

    config = tmp_path / "score.yaml"
    config.write_text("webhook:\n  url:\n  batch_size: 7\n  timeout_seconds: 2\n  retries: 1\n")
    _, hook = load_scoring(config, webhook_url="https://user:pw@hooks.example.com/x?token=SECRET")
    assert (hook.batch_size, hook.timeout_seconds, hook.retries) == (7, 2, 1)
    assert "SECRET" not in hook.display_url and "pw" not in hook.display_url
