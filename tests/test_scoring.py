"""The batch scoring job: accounting, quarantine, atomic and repeatable output, interruption,
stage transitions and webhook delivery end to end."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadscore.features.builder import connect, features_as_of
from leadscore.serving.batch import read_scores
from leadscore.serving.columns import OUTPUT_COLUMNS
from leadscore.serving.explain import change_reasons
from leadscore.serving.history import HISTORY_COLUMNS, lead_trend, trend_line
from leadscore.serving.registry import load_scorer
from leadscore.training.config import load_pipeline

from .conftest import app, runner, ts

TABLES = ("leads", "activities", "lifecycle")


@pytest.fixture(scope="module")
def registry(trained):
    """(tracking URI, bundle directory) of the session's training run."""
    config, _ = trained
    pipeline = load_pipeline(config)
    return pipeline.tracking.tracking_uri, Path(pipeline.models_dir) / pipeline.name


def _score(registry, data: Path, out: Path, *extra: str, as_of: str = "2025-06-01", model: str | None = None):
    uri, bundle = registry
    return runner.invoke(app, ["score", "--model", model or str(bundle), "--data", str(data), "--as-of", as_of,
                               "--out", str(out), "--tracking-uri", uri, "--no-progress", *extra])


@pytest.fixture(scope="module")
def planted(train_dir, tmp_path_factory):
    """The training data with bad rows planted in every table: (data dir, planted lead ids)."""
    out = tmp_path_factory.mktemp("planted")
    leads, acts, life = (pd.read_parquet(train_dir / f"{n}.parquet") for n in TABLES)
    dup = leads.iloc[[10]]                                     # duplicate lead_id: both copies break the contract
    leads = pd.concat([leads, dup], ignore_index=True)
    bad_act = acts.iloc[[0, 1]].copy()
    bad_act["activity_type"] = "carrier_pigeon"                # unknown activity type
    acts = pd.concat([acts, bad_act], ignore_index=True)
    early = life.iloc[[0]].copy()
    early["occurred_at"] = pd.Timestamp("2000-01-01", tz="UTC")  # before the lead was created
    life = pd.concat([life, early], ignore_index=True)
    for name, frame in zip(TABLES, (leads, acts, life)):
        frame.to_parquet(out / f"{name}.parquet")
    return out, str(dup["lead_id"].iloc[0])


def _identity(output: str) -> tuple[int, int, int, int]:
    line = next(ln for ln in output.splitlines() if ln.startswith("leads:") and "scored" in ln)
    nums = [int(w.replace(",", "")) for w in line.replace("=", " ").split() if w.replace(",", "").isdigit()]
    return tuple(nums[:4])


def test_rows_in_equal_scored_plus_quarantined_plus_not_open_and_bad_rows_are_quarantined(registry, planted, tmp_path):
    data, dup_lead = planted
    out = tmp_path / "scores.parquet"
    result = _score(registry, data, out, "--max-quarantine", "0.5")
    assert result.exit_code == 0, result.output
    rows_in, scored, quarantined, not_open = _identity(result.output)
    assert rows_in == len(pd.read_parquet(data / "leads.parquet"))
    assert rows_in == scored + quarantined + not_open and quarantined == 2
    scores = read_scores(out)
    assert len(scores) == scored and scores["lead_id"].is_unique and dup_lead not in set(scores["lead_id"])
    q = pd.read_parquet(tmp_path / "scores.quarantine.parquet")
    tables = {n: pd.read_parquet(data / f"{n}.parquet") for n in TABLES}
    # the planted rows (appended last) are quarantined with their reason ...
    for table, n_planted, word in (("leads", 1, "lead_id"), ("activities", 2, "activity_type"),
                                   ("lifecycle", 1, "occurred_at")):
        planted_rows = set(range(len(tables[table]) - n_planted, len(tables[table])))
        mine = q[(q["table"] == table) & q["source_row"].isin(planted_rows)]
        assert len(mine) == n_planted and mine["quarantine_reason"].str.contains(word).all(), mine
    # ... and every other quarantined row is the duplicated lead's own (its rows cannot be trusted)
    rest = q.drop(index=[i for i, r in q.iterrows()
                         if r["source_row"] >= len(tables[r["table"]]) - {"leads": 1, "activities": 2,
                                                                           "lifecycle": 1}[r["table"]]])
    assert (rest["lead_id"] == dup_lead).all(), rest[["table", "lead_id", "quarantine_reason"]]
    assert len(q) == int(result.output.split(" rows break the data contract")[0].split()[-1].replace(",", ""))
    for table in TABLES:
        line = next(ln for ln in result.output.splitlines() if ln.startswith(f"{table}:"))
        n_in, clean, bad = (int(w.replace(",", "")) for w in line.split() if w.replace(",", "").isdigit())
        assert n_in == clean + bad == len(pd.read_parquet(data / f"{table}.parquet"))


