"""The batch scoring job: every lead open at a moment, scored in chunks, written atomically.

What a nightly run does (``leadscore score``):

1. read the contract tables (activities a batch at a time, :func:`leadscore.data.contract.stage_clean`)
   and stage the clean rows as Parquet; rows that break the contract are **quarantined** with
   their reason (they never reach a feature), counted per table, and written to a quarantine file;
   too large a quarantined share stops the job before anything is scored;
2. list the leads open at ``as_of`` (created before it, not yet SQL or closed);
3. per chunk of leads: features as of ``as_of`` with the training code, the calibrated
   probabilities, score, tier, fit/engagement scores and grid, reasons in words, and the rule
   baseline's points and tier beside them — peak memory follows the chunk size, not the lead
   base;
4. stream the chunks into a temporary file and rename it over the output only when all are
   written: a job killed half-way leaves no output. The same inputs, model and ``as_of`` give
   byte-identical files.

Lead accounting, printed at the end: lead rows in = scored + quarantined + not open at
``as_of`` (already an SQL or closed, or created later).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from leadscore.io import PARQUET_OPTIONS, atomic_path
from leadscore.modeling.cutoffs import TIERS
from leadscore.serving.columns import OUTPUT_COLUMNS, OUTPUT_SCHEMA
from leadscore.settings import Section, Whole, build, load_sections, yaml_lines

QUARANTINE_COLUMNS = ("table", "source_file", "source_row", "lead_id", "quarantine_reason", "row")


class ScoringConfig(Section):
    """The batch scoring job (``pipelines/score.yaml``, section ``scoring``).

    ``chunk_size``: leads scored per chunk (peak memory follows it). ``top_reasons``: reasons
    per direction in the ``reasons`` column. ``max_quarantine_fraction``: largest share of any
    input table that may break the contract before the job refuses to score.
    ``max_data_age_days``: warn when the newest event before as_of is older than this (a stale
    export makes every lead look silent); None: no check. ``incomplete_history``: what happens
    to an open lead some of whose activities or lifecycle events were quarantined (its features
    miss them): ``flag`` scores it with ``incomplete_history`` true, ``hold`` leaves it out of
    the scores and lists it in the quarantine file. ``change_threshold``: with ``--previous``,
    the leads whose score (1-99) moved by at least this many points get ``change_reasons``.
    """

    chunk_size: Whole = 50_000
    top_reasons: Whole = 3
    max_quarantine_fraction: Annotated[float, Field(ge=0, le=1)] = 0.01
    max_data_age_days: Annotated[float, Field(gt=0)] | None = 3.0   # None (empty in YAML): no check
    incomplete_history: Literal["flag", "hold"] = "flag"
    change_threshold: Annotated[int, Field(ge=1, le=98)] = 5


SCORING_SECTIONS = ("scoring", "webhook")


def load_scoring(path: Path | str | None, webhook_url: str | None = None):
    """(ScoringConfig, WebhookConfig or None) from a scoring YAML; defaults without a file.
    ``webhook_url`` (the ``--webhook`` flag) replaces the section's URL only: its batch size,
    deadline, retries and other settings still apply."""
    from leadscore.serving.alerts import WebhookConfig

    raw = {} if path is None else load_sections(Path(path), SCORING_SECTIONS)
    lines = {} if path is None else yaml_lines(path)
    webhook = dict(raw.get("webhook") or {})
    if webhook_url:
        webhook["url"] = webhook_url
    where = f"{path}: webhook" if path is not None else "--webhook"
    scoring = ScoringConfig() if path is None else build(ScoringConfig, raw.get("scoring"), f"{path}: scoring", lines,
                                                         ("scoring",))
    if not webhook.get("url"):
        return scoring, None
    # with --webhook the URL is not in the file: no line to point at
    return scoring, build(WebhookConfig, webhook, where, {} if webhook_url else lines, ("webhook",))


class QuarantineLimitExceeded(RuntimeError):
    """Too large a share of the input breaks the contract to trust a scoring run."""


@dataclass
class ScoringCounts:
    """Row accounting of one run."""

    tables: dict[str, dict[str, int]]      # per contract table: rows_in, clean, quarantined
    leads_scored: int = 0
    leads_not_open: int = 0
    leads_incomplete: int = 0                                # scored with incomplete_history true
    leads_changed: int = 0                                   # with change_reasons (moved enough since --previous)
    held_back: list[str] = field(default_factory=list)       # open leads not scored (incomplete_history: hold)
    max_lead_age_days: int | None = None                     # the model's domain: no training example was older
    leads_older: int = 0                                     # scored leads older than that
    seconds: float = 0.0
    tiers: dict[str, int] = field(default_factory=dict)
    baseline_tiers: dict[str, int] = field(default_factory=dict)

    @property
    def leads_in(self) -> int:
        return self.tables["leads"]["rows_in"]

    @property
    def leads_quarantined(self) -> int:
        return self.tables["leads"]["quarantined"]

    def lines(self) -> list[str]:
        out = []
        for name, c in self.tables.items():
            out.append(f"{name}: {c['rows_in']:,} rows in = {c['clean']:,} clean + {c['quarantined']:,} quarantined")
        rate = self.leads_scored / self.seconds if self.seconds > 0 else float("nan")
        held = f"{len(self.held_back):,} held back (incomplete history) + " if self.held_back else ""
        out.append(f"leads: {self.leads_in:,} rows in = {self.leads_scored:,} scored + {held}"
                   f"{self.leads_quarantined:,} quarantined + {self.leads_not_open:,} not open at as_of "
                   "(already SQL or closed, or created later)")
        if self.leads_incomplete:
            out.append(f"{self.leads_incomplete:,} scored leads have incomplete_history: some of their activities or "
                       "stage events were quarantined, so their scores miss them")
        if self.leads_older:
            out.append(f"note: {self.leads_older:,} of the {self.leads_scored:,} scored leads "
                       f"({self.leads_older / self.leads_scored:.1%}) are older than {self.max_lead_age_days} days, "
                       "older than any training example (examples.max_lead_age_days): their scores extrapolate")
        out.append(f"scored {self.leads_scored:,} leads in {self.seconds:.1f} s ({rate:,.0f} leads/s)")
        return out


def quarantine_frame(quarantined: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All quarantined rows of all tables in one table: table, source_row, lead_id, reason, and
    the row itself as JSON text (the tables' columns differ)."""
    parts = []
    for name, q in quarantined.items():
        if q.empty:
            continue
        body = q.drop(columns=[c for c in ("source_file", "source_row", "quarantine_reason") if c in q])
        parts.append(pd.DataFrame({
            "table": name,
            "source_file": q["source_file"].astype("str").to_numpy() if "source_file" in q else None,
            "source_row": q["source_row"].astype("int64").to_numpy(),
            "lead_id": q["lead_id"].astype("str").to_numpy() if "lead_id" in q else None,
            "quarantine_reason": q["quarantine_reason"].astype("str").to_numpy(),
            "row": body.astype("str").to_json(orient="records", lines=True).splitlines() if len(body) else [],
        }))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "source_row" else "str") for c in QUARANTINE_COLUMNS})
    return pd.concat(parts, ignore_index=True)


