"""Flat CRM exports: one row per lead, activity already aggregated, an outcome column.

Many teams only have such an export (no timestamps, so no point-in-time features). A dataset
configuration in YAML says how to read it::

    dataset: xeducation
    path: ../../shared/datasets/xeducation/Leads.csv   # relative to this YAML file
    id_column: Prospect ID
    label_column: Converted
    positive_values: [1]         # the label values that mean "converted" (1.0 matches 1) ...
    negative_values: [0]         # ... and "did not": any other value is an error, never a silent negative
    missing_values: [Select]
    categorical: [Lead Origin, Lead Source, ...]
    numeric: [TotalVisits, ...]
    exclude:
      Tags: filled in by the sales team after contacting the lead
    ratios:                      # derived numeric features, numerator / denominator
      Time Per Visit: {numerator: Total Time Spent on Website, denominator: TotalVisits,
                       description: seconds on the website per visit}

Every column of the file must be the id, the label, the date columns, categorical, numeric or
excluded (with a reason): nothing is silently dropped, and a column the config does not
mention is an error. A ratio is empty where either column is or the denominator is not > 0;
the registered model computes it when the rows it scores lack it.

**Dates.** An export that says when each lead came in (``date_column``: created or first
contact) is evaluated out of time (:func:`leadscore.training.flatcv.walk_forward_flat`). Its labels
mature: a lead counts only once ``horizon_days`` have passed since its date by the export
time (``observed_until``, default the newest date in the file); with ``outcome_date_column``,
a positive counts only if its outcome came within ``horizon_days`` of the lead's date, so
every lead had the same time to convert. Dates are read with ``date_format`` (iso8601,
epoch_s, epoch_ms or strftime pattern(s), tried in order) in ``timezone``.

``label``: the outcome's name in every table and metric key (default: the label column in
snake case, ``Converted`` -> ``converted``). ``model``: LightGBM parameters
(:class:`leadscore.modeling.model.ModelConfig`); ``split``: the walk-forward folds (:class:`FlatSplit`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from leadscore.data.contract import TimestampFormat, utc_timestamp
from leadscore.features.builder import MISSING, FeatureSpec, Ratio
from leadscore.modeling.model import ModelConfig
from leadscore.settings import ConfigError, Section, Whole, build, load_yaml, yaml_lines


class FlatSplit(Section):
    """The walk-forward folds of a dated flat export: the newest fold tests the leads dated in
    the last ``test_weeks`` whose label matured, each older fold ``step_weeks`` earlier; a
    fold trains on the leads whose ``horizon_days`` had passed by its cut-off (at least
    ``min_train_weeks`` of them). Without a date column, ``cv_folds`` stratified folds."""

    folds: Whole = 3
    test_weeks: Whole = 8
    step_weeks: Whole = 8
    min_train_weeks: Whole = 8
    cv_folds: Annotated[int, Field(ge=2)] = 5


def snake_case(name: str) -> str:
    """``Converted`` -> ``converted``, ``Became SQL?`` -> ``became_sql``."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "label"