def test_a_stale_export_is_flagged_and_a_fresh_one_is_not(registry, train_dir, tmp_path):
    fresh = _score(registry, train_dir, tmp_path / "fresh.parquet")
    assert fresh.exit_code == 0, fresh.output
    assert "newest event before as_of: 2025-05-31" in fresh.output and "warning" not in fresh.output
    # Data that ends 2025-10-01 scored as of 2026-03-01: five months of silence from every lead.
    stale = _score(registry, train_dir, tmp_path / "stale.parquet", as_of="2026-03-01")
    assert stale.exit_code == 0, stale.output  # a warning, the scores are still written
    assert re.search(r"warning: the newest activity or lifecycle event is 15\d\.\d days older than --as-of",
                     stale.output), stale.output
    assert (tmp_path / "stale.parquet").exists()
    config = tmp_path / "score.yaml"
    config.write_text("scoring:\n  max_data_age_days:\n")  # empty: no check
    unchecked = _score(registry, train_dir, tmp_path / "unchecked.parquet", "--config", str(config), as_of="2026-03-01")
    assert unchecked.exit_code == 0 and "warning" not in unchecked.output, unchecked.output


def test_too_many_quarantined_rows_stop_the_job_before_scoring(registry, planted, tmp_path):
    data, _ = planted
    out = tmp_path / "scores.parquet"
    result = _score(registry, data, out, "--max-quarantine", "0.0001")
    assert result.exit_code == 1
    assert "too many rows break the data contract" in result.output and "leads: 2 of 8,001 rows" in result.output
    assert not out.exists() and (tmp_path / "scores.quarantine.parquet").exists()


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_two_runs_give_identical_bytes_and_the_columns_of_the_contract(registry, train_dir, tmp_path, suffix):
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    assert _score(registry, train_dir, a, "--chunk-size", "1000").exit_code == 0
    old = os.umask(0o027)
    try:
        assert _score(registry, train_dir, b, "--chunk-size", "1000").exit_code == 0
    finally:
        os.umask(old)
    assert a.read_bytes() == b.read_bytes()
    # readable as the umask allows (a service account reads the nightly scores), not owner-only 0600
    assert stat.S_IMODE(a.stat().st_mode) == 0o666 & ~old and stat.S_IMODE(b.stat().st_mode) == 0o640
    scores = read_scores(a)
    assert tuple(scores.columns) == OUTPUT_COLUMNS