def id_key(ids: pd.Series) -> pd.Series:
    """Lead ids as a reader matches them: Unicode NFKC, no surrounding white space, case folded.
    An activity under ``"L-1 "`` or an NFD spelling of an id is quarantined as an unknown lead;
    by this key it still marks the lead ``"L-1"`` as having an incomplete history."""
    return ids.astype("str").str.normalize("NFKC").str.strip().str.casefold()


def incomplete_history_keys(quarantined: dict[str, pd.DataFrame]) -> frozenset[str]:
    """The :func:`id_key` of every lead some of whose event rows (activities, lifecycle,
    attribute history) were quarantined - but not because the lead itself was (it is not scored)."""
    keys: set[str] = set()
    for name, q in quarantined.items():
        if name == "leads" or q.empty or "lead_id" not in q:
            continue
        own = q["lead_id"].notna() & ~q["quarantine_reason"].astype("str").str.contains("[lead_quarantined]",
                                                                                        regex=False)
        keys.update(id_key(q.loc[own, "lead_id"]))
    return frozenset(keys)


def held_back_frame(lead_ids: list[str]) -> pd.DataFrame:
    """Quarantine-file rows for open leads held back (``incomplete_history: hold``); source_row -1:
    the lead's own row is clean, its history is not."""
    return pd.DataFrame({"table": "leads", "source_file": None, "source_row": np.full(len(lead_ids), -1, np.int64),
                         "lead_id": lead_ids, "quarantine_reason": "held back: some of its activities or stage events "
                         "were quarantined (incomplete_history: hold)", "row": None})


def check_quarantine(counts: dict[str, dict[str, int]], max_fraction: float) -> None:
    """Raise :class:`QuarantineLimitExceeded` naming every table whose quarantined share is over the limit."""
    over = [f"{name}: {c['quarantined']:,} of {c['rows_in']:,} rows ({c['quarantined'] / c['rows_in']:.2%})"
            for name, c in counts.items() if c["rows_in"] and c["quarantined"] / c["rows_in"] > max_fraction]
    if over:
        raise QuarantineLimitExceeded(
            f"too many rows break the data contract (limit {max_fraction:.2%} per table): {'; '.join(over)}. "
            "Nothing was scored; see the quarantine file for the rows and their reasons.")


