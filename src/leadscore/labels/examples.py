"""Training examples: (lead, as_of) pairs with point-in-time features and matured labels.

For each as-of date on a cadence over a window, every lead open at that moment (created
before it, not yet SQL or closed) is one example. Its features come from
:func:`leadscore.features.builder.features_as_of` - the same code that scoring runs - and its labels
only from the future:

* ``became_sql``: an ``sql`` event in [as_of, as_of + horizon_days];
* ``won``: a ``won`` event in [as_of, as_of + won_horizon_days].

An event exactly at as_of is an outcome, not history: features read only what happened
strictly before as_of, and the lead is still open then (it closes only by an event before it).

An example whose horizon reaches past the end of the observed outcomes is *immature*: its
outcome is unknown, not negative. Its label is left empty (pd.NA), and training and evaluation
skip it; :class:`ExampleReport` counts how many. The observed outcomes end at the newest
lifecycle event (or an explicit export time) minus ``label_latency_days``: web activity keeps
arriving in real time while sales keys stages in days late, so the newest days of the
lifecycle table are not yet complete.

**Sampled examples** (``max_examples``, for lead bases whose examples do not fit in memory):
every lead with a matured positive outcome in the window keeps all its examples (while they
fill at most half of ``max_examples``; beyond that these leads are sampled too); the other
leads are kept with one rate r, chosen so about ``max_examples`` remain, by a hash of the lead
id (the same leads on every run and machine; a larger r keeps a superset), and their examples
carry the weight 1/r in :data:`WEIGHT`. Sampling whole leads keeps each lead's weeks together
(the cutoffs read how a lead's probability moves from week to week), and the weights - the
inverse of each example's chance to be kept - make every count, rate, metric and calibration
map computed with them an unbiased estimate of the full population's. The report still counts
every example of the window.

Why 42 and 120 days by default: sales works an MQL about six weeks before giving up, so an
SQL that has not happened six weeks after as_of rarely comes from today's signals; B2B deals
take about four months from SQL to close.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Annotated

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field

from leadscore.data.contract import utc_timestamp
from leadscore.features.builder import (
    FeatureConfig,
    TableSource,
    _as_of_us,
    _pairs_frame,
    connect,
    features_as_of,
    open_leads,
)
from leadscore.settings import Section, Whole


@dataclass(frozen=True)
class Label:
    """An outcome the CRM records and a model can learn: which lifecycle ``stage`` makes it
    positive, the output column of its probability, the config field of its horizon, and
    how messages name it."""

    name: str
    stage: str
    probability: str
    horizon_field: str
    short: str  # metric prefix: sql_auc, won_auc
    noun: str

    def horizon(self, config: ExampleConfig) -> int:
        return int(getattr(config, self.horizon_field))


LABEL_SPECS = {
    "became_sql": Label("became_sql", "sql", "p_sql", "horizon_days", "sql", "became an SQL"),
    "won": Label("won", "won", "p_won", "won_horizon_days", "won", "closed won"),
}
LABELS = tuple(LABEL_SPECS)


def label_spec(name: str) -> Label:
    """The :class:`Label` of an event label, or of a flat export's own label (``converted``:
    probability ``p_converted``, metric prefix ``converted``)."""
    if name in LABEL_SPECS:
        return LABEL_SPECS[name]
    return Label(name, name, f"p_{name}", "horizon_days", name, name.replace("_", " "))


class ExampleConfig(Section):
    """Which (lead, as_of) pairs become examples, and how their labels are read.

    ``start``/``end``: the as-of window (defaults: 90 days after the first lead was created,
    so histories have filled; the end of the observed outcomes). ``cadence_days``: spacing of
    as-of dates. ``observed_until``: when the export was taken (default: the newest lifecycle
    event); ``label_latency_days``: how late sales records stages - outcomes are taken as
    complete only up to ``observed_until`` minus this. ``max_lead_age_days``: leave out leads
    older than this at as_of (None keeps every open lead). ``max_examples``: build features
    for about this many examples at most - every lead with a matured positive outcome and a
    weighted, hash-stable sample of the other leads (module docstring); None builds every
    example. (``--engine spark`` builds every example: the cluster holds them.)
    """

    start: str | None = None
    end: str | None = None
    cadence_days: Whole = 7
    horizon_days: Whole = 42
    won_horizon_days: Whole = 120
    observed_until: str | None = None
    label_latency_days: Annotated[float, Field(ge=0)] = 0
    max_lead_age_days: Whole | None = None
    warmup_days: Annotated[int, Field(ge=0)] = 90
    max_examples: Annotated[int, Field(ge=1000)] | None = None


WEIGHT = "_weight"  # an example's weight: the inverse of its chance to be kept in a sample


def weights_of(frame: pd.DataFrame, ones: bool = False) -> np.ndarray | None:
    """The rows' example weights (:data:`WEIGHT`); when the rows are not a weighted sample, None
    - or, with ``ones``, 1 for every row."""
    if WEIGHT in frame:
        return frame[WEIGHT].to_numpy(dtype="float64")
    return np.ones(len(frame)) if ones else None

SAMPLE_SALT = "example-sample"  # the lead hash that samples examples (apart from every integer salt and seed)
DATE_CHUNK = 8      # as-of dates labelled at once while counting the window for a sample
# Fewer leads without an outcome than this in a sample and it is too thin: on 100,000 synthetic
# leads, 1,500 of them cost 0.016 of backtest AUC against every example, 26,000 cost 0.0014.
FEW_OTHER_LEADS = 10_000


@dataclass(frozen=True)
class ExampleSample:
    """How a window's examples were sampled (``max_examples``): the ``positive_leads`` (with
    ``positive_examples``) at ``positive_rate`` (1 unless they alone would fill more than half
    of it), the other leads at ``rate``; each kept lead weighs 1 / its group's rate."""

    max_examples: int
    rate: float
    positive_rate: float
    positive_leads: int
    positive_examples: int
    leads: int        # leads kept
    examples: int     # examples kept
    other_leads: int  # leads kept without a positive outcome

    def as_dict(self) -> dict:
        return dict(vars(self))

    def lines(self) -> list[str]:
        positives = (f"all {self.positive_examples:,} examples of the {self.positive_leads:,} leads with a positive "
                     "outcome" if self.positive_rate == 1 else
                     f"{self.positive_rate:.2%} of the {self.positive_leads:,} leads with a positive outcome (their "
                     f"{self.positive_examples:,} examples would fill over half of it), weighted "
                     f"{1 / self.positive_rate:,.2f}")
        return [f"  sampled (examples.max_examples {self.max_examples:,}): {self.examples:,} examples of "
                f"{self.leads:,} leads - {positives}, and {self.rate:.2%} of the other leads, weighted "
                f"{1 / self.rate:,.2f} (leads chosen by a hash of their id); the metrics, calibration, cutoffs and "
                "score scale below are weighted back to the whole window, the example counts are the sample's"] + (
            [f"  WARNING only {self.other_leads:,} leads without an outcome kept (fewer than {FEW_OTHER_LEADS:,}): the "
             "fit and every estimate rest on them; raise examples.max_examples"]
            if self.other_leads < FEW_OTHER_LEADS else [])