class FlatDataset(Section):
    """A flat export's declaration (``pipelines/xeducation.yaml``): one row per lead, its label
    column and values, its columns by role; ``model``, ``split``, ``cutoffs`` and ``tracking``
    as in ``pipelines/train.yaml`` (checked when the file is read)."""

    dataset: str
    path: str
    id_column: str
    label_column: str
    positive_values: tuple = (1,)
    negative_values: tuple = (0,)
    missing_values: tuple = ()
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    exclude: dict = {}                   # column -> reason
    fit_columns: tuple[str, ...] = ()  # columns describing who the lead is; the rest is engagement
    descriptions: dict = {}
    ratios: dict = {}                    # name -> {numerator, denominator, description}
    label: str | None = None             # the outcome's name in tables and metric keys
    date_column: str | None = None       # when the lead came in: evaluation out of time
    outcome_date_column: str | None = None
    date_format: str | tuple[str, ...] = "iso8601"
    timezone: str = "UTC"
    horizon_days: Whole = 90
    observed_until: str | None = None    # the export time (default: the newest date in the file)
    model: dict = {}
    split: dict = {}
    cutoffs: dict = {}                              # as in pipelines/train.yaml, on p_<label>
    name: str | None = None                         # bundle and registered model (default leadscore-<dataset>)
    models_dir: str = "models"
    tracking: dict = {}                             # as in pipelines/train.yaml
    rules: str | None = None                        # the rule baseline on the export's columns (relative to this file)
    base_dir: str = "."

    @model_validator(mode="after")
    def _consistent(self):
        both = set(map(str, self.positive_values)) & set(map(str, self.negative_values))
        if both:
            raise ValueError(f"label value(s) {sorted(both)} are in both positive_values and negative_values")
        if self.outcome_date_column and not self.date_column:
            raise ValueError("outcome_date_column needs a date_column (the lead's date its horizon counts from)")
        if self.label is not None and snake_case(self.label) != self.label:
            raise ValueError(f"label must be a snake_case name such as {snake_case(self.label)!r}, got {self.label!r}")
        self.ratio_specs  # noqa: B018 - checks the ratios
        self.timestamps  # noqa: B018 - checks the format and zone
        self.model_settings, self.split_settings, self.cutoff_policy, self.tracking_config  # noqa: B018
        return self

    @property
    def ratio_specs(self) -> tuple[Ratio, ...]:
        if not isinstance(self.ratios, dict):
            raise ValueError("ratios must map each derived column's name to {numerator, denominator, description}")
        specs = []
        for name, spec in self.ratios.items():
            keys = set(spec) if isinstance(spec, dict) else set()
            if not isinstance(spec, dict) or not {"numerator", "denominator"} <= keys \
                    or keys - {"numerator", "denominator", "description"}:
                raise ValueError(f"ratios.{name} must give numerator and denominator (and optionally a "
                                 f"description), got {spec!r}")
            for part in ("numerator", "denominator"):
                if spec[part] not in self.numeric:
                    raise ValueError(f"ratios.{name}.{part} {spec[part]!r} is not one of the numeric columns "
                                     f"{list(self.numeric)}")
            taken = {self.id_column, self.label_column, *self.categorical, *self.numeric, *self.exclude}
            if name in taken:
                raise ValueError(f"ratios.{name}: the name is already a column of the export")
            specs.append(Ratio(str(name), spec["numerator"], spec["denominator"],
                               spec.get("description") or f"{spec['numerator']} per {spec['denominator']}"))
        return tuple(specs)

    @property
    def label_name(self) -> str:
        return self.label or snake_case(self.label_column)

    @property
    def timestamps(self) -> TimestampFormat:
        return TimestampFormat(format=self.date_format, timezone=self.timezone)

    @property
    def model_settings(self) -> ModelConfig:
        return build(ModelConfig, self.model, "model")

    @property
    def split_settings(self) -> FlatSplit:
        return build(FlatSplit, self.split, "split")

    @property
    def cutoff_policy(self):
        from leadscore.modeling.cutoffs import CutoffPolicy

        return build(CutoffPolicy, self.cutoffs, "cutoffs")

    @property
    def rules_path(self) -> Path | None:
        if self.rules is None:
            return None
        p = Path(self.rules)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def load_rules(self, catalogue: pd.DataFrame):
        """The rule baseline (a RuleSet on the export's columns), or None without ``rules:``."""
        from leadscore.modeling.baseline import load_rules

        if self.rules_path is None:
            return None
        if not self.rules_path.exists():
            raise ConfigError(f"{self.dataset}: rules file not found: {self.rules_path}")
        return load_rules(self.rules_path, columns=dict(zip(catalogue["name"], catalogue["kind"])))

    @property
    def bundle_name(self) -> str:
        return self.name or f"leadscore-{snake_case(self.dataset).replace('_', '-')}"

    @property
    def tracking_config(self):
        from leadscore.serving.registry import TrackingConfig

        return build(TrackingConfig, {"registered_model": self.bundle_name, **self.tracking}, "tracking")

    @property
    def file(self) -> Path:
        p = Path(self.path)
        return p if p.is_absolute() else Path(self.base_dir) / p


