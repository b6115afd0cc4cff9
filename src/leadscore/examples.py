"""Training examples: (lead, as_of) pairs with point-in-time features and matured labels.

For each as-of date on a cadence over a window, every lead open at that moment (created
before it, not yet SQL or closed) is one example. Its features come from
:func:`leadscore.features.features_as_of` - the same code that scoring runs - and its labels
only from the future:

* ``became_sql``: an ``sql`` event in (as_of, as_of + horizon_days];
* ``won``: a ``won`` event in (as_of, as_of + won_horizon_days].

An example whose horizon reaches past the end of the observed data is *immature*: its outcome
is unknown, not negative. Its label is left empty (pd.NA), and training and evaluation skip
it; :class:`ExampleReport` counts how many.

Why 42 and 120 days by default: sales works an MQL about six weeks before giving up, so an
SQL that has not happened six weeks after as_of rarely comes from today's signals; B2B deals
take about four months from SQL to close.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from leadscore.contract import utc_timestamp
from leadscore.features import (
    FeatureConfig,
    TableSource,
    _as_of_us,
    _pairs_frame,
    connect,
    features_as_of,
    open_leads,
)


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


@dataclass(frozen=True)
class ExampleConfig:
    """Which (lead, as_of) pairs become examples, and how their labels are read.

    ``start``/``end``: the as-of window (defaults: 90 days after the first lead was created,
    so histories have filled; the end of the observed data). ``cadence_days``: spacing of
    as-of dates. ``observed_until``: the end of the observed data (default: the latest
    timestamp in the tables). ``max_lead_age_days``: leave out leads older than this at
    as_of (None keeps every open lead).
    """

    start: str | None = None
    end: str | None = None
    cadence_days: int = 7
    horizon_days: int = 42
    won_horizon_days: int = 120
    observed_until: str | None = None
    max_lead_age_days: int | None = None
    warmup_days: int = 90

    def __post_init__(self):
        for name in ("cadence_days", "horizon_days", "won_horizon_days"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_lead_age_days is not None and self.max_lead_age_days < 1:
            raise ValueError(f"max_lead_age_days must be >= 1, got {self.max_lead_age_days!r}")


@dataclass
class ExampleReport:
    as_of_dates: list[pd.Timestamp]
    observed_until: pd.Timestamp
    examples: int
    leads: int
    immature: dict[str, int] = field(default_factory=dict)  # label -> examples left unlabelled
    positives: dict[str, int] = field(default_factory=dict)  # label -> matured positives

    def lines(self) -> list[str]:
        first, last = self.as_of_dates[0], self.as_of_dates[-1]
        out = [f"{self.examples:,} examples of {self.leads:,} leads over {len(self.as_of_dates)} as-of dates "
               f"({first:%Y-%m-%d} .. {last:%Y-%m-%d}); data observed until {self.observed_until:%Y-%m-%d %H:%M}"]
        for label in LABELS:
            matured = self.examples - self.immature[label]
            rate = self.positives[label] / matured if matured else float("nan")
            out.append(f"  {label:<11} {matured:,} matured ({self.positives[label]:,} positive, {rate:.2%}); "
                       f"{self.immature[label]:,} immature, left out of training and evaluation")
        return out


def stage_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Lifecycle events per stage: which outcomes the CRM records at all."""
    rows = con.execute("SELECT stage, count(*) FROM lifecycle GROUP BY stage").fetchall()
    return {str(stage): int(n) for stage, n in rows}


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