@dataclass
class ExampleReport:
    as_of_dates: list[pd.Timestamp]
    observed_until: pd.Timestamp
    examples: int
    leads: int
    immature: dict[str, int] = field(default_factory=dict)  # label -> examples left unlabelled
    positives: dict[str, int] = field(default_factory=dict)  # label -> matured positives
    sample: ExampleSample | None = None  # how the examples were sampled (None: every example)

    def lines(self) -> list[str]:
        first, last = self.as_of_dates[0], self.as_of_dates[-1]
        out = [f"{self.examples:,} examples of {self.leads:,} leads over {len(self.as_of_dates)} as-of dates "
               f"({first:%Y-%m-%d} .. {last:%Y-%m-%d}); data observed until {self.observed_until:%Y-%m-%d %H:%M}"]
        for label in LABELS:
            matured = self.examples - self.immature[label]
            rate = self.positives[label] / matured if matured else float("nan")
            out.append(f"  {label:<11} {matured:,} matured ({self.positives[label]:,} positive, {rate:.2%}); "
                       f"{self.immature[label]:,} immature, left out of training and evaluation")
        return out + (self.sample.lines() if self.sample else [])


def stage_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Lifecycle events per stage: which outcomes the CRM records at all."""
    rows = con.execute("SELECT stage, count(*) FROM lifecycle GROUP BY stage").fetchall()
    return {str(stage): int(n) for stage, n in rows}


def observed_end(con: duckdb.DuckDBPyConnection, config: ExampleConfig) -> pd.Timestamp:
    """The end of the observed outcomes: the export time (``config.observed_until``, else the
    newest lifecycle event; the newest event of any table when there is none) minus the label
    latency."""
    if config.observed_until:
        end = utc_timestamp(config.observed_until)
    else:
        newest = con.execute("SELECT max(epoch_us(occurred_at)) FROM lifecycle").fetchall()[0][0]
        end = pd.Timestamp(newest, unit="us", tz="UTC") if newest is not None else data_bounds(con)[1]
    return end - pd.Timedelta(days=float(config.label_latency_days))


def data_bounds(con: duckdb.DuckDBPyConnection) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(first lead created, latest timestamp of any table)."""
    first, last = con.execute("""
        SELECT (SELECT min(epoch_us(created_at)) FROM leads),
               greatest((SELECT max(epoch_us(created_at)) FROM leads),
                        (SELECT max(epoch_us(occurred_at)) FROM activities),
                        (SELECT max(epoch_us(occurred_at)) FROM lifecycle))
    """).fetchall()[0]
    if first is None:
        raise ValueError("the leads table is empty")
    return pd.Timestamp(first, unit="us", tz="UTC"), pd.Timestamp(last, unit="us", tz="UTC")


