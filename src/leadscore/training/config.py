"""The training pipeline declaration (``pipelines/train.yaml``): its sections and loader.

Each section is its stage's own config class; this module only composes them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from leadscore.features.builder import FeatureConfig
from leadscore.labels.examples import ExampleConfig
from leadscore.labels.leakage import LeakageConfig
from leadscore.modeling.cutoffs import CutoffPolicy
from leadscore.modeling.model import ModelConfig
from leadscore.serving.registry import TrackingConfig
from leadscore.settings import ConfigError, build, load_sections, yaml_lines


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


PIPELINE_SECTIONS = ("data", "source", "examples", "features", "leakage", "split", "model", "calibration", "cutoffs",
                     "rules", "tracking", "models_dir", "name", "promotion", "primary_label")
PRIMARY_LABELS = ("auto", "became_sql", "won")


def load_pipeline(path: Path | str) -> PipelineConfig:

    path = Path(path)
    raw = load_sections(path, PIPELINE_SECTIONS)
    lines = yaml_lines(path)
    data = raw.get("data")
    calibration = str(raw.get("calibration", "auto"))
    if calibration not in ("auto", "isotonic", "sigmoid"):
        raise ConfigError(f"{path}: calibration must be auto, isotonic or sigmoid, got {calibration!r}")
    primary = str(raw.get("primary_label", "auto"))
    if primary not in PRIMARY_LABELS:
        raise ConfigError(f"{path}: primary_label must be one of {', '.join(PRIMARY_LABELS)}, got {primary!r}")
    return PipelineConfig(
        path=path, data=None if data is None else str(data),
        examples=build(ExampleConfig, raw.get("examples"), f"{path}: examples", lines, ("examples",)),
        features=build(FeatureConfig, raw.get("features"), f"{path}: features", lines, ("features",)),
        leakage=build(LeakageConfig, raw.get("leakage"), f"{path}: leakage", lines, ("leakage",)),
        raw=raw,
        split=build(SplitConfig, raw.get("split"), f"{path}: split", lines, ("split",)),
        model=build(ModelConfig, raw.get("model"), f"{path}: model", lines, ("model",)),
        calibration=calibration,
        cutoffs=build(CutoffPolicy, raw.get("cutoffs"), f"{path}: cutoffs", lines, ("cutoffs",)),
        rules=None if raw.get("rules") is None else str(raw["rules"]),
        tracking=build(TrackingConfig, raw.get("tracking"), f"{path}: tracking", lines, ("tracking",)),
        models_dir=str(raw.get("models_dir", "models")),
        name=str(raw.get("name", "leadscore")),
        promotion=build(PromotionConfig, raw.get("promotion"), f"{path}: promotion", lines, ("promotion",)),
        source=None if raw.get("source") is None else str(raw["source"]),
        primary_label=primary,
    )

