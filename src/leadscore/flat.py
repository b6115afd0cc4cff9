"""Flat CRM exports: one row per lead, activity already aggregated, an outcome column.

Many teams only have such an export (no timestamps, so no point-in-time features). A dataset
configuration in YAML says how to read it::

    dataset: xeducation
    path: ../../shared/datasets/xeducation/Leads.csv   # relative to this YAML file
    id_column: Prospect ID
    label_column: Converted
    positive_values: [1]
    missing_values: [Select]
    categorical: [Lead Origin, Lead Source, ...]
    numeric: [TotalVisits, ...]
    exclude:
      Tags: filled in by the sales team after contacting the lead

Every column of the file must be the id, the label, categorical, numeric or excluded (with a
reason): nothing is silently dropped, and a column the config does not mention is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from leadscore.config import ConfigError, build, load_yaml
from leadscore.features import MISSING, FeatureSpec


@dataclass(frozen=True)
class FlatDataset:
    dataset: str
    path: str
    id_column: str
    label_column: str
    positive_values: tuple = (1,)
    missing_values: tuple = ()
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    exclude: dict = field(default_factory=dict)  # column -> reason
    fit_columns: tuple[str, ...] = ()  # columns describing who the lead is; the rest is engagement
    descriptions: dict = field(default_factory=dict)
    base_dir: str = "."

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


def load_config(path: Path | str) -> FlatDataset:
    path = Path(path)
    raw = load_yaml(path)
    raw.setdefault("base_dir", str(path.parent))
    if isinstance(raw.get("exclude"), list):
        raise ConfigError(f"{path}: exclude must map each column to the reason it is excluded")
    return build(FlatDataset, raw, str(path))


def load_flat(config: FlatDataset, path: Path | str | None = None, include_excluded: bool = False) -> FlatData:
    """Read the export; categorical columns get ``"missing"`` for empty and missing-marker values.

    ``include_excluded`` keeps the excluded columns (typed by their content) - for the
    leakage audit, which should see everything.
    """
    file = Path(path) if path is not None else config.file
    if not file.exists():
        raise ConfigError(f"{config.dataset}: data file not found: {file}")
    frame = pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[""])
    where = f"{file} (config {config.dataset})"
    declared = [config.id_column, config.label_column, *config.categorical, *config.numeric, *config.exclude]
    dupes = sorted({c for c in declared if declared.count(c) > 1})
    if dupes:
        raise ConfigError(f"{where}: column(s) declared more than once: {dupes}")
    absent = [c for c in declared if c not in frame.columns]
    if absent:
        raise ConfigError(f"{where}: config names column(s) not in the file: {absent}")
    undeclared = [c for c in frame.columns if c not in declared]
    if undeclared:
        raise ConfigError(f"{where}: column(s) neither categorical, numeric nor excluded: {undeclared}")

    missing = set(map(str, config.missing_values))
    frame = frame.mask(frame.isin(missing))
    label = frame[config.label_column]
    if label.isna().any():
        rows = np.flatnonzero(label.isna())[:10].tolist()
        raise ConfigError(f"{where}: label column {config.label_column!r} is empty in rows {rows}")
    y = label.isin(set(map(str, config.positive_values))).to_numpy()

    categorical, numeric = list(config.categorical), list(config.numeric)
    if include_excluded:
        for col in config.exclude:
            (numeric if pd.to_numeric(frame[col], errors="coerce").notna().sum() == frame[col].notna().sum()
             else categorical).append(col)
    out = pd.DataFrame(index=frame.index)
    specs = []
    for col in frame.columns:
        if col in categorical:
            out[col] = frame[col].fillna(MISSING).astype("str")
            kind = "categorical"
        elif col in numeric:
            values = pd.to_numeric(frame[col], errors="coerce")
            bad = values.isna() & frame[col].notna()
            if bad.any():
                rows = np.flatnonzero(bad)[:10].tolist()
                raise ConfigError(f"{where}: numeric column {col!r} has non-numbers in rows {rows}, "
                                  f"e.g. {frame[col][bad].iloc[0]!r}")
            out[col] = values.astype("float64")
            kind = "numeric"
        else:
            continue
        group = "fit" if col in config.fit_columns else "engagement"
        specs.append(FeatureSpec(col, group, kind, config.descriptions.get(col, col)))
    catalogue = pd.DataFrame([{"name": s.name, "group": s.group, "kind": s.kind, "dtype": s.dtype,
                               "description": s.description} for s in specs])
    excluded = {} if include_excluded else dict(config.exclude)
    return FlatData(ids=frame[config.id_column], features=out, y=y, catalogue=catalogue, excluded=excluded)