def as_of_dates(config: ExampleConfig, first_created: pd.Timestamp, observed_until: pd.Timestamp) -> list[pd.Timestamp]:
    start = utc_timestamp(config.start) if config.start else (first_created + pd.Timedelta(days=config.warmup_days)).normalize()
    end = utc_timestamp(config.end) if config.end else observed_until
    if start > end:
        raise ValueError(f"as-of window is empty: start {start} is after end {end}")
    return list(pd.date_range(start, end, freq=f"{int(config.cadence_days)}D"))


LABEL_SQL = """
    SELECT p.lead_id, p.as_of_us,
           min(epoch_us(e.occurred_at)) FILTER (WHERE e.stage = 'sql') AS next_sql_us,
           min(epoch_us(e.occurred_at)) FILTER (WHERE e.stage = 'won') AS next_won_us
    FROM _label_pairs p
    LEFT JOIN lifecycle e ON e.lead_id = p.lead_id AND epoch_us(e.occurred_at) >= p.as_of_us
                          AND e.stage IN ('sql', 'won')
    GROUP BY p.lead_id, p.as_of_us
"""  # per pair of ``_label_pairs`` (lead_id, as_of_us): its first SQL and won event from as_of on


def label_examples(con: duckdb.DuckDBPyConnection, pairs: pd.DataFrame, config: ExampleConfig,
                   observed_until: pd.Timestamp) -> pd.DataFrame:
    """``became_sql`` and ``won`` for each pair - an event in [as_of, as_of + horizon] - pd.NA
    where the horizon is not yet observed."""
    frame = _pairs_frame(pairs)
    con.register("_label_pairs", frame)
    try:
        first = con.execute(LABEL_SQL).df()
    finally:
        con.unregister("_label_pairs")
    labels = frame.merge(first, on=["lead_id", "as_of_us"], how="left", validate="one_to_one")
    return labels_of(labels, config, observed_until).set_axis(pairs.index)


def labels_of(first: pd.DataFrame, config: ExampleConfig, observed_until: pd.Timestamp) -> pd.DataFrame:
    """``became_sql`` and ``won`` (nullable booleans) of rows of :data:`LABEL_SQL`'s columns
    (as_of_us, next_sql_us, next_won_us), row by row."""
    end_us = _as_of_us(observed_until)
    out = pd.DataFrame(index=first.index)
    for label, col, horizon in (("became_sql", "next_sql_us", config.horizon_days),
                                ("won", "next_won_us", config.won_horizon_days)):
        h_us = int(horizon) * 86_400_000_000
        as_of_us = first["as_of_us"].to_numpy(dtype="int64")
        hit = first[col].notna().to_numpy() & (first[col].to_numpy(dtype="float64", na_value=np.inf)
                                               <= as_of_us + h_us)
        matured = as_of_us + h_us <= end_us
        values = pd.array(hit, dtype="boolean")
        values[~matured] = pd.NA
        out[label] = values
    return out