@dataclass(frozen=True)
class PreviousRun:
    """What the change reasons need of the previous run: its as_of and each lead's score;
    ``threshold``: the score points a lead must have moved by to get its change reasons."""

    as_of: pd.Timestamp
    scores: pd.Series   # score by lead_id (str)
    threshold: int


def score_chunk(scorer, con, pairs: pd.DataFrame, top_reasons: int, model_version: str, run_id: str,
                incomplete: frozenset[str] = frozenset(), previous: PreviousRun | None = None) -> pd.DataFrame:
    """Features, scores, reasons and the rule baseline for one chunk of (lead_id, as_of) pairs;
    ``incomplete``: :func:`incomplete_history_keys` of the run; ``previous``: with it, the leads
    whose score moved enough get ``change_reasons``."""
    from leadscore.features.builder import features_as_of
    from leadscore.modeling.baseline import score_baseline

    rows = features_as_of(con, pairs, config=scorer.feature_config)
    if scorer.rules is not None:
        points = score_baseline(con, scorer.rules, pairs, explain=False, contract=scorer.feature_config.contract)
        rows = rows.merge(points[["lead_id", "as_of", "total_points", "baseline_tier"]].rename(
            columns={"total_points": "baseline_points"}), on=["lead_id", "as_of"], how="left", validate="one_to_one")
    out = scorer.score(rows, top_reasons)
    for col in ("baseline_points", "baseline_tier"):
        if col not in out:
            out[col] = None
    out["incomplete_history"] = id_key(out["lead_id"]).isin(incomplete).to_numpy() if incomplete else False
    out["change_reasons"] = None if previous is None else _change_lines(scorer, con, rows, out, previous, top_reasons)
    out["model_version"] = model_version
    out["run_id"] = run_id
    return out[list(OUTPUT_COLUMNS)]


def _change_lines(scorer, con, rows: pd.DataFrame, scored: pd.DataFrame, previous: PreviousRun, k: int) -> np.ndarray:
    """Per scored lead, why its score moved since ``previous`` (one line; None when it moved less
    than the threshold or was not in that run): its features at the previous run's as_of,
    computed again from the same data, against this run's, both through this model."""
    from leadscore.features.builder import features_as_of
    from leadscore.serving.explain import change_reasons

    ids = scored["lead_id"].astype(str)
    before_score = ids.map(previous.scores).to_numpy(dtype="float64")
    moved = np.abs(scored["score"].to_numpy(dtype="float64") - before_score) >= previous.threshold
    lines = np.full(len(scored), None, dtype=object)
    if not moved.any():
        return lines
    pairs = pd.DataFrame({"lead_id": scored.loc[moved, "lead_id"].to_numpy(), "as_of": previous.as_of})
    before = features_as_of(con, pairs, config=scorer.feature_config)
    before = before.assign(_key=before["lead_id"].astype(str)).set_index("_key")
    after = rows.assign(_key=rows["lead_id"].astype(str)).set_index("_key")
    keys = [key for key in ids[moved] if key in before.index]
    if keys:
        reasons = change_reasons(scorer, before.loc[keys].reset_index(drop=True), after.loc[keys].reset_index(drop=True), k)
        position = pd.Series(np.arange(len(ids)), index=ids.to_numpy())
        lines[position.loc[keys].to_numpy()] = reasons["change_line"].to_numpy()
    return lines


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, schema=OUTPUT_SCHEMA, preserve_index=False).replace_schema_metadata(None)


def newest_event_before(con, as_of: pd.Timestamp) -> pd.Timestamp | None:
    """The latest activity or lifecycle timestamp strictly before ``as_of`` (None if there is none):
    how fresh the data the scores are computed from is."""
    from leadscore.features.builder import _as_of_us

    as_of_us = _as_of_us(as_of)
    latest = con.execute(f"""
        SELECT max(t) FROM (
            SELECT max(epoch_us(occurred_at)) AS t FROM activities WHERE epoch_us(occurred_at) < {as_of_us}
            UNION ALL
            SELECT max(epoch_us(occurred_at)) FROM lifecycle WHERE epoch_us(occurred_at) < {as_of_us})
    """).fetchall()[0][0]
    return None if latest is None else pd.Timestamp(int(latest), unit="us", tz="UTC")


