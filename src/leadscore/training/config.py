"""The training pipeline declaration (``pipelines/train.yaml``): its sections and loader.

Each section is its stage's own config class; this module only composes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from leadscore.features.builder import FeatureConfig
from leadscore.labels.examples import ExampleConfig
from leadscore.labels.leakage import LeakageConfig
from leadscore.modeling.cutoffs import CutoffPolicy
from leadscore.modeling.model import ModelConfig
from leadscore.serving.registry import TrackingConfig
from leadscore.settings import Section, Whole, build, load_sections, yaml_lines

PRIMARY_LABELS = ("auto", "became_sql", "won")


class SplitConfig(Section):
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

    folds: Whole = 3
    test_weeks: Whole = 8
    step_weeks: Whole = 8
    holdout_weeks: Whole = 8
    promotion_fraction: Annotated[float, Field(gt=0, le=0.5)] = 0.15
    min_train_weeks: Whole = 8
    cutoffs: Annotated[tuple[str, ...], Field(min_length=1)] | None = None
    salt: int = 0
    # replaced by the walk-forward backtest; named so an old config gets a clear message
    calibration_start: str | None = None
    test_start: str | None = None

    @model_validator(mode="after")
    def _no_fixed_dates(self):
        if self.calibration_start is not None or self.test_start is not None:
            raise ValueError("calibration_start / test_start are gone: the split is now a walk-forward backtest "
                             "placed from the end of the matured outcomes (folds, test_weeks, step_weeks, "
                             "holdout_weeks); to fix the fold cut-offs yourself give cutoffs: [date, ...]")
        return self


class PromotionConfig(Section):
    """When a retrained challenger replaces the champion: better by a margin on AUC or log
    loss, and calibration (ECE) not worse by more than ``max_ece_increase``."""

    min_auc_gain: float = 0.002
    min_logloss_gain: float = 0.0002
    max_ece_increase: float = 0.0


class PipelineConfig(Section):
    """The training pipeline declaration (``pipelines/train.yaml``), section by section."""

    path: Path
    raw: dict
    data: str | None = None
    examples: ExampleConfig = ExampleConfig()
    features: FeatureConfig = FeatureConfig()
    leakage: LeakageConfig = LeakageConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    calibration: Literal["auto", "isotonic", "sigmoid"] = "auto"
    cutoffs: CutoffPolicy = CutoffPolicy()
    rules: str | None = None
    tracking: TrackingConfig = TrackingConfig()
    models_dir: str = "models"
    name: str = "leadscore"
    promotion: PromotionConfig = PromotionConfig()
    source: str | None = None          # a source YAML mapping the CRM's export (relative to this file)
    primary_label: Literal[PRIMARY_LABELS] = "auto"   # the label of the cutoffs, score and tier

    def resolve(self, path: str | None) -> Path | None:
        """A path from the config: as written if absolute or existing from the working
        directory, else relative to the config file's directory."""
        if path is None:
            return None
        p = Path(path)
        if p.is_absolute() or p.exists():
            return p
        return self.path.parent / p


SECTIONS = {"examples": ExampleConfig, "features": FeatureConfig, "leakage": LeakageConfig, "split": SplitConfig,
            "model": ModelConfig, "cutoffs": CutoffPolicy, "tracking": TrackingConfig, "promotion": PromotionConfig}
PIPELINE_SECTIONS = ("data", "source", *SECTIONS, "calibration", "rules", "models_dir", "name", "primary_label")


def load_pipeline(path: Path | str) -> PipelineConfig:
    """``pipelines/train.yaml``: each section built and checked on its own (errors name the file,
    the line, the section and the key), then the top-level settings."""
    path = Path(path)
    raw = load_sections(path, PIPELINE_SECTIONS)
    lines = yaml_lines(path)
    sections = {name: build(cls, raw.get(name), f"{path}: {name}", lines, (name,)) for name, cls in SECTIONS.items()}
    return build(PipelineConfig, {**raw, **sections, "path": path, "raw": raw}, str(path), lines)
