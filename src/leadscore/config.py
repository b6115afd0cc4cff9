"""YAML configuration files: read with line numbers in errors, checked against dataclasses.

Every pipeline declaration in ``pipelines/`` is read through :func:`load_yaml` and turned into
the stage's config dataclass with :func:`build`, so a typo in a key is an error that names
the file, the section and the allowed keys - never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file is malformed or names something that does not exist."""


def load_yaml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def build(cls: type[T], mapping: Any, where: str) -> T:
    """Instantiate dataclass ``cls`` from a mapping; unknown keys and bad values name ``where``."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in mapping.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


@dataclasses.dataclass
class PipelineConfig:
    """The training pipeline declaration (``pipelines/train.yaml``), section by section."""

    path: Path
    data: str | None
    examples: Any
    features: Any
    leakage: Any
    raw: dict


PIPELINE_SECTIONS = ("data", "examples", "features", "leakage")


def load_pipeline(path: Path | str) -> PipelineConfig:
    from leadscore.examples import ExampleConfig
    from leadscore.features import FeatureConfig
    from leadscore.leakage import LeakageConfig

    path = Path(path)
    raw = load_yaml(path)
    unknown = sorted(set(raw) - set(PIPELINE_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}; allowed: {', '.join(PIPELINE_SECTIONS)}")
    data = raw.get("data")
    if data is not None:
        data = str(data)
    return PipelineConfig(
        path=path, data=data,
        examples=build(ExampleConfig, raw.get("examples"), f"{path}: examples"),
        features=build(FeatureConfig, raw.get("features"), f"{path}: features"),
        leakage=build(LeakageConfig, raw.get("leakage"), f"{path}: leakage"),
        raw=raw,
    )