def test_scores_follow_the_model_and_carry_the_baseline_and_model_identity(registry, train_dir, tmp_path):
    uri, bundle = registry
    out = tmp_path / "scores.parquet"
    result = _score(registry, train_dir, out, "--chunk-size", "700", model="models:/leadscore@champion")
    assert result.exit_code == 0, result.output
    scores = read_scores(out)
    scorer, _ = load_scorer(str(bundle))
    # chunking changes nothing: the same rows scored in one go by the scorer
    from leadscore.features.builder import features_as_of

    rows = features_as_of({n: train_dir / f"{n}.parquet" for n in TABLES}, as_of="2025-06-01",
                          config=scorer.feature_config)
    direct = scorer.score(rows).set_index("lead_id").loc[scores["lead_id"]]
    np.testing.assert_allclose(scores["p_sql"], direct["p_sql"], rtol=0, atol=1e-12)
    assert (scores["reasons"].to_numpy() == direct["reasons"].to_numpy()).all()
    assert (scores["grid"].to_numpy() == direct["grid"].to_numpy()).all()
    order = np.argsort(scores["p_sql"].to_numpy(), kind="stable")
    assert (np.diff(scores["score"].to_numpy()[order]) >= 0).all() and scores["score"].between(1, 99).all()
    assert ((scores["p_sql"] >= scorer.cutoffs.sql) == (scores["tier"] == "SQL")).all()
    assert set(scores["baseline_tier"]) <= {"lead", "MQL", "SQL"} and scores["baseline_points"].notna().all()
    assert set(scores["model_version"]) == {"leadscore/1"}
    assert len(set(scores["run_id"])) == 1 and len(scores["run_id"].iloc[0]) == 32
    for tier in ("lead", "MQL", "SQL"):  # the printed tier counts are the file's
        line = next(ln for ln in result.output.splitlines() if ln.startswith(tier + " "))
        assert [int(w.replace(",", "")) for w in line.split()[1:]] == [
            int((scores["tier"] == tier).sum()), int((scores["baseline_tier"] == tier).sum())]
    # leads older than any training example are counted and said (the model's examples.max_lead_age_days)
    created = pd.read_parquet(train_dir / "leads.parquet").set_index("lead_id")["created_at"]
    age = (pd.Timestamp("2025-06-01", tz="UTC") - created.loc[scores["lead_id"]]) / pd.Timedelta(days=1)
    max_age = json.loads((bundle / "manifest.json").read_text())["params"]["max_lead_age_days"]
    older = int((age > max_age).sum())
    assert older > 0, "the fixture should hold leads older than the training domain"
    assert (f"note: {older:,} of the {len(scores):,} scored leads ({older / len(scores):.1%}) are older than "
            f"{max_age} days") in result.output