def build_examples(
    tables: dict[str, TableSource] | duckdb.DuckDBPyConnection,
    config: ExampleConfig | None = None,
    feature_config: FeatureConfig | None = None,
) -> tuple[pd.DataFrame, ExampleReport]:
    """Feature rows with labels for every open lead at every as-of date of the window - or,
    beyond ``config.max_examples``, for a weighted sample of its leads (module docstring).
    (:func:`leadscore.modeling.baseline.with_baseline_points` adds the rule baseline's points
    to them, so the baseline is evaluated on exactly the model's rows.)"""
    config = config or ExampleConfig()
    con = tables if isinstance(tables, duckdb.DuckDBPyConnection) else \
        connect(tables, (feature_config or FeatureConfig()).contract)
    first_created, _ = data_bounds(con)
    observed_until = observed_end(con, config)
    dates = as_of_dates(config, first_created, observed_until)
    report, kept = None, None
    if config.max_examples is not None:
        report, kept = _sample_window(con, dates, config, observed_until)
    pairs = open_leads(con, dates) if kept is None else \
        pd.concat([p[p["lead_id"].isin(kept.index)] for p in _window_pairs(con, dates, config)], ignore_index=True)
    features = features_as_of(con, pairs, config=feature_config)
    if config.max_lead_age_days is not None:
        features = features[features["lead_age_days"] <= config.max_lead_age_days].reset_index(drop=True)
    labels = label_examples(con, features[["lead_id", "as_of"]], config, observed_until)
    examples = pd.concat([features, labels], axis=1)
    if kept is not None:
        examples[WEIGHT] = kept.reindex(examples["lead_id"]).to_numpy(dtype="float64")
    if report is None:
        report = ExampleReport(
            as_of_dates=dates, observed_until=observed_until, examples=len(examples),
            leads=int(examples["lead_id"].nunique()),
            immature={label: int(examples[label].isna().sum()) for label in LABELS},
            positives={label: int(examples[label].fillna(False).sum()) for label in LABELS},
        )
    return examples, report


def _window_pairs(con: duckdb.DuckDBPyConnection, dates, config: ExampleConfig):
    """(lead_id, as_of) of the window's examples, :data:`DATE_CHUNK` as-of dates at a time: the
    leads open at each date and at most ``max_lead_age_days`` old."""
    for i in range(0, len(dates), DATE_CHUNK):
        yield open_leads(con, dates[i:i + DATE_CHUNK], config.max_lead_age_days)


def _sample_window(con: duckdb.DuckDBPyConnection, dates, config: ExampleConfig, observed_until: pd.Timestamp):
    """Count and label every example of the window, chunk by chunk, and choose the leads to
    keep: (the report, the kept leads' weight by lead id - or None when every example fits)."""
    per_lead, positive = [], []
    immature, positives, n = dict.fromkeys(LABELS, 0), dict.fromkeys(LABELS, 0), 0
    for pairs in _window_pairs(con, dates, config):
        labels = label_examples(con, pairs, config, observed_until)
        hit = np.zeros(len(pairs), dtype=bool)
        for label in LABELS:
            immature[label] += int(labels[label].isna().sum())
            known = labels[label].fillna(False).to_numpy(dtype=bool)
            positives[label] += int(known.sum())
            hit |= known
        per_lead.append(pairs["lead_id"].value_counts())
        positive.append(pairs.loc[hit, "lead_id"].unique())
        n += len(pairs)
    counts = pd.concat(per_lead).groupby(level=0).sum() if per_lead else pd.Series(dtype="int64")
    report = ExampleReport(as_of_dates=dates, observed_until=observed_until, examples=n, leads=len(counts),
                           immature=immature, positives=positives)
    if n <= config.max_examples:
        return report, None
    kept, report.sample = sample_leads(counts, np.unique(np.concatenate(positive)), config.max_examples)
    return report, kept


