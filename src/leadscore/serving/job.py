"""The nightly batch job, end to end: stage and check the data, score every open lead, write the
quarantine, the scores and, against the previous run, the stage transitions - and deliver them.

:func:`run_scoring_job` does the work and says what it did through two callbacks (``say`` for the
report, ``warn`` for what needs attention); ``leadscore score`` only parses its options, loads the
model and turns the outcome into an exit code.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leadscore.data import contract
from leadscore.features.builder import connect
from leadscore.io import remove_debris, write_table
from leadscore.modeling.cutoffs import TIERS
from leadscore.progress import Progress
from leadscore.serving import alerts
from leadscore.serving.batch import (
    PreviousRun,
    QuarantineLimitExceeded,
    ScoringConfig,
    ScoringCounts,
    check_quarantine,
    held_back_frame,
    incomplete_history_keys,
    newest_event_before,
    quarantine_frame,
    read_scores,
    score_open_leads,
)
from leadscore.serving.history import record_run

Say = Callable[[str], None]


class PreviousRunError(ValueError):
    """``--previous`` is not a scoring run's output this run can be compared with."""


def read_previous(path: Path, as_of: pd.Timestamp, version: str, threshold: int, warn: Say) -> PreviousRun | None:
    """The previous run's scores, checked before anything is scored (None: the file has no
    score column, so there are no change reasons; the transitions still work)."""
    try:
        frame, at = alerts.previous_run(read_scores(path))
    except (OSError, ValueError) as exc:
        raise PreviousRunError(f"--previous {path}: {exc}") from exc
    if at is not None and at > as_of:
        raise PreviousRunError(f"--previous {path}: that run is at {at:%Y-%m-%d %H:%M} UTC, after --as-of "
                               f"{as_of:%Y-%m-%d %H:%M} UTC; pass the older output as --previous")
    if at is None or "score" not in frame:
        if at is not None:
            warn(f"warning: --previous {path} has no score column (written by an older leadscore): "
                 "no change reasons this run")
        return None
    versions = set(frame["model_version"].dropna().astype(str)) if "model_version" in frame else set()
    if versions and versions != {version}:
        warn(f"warning: the previous run was scored by {', '.join(sorted(versions))}, this one by {version}: "
             "change reasons compare each lead's data at both moments through this run's model, so part of "
             "a score's move may be the model's, which they do not show")
    return PreviousRun(at, frame.set_index("lead_id")["score"].astype("float64"), threshold)


def sibling_path(out: Path, suffix: str) -> Path:
    """Where a file beside the scores goes by default: ``scores.quarantine.parquet`` for ``scores.parquet``."""
    return out.with_name(f"{out.stem}.{suffix}{out.suffix if out.suffix in ('.parquet', '.csv') else '.parquet'}")


def check_freshness(newest: pd.Timestamp | None, as_of: pd.Timestamp, max_age_days: float | None,
                    say: Say, warn: Say) -> None:
    """Say how fresh the data is; warn when it looks stale for ``as_of``."""
    if newest is None:
        warn(f"warning: no activity or lifecycle event before --as-of {as_of:%Y-%m-%d %H:%M} UTC: nothing is "
             "known about any lead yet (does the data start later?)")
        return
    age = (as_of - newest) / pd.Timedelta(days=1)
    say(f"newest event before as_of: {newest:%Y-%m-%d %H:%M} UTC ({age:,.1f} days earlier)")
    if max_age_days is not None and age > max_age_days:
        warn(f"warning: the newest activity or lifecycle event is {age:,.1f} days older than --as-of "
             f"(limit max_data_age_days = {max_age_days:g}): is the data export up to date? Recency features "
             "read a stale export as leads going quiet.")


@dataclass
class JobReport:
    """What a scoring job did. ``delivery``: the webhook's report (None: nothing to deliver)."""

    counts: ScoringCounts
    scores: Path
    transitions: Path | None = None
    delivery: alerts.DeliveryReport | None = None
    history: Path | None = None