def label_examples(con: duckdb.DuckDBPyConnection, pairs: pd.DataFrame, config: ExampleConfig,
                   observed_until: pd.Timestamp) -> pd.DataFrame:
    """``became_sql`` and ``won`` for each pair, pd.NA where the horizon is not yet observed."""
    frame = _pairs_frame(pairs)
    con.register("_label_pairs", frame)
    try:
        first = con.execute("""
            SELECT p.lead_id, p.as_of_us,
                   min(epoch_us(e.occurred_at)) FILTER (WHERE e.stage = 'sql') AS next_sql_us,
                   min(epoch_us(e.occurred_at)) FILTER (WHERE e.stage = 'won') AS next_won_us
            FROM _label_pairs p
            LEFT JOIN lifecycle e ON e.lead_id = p.lead_id AND epoch_us(e.occurred_at) > p.as_of_us
                                  AND e.stage IN ('sql', 'won')
            GROUP BY p.lead_id, p.as_of_us
        """).df()
    finally:
        con.unregister("_label_pairs")
    labels = frame.merge(first, on=["lead_id", "as_of_us"], how="left", validate="one_to_one")
    end_us = _as_of_us(observed_until)
    out = pd.DataFrame(index=pairs.index)
    for label, col, horizon in (("became_sql", "next_sql_us", config.horizon_days),
                                ("won", "next_won_us", config.won_horizon_days)):
        h_us = int(horizon) * 86_400_000_000
        hit = labels[col].notna().to_numpy() & (labels[col].to_numpy(dtype="float64", na_value=np.inf)
                                                <= labels["as_of_us"].to_numpy() + h_us)
        matured = labels["as_of_us"].to_numpy() + h_us <= end_us
        values = pd.array(hit, dtype="boolean")
        values[~matured] = pd.NA
        out[label] = values
    return out


def build_examples(
    tables: dict[str, TableSource] | duckdb.DuckDBPyConnection,
    config: ExampleConfig | None = None,
    feature_config: FeatureConfig | None = None,
    rules=None,
) -> tuple[pd.DataFrame, ExampleReport]:
    """Feature rows with labels for every open lead at every as-of date of the window.

    With ``rules`` (a :class:`leadscore.baseline.RuleSet`) the rule baseline's
    ``baseline_points``, ``baseline_tier`` and ``baseline_grid`` of each example are added, so
    the baseline is evaluated on exactly the model's rows (they are not model features).
    """
    config = config or ExampleConfig()
    con = tables if isinstance(tables, duckdb.DuckDBPyConnection) else \
        connect(tables, (feature_config or FeatureConfig()).contract)
    first_created, last_seen = data_bounds(con)
    observed_until = utc_timestamp(config.observed_until) if config.observed_until else last_seen
    dates = as_of_dates(config, first_created, observed_until)
    pairs = open_leads(con, dates)
    features = features_as_of(con, pairs, config=feature_config)
    if config.max_lead_age_days is not None:
        features = features[features["lead_age_days"] <= config.max_lead_age_days].reset_index(drop=True)
    labels = label_examples(con, features[["lead_id", "as_of"]], config, observed_until)
    examples = pd.concat([features, labels], axis=1)
    if rules is not None:
        from leadscore.baseline import score_baseline

        points = score_baseline(con, rules, features[["lead_id", "as_of"]], explain=False,
                                contract=(feature_config or FeatureConfig()).contract)
        points = points[["lead_id", "as_of", "total_points", "baseline_tier", "grid"]].rename(
            columns={"total_points": "baseline_points", "grid": "baseline_grid"})
        examples = examples.merge(points, on=["lead_id", "as_of"], how="left", validate="one_to_one")
    report = ExampleReport(
        as_of_dates=dates, observed_until=observed_until, examples=len(examples),
        leads=int(examples["lead_id"].nunique()),
        immature={label: int(examples[label].isna().sum()) for label in LABELS},
        positives={label: int(examples[label].fillna(False).sum()) for label in LABELS},
    )
    return examples, report


def matured(examples: pd.DataFrame, label: str) -> pd.DataFrame:
    """The examples whose ``label`` is known: the only ones to train or evaluate on."""
    return examples[examples[label].notna()]


# ---------------------------------------------------------------------------
# Out-of-time split, grouped by lead
# ---------------------------------------------------------------------------

SPLITS = ("train", "calibration", "test")