def sample_leads(examples_per_lead: pd.Series, positive_leads, max_examples: int) -> tuple[pd.Series, ExampleSample]:
    """About ``max_examples`` examples: every example of the ``positive_leads`` while they fill at
    most half of it (beyond that, those leads at the rate that fills half), and the other leads
    at the rate that fills the rest. A lead is kept when :func:`lead_hash` < its group's rate and
    weighs 1 / that rate. Returns (kept lead id -> weight, the sample)."""
    is_positive = examples_per_lead.index.isin(positive_leads)
    n_pos, n_other = int(examples_per_lead[is_positive].sum()), int(examples_per_lead[~is_positive].sum())
    rate_pos = min(1.0, max(max_examples / 2, max_examples - n_other) / n_pos) if n_pos else 1.0
    rate = min(1.0, (max_examples - rate_pos * n_pos) / n_other) if n_other else 1.0
    keep_below = np.where(is_positive, rate_pos, rate)
    keep = lead_hash(examples_per_lead.index.to_series(), SAMPLE_SALT) < keep_below
    kept = pd.Series(1.0 / keep_below, index=examples_per_lead.index)[keep]
    sample = ExampleSample(max_examples=max_examples, rate=rate, positive_rate=rate_pos,
                           positive_leads=int(is_positive.sum()), positive_examples=n_pos,
                           leads=int(keep.sum()), examples=int(examples_per_lead[keep].sum()),
                           other_leads=int((keep & ~is_positive).sum()))
    return kept, sample


def matured(examples: pd.DataFrame, label: str) -> pd.DataFrame:
    """The examples whose ``label`` is known: the only ones to train or evaluate on."""
    return examples[examples[label].notna()]


# ---------------------------------------------------------------------------
# Walk-forward: what a fit at a cut-off may see, and the folds of the backtest
# ---------------------------------------------------------------------------

def lead_hash(lead_ids: pd.Series, salt: int | str = 0) -> np.ndarray:
    """A uniform number in [0, 1) per lead, from a SHA-256 of its id and ``salt``: the same lead
    gets the same number on every run, on every machine and in every library version."""
    codes, uniques = pd.factorize(lead_ids.astype(str))
    values = np.array([int.from_bytes(hashlib.sha256(f"{u}|{salt}".encode()).digest()[:8], "big") / 2.0**64
                       for u in uniques], dtype="float64")
    return values[codes] if len(codes) else np.zeros(0)


def lead_parts(lead_ids: pd.Series, fractions, salt: int = 0) -> np.ndarray:
    """A stable part (0, 1, 2, ...) per lead by the shares in ``fractions`` (:func:`lead_hash`)."""
    if len(fractions) < 2 or any(f <= 0 for f in fractions):
        raise ValueError(f"lead fractions must be positive numbers, got {fractions!r}")
    cuts = np.cumsum(np.asarray(fractions, dtype="float64") / sum(fractions))[:-1]
    return np.searchsorted(cuts, lead_hash(lead_ids, salt), side="right")


@dataclass
class CutoffParts:
    """What a fit at ``cutoff`` may use: the examples whose label window had closed by then.
    ``promotion``: the held-out leads of its newest ``holdout`` weeks, kept to compare a
    challenger with the champion on; ``fit``: all the rest, except the promotion leads' older
    examples whose label window reaches into those weeks (*purged*: they could share an outcome
    with a held-out example). ``calibration``: the fit's
    examples of those newest weeks, calibrated on out of fold (each scored by a model fitted
    without its lead)."""

    cutoff: pd.Timestamp
    fit: pd.DataFrame
    calibration: pd.DataFrame
    promotion: pd.DataFrame
    holdout_from: pd.Timestamp
    purged: int = 0   # promotion leads' older examples whose label window reaches the held-out weeks

    def lines(self, label: str) -> list[str]:
        def span(frame):
            return (f"{len(frame):,} examples of {frame['lead_id'].nunique():,} leads, as of "
                    f"{frame['as_of'].min():%Y-%m-%d} .. {frame['as_of'].max():%Y-%m-%d}" if len(frame) else "none")

        return [f"  fit          {span(self.fit)} ({int(self.fit[label].sum()):,} positive)",
                f"  calibration  {span(self.calibration)} ({int(self.calibration[label].sum()):,} positive; the "
                f"fit's as-of dates from {self.holdout_from:%Y-%m-%d}, out of fold)",
                f"  promotion    {span(self.promotion)} (held out to compare with a champion; {self.purged:,} "
                "older examples of its leads purged: their label windows reach into it)"]