def score_open_leads(scorer, con, as_of: pd.Timestamp, out: Path, *, counts: ScoringCounts,
                     chunk_size: int = 50_000, top_reasons: int = 3, model_version: str = "", run_id: str = "",
                     incomplete: frozenset[str] = frozenset(), hold_incomplete: bool = False,
                     progress: Callable[[int, int], None] | None = None,
                     previous: PreviousRun | None = None) -> pd.DataFrame:
    """Score every lead open at ``as_of`` chunk by chunk into ``out`` (.parquet or .csv),
    atomically. Fills ``counts``; returns the tier column of the output (small) for summaries.
    ``incomplete``: :func:`incomplete_history_keys`; those leads are scored with
    ``incomplete_history`` true, or with ``hold_incomplete`` left out (``counts.held_back``).
    ``previous``: the leads whose score moved enough since that run get ``change_reasons``."""
    from leadscore.features.builder import open_leads

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    start = time.perf_counter()
    pairs = open_leads(con, [as_of]).sort_values("lead_id", kind="stable").reset_index(drop=True)
    counts.leads_not_open = counts.tables["leads"]["clean"] - len(pairs)
    if incomplete and hold_incomplete:
        held = id_key(pairs["lead_id"]).isin(incomplete).to_numpy()
        counts.held_back = pairs.loc[held, "lead_id"].tolist()
        pairs = pairs.loc[~held].reset_index(drop=True)
        incomplete = frozenset()
    if counts.max_lead_age_days is not None and len(pairs):
        counts.leads_older = _older_than(con, pairs["lead_id"], as_of, counts.max_lead_age_days)
    tiers, baseline_tiers = [], []
    out = Path(out)
    csv = out.suffix == ".csv"
    with atomic_path(out) as tmp:
        writer = None if csv else pq.ParquetWriter(tmp, OUTPUT_SCHEMA, **PARQUET_OPTIONS)
        try:
            if csv:
                pd.DataFrame(columns=list(OUTPUT_COLUMNS)).to_csv(tmp, index=False)
            for lo in range(0, len(pairs), chunk_size):
                chunk = score_chunk(scorer, con, pairs.iloc[lo:lo + chunk_size], top_reasons, model_version, run_id,
                                    incomplete, previous)
                chunk = chunk.sort_values("lead_id", kind="stable")
                if csv:
                    chunk.to_csv(tmp, mode="a", header=False, index=False)
                else:
                    writer.write_table(_to_arrow(chunk))
                tiers.append(chunk["tier"].to_numpy(dtype=object))
                baseline_tiers.append(chunk["baseline_tier"].to_numpy(dtype=object))
                counts.leads_scored += len(chunk)
                counts.leads_incomplete += int(chunk["incomplete_history"].sum())
                counts.leads_changed += int(chunk["change_reasons"].notna().sum())
                if progress is not None:
                    progress(len(chunk), len(pairs))
            if writer is not None and not len(pairs):
                writer.write_table(OUTPUT_SCHEMA.empty_table())
        finally:
            if writer is not None:
                writer.close()
    counts.seconds = time.perf_counter() - start
    summary = pd.DataFrame({"tier": np.concatenate(tiers) if tiers else np.array([], dtype=object),
                            "baseline_tier": np.concatenate(baseline_tiers) if baseline_tiers else np.array([], dtype=object)})
    counts.tiers = {t: int((summary["tier"] == t).sum()) for t in TIERS}
    counts.baseline_tiers = {t: int((summary["baseline_tier"] == t).sum()) for t in TIERS}
    return summary


def _older_than(con, lead_ids: pd.Series, as_of: pd.Timestamp, days: int) -> int:
    """How many of ``lead_ids`` were created more than ``days`` days before ``as_of``."""
    from leadscore.features.builder import _as_of_us

    con.register("_scored_ids", pd.DataFrame({"lead_id": lead_ids.to_numpy()}))
    try:
        return int(con.execute(f"""
            SELECT count(*) FROM leads l SEMI JOIN _scored_ids s ON l.lead_id = s.lead_id
            WHERE epoch_us(l.created_at) < {_as_of_us(as_of) - int(days) * 86_400_000_000}""").fetchall()[0][0])
    finally:
        con.unregister("_scored_ids")


def read_scores(path: Path | str) -> pd.DataFrame:
    """A scoring run's output (.parquet or .csv) with typed columns."""
    path = Path(path)
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype={"lead_id": "str", "tier": "str", "grid": "str", "baseline_tier": "str",
                                         "model_version": "str", "run_id": "str", "reasons": "str", "change_reasons": "str",
                                         "incomplete_history": "bool"})
        frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
        return frame
    return pd.read_parquet(path)