def test_a_job_interrupted_half_way_leaves_no_output(registry, train_dir, tmp_path):
    uri, bundle = registry
    out = tmp_path / "out" / "scores.parquet"
    out.parent.mkdir()
    cmd = [sys.executable, "-m", "leadscore.cli", "score", "--model", str(bundle), "--data", str(train_dir),
           "--as-of", "2025-06-01", "--out", str(out), "--chunk-size", "100", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # the output's temporary file (the staged clean tables sit in a temporary directory beside it)
    while not list(out.parent.glob(".scores.parquet.*.tmp")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the job ended before it could be interrupted"
    time.sleep(0.5)  # a few chunks into the temporary file
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]   # 143: what a scheduler expects of SIGTERM
    assert "interrupted by SIGTERM" in err and "Traceback" not in err, err[-2000:]
    assert not out.exists() and list(out.parent.iterdir()) == [], err[-2000:]  # no output, no staged tables


def test_a_full_disk_is_named_not_a_traceback(tmp_path):
    script = (
        "import errno, leadscore.cli.app as cli\n"
        "def full(*a, **k):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', '/data/scores/out.parquet')\n"
        "cli.app = full\n"
        "cli.main()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "no space left on the device of /data/scores (/data/scores/out.parquet)" in done.stderr


@pytest.fixture(scope="module")
def first_run(registry, train_dir, tmp_path_factory) -> Path:
    """A scoring run as of 2025-06-01: the previous run of the transition tests."""
    out = tmp_path_factory.mktemp("first") / "2025-06-01.parquet"
    result = _score(registry, train_dir, out)
    assert result.exit_code == 0, result.output
    return out


class _Hook(BaseHTTPRequestHandler):
    status = 200
    received: list = []

    def do_POST(self):  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    handler = type("Hook", (_Hook,), {"received": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/alerts"
    server.shutdown()


def test_a_second_run_writes_transitions_and_posts_them(registry, train_dir, tmp_path, hook, first_run):
    handler, url = hook
    day1, day2 = first_run, tmp_path / "2025-06-08.parquet"
    result = _score(registry, train_dir, day2, "--previous", str(day1), "--webhook", url, as_of="2025-06-08")
    assert result.exit_code == 0, result.output
    moved = pd.read_parquet(tmp_path / "2025-06-08.transitions.parquet")
    before = read_scores(day1).set_index("lead_id")["tier"]
    after = read_scores(day2).set_index("lead_id")["tier"]
    rank = {"new": -1, "lead": 0, "MQL": 1, "SQL": 2}
    both = after.to_frame("to").join(before.rename("from"), how="left").fillna({"from": "new"})
    changed = both[(both["to"] != both["from"]) & ((both["to"] != "lead") | (both["from"] != "new"))
                   & ((both["to"].map(rank) > 0) | (both["from"].map(rank) > 0))]
    assert set(moved["lead_id"]) == set(changed.index) and len(moved) > 0
    posted = [t["lead_id"] for body in handler.received for t in body["transitions"]]
    assert sorted(posted) == sorted(moved["lead_id"])
    assert "transitions:" in result.output
    # change reasons: every lead of both runs whose score moved 5+ points (the default), and no other
    scores1, scores2 = read_scores(day1).set_index("lead_id"), read_scores(day2).set_index("lead_id")
    assert scores1["change_reasons"].isna().all()   # a run without --previous
    shift = (scores2["score"] - scores1["score"].reindex(scores2.index)).abs()
    assert set(scores2.index[scores2["change_reasons"].notna()]) == set(shift.index[shift >= 5]) != set()
    assert "leads moved by 5+ score points" in result.output
    # they are the lead's features at both moments through the model (change_reasons), and travel with the alerts
    scorer, _ = load_scorer(str(registry[1]))
    lead = shift.idxmax()
    con = connect({n: str(train_dir / f"{n}.parquet") for n in TABLES})
    rows = [features_as_of(con, pd.DataFrame({"lead_id": [lead], "as_of": [ts(day)]}), config=scorer.feature_config)
            for day in ("2025-06-01", "2025-06-08")]
    expected = change_reasons(scorer, *rows, k=3)
    assert scores2.at[lead, "change_reasons"] == expected["change_line"].iloc[0] != ""
    assert (moved.set_index("lead_id")["change_reasons"].fillna("x") ==
            scores2["change_reasons"].reindex(moved["lead_id"]).fillna("x").to_numpy()).all()
    assert all("change_reasons" in t for body in handler.received for t in body["transitions"])


def test_the_score_history_keeps_every_run_compact_shows_a_trend_and_feeds_monitor(registry, train_dir, tmp_path):
    history = tmp_path / "history"
    runs = {}
    for day in ("2025-06-01", "2025-06-08", "2025-06-08"):   # the second 06-08 run replaces the first
        runs[day] = tmp_path / f"{day}.parquet"
        result = _score(registry, train_dir, runs[day], "--history", str(history), as_of=day)
        assert result.exit_code == 0, result.output
    assert "(replaced the earlier run at this moment)" in result.output
    files = sorted(history.glob("*.parquet"))
    assert [f.name for f in files] == ["scores-20250601T000000Z.parquet", "scores-20250608T000000Z.parquet"]
    for f, day in zip(files, ("2025-06-01", "2025-06-08")):   # each run's scores, every lead, without the reasons
        pd.testing.assert_frame_equal(pd.read_parquet(f), read_scores(runs[day])[list(HISTORY_COLUMNS)])
    assert sum(f.stat().st_size for f in files) < sum(p.stat().st_size for p in runs.values()) / 2
    # one lead's trend: its score and tier at each run up to --as-of, the same as the runs wrote
    first, second = (read_scores(runs[d]).set_index("lead_id") for d in ("2025-06-01", "2025-06-08"))
    both = first.index.intersection(second.index)
    lead = (second.loc[both, "score"] - first.loc[both, "score"]).abs().idxmax()
    trend = lead_trend(history, lead)
    assert trend["score"].tolist() == [first.at[lead, "score"], second.at[lead, "score"]]
    assert trend["tier"].tolist() == [first.at[lead, "tier"], second.at[lead, "tier"]]
    uri, bundle = registry
    out = tmp_path / "explain.json"
    result = runner.invoke(app, ["explain", "--model", str(bundle), "--data", str(train_dir), "--lead-id", lead,
                                 "--as-of", "2025-06-08", "--history", str(history), "--json", str(out)])
    assert result.exit_code == 0, result.output
    shown = json.loads(out.read_text())["history"]
    assert [r["score"] for r in shown["runs"]] == trend["score"].tolist() and shown["trend"] == trend_line(trend)
    assert f"score {first.at[lead, 'score']} -> {second.at[lead, 'score']} over 2 runs" in shown["trend"]
    result = runner.invoke(app, ["explain", "--model", str(bundle), "--data", str(train_dir), "--lead-id", lead,
                                 "--as-of", "2025-06-05", "--history", str(history)])   # runs after --as-of: not shown
    assert result.exit_code == 0 and "history: score" in result.output and "over 1 run," in result.output
    # the history is what monitor reads
    result = runner.invoke(app, ["monitor", "--model", str(bundle), "--data", str(train_dir), "--scores", str(history),
                                 "--out", str(tmp_path / "monitor.html"), "--no-tracking"])
    assert "from 2 file(s)" in result.output and result.exit_code in (0, 4, 5), result.output
    result = _score(registry, train_dir, tmp_path / "x.parquet", "--history", str(runs["2025-06-01"]))
    assert result.exit_code == 2 and "not a directory" in result.output


def test_a_previous_run_later_than_this_one_is_refused_before_scoring(registry, train_dir, tmp_path, first_run):
    out = tmp_path / "early.parquet"
    result = _score(registry, train_dir, out, "--previous", str(first_run), as_of="2025-05-20")
    assert result.exit_code == 2 and not out.exists()
    assert "after --as-of 2025-05-20 00:00 UTC; pass the older output as --previous" in result.output


def test_undeliverable_alerts_are_reported_with_a_distinct_exit_code(registry, train_dir, tmp_path, hook, first_run):
    handler, url = hook
    handler.status = 500
    day1, day2 = first_run, tmp_path / "b.parquet"
    cfg = tmp_path / "score.yaml"
    cfg.write_text(f"webhook:\n  url: {url}\n  retries: 1\n  backoff_seconds: 0.01\n")
    result = _score(registry, train_dir, day2, "--previous", str(day1), "--config", str(cfg), as_of="2025-06-08")
    assert result.exit_code == 3, result.output
    assert "were not delivered" in result.output and "500" in result.output
    assert day2.exists() and (tmp_path / "b.transitions.parquet").exists()
    assert len(handler.received) == 2 * -(-len(pd.read_parquet(tmp_path / "b.transitions.parquet")) // 500)


# ---------------------------------------------------------------------------
# The 1-99 score
# ---------------------------------------------------------------------------

def test_the_score_spans_1_to_99_even_when_the_calibrator_ties_probabilities():
    """An isotonic calibrator gives a few distinct probabilities: 23 here, 40 leads each. Built
    from unique quantiles the scale had 23 break points and the top leads scored 24; the
    mid-rank ECDF gives each tie group its share of the scale."""
    from leadscore.serving.scorer import ScoreScale

    reference = np.repeat(np.linspace(0.001, 0.2, 23), 40)
    scale = ScoreScale.of(reference)
    points = scale.points(np.unique(reference))
    assert points[0] <= 5 and points[-1] >= 95 and len(set(points)) == 23
    assert scale.points([0.0])[0] == 1 and scale.points([0.5])[0] == 99
    assert (np.diff(scale.points(np.linspace(0, 1, 2001))) >= 0).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=300), st.lists(st.floats(0, 1), min_size=1, max_size=50))
def test_property_the_score_is_the_mid_rank_share_of_reference_leads_below(reference, query):
    from leadscore.serving.scorer import ScoreScale

    ref = np.asarray(reference)
    got = ScoreScale.of(ref).points(query)
    for q, s in zip(query, got):
        share = ((ref < q).sum() + 0.5 * (ref == q).sum()) / len(ref)
        assert s == 1 + np.floor(98 * share + 0.5) and 1 <= s <= 99


@pytest.fixture(scope="module")
def damaged(train_dir, first_run, tmp_path_factory):
    """The training data where three open leads lost activities to the quarantine: one logged
    under its id with a trailing space, one under the NFD spelling of its (accented) id, one
    with an unknown activity type. (data dir, {lead id: how}, the first run's scores)."""
    out = tmp_path_factory.mktemp("damaged")
    leads, acts, life = (pd.read_parquet(train_dir / f"{n}.parquet") for n in TABLES)
    scores = read_scores(first_run)
    active = acts.loc[acts["occurred_at"] < pd.Timestamp("2025-06-01", tz="UTC"), "lead_id"].value_counts()
    spaced, accented, unknown = [i for i in scores["lead_id"] if active.get(i, 0) >= 3][:3]
    nfc = "Lé-" + accented                                    # é as one code point
    for frame in (leads, acts, life):
        frame["lead_id"] = frame["lead_id"].replace({accented: nfc})
    mine = {lead: acts.index[acts["lead_id"] == lead] for lead in (spaced, nfc, unknown)}
    acts.loc[mine[spaced], "lead_id"] = spaced + " "
    acts.loc[mine[nfc], "lead_id"] = "Le\u0301-" + accented  # the same id in NFD: e + combining accent
    acts.loc[mine[unknown], "activity_type"] = "carrier_pigeon"
    for name, frame in zip(TABLES, (leads, acts, life)):
        frame.to_parquet(out / f"{name}.parquet")
    return out, {spaced: "trailing space", nfc: "NFD", unknown: "unknown type"}, scores


def test_a_lead_whose_activities_were_quarantined_is_scored_with_a_flag(registry, damaged, tmp_path):
    data, hurt, _ = damaged
    out = tmp_path / "scores.parquet"
    result = _score(registry, data, out, "--max-quarantine", "0.5")
    assert result.exit_code == 0, result.output
    scores = read_scores(out).set_index("lead_id")
    assert scores["incomplete_history"].dtype == bool
    flagged = set(scores.index[scores["incomplete_history"]])
    assert flagged == set(hurt), (flagged, hurt)
    assert "3 scored leads have incomplete_history" in result.output


def test_a_lead_whose_activities_were_quarantined_can_be_held_back(registry, damaged, tmp_path):
    data, hurt, first = damaged
    config = tmp_path / "score.yaml"
    config.write_text("scoring:\n  incomplete_history: hold\n  max_quarantine_fraction: 0.5\n")
    out = tmp_path / "scores.parquet"
    result = _score(registry, data, out, "--config", str(config))
    assert result.exit_code == 0, result.output
    scores = read_scores(out)
    assert not set(hurt) & set(scores["lead_id"]) and not scores["incomplete_history"].any()
    assert len(scores) == len(first) - 3
    line = next(ln for ln in result.output.splitlines() if ln.startswith("leads:") and "scored" in ln)
    nums = [int(w.replace(",", "")) for w in line.replace("=", " ").split() if w.replace(",", "").isdigit()]
    rows_in, scored, held, quarantined, not_open = nums[:5]
    assert (scored, held) == (len(scores), 3) and rows_in == scored + held + quarantined + not_open
    q = pd.read_parquet(tmp_path / "scores.quarantine.parquet")
    held_rows = q[q["quarantine_reason"].str.startswith("held back")]
    assert set(held_rows["lead_id"]) == set(hurt) and (held_rows["table"] == "leads").all()
    assert len(q) - len(held_rows) == sum(int(c) for c in re.findall(r"([\d,]+) quarantined", result.output)[:3])


def test_a_bad_incomplete_history_setting_is_a_config_error(registry, train_dir, tmp_path):
    config = tmp_path / "score.yaml"
    config.write_text("scoring:\n  incomplete_history: ignore\n")
    result = _score(registry, train_dir, tmp_path / "s.parquet", "--config", str(config))
    assert result.exit_code != 0 and "score.yaml:2: scoring: incomplete_history must be one of 'flag' or 'hold', got 'ignore'" in result.output


def test_the_scorer_refuses_an_infinity_and_an_as_of_that_is_no_timestamp(registry, train_dir):
    """What every scoring path (batch, pyfunc, both servers, Spark) goes through: an infinity
    would overflow the reasons (a 500 from MLflow's server), an unreadable as_of would too."""
    from leadscore.features.builder import features_as_of
    from leadscore.serving.scorer import ScoringInputError

    _, bundle = registry
    scorer, _ = load_scorer(str(bundle))
    rows = features_as_of({n: train_dir / f"{n}.parquet" for n in TABLES}, as_of="2025-06-01",
                          config=scorer.feature_config).head(4).reset_index(drop=True)
    numeric = next(c for c in scorer.features if pd.api.types.is_float_dtype(rows[c]))
    with pytest.raises(ScoringInputError, match=rf"feature '{numeric}' must be a finite number, got inf in row\(s\) \[2\]"):
        scorer.score(rows.assign(**{numeric: rows[numeric].where(rows.index != 2, np.inf)}))
    text = rows.assign(as_of=["2025-06-01", "2025-06-01T00:00:00Z", "yesterday", "2025-06-01T02:00:00+02:00"])
    with pytest.raises(ScoringInputError, match=r"as_of must be an ISO 8601 timestamp .* got 'yesterday' in row\(s\) \[2\]"):
        scorer.predict(text)
    mixed = scorer.predict(text.drop(index=2))   # any ISO form, naive meaning UTC
    assert (mixed["as_of"] == pd.Timestamp("2025-06-01", tz="UTC")).all()


def test_two_scoring_jobs_at_once_and_a_killed_one_leave_only_complete_outputs(registry, train_dir, tmp_path):
    """Two nightly jobs overlapping in one directory both finish with the same bytes; a third
    killed with SIGKILL half-way leaves debris that monitoring never reads as scores and that
    its next run removes."""
    from leadscore.cli.app import _score_files

    uri, bundle = registry
    scores = tmp_path / "scores"
    scores.mkdir()

    def job(name: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "leadscore.cli", "score", "--model", str(bundle), "--data",
                                 str(train_dir), "--as-of", "2025-06-01", "--out", str(scores / name), "--no-progress",
                                 "--tracking-uri", uri, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    both = [job("a.parquet"), job("b.parquet")]
    for proc in both:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    assert (scores / "a.parquet").read_bytes() == (scores / "b.parquet").read_bytes()

    killed = job("c.parquet", "--chunk-size", "100")
    deadline = time.monotonic() + 120
    while not list(scores.glob(".c.parquet.*.tmp")) and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.02)
    assert killed.poll() is None, "the job ended before it could be killed"
    time.sleep(0.5)
    killed.kill()
    killed.communicate(timeout=60)
    debris = sorted(p.name for p in scores.iterdir() if p.name.startswith(".c.parquet."))
    assert debris and not (scores / "c.parquet").exists(), debris           # SIGKILL: no cleanup ran
    assert _score_files([scores]) == [scores / "a.parquet", scores / "b.parquet"]  # what monitor --scores reads

    again = job("c.parquet")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert all(f"removed {name}" in err for name in debris), err[-2000:]
    assert sorted(p.name for p in scores.iterdir()) == ["a.parquet", "b.parquet", "c.parquet"]
    assert (scores / "c.parquet").read_bytes() == (scores / "a.parquet").read_bytes()