@dataclass
class Split:
    parts: dict[str, pd.DataFrame]
    boundaries: tuple[pd.Timestamp, pd.Timestamp]
    dropped: dict[str, int]  # reason -> examples left out

    def lines(self) -> list[str]:
        b1, b2 = self.boundaries
        out = [f"split at {b1:%Y-%m-%d} and {b2:%Y-%m-%d} (out of time, grouped by lead):"]
        for name in SPLITS:
            part = self.parts[name]
            out.append(f"  {name:<12} {len(part):>9,} examples, {part['lead_id'].nunique():>7,} leads, as of "
                       + (f"{part['as_of'].min():%Y-%m-%d} .. {part['as_of'].max():%Y-%m-%d}" if len(part) else "-"))
        for reason, n in self.dropped.items():
            out.append(f"  left out: {n:,} examples ({reason})")
        return out


def lead_parts(lead_ids: pd.Series, fractions: tuple[float, float, float], salt: int = 0) -> np.ndarray:
    """A stable part (0 train, 1 calibration, 2 test) per lead, from a hash of its id.

    The same lead lands in the same part on every retraining, whatever else is in the data.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions):
        raise ValueError(f"lead fractions must be three positive numbers, got {fractions!r}")
    cuts = np.cumsum(np.asarray(fractions, dtype="float64") / sum(fractions))[:2]
    hashed = pd.util.hash_pandas_object(lead_ids.astype(str) + f"|{salt}", index=False).to_numpy()
    u = (hashed >> np.uint64(11)).astype("float64") / float(2**53)
    return np.searchsorted(cuts, u, side="right")


def split_out_of_time(examples: pd.DataFrame, calibration_start, test_start, horizon_days: int,
                      lead_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), salt: int = 0,
                      without_calibration: bool = False) -> Split:
    """Split examples into train / calibration / test: out of time, and never one lead on two sides.

    Each lead is assigned to one part by a stable hash of its id (``lead_fractions``); each
    part then keeps only its leads' examples inside its time window:

    * train: label window closed before ``calibration_start`` (as_of + horizon <= calibration_start);
    * calibration: as_of >= calibration_start and label window closed before ``test_start``;
    * test: as_of >= test_start.

    So no training label is read from the calibration or test period, and the test slice
    holds leads of every age that the model never saw. Everything left out is counted.

    ``without_calibration``: when the window between the two dates is shorter than the label
    window, no calibration example can mature there; the calibration part's leads then train
    too, with label windows closed before ``test_start``, and the calibration part is empty
    (the model is calibrated on held-out training leads instead).
    """
    b1, b2 = utc_timestamp(calibration_start), utc_timestamp(test_start)
    if not b1 < b2:
        raise ValueError(f"calibration_start {b1} must be before test_start {b2}")
    part = lead_parts(examples["lead_id"], lead_fractions, salt)
    as_of = examples["as_of"]
    closes = as_of + pd.Timedelta(days=int(horizon_days))
    in_window = [(closes <= b1).to_numpy(), ((as_of >= b1) & (closes <= b2)).to_numpy(), (as_of >= b2).to_numpy()]
    if without_calibration:
        part = np.where(part == 1, 0, part)
        in_window = [(closes <= b2).to_numpy(), np.zeros(len(examples), dtype=bool), in_window[2]]
    keep = {name: (part == i) & in_window[i] for i, name in enumerate(SPLITS)}
    parts = {name: examples[mask].reset_index(drop=True) for name, mask in keep.items()}
    kept = keep["train"] | keep["calibration"] | keep["test"]
    in_some_window = in_window[0] | in_window[1] | in_window[2]
    dropped = {}
    if (n := int((~kept & in_some_window).sum())):
        dropped["the lead belongs to another part"] = n
    if (n := int((~in_some_window).sum())):
        dropped["label window crosses a split boundary"] = n
    return Split(parts=parts, boundaries=(b1, b2), dropped=dropped)
