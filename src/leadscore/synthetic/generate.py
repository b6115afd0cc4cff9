"""``leadscore synth``: write a synthetic CRM (leads, activities, lifecycle) and its ground truth.

Output directory:

* ``leads.parquet``, ``activities.parquet``, ``lifecycle.parquet`` - the contract tables;
* ``truth.parquet`` - the oracle: for every weekly as-of date and every lead open then, the
  true probability of becoming an SQL within ``horizon_days`` and of closing won within
  ``won_horizon_days``;
* ``latent_leads.parquet``, ``latent_stages.parquet`` - each lead's hidden parameters and
  hidden stage path, from which :func:`leadscore.synthetic.truth.true_probabilities`
  recomputes the oracle for any as-of date and horizon;
* ``manifest.json`` - parameters, observed window and row counts.

Leads are processed in fixed-size chunks with one random stream each, so output is
byte-identical for a seed and memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from leadscore.io import PARQUET_OPTIONS, atomic_path, write_json, write_parquet
from leadscore.progress import Progress
from leadscore.synthetic import events as E
from leadscore.synthetic import journey as J
from leadscore.synthetic import population as P
from leadscore.synthetic import world as W

CHUNK_LEADS = 50_000
GENERATOR_VERSION = 2
TS = pa.timestamp("us", tz="UTC")


class HistoryWindow:
    """The observed window of a synthetic world: ``start`` (a date) and ``months`` after it."""

    start: str
    months: int

    @property
    def start_day(self) -> np.datetime64:
        return np.datetime64(self.start, "D")

    @property
    def end_day(self) -> np.datetime64:
        return (np.datetime64(self.start, "M") + self.months).astype("datetime64[D]")

    @property
    def n_days(self) -> int:
        return int((self.end_day - self.start_day).astype(int))

    @property
    def epoch_s(self) -> int:
        return int(self.start_day.astype("datetime64[s]").astype(np.int64))


@dataclass
class SynthConfig(HistoryWindow):
    n_leads: int
    seed: int
    start: str = "2024-01-01"
    months: int = 21
    horizon_days: int = 42
    won_horizon_days: int = 120
    drift: bool = False  # from the middle of the history on, channels change what their leads are worth

    @property
    def drift_after_s(self) -> int | None:
        return (self.n_days // 2) * P.SECONDS_PER_DAY if self.drift else None


def weekly_as_of(cfg: SynthConfig) -> np.ndarray:
    """Mondays 00:00 UTC from the second week after the start, before the end (seconds since start)."""
    start = cfg.start_day
    first_monday = start + ((7 - (start.astype(np.int64) - 4) % 7) % 7)
    mondays = np.arange(first_monday + 7, cfg.end_day, np.timedelta64(7, "D"))
    return (mondays - start).astype(np.int64) * P.SECONDS_PER_DAY


def _ts(seconds: np.ndarray, epoch_s: int) -> pa.Array:
    return pa.array((seconds + epoch_s) * 1_000_000, type=pa.int64()).cast(TS)


def _take(names, idx: np.ndarray) -> pa.Array:
    return pc.take(pa.array(list(names), type=pa.string()), pa.array(idx, mask=idx < 0))


def generate(cfg: SynthConfig, out_dir: Path | str, progress: bool = True) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = cfg.n_leads
    if n < 1:
        raise ValueError("n_leads must be at least 1")
    seeds = np.random.SeedSequence(cfg.seed)
    pop_seed, journey_seed = seeds.spawn(2)
    pop = P.sample_population(np.random.default_rng(pop_seed), n, cfg.start_day, cfg.n_days,
                              drift_after_s=cfg.drift_after_s)
    end_s = cfg.n_days * P.SECONDS_PER_DAY
    width = max(7, len(str(n)))
    lead_ids = pa.array([f"L{i:0{width}d}" for i in range(1, n + 1)], type=pa.string())
    as_of_s = weekly_as_of(cfg)
    as_of_ts = _ts(as_of_s, cfg.epoch_s)
    details = E.detail_vocabulary(int((end_s + 15 * P.SECONDS_PER_DAY) // (30 * P.SECONDS_PER_DAY)) + 1)

    write_parquet(_leads_table(pop, lead_ids, cfg.epoch_s), out / "leads.parquet")

    activity_schema = pa.schema([("lead_id", pa.string()), ("occurred_at", TS),
                                 ("activity_type", pa.string()), ("detail", pa.string())])
    truth_schema = pa.schema([("lead_id", pa.string()), ("as_of", TS), ("latent_stage", pa.string()),
                              ("p_sql", pa.float64()), ("p_won", pa.float64())])
    lifecycle_parts, stage_parts = [], []
    n_activities = n_truth = 0
    chunks = range(0, n, CHUNK_LEADS)
    chunk_seeds = journey_seed.spawn(len(chunks))
    with atomic_path(out / "activities.parquet") as act_tmp, atomic_path(out / "truth.parquet") as truth_tmp, \
            pq.ParquetWriter(act_tmp, activity_schema, **PARQUET_OPTIONS) as act_w, \
            pq.ParquetWriter(truth_tmp, truth_schema, **PARQUET_OPTIONS) as truth_w, \
            Progress(n, "synth", unit="leads", enabled=progress) as bar:
        for lo, seed in zip(chunks, chunk_seeds):
            hi = min(lo + CHUNK_LEADS, n)
            rng = np.random.default_rng(seed)
            sub = pop.take(slice(lo, hi))
            ids = lead_ids[lo:hi]
            Q = J.generator_matrices(sub.fit, sub.intent, sub.persona, sub.hand_raiser)
            start_state = J.initial_state(rng, sub.intent, sub.persona)
            p_lead, p_state, p_s = J.simulate_paths(rng, Q, start_state, sub.created_s, end_s)

            lc = E.lifecycle_events(rng, sub, p_lead, p_state, p_s, end_s)
            lifecycle_parts.append(pa.table({
                "lead_id": pc.take(ids, pa.array(lc.lead)),
                "stage": _take(E.STAGE_CODES, lc.kind),
                "occurred_at": _ts(lc.time_s, cfg.epoch_s),
                "amount": pa.array(lc.detail, from_pandas=True, type=pa.float64()),
            }))

            act = E.activity_events(rng, sub, p_lead, p_state, p_s, start_state, end_s)
            act_w.write_table(pa.table({
                "lead_id": pc.take(ids, pa.array(act.lead)),
                "occurred_at": _ts(act.time_s, cfg.epoch_s),
                "activity_type": _take(W.ACTIVITY_NAMES, act.kind),
                "detail": _take(details, act.detail),
            }, schema=activity_schema))
            n_activities += len(act.lead)

            p_sql, p_won = J.conversion_probabilities(Q, cfg.horizon_days, cfg.won_horizon_days)
            t_lead, t_asof, t_state, t_psql, t_pwon = J.truth_rows(
                p_lead, p_state, p_s, sub.created_s, as_of_s, p_sql, p_won)
            truth_w.write_table(pa.table({
                "lead_id": pc.take(ids, pa.array(t_lead)),
                "as_of": pc.take(as_of_ts, pa.array(t_asof)),
                "latent_stage": _take(W.STATE_NAMES, t_state),
                "p_sql": t_psql, "p_won": t_pwon,
            }, schema=truth_schema))
            n_truth += len(t_lead)

            recorded = p_s < end_s
            stage_parts.append(pa.table({
                "lead_id": pc.take(ids, pa.array(p_lead[recorded])),
                "latent_stage": _take(W.STATE_NAMES, p_state[recorded].astype(np.int64)),
                "entered_at": _ts(p_s[recorded], cfg.epoch_s),
            }))
            bar.advance(hi - lo)

    lifecycle = pa.concat_tables(lifecycle_parts)
    write_parquet(lifecycle, out / "lifecycle.parquet")
    write_parquet(pa.concat_tables(stage_parts), out / "latent_stages.parquet")
    write_parquet(_latent_leads_table(pop, lead_ids), out / "latent_leads.parquet")

    manifest = {
        "generator": "leadscore.synthetic", "generator_version": GENERATOR_VERSION,
        "seed": cfg.seed, "n_leads": n, "start": str(cfg.start_day),
        "observed_until": str(cfg.end_day) + "T00:00:00+00:00",
        "horizon_days": cfg.horizon_days, "won_horizon_days": cfg.won_horizon_days,
        "drift": {"from": str(cfg.start_day + cfg.n_days // 2), "source_intent": W.DRIFTED_SOURCE_INTENT}
        if cfg.drift else None,
        "truth_as_of": {"first": str(cfg.start_day + as_of_s[0] // P.SECONDS_PER_DAY) if len(as_of_s) else None,
                        "cadence_days": 7, "count": int(len(as_of_s))},
        "rows": {"leads": n, "activities": n_activities, "lifecycle": lifecycle.num_rows, "truth": n_truth},
    }
    write_json(manifest, out / "manifest.json")
    return manifest


def _leads_table(pop: P.Population, lead_ids: pa.Array, epoch_s: int) -> pa.Table:
    seniority = pop_attr(P.seniority_of(pop.title))
    department = pop_attr(P.department_of(pop.title, pop.department_missing))
    return pa.table({
        "lead_id": lead_ids,
        "created_at": _ts(pop.created_s, epoch_s),
        "job_title": _take(P.title_names(), pop.title.astype(np.int64)),
        "seniority": seniority,
        "department": department,
        "company_size": pa.array(pop.company_size, mask=pop.company_size < 0, type=pa.int64()),
        "industry": _take([x[0] for x in W.INDUSTRIES], pop.industry.astype(np.int64)),
        "country": _take([x[0] for x in W.COUNTRIES], pop.country.astype(np.int64)),
        "lead_source": _take([x[0] for x in W.SOURCES], pop.source.astype(np.int64)),
        "email_domain_type": _take(W.EMAIL_DOMAIN_OF_PERSONA, pop.persona.astype(np.int64)),
    })


def pop_attr(values: np.ndarray) -> pa.Array:
    return pa.array(values, type=pa.string())


def _latent_leads_table(pop: P.Population, lead_ids: pa.Array) -> pa.Table:
    return pa.table({
        "lead_id": lead_ids,
        "persona": _take(W.PERSONAS, pop.persona.astype(np.int64)),
        "fit": pop.fit, "intent": pop.intent, "engagement": pop.engagement,
        "hand_raiser": pop.hand_raiser,
        "win_probability": J.win_probability(pop.fit),
    })


def read_manifest(data_dir: Path | str) -> dict:
    import json

    return json.loads((Path(data_dir) / "manifest.json").read_text())


def as_of_timestamps(cfg: SynthConfig) -> pd.DatetimeIndex:
    return pd.to_datetime(weekly_as_of(cfg) + cfg.epoch_s, unit="s", utc=True)
