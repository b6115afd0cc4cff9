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


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key == "<<":
                    continue
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {seen[key]})", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
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


def yaml_lines(path: Path | str) -> dict[tuple, int]:
    """The 1-based line of every key and list item of a YAML file, by its path of keys and
    indices (``("tables", "leads", "columns")``), for error messages. Empty if it does not parse."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return lines

    def walk(node, where: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[(*where, key.value)] = key.start_mark.line + 1
                walk(value, (*where, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*where, i)] = item.start_mark.line + 1
                walk(item, (*where, i))

    if root is not None:
        walk(root, ())
    return lines


def pydantic_error(exc, path: Path | str, lines: dict[tuple, int]) -> ConfigError:
    """A ConfigError naming the file, the line and the key path of every problem pydantic found."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "list"))))
        line = next((lines[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in lines), None)
        where = ".".join(str(p) for p in loc) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif isinstance(err.get("input"), bool) and "string" in message:
            message += " (YAML reads yes/no/on/off/true/false unquoted as a boolean: quote it, e.g. \"NO\")"
        problems.append(f"{path}" + (f":{line}" if line else "") + f": {where}: {message}")
    return ConfigError("\n".join(problems))


def load_sections(path: Path, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A YAML file of top-level sections; an unknown section is an error naming the allowed ones."""
    raw = load_yaml(path)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return raw


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


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """How a model is evaluated and what the shipped model is fitted on - all placed from the
    end of the matured outcomes backwards, so any history long enough works.

    **Walk-forward backtest**: ``folds`` cut-offs ``step_weeks`` apart, the newest one
    ``test_weeks`` of as-of dates before the last matured one (or the explicit ``cutoffs``).
    At each cut-off the model is fitted exactly as the shipped one is, on what was known
    then (examples whose label window had closed), and tested on the ``test_weeks`` of as-of
    dates from the cut-off on. **The shipped model** is fitted the same way at the end of the
    data, with the number of trees the folds chose. In both, the newest ``holdout_weeks`` of
    matured as-of dates calibrate the model, out of fold (two models fitted on half the leads
    each score the other half), and ``promotion_fraction`` of the leads there are kept out of
    everything to compare a retrained challenger with the champion on outcomes neither was
    trained on. ``min_train_weeks``: fewest weeks of training as-of dates the oldest fold needs.
    """

    folds: int = 3
    test_weeks: int = 8
    step_weeks: int = 8
    holdout_weeks: int = 8
    promotion_fraction: float = 0.15
    min_train_weeks: int = 8
    cutoffs: tuple[str, ...] | None = None
    salt: int = 0
    # replaced by the walk-forward backtest; named so an old config gets a clear message
    calibration_start: str | None = None
    test_start: str | None = None

    def __post_init__(self):
        if self.calibration_start is not None or self.test_start is not None:
            raise ValueError("calibration_start / test_start are gone: the split is now a walk-forward backtest "
                             "placed from the end of the matured outcomes (folds, test_weeks, step_weeks, "
                             "holdout_weeks); to fix the fold cut-offs yourself give cutoffs: [date, ...]")
        for name in ("folds", "test_weeks", "step_weeks", "holdout_weeks", "min_train_weeks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        f = self.promotion_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 0.5:
            raise ValueError(f"promotion_fraction must be a share of leads in (0, 0.5], got {f!r}")
        if self.cutoffs is not None and not self.cutoffs:
            raise ValueError("cutoffs: give at least one date, or leave it out to place the folds from the data")


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    """MLflow: the embedded SQLite store by default (paths relative to the working directory)."""

    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"
    experiment: str = "leadscore"
    registered_model: str = "leadscore"
    enabled: bool = True


@dataclasses.dataclass(frozen=True)
class PromotionConfig:
    """When a retrained challenger replaces the champion: better by a margin on AUC or log
    loss, and calibration (ECE) not worse by more than ``max_ece_increase``."""

    min_auc_gain: float = 0.002
    min_logloss_gain: float = 0.0002
    max_ece_increase: float = 0.0


@dataclasses.dataclass
class PipelineConfig:
    """The training pipeline declaration (``pipelines/train.yaml``), section by section."""

    path: Path
    data: str | None
    examples: Any
    features: Any
    leakage: Any
    raw: dict
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    model: Any = None
    calibration: str = "auto"
    cutoffs: Any = None
    rules: str | None = None
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    models_dir: str = "models"
    name: str = "leadscore"
    promotion: PromotionConfig = dataclasses.field(default_factory=PromotionConfig)
    source: str | None = None          # a source YAML mapping the CRM's export (relative to this file)
    primary_label: str = "auto"        # the label of the cutoffs, score and tier: auto, became_sql or won

    def resolve(self, path: str | None) -> Path | None:
        """A path from the config: as written if absolute or existing from the working
        directory, else relative to the config file's directory."""
        if path is None:
            return None
        p = Path(path)
        if p.is_absolute() or p.exists():
            return p
        return self.path.parent / p


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """The batch scoring job (``pipelines/score.yaml``, section ``scoring``).

    ``chunk_size``: leads scored per chunk (peak memory follows it). ``top_reasons``: reasons
    per direction in the ``reasons`` column. ``max_quarantine_fraction``: largest share of any
    input table that may break the contract before the job refuses to score.
    ``max_data_age_days``: warn when the newest event before as_of is older than this (a stale
    export makes every lead look silent); None: no check. ``incomplete_history``: what happens
    to an open lead some of whose activities or lifecycle events were quarantined (its features
    miss them): ``flag`` scores it with ``incomplete_history`` true, ``hold`` leaves it out of
    the scores and lists it in the quarantine file.
    """

    chunk_size: int = 50_000
    top_reasons: int = 3
    max_quarantine_fraction: float = 0.01
    max_data_age_days: float | None = 3.0
    incomplete_history: str = "flag"

    def __post_init__(self):
        if self.chunk_size < 1 or self.top_reasons < 1:
            raise ValueError(f"chunk_size and top_reasons must be >= 1, got {self.chunk_size!r}, {self.top_reasons!r}")
        if not 0 <= self.max_quarantine_fraction <= 1:
            raise ValueError(f"max_quarantine_fraction must be in [0, 1], got {self.max_quarantine_fraction!r}")
        age = self.max_data_age_days
        if age is not None and (isinstance(age, bool) or not isinstance(age, (int, float)) or not age > 0):
            raise ValueError(f"max_data_age_days must be > 0 (or empty for no check), got {self.max_data_age_days!r}")
        if self.incomplete_history not in ("flag", "hold"):
            raise ValueError(f"incomplete_history must be flag or hold, got {self.incomplete_history!r}")


SCORING_SECTIONS = ("scoring", "webhook")


def load_scoring(path: Path | str | None, webhook_url: str | None = None):
    """(ScoringConfig, WebhookConfig or None) from a scoring YAML; defaults without a file.
    ``webhook_url`` (the ``--webhook`` flag) replaces the section's URL only: its batch size,
    deadline, retries and other settings still apply."""
    from leadscore.alerts import WebhookConfig

    raw = {} if path is None else load_sections(Path(path), SCORING_SECTIONS)
    webhook = dict(raw.get("webhook") or {})
    if webhook_url:
        webhook["url"] = webhook_url
    where = f"{path}: webhook" if path is not None else "--webhook"
    return (build(ScoringConfig, raw.get("scoring"), f"{path}: scoring") if path is not None else ScoringConfig(),
            None if not webhook.get("url") else build(WebhookConfig, webhook, where))


PIPELINE_SECTIONS = ("data", "source", "examples", "features", "leakage", "split", "model", "calibration", "cutoffs",
                     "rules", "tracking", "models_dir", "name", "promotion", "primary_label")
PRIMARY_LABELS = ("auto", "became_sql", "won")


def load_pipeline(path: Path | str) -> PipelineConfig:
    from leadscore.cutoffs import CutoffPolicy
    from leadscore.examples import ExampleConfig
    from leadscore.features import FeatureConfig
    from leadscore.leakage import LeakageConfig
    from leadscore.train import ModelConfig

    path = Path(path)
    raw = load_sections(path, PIPELINE_SECTIONS)
    data = raw.get("data")
    calibration = str(raw.get("calibration", "auto"))
    if calibration not in ("auto", "isotonic", "sigmoid"):
        raise ConfigError(f"{path}: calibration must be auto, isotonic or sigmoid, got {calibration!r}")
    primary = str(raw.get("primary_label", "auto"))
    if primary not in PRIMARY_LABELS:
        raise ConfigError(f"{path}: primary_label must be one of {', '.join(PRIMARY_LABELS)}, got {primary!r}")
    return PipelineConfig(
        path=path, data=None if data is None else str(data),
        examples=build(ExampleConfig, raw.get("examples"), f"{path}: examples"),
        features=build(FeatureConfig, raw.get("features"), f"{path}: features"),
        leakage=build(LeakageConfig, raw.get("leakage"), f"{path}: leakage"),
        raw=raw,
        split=build(SplitConfig, raw.get("split"), f"{path}: split"),
        model=build(ModelConfig, raw.get("model"), f"{path}: model"),
        calibration=calibration,
        cutoffs=build(CutoffPolicy, raw.get("cutoffs"), f"{path}: cutoffs"),
        rules=None if raw.get("rules") is None else str(raw["rules"]),
        tracking=build(TrackingConfig, raw.get("tracking"), f"{path}: tracking"),
        models_dir=str(raw.get("models_dir", "models")),
        name=str(raw.get("name", "leadscore")),
        promotion=build(PromotionConfig, raw.get("promotion"), f"{path}: promotion"),
        source=None if raw.get("source") is None else str(raw["source"]),
        primary_label=primary,
    )
