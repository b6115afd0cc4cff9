"""The command line: exit codes, messages naming table/column/rows, quarantine files."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore.cli.app import EXIT_UNUSABLE, EXIT_VIOLATIONS, app
from leadscore.data.funnel import funnel_summary

from .conftest import ts

runner = CliRunner()


def write(tables, path, fmt="parquet"):
    path.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        if fmt == "parquet":
            df.to_parquet(path / f"{name}.parquet")
        else:
            df.to_csv(path / f"{name}.csv", index=False)
    return path


def test_validate_clean_directory_exits_zero(tables, tmp_path):
    res = runner.invoke(app, ["validate", "--data", str(write(tables, tmp_path / "d"))])
    assert res.exit_code == 0, res.output
    assert "all tables satisfy the contract" in res.output


def test_validate_passes_on_synthetic_data(synthetic_dir):
    res = runner.invoke(app, ["validate", "--data", str(synthetic_dir)])
    assert res.exit_code == 0, res.output


def _corrupt(tables, kind):
    leads, acts, lc = tables["leads"], tables["activities"], tables["lifecycle"]
    if kind == "duplicate_lead_id":
        tables["leads"] = pd.concat([leads, leads.iloc[[1]]], ignore_index=True)
        return "leads.lead_id", "[unique]", "lead_id=B"
    if kind == "unknown_lead":
        acts.loc[2, "lead_id"] = "ZZZ"
        return "activities.lead_id", "[known_lead]", "lead_id=ZZZ"
    if kind == "future":
        acts.loc[1, "occurred_at"] = ts("2099-01-01")
        return "activities.occurred_at", "[not_in_future]", "row 1"
    if kind == "unknown_activity_type":
        acts.loc[3, "activity_type"] = "carrier_pigeon"
        return "activities.activity_type", "[vocabulary]", "row 3"
    if kind == "lifecycle_before_created":
        lc.loc[2, "occurred_at"] = ts("2024-12-31")
        return "lifecycle.occurred_at", "[after_lead_created]", "row 2"
    raise AssertionError(kind)


CORRUPTIONS = ["duplicate_lead_id", "unknown_lead", "future", "unknown_activity_type", "lifecycle_before_created"]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_validate_names_table_column_rule_and_rows(tables, tmp_path, kind, fmt):
    where, rule, row = _corrupt(tables, kind)
    res = runner.invoke(app, ["validate", "--data", str(write(tables, tmp_path / "d", fmt)), "--now", "2026-01-01"])
    assert res.exit_code == EXIT_VIOLATIONS, res.output
    line = next((ln for ln in res.output.splitlines() if ln.startswith(where) and rule in ln), None)
    assert line is not None, res.output
    assert row in line


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_quarantine_rows_in_equals_clean_plus_quarantined(tables, tmp_path, kind):
    _corrupt(tables, kind)
    rows_in = {name: len(df) for name, df in tables.items()}
    q = tmp_path / "q"
    res = runner.invoke(app, ["validate", "--data", str(write(tables, tmp_path / "d")), "--now", "2026-01-01",
                              "--quarantine", str(q)])
    assert res.exit_code == EXIT_VIOLATIONS
    summary = json.loads((q / "summary.json").read_text())
    n_quarantined = 0
    for name, n in rows_in.items():
        clean = pd.read_parquet(q / "clean" / f"{name}.parquet")
        bad = pd.read_parquet(q / "quarantined" / f"{name}.parquet")
        assert len(clean) + len(bad) == n
        assert summary["counts"][name] == {"rows_in": n, "clean": len(clean), "quarantined": len(bad)}
        assert bad["quarantine_reason"].str.len().gt(0).all()
        n_quarantined += len(bad)
        # The printed count line agrees with the files.
        m = re.search(rf"^{name}\s+rows in\s+([\d,]+) = clean\s+([\d,]+) \+ quarantined\s+([\d,]+)", res.output, re.M)
        assert m and [int(g.replace(",", "")) for g in m.groups()] == [n, len(clean), len(bad)]
    assert n_quarantined > 0


def test_unreadable_table_exits_two_and_names_the_file(tables, tmp_path):
    d = write(tables, tmp_path / "d")
    (d / "activities.parquet").write_bytes(b"not parquet at all")
    res = runner.invoke(app, ["validate", "--data", str(d)])
    assert res.exit_code == EXIT_UNUSABLE
    assert "activities.parquet" in res.output


def test_missing_table_exits_two(tables, tmp_path):
    d = write(tables, tmp_path / "d")
    (d / "lifecycle.parquet").unlink()
    res = runner.invoke(app, ["validate", "--data", str(d)])
    assert res.exit_code == EXIT_UNUSABLE
    assert "lifecycle" in res.output


def test_bad_now_is_a_usage_error(tables, tmp_path):
    res = runner.invoke(app, ["validate", "--data", str(write(tables, tmp_path / "d")), "--now", "yesterday-ish"])
    assert res.exit_code == 2
    assert "--now" in res.output


@pytest.mark.parametrize("command", ["features", "baseline"])
def test_bad_as_of_is_a_usage_error_naming_as_of(tables, tmp_path, command):
    res = runner.invoke(app, [command, "--data", str(write(tables, tmp_path / "d")), "--as-of", "yesterday-ish",
                              "--out", str(tmp_path / "out.parquet")])
    assert res.exit_code == 2
    assert "--as-of" in res.output and "--now" not in res.output
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("command", ["train", "retrain"])
def test_unreadable_training_config_is_an_error_naming_the_file(tmp_path, command):
    missing = tmp_path / "no-such-config.yaml"
    res = runner.invoke(app, [command, "--config", str(missing)])
    assert res.exit_code == EXIT_UNUSABLE
    assert res.exception is None or isinstance(res.exception, SystemExit)  # a message, not a traceback
    assert str(missing) in res.output and "cannot read" in res.output


def test_synth_prints_funnel_and_is_deterministic(tmp_path):
    outs = []
    for name in ("a", "b"):
        res = runner.invoke(app, ["synth", "--leads", "500", "--seed", "3", "--out", str(tmp_path / name),
                                  "--no-progress"])
        assert res.exit_code == 0, res.output
        outs.append(res.output)
    assert "MQL -> SQL" in outs[0] and "SQL -> won" in outs[0]
    # Counts printed (everything but the elapsed time) are the same for the same seed.
    strip = [re.sub(r"in [\d.]+ s", "", o.replace(str(tmp_path / n), "OUT")) for o, n in zip(outs, "ab")]
    assert strip[0] == strip[1]
    leads = pd.read_parquet(tmp_path / "a" / "leads.parquet")
    assert f"{len(leads):,} leads" in outs[0]


def test_funnel_command_reports_left_out_rows(tables, tmp_path):
    _corrupt(tables, "unknown_lead")
    res = runner.invoke(app, ["funnel", "--data", str(write(tables, tmp_path / "d"))])
    assert res.exit_code == 0, res.output
    assert "left out" in res.output and "activities" in res.output


def test_funnel_summary_by_hand():
    lc = pd.DataFrame({
        "lead_id": ["A", "A", "A", "B", "B", "C", "C", "D", "D", "D", "D"],
        "stage": ["mql", "sql", "won", "mql", "disqualified", "sql", "lost",
                  "mql", "disqualified", "mql", "sql"],
        "occurred_at": [ts(d) for d in ["2025-01-01", "2025-01-10", "2025-03-01", "2025-01-01", "2025-02-15",
                                        "2025-01-05", "2025-02-01", "2025-01-01", "2025-02-10", "2025-05-01",
                                        "2025-05-20"]],
    })
    leads = pd.DataFrame({"lead_id": list("ABCDE")})
    s = funnel_summary(leads, lc)
    # A: mql->sql->won; B: mql, disqualified; C: direct SQL, lost; D: recycled, then SQL; E: nothing.
    assert (s["leads"], s["mql"], s["sql"], s["won"], s["lost"]) == (5, 3, 3, 1, 1)
    assert s["direct_sql"] == 1 and s["recycled"] == 1 and s["disqualified"] == 2
    assert s["mql_to_sql"] == pytest.approx(2 / 3)
    assert s["sql_to_won"] == pytest.approx(1 / 3)
    assert s["sql_rate"] == pytest.approx(3 / 5)


def test_commands_do_not_print_pysparks_pandas_warning(synthetic_dir):
    # With the [spark] extra installed, pandera imports pyspark.pandas when it first validates,
    # which warns that pandas 3 is unsupported - noise on every command; it must stay silent.
    pytest.importorskip("pyspark")
    done = subprocess.run([sys.executable, "-m", "leadscore.cli", "validate", "--data", str(synthetic_dir)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "rows" in done.stdout  # it validated
    assert "does not yet fully support pandas" not in done.stderr


def test_a_killed_jobs_debris_is_never_read_as_scores_and_is_removed_once_its_owner_is_gone(tmp_path):
    import os
    import subprocess

    from leadscore.cli.app import _score_files
    from leadscore.io import remove_debris

    gone = subprocess.Popen(["true"])
    gone.wait()                                           # a pid whose process has exited
    scores = tmp_path / "scores"
    (scores / f".run.parquet.stage-{gone.pid}-abc").mkdir(parents=True)
    (scores / f".run.parquet.stage-{gone.pid}-abc" / "activities.parquet").write_bytes(b"staged input")
    (scores / f".run.parquet.{gone.pid}-x.tmp").write_bytes(b"half a file")
    (scores / f".run.parquet.{os.getpid()}-y.tmp").write_bytes(b"a live job's file")
    for name in ("run.parquet", "run.quarantine.parquet", "old.parquet"):
        (scores / name).write_bytes(b"")
    assert _score_files([scores]) == [scores / "old.parquet", scores / "run.parquet"]
    removed = remove_debris(scores / "run.parquet")
    assert sorted(p.name for p in removed) == [f".run.parquet.{gone.pid}-x.tmp", f".run.parquet.stage-{gone.pid}-abc"]
    assert sorted(p.name for p in scores.iterdir()) == [f".run.parquet.{os.getpid()}-y.tmp", "old.parquet",
                                                         "run.parquet", "run.quarantine.parquet"]


def test_version_prints_the_package_version():
    from leadscore import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"leadscore {__version__}"


def test_every_as_of_option_says_its_format():
    for command in ("features", "baseline", "score", "explain"):
        out = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        assert "ISO 8601" in " ".join(out.split()), command


def test_the_training_heartbeat_names_the_running_stage_and_is_silent_when_off(capsys):
    import time

    from leadscore.progress import Heartbeat

    with Heartbeat("training", every=0.05) as beat:
        beat.stage("fold 2: cut-off 2025-05-01")
        time.sleep(0.3)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(re.fullmatch(r"training: \d+ s elapsed; last: fold 2: cut-off 2025-05-01", x) for x in lines)
    with Heartbeat("training", enabled=False, every=0.05) as beat:
        beat.stage("fold 1")
        time.sleep(0.2)
    assert capsys.readouterr().err == ""