def parts_at(examples: pd.DataFrame, label: str, cutoff, horizon_days: int, holdout_weeks: int,
             promotion_fraction: float, salt: int = 0) -> CutoffParts:
    """The parts of a fit at ``cutoff`` (see :class:`CutoffParts`): nothing in them has a label
    window that closes after ``cutoff``."""
    cutoff = utc_timestamp(cutoff)
    horizon = pd.Timedelta(days=int(horizon_days))
    closes = examples["as_of"] + horizon
    known = (examples[label].notna() & (closes <= cutoff)).to_numpy()
    holdout_from = cutoff - horizon - pd.Timedelta(weeks=int(holdout_weeks))
    newest = (examples["as_of"] > holdout_from).to_numpy()
    promoted = lead_parts(examples["lead_id"], (promotion_fraction, 1 - promotion_fraction), salt) == 0
    promo = known & newest & promoted
    purged = known & promoted & ~newest & (closes > holdout_from).to_numpy()
    fit = known & ~promo & ~purged
    return CutoffParts(cutoff=cutoff, fit=examples[fit].reset_index(drop=True),
                       calibration=examples[fit & newest].reset_index(drop=True),
                       promotion=examples[promo].reset_index(drop=True), holdout_from=holdout_from,
                       purged=int(purged.sum()))


@dataclass(frozen=True)
class Fold:
    """A backtest fold: fit as the shipped model is at ``cutoff``, tested on ``test_dates``."""

    cutoff: pd.Timestamp
    test_dates: tuple[pd.Timestamp, ...]

    @property
    def test_end(self) -> pd.Timestamp:
        return self.test_dates[-1]


def walk_forward(as_of: pd.Series, horizon_days: int, observed_until, folds: int, test_weeks: int, step_weeks: int,
                 cadence_days: int = 7, cutoffs=None) -> list[Fold]:
    """The backtest folds, oldest first. Test dates are matured as-of dates (label window
    closed by ``observed_until``); the newest fold tests the last ``test_weeks`` of them, each
    older one ``step_weeks`` earlier; a fold's cut-off is its first test date. With explicit
    ``cutoffs``, each tests the ``test_weeks`` of matured as-of dates from its cut-off on."""
    horizon = pd.Timedelta(days=int(horizon_days))
    dates = sorted(pd.Series(as_of).drop_duplicates())
    matured = [d for d in dates if d + horizon <= utc_timestamp(observed_until)]
    n_test = max(1, round(test_weeks * 7 / cadence_days))
    n_step = max(1, round(step_weeks * 7 / cadence_days))
    out = []
    if cutoffs:
        for c in sorted(utc_timestamp(c) for c in cutoffs):
            test = [d for d in matured if d >= c][:n_test]
            if test:
                out.append(Fold(cutoff=c, test_dates=tuple(test)))
        return out
    for k in reversed(range(folds)):
        end = len(matured) - k * n_step
        test = matured[max(0, end - n_test):end]
        if len(test) == n_test:
            out.append(Fold(cutoff=test[0], test_dates=tuple(test)))
    return out


def history_weeks_needed(horizon_days: int, folds: int, test_weeks: int, step_weeks: int, min_train_weeks: int) -> int:
    """Weeks of as-of dates a backtest needs: the oldest fold's training, its gap to the
    cut-off (one label window), the folds' test dates, and the newest tests' maturity."""
    horizon_weeks = -(-int(horizon_days) // 7)
    return min_train_weeks + test_weeks + (folds - 1) * step_weeks + 2 * horizon_weeks