def run_scoring_job(scorer, manifest: dict, src, as_of: pd.Timestamp, out: Path, *, settings: ScoringConfig,
                    version: str, run_id: str, say: Say, warn: Say, hook: alerts.WebhookConfig | None = None,
                    previous: Path | None = None, transitions_out: Path | None = None,
                    quarantine_out: Path | None = None, history: Path | None = None,
                    progress: bool = True) -> JobReport:
    """Score every lead of ``src`` open at ``as_of`` into ``out``.

    The clean rows are staged as Parquet beside the output (activities checked a batch at a
    time) and read in place by DuckDB: memory follows the chunk size, not the activity history.
    Raises :class:`~leadscore.data.contract.ContractError` when the data cannot be read,
    :class:`PreviousRunError` when ``previous`` is not a run to compare with, and
    :class:`~leadscore.serving.batch.QuarantineLimitExceeded` when too much of a table breaks
    the contract (nothing is scored then). With ``previous``, the leads whose score moved by
    ``settings.change_threshold`` points or more get ``change_reasons``. With ``history``, the
    scores are added to that score history directory (:mod:`leadscore.serving.history`).
    """
    prior = None if previous is None else read_previous(previous, as_of, version, settings.change_threshold, warn)
    out.parent.mkdir(parents=True, exist_ok=True)
    for p in remove_debris(out):
        warn(f"removed {p.name}, left beside {out.name} by a scoring job that did not finish")
    quarantine_path = quarantine_out or sibling_path(out, "quarantine")
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.stage-{os.getpid()}-", dir=out.parent) as stage:
        staged = contract.stage_clean(src, stage)
        max_age = (manifest.get("params") or {}).get("max_lead_age_days")
        counts = ScoringCounts(tables=staged.counts, max_lead_age_days=None if max_age is None else int(max_age))
        quarantined = quarantine_frame(staged.quarantined)
        if len(quarantined):
            write_table(quarantined, quarantine_path)
            warn(f"{len(quarantined):,} rows break the data contract; quarantined with their reasons in "
                 f"{quarantine_path}")
        elif quarantine_path.exists():   # an earlier run's: it does not describe this one
            quarantine_path.unlink()
        try:
            check_quarantine(counts.tables, settings.max_quarantine_fraction)
        except QuarantineLimitExceeded:
            for line in counts.lines()[:len(counts.tables)]:
                warn(line)
            raise

        con = connect(staged.paths, src.contract)
        say(f"scoring leads open at {as_of:%Y-%m-%d %H:%M} UTC with {version}, chunks of {settings.chunk_size:,}")
        check_freshness(newest_event_before(con, as_of), as_of, settings.max_data_age_days, say, warn)
        try:
            with Progress(0, "scoring", unit="leads", enabled=progress) as bar:
                score_open_leads(scorer, con, as_of, out, counts=counts, chunk_size=settings.chunk_size,
                                 top_reasons=settings.top_reasons, model_version=version, run_id=run_id,
                                 incomplete=incomplete_history_keys(staged.quarantined),
                                 hold_incomplete=settings.incomplete_history == "hold",
                                 progress=lambda n, total: bar.advance(n, total), previous=prior)
        finally:
            con.close()  # before the staged files go
        if counts.held_back:
            write_table(pd.concat([quarantined, held_back_frame(counts.held_back)], ignore_index=True),
                        quarantine_path)
            warn(f"{len(counts.held_back):,} open leads held back, not scored: some of their activities or stage "
                 f"events were quarantined (incomplete_history: hold); listed in {quarantine_path}")
    for line in counts.lines():
        say(line)
    say("tier       model  baseline")
    for tier in TIERS:
        say(f"{tier:<6}{counts.tiers[tier]:>11,}{counts.baseline_tiers[tier]:>10,}")
    say(f"scores: {out}")
    report = JobReport(counts, out)
    if history is not None:
        report.history, replaced = record_run(out, history, as_of)
        say(f"history: {report.history}" + (" (replaced the earlier run at this moment)" if replaced else ""))

    path = transitions_out or sibling_path(out, "transitions")
    if previous is None:
        if path.exists():   # an earlier run's transitions: not this run's
            path.unlink()
        return report
    moved = alerts.stage_transitions(read_scores(previous), read_scores(out))
    write_table(moved, path)
    report.transitions = path
    kinds = moved["change"].value_counts()
    say(f"transitions since {previous}: " + (", ".join(f"{n:,} {k}" for k, n in kinds.items()) or "none")
        + f"\ntransitions: {path}")
    if prior is not None:
        say(f"{counts.leads_changed:,} leads moved by {settings.change_threshold}+ score points: why, in "
            f"change_reasons")
    if hook is None or moved.empty:
        return report
    report.delivery = alerts.deliver(moved, hook, meta={"as_of": as_of.isoformat(), "model_version": version,
                                                        "run_id": run_id})
    for line in report.delivery.lines():
        (say if report.delivery.ok else warn)(line)
    return report