@dataclass
class FlatData:
    ids: pd.Series
    features: pd.DataFrame
    y: np.ndarray
    catalogue: pd.DataFrame
    excluded: dict[str, str]
    label: str = "converted"
    dates: pd.Series | None = None      # UTC; None: the export has no date column
    horizon_days: int | None = None
    observed_until: pd.Timestamp | None = None
    notes: list[str] = field(default_factory=list)  # what reading the labels decided, for the console
    quarantined: pd.DataFrame | None = None         # scoring: rows set aside (row, lead_id, column, value, reason)
    points: np.ndarray | None = None                # the rule baseline's total points per row, when scored

    def without(self, positions) -> FlatData:
        """The rows but those at ``positions`` (0-based)."""
        keep = np.ones(len(self.features), dtype=bool)
        keep[np.asarray(positions, dtype="int64")] = False
        return FlatData(ids=self.ids[keep].reset_index(drop=True), features=self.features[keep].reset_index(drop=True),
                        y=self.y[keep], catalogue=self.catalogue, excluded=self.excluded, label=self.label,
                        dates=None if self.dates is None else self.dates[keep].reset_index(drop=True),
                        horizon_days=self.horizon_days, observed_until=self.observed_until, notes=self.notes,
                        quarantined=self.quarantined, points=None if self.points is None else self.points[keep])

    def matured(self) -> FlatData:
        """The leads whose label window had closed by the export time (all without dates)."""
        if self.dates is None:
            return self
        immature = (self.dates + pd.Timedelta(days=self.horizon_days) > self.observed_until).to_numpy()
        return self.without(np.flatnonzero(immature))


def load_config(path: Path | str) -> FlatDataset:
    path = Path(path)
    raw = load_yaml(path)
    raw.setdefault("base_dir", str(path.parent))
    if isinstance(raw.get("exclude"), list):
        raise ConfigError(f"{path}: exclude must map each column to the reason it is excluded")
    return build(FlatDataset, raw, str(path), yaml_lines(path))


def load_flat(config: FlatDataset, path: Path | str | None = None, include_excluded: bool = False,
              scoring: bool = False) -> FlatData:
    """Read the export; categorical columns get ``"missing"`` for empty and missing-marker values.

    ``include_excluded`` keeps the excluded columns (typed by their content) - for the
    leakage audit, which should see everything. ``scoring``: leads to score, whose outcome
    is not known yet - the label and outcome-date columns may be absent or empty.
    """
    file = Path(path) if path is not None else config.file
    if not file.exists():
        raise ConfigError(f"{config.dataset}: data file not found: {file}")
    frame = pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[""])
    where = f"{file} (config {config.dataset})"
    dated = [c for c in (config.date_column, config.outcome_date_column) if c]
    declared = [config.id_column, config.label_column, *dated, *config.categorical, *config.numeric, *config.exclude]
    dupes = sorted({c for c in declared if declared.count(c) > 1})
    if dupes:
        raise ConfigError(f"{where}: column(s) declared more than once: {dupes}")
    outcome_columns = [c for c in (config.label_column, config.outcome_date_column) if c]
    if scoring:  # what only training needs may be missing from leads to score
        for c in outcome_columns:
            if c not in frame.columns:
                frame[c] = pd.Series(pd.NA, index=frame.index, dtype="object")
    absent = [c for c in declared if c not in frame.columns]
    if absent:
        raise ConfigError(f"{where}: config names column(s) not in the file: {absent}")
    undeclared = [c for c in frame.columns if c not in declared]
    if undeclared:
        raise ConfigError(f"{where}: column(s) neither categorical, numeric nor excluded: {undeclared}")

    missing = set(map(str, config.missing_values))
    frame = frame.mask(frame.isin(missing))
    label = frame[config.label_column]
    if label.isna().any() and not scoring:
        rows = np.flatnonzero(label.isna())[:10].tolist()
        raise ConfigError(f"{where}: label column {config.label_column!r} is empty in rows {rows}")
    y = _label_is(label, config.positive_values)
    neither = label.notna().to_numpy() & ~y & ~_label_is(label, config.negative_values)
    if neither.any() and not scoring:
        rows = (np.flatnonzero(neither)[:10] + 2).tolist()
        values = list(pd.unique(label[neither].astype("str"))[:5])
        raise ConfigError(f"{where}: label column {config.label_column!r} has value(s) {values} in lines {rows} "
                          f"(of {int(neither.sum()):,}) that are neither positive_values "
                          f"{list(config.positive_values)} nor negative_values {list(config.negative_values)}; "
                          "list each under one of them (or under missing_values)")
    dates, observed_until, notes = None, None, []
    if config.date_column:
        y, dates, observed_until, notes = _dated_labels(frame, y, config, where)

    categorical, numeric = list(config.categorical), list(config.numeric)
    if include_excluded:
        for col in config.exclude:
            (numeric if pd.to_numeric(frame[col], errors="coerce").notna().sum() == frame[col].notna().sum()
             else categorical).append(col)
    out = pd.DataFrame(index=frame.index)
    specs, rejected = [], []
    for col in frame.columns:
        if col in categorical:
            out[col] = frame[col].fillna(MISSING).astype("str")
            kind = "categorical"
        elif col in numeric:
            values = pd.to_numeric(frame[col], errors="coerce")
            bad = (values.isna() & frame[col].notna()) | ~np.isfinite(values.fillna(0.0))
            if bad.any() and scoring:  # a lead to score with a broken cell is set aside, with the reason
                rejected.append(pd.DataFrame({"row": np.flatnonzero(bad) + 2, "column": col,
                                              "value": frame[col][bad].astype(str).to_numpy(),
                                              "reason": f"{col!r} is not a finite number"}))
            elif bad.any():
                rows = np.flatnonzero(bad)[:10].tolist()
                raise ConfigError(f"{where}: numeric column {col!r} has non-numbers in rows {rows}, "
                                  f"e.g. {frame[col][bad].iloc[0]!r}")
            values = values.where(~bad)
            out[col] = values.astype("float64")
            kind = "numeric"
        else:
            continue
        group = "fit" if col in config.fit_columns else "engagement"
        specs.append(FeatureSpec(col, group, kind, config.descriptions.get(col, col)))
    for ratio in config.ratio_specs:  # after the numeric columns they divide, which are checked by now
        out[ratio.name] = ratio.compute(out)
        parts_fit = {ratio.numerator, ratio.denominator} <= set(config.fit_columns)
        specs.append(FeatureSpec(ratio.name, "fit" if parts_fit else "engagement", "numeric", ratio.description))
    catalogue = pd.DataFrame([{"name": s.name, "group": s.group, "kind": s.kind, "dtype": s.dtype,
                               "description": s.description} for s in specs])
    excluded = {} if include_excluded else dict(config.exclude)
    result = FlatData(ids=frame[config.id_column], features=out, y=y, catalogue=catalogue, excluded=excluded,
                      label=config.label_name, dates=dates,
                      horizon_days=config.horizon_days if dates is not None else None,
                      observed_until=observed_until, notes=notes)
    if scoring:
        result.quarantined = _quarantine(frame, config, rejected, dates)
        result = result.without(result.quarantined["row"].to_numpy() - 2)
    return result


def _label_is(label: pd.Series, values) -> np.ndarray:
    """Which label cells are one of ``values``: as text, or as a number (``1.0`` is ``1``)."""
    text = label.astype("str").str.strip()
    hit = text.isin({str(v) for v in values})
    numbers = pd.to_numeric(pd.Series([v for v in values if not isinstance(v, bool)], dtype="object"),
                            errors="coerce").dropna()
    if len(numbers):
        hit |= pd.to_numeric(text, errors="coerce").isin(numbers.astype("float64"))
    return (hit & label.notna()).to_numpy()


def _quarantine(frame: pd.DataFrame, config: FlatDataset, rejected: list[pd.DataFrame], dates) -> pd.DataFrame:
    """Leads to score that cannot be: a broken number, no id, an id twice. ``row``: the file's
    line (the header is line 1)."""
    ids = frame[config.id_column]
    for bad, reason in ((ids.isna().to_numpy(), f"{config.id_column!r} is empty"),
                        (ids.duplicated(keep=False).to_numpy() & ids.notna().to_numpy(),
                         f"{config.id_column!r} appears more than once")):
        if bad.any():
            rejected.append(pd.DataFrame({"row": np.flatnonzero(bad) + 2, "column": config.id_column,
                                          "value": ids[bad].astype(str).to_numpy(), "reason": reason}))
    out = (pd.concat(rejected, ignore_index=True) if rejected
           else pd.DataFrame({"row": pd.Series(dtype="int64"), "column": "", "value": "", "reason": ""}))
    out = out.groupby("row", as_index=False, sort=True).agg({"column": "first", "value": "first",
                                                              "reason": "; ".join})
    out.insert(1, "lead_id", ids.iloc[out["row"].to_numpy() - 2].astype(str).to_numpy())
    return out


def _parsed(frame: pd.DataFrame, column: str, fmt: TimestampFormat, where: str, required: bool) -> pd.Series:
    values = fmt.parse(frame[column]).reset_index(drop=True)
    bad = values.isna() & frame[column].notna().to_numpy()
    if required:
        bad |= frame[column].isna().to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)[:10].tolist()
        example = frame[column].iloc[rows[0]]
        raise ConfigError(f"{where}: date column {column!r} in rows {rows} (of {int(bad.sum()):,}) is "
                          f"{'empty' if pd.isna(example) else repr(example) + ', ' + fmt.expected}; set date_format "
                          "(e.g. '%d/%m/%Y %H:%M') or fix the rows")
    return values


def _dated_labels(frame: pd.DataFrame, y: np.ndarray, config: FlatDataset, where: str):
    """(y within the horizon, the leads' dates, the export time, notes)."""
    fmt = config.timestamps
    dates = _parsed(frame, config.date_column, fmt, where, required=True)
    horizon = pd.Timedelta(days=config.horizon_days)
    notes = []
    newest = dates.max()
    if config.outcome_date_column:
        outcome = _parsed(frame, config.outcome_date_column, fmt, where, required=False)
        newest = max(newest, outcome.max()) if outcome.notna().any() else newest
        undated = y & outcome.isna().to_numpy()
        late = y & (outcome > dates + horizon).to_numpy()
        if undated.any():
            notes.append(f"{int(undated.sum()):,} positive leads have no {config.outcome_date_column!r}: counted as "
                         f"positive (their outcome cannot be placed in time), e.g. rows "
                         f"{np.flatnonzero(undated)[:5].tolist()}")
        if late.any():
            notes.append(f"{int(late.sum()):,} leads converted more than {config.horizon_days} days after their "
                         f"{config.date_column!r}: negatives of a {config.horizon_days}-day label")
        y = y & ~late
    else:
        notes.append(f"no outcome_date_column: a lead counts as positive whenever it converted, once "
                     f"{config.horizon_days} days have passed since its {config.date_column!r}")
    observed_until = utc_timestamp(config.observed_until) if config.observed_until else newest
    immature = int((dates + horizon > observed_until).sum())
    if immature:
        notes.append(f"{immature:,} leads dated after {observed_until - horizon:%Y-%m-%d} (the export time "
                     f"{observed_until:%Y-%m-%d} minus {config.horizon_days} days) have not matured: left out of "
                     "training and evaluation, scored like any lead")
    return y, dates, observed_until, notes
