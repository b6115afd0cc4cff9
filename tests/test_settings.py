"""Typed settings: every YAML section is a frozen, strict pydantic model read by one loader."""

from __future__ import annotations

import dataclasses
import datetime
import json

import pydantic
import pytest

from leadscore.features.builder import FeatureConfig
from leadscore.labels.examples import ExampleConfig
from leadscore.modeling.cutoffs import CutoffError, CutoffPolicy
from leadscore.modeling.model import ModelConfig
from leadscore.monitoring.result import MonitorConfig
from leadscore.serving.alerts import WebhookConfig
from leadscore.serving.batch import ScoringConfig, load_scoring
from leadscore.serving.codec import dumps, loads
from leadscore.serving.registry import TrackingConfig
from leadscore.settings import ConfigError, Section
from leadscore.training.config import (
    SECTIONS,
    PipelineConfig,
    PromotionConfig,
    SplitConfig,
    load_pipeline,
)
from leadscore.training.flat import FlatDataset, FlatSplit

EVERY_SECTION = [ExampleConfig, FeatureConfig, ModelConfig, CutoffPolicy, SplitConfig, PromotionConfig,
                 TrackingConfig, ScoringConfig, MonitorConfig, FlatSplit, PipelineConfig, FlatDataset, WebhookConfig,
                 *SECTIONS.values()]


@pytest.mark.parametrize("cls", sorted(set(EVERY_SECTION), key=lambda c: c.__name__))
def test_every_section_is_a_frozen_strict_model_without_unknown_keys(cls):
    assert issubclass(cls, Section) and issubclass(cls, pydantic.BaseModel)
    config = cls.model_config
    assert (config["extra"], config["frozen"], config["strict"]) == ("forbid", True, True)
    required = {name: "https://hooks.example.com/x" if name == "url" else "." for name, f in cls.model_fields.items()
                if f.is_required()}
    if cls is PipelineConfig:
        required = {"path": __import__("pathlib").Path("x.yaml"), "raw": {}}
    if cls is FlatDataset:
        required = {"dataset": "d", "path": "d.csv", "id_column": "id", "label_column": "y"}
    section = cls(**required)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        setattr(section, next(iter(cls.model_fields)), None)
    with pytest.raises(ValueError, match=r"unknown key\(s\) colour; allowed: "):
        cls(**required, colour="blue")


@pytest.mark.parametrize(("cls", "values", "message"), [
    (SplitConfig, {"folds": "3"}, r"folds must be a whole number, got '3'"),
    (SplitConfig, {"folds": True}, r"folds must be a whole number, got True"),
    (SplitConfig, {"test_weeks": 2.5}, r"test_weeks must be a whole number, got 2\.5"),
    (SplitConfig, {"promotion_fraction": 0.8}, r"promotion_fraction must be <= 0\.5, got 0\.8"),
    (SplitConfig, {"calibration_start": "2025-01-01"}, r"calibration_start / test_start are gone"),
    (ExampleConfig, {"label_latency_days": -1}, r"label_latency_days must be >= 0, got -1"),
    (FeatureConfig, {"windows_days": [7, 0]}, r"windows_days\.1 must be >= 1, got 0"),
    (FeatureConfig, {"windows_days": []}, r"windows_days must not be empty"),
    (FeatureConfig, {"half_life_days": float("inf")}, r"half_life_days must be a finite number, got inf"),
    (FeatureConfig, {"hand_raiser_types": ["fax"]}, r"hand_raiser_types: unknown activity types \['fax'\]"),
    (ModelConfig, {"candidates": ["lightgbm", "xgboost"]}, r"candidates\.1 must be one of 'lightgbm', 'logistic'"),
    (ModelConfig, {"max_fit_rows": 10}, r"max_fit_rows must be >= 1000, got 10"),
    (ScoringConfig, {"incomplete_history": "drop"}, r"incomplete_history must be one of 'flag' or 'hold', got 'drop'"),
    (TrackingConfig, {"enabled": "yes"}, r"enabled must be true or false, got 'yes'"),
    (MonitorConfig, {"psi_watch": 0.3, "psi_act": 0.2}, r"psi_watch \(0\.3\) must not exceed psi_act \(0\.2\)"),
])
def test_values_of_the_wrong_type_or_range_are_refused_in_plain_words(cls, values, message):
    with pytest.raises(ValueError, match=message) as caught:
        cls(**values)
    assert "validation error" not in str(caught.value) and "pydantic" not in str(caught.value)


def test_a_policy_error_stays_a_cutoff_error_and_every_problem_is_listed():
    with pytest.raises(CutoffError, match=r"mql must be a finite number, got '4%'; seed must be >= 0, got -1"):
        CutoffPolicy(mql="4%", sql=0.13, seed=-1)


def test_yaml_lists_become_tuples_and_dates_iso_text(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("examples:\n  start: 2024-04-01\n  observed_until: 2025-10-01T12:00:00\n"
                    "features:\n  windows_days: [14, 60]\nsplit:\n  cutoffs: [2025-03-03, 2025-05-05]\n")
    pipeline = load_pipeline(path)
    assert pipeline.examples.start == "2024-04-01" and pipeline.examples.observed_until == "2025-10-01T12:00:00"
    assert pipeline.features.windows_days == (14, 60)
    assert pipeline.split.cutoffs == ("2025-03-03", "2025-05-05")
    hash(pipeline.features)   # frozen and hashable: usable as a cache key
    assert ExampleConfig(start=datetime.date(2024, 4, 1)).start == "2024-04-01"


def test_yaml_errors_name_file_line_section_and_every_problem(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("name: demo\nsplit:\n  folds: 3\n  test_weeks: yes\n  step_weeks: 0\n"
                    "calibration: platt\n")
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    lines = str(caught.value).splitlines()
    assert lines == [f"{path}:4: split: test_weeks must be a whole number, got True",
                     f"{path}:5: split: step_weeks must be >= 1, got 0"]
    path.write_text("name: demo\ncalibration: platt\nprimary_label: sql\n")
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    assert str(caught.value).splitlines() == [
        f"{path}:2: calibration must be one of 'auto', 'isotonic' or 'sigmoid', got 'platt'",
        f"{path}:3: primary_label must be one of 'auto', 'became_sql' or 'won', got 'sql'"]


def test_scoring_yaml_is_checked_with_lines(tmp_path):
    path = tmp_path / "score.yaml"
    path.write_text("scoring:\n  chunk_size: 1000\n  max_data_age_days: 0\nwebhook:\n  url: https://h/x\n"
                    "  retries: 1.5\n")
    with pytest.raises(ConfigError, match=rf"{path.name}:3: scoring: max_data_age_days must be > 0, got 0"):
        load_scoring(path)
    path.write_text("scoring:\n  max_data_age_days:\nwebhook:\n  url: https://h/x\n  retries: 1.5\n")
    with pytest.raises(ConfigError, match=rf"{path.name}:5: webhook: retries must be a whole number, got 1\.5"):
        load_scoring(path)
    path.write_text("scoring:\n  max_data_age_days:\n")
    assert load_scoring(path) == (ScoringConfig(max_data_age_days=None), None)


def test_replace_checks_the_copy_as_a_new_section():
    config = ModelConfig()
    assert config.replace(num_leaves=7).num_leaves == 7 and config.num_leaves == 15
    with pytest.raises(ValueError, match=r"validation_fraction must be < 0\.5, got 0\.7"):
        config.replace(validation_fraction=0.7)
    with pytest.raises(CutoffError, match="missing: sql"):
        CutoffPolicy(policy="capacity", mql=100, sql=50).replace(sql=None)


def test_sections_in_a_bundle_round_trip_and_old_dataclass_state_still_reads():
    policy = CutoffPolicy(policy="capacity", mql=300, sql=100, bootstrap=0)
    features = FeatureConfig(windows_days=(7, 30), half_life_days=10.0)
    back = loads(dumps({"policy": policy, "features": features}))
    assert back == {"policy": policy, "features": features}
    assert back["features"].contract == features.contract and back["policy"].mql == 300.0
    # a bundle written when FeatureConfig was a dataclass holds the same fields under its old module name;
    # one written before recency_types existed lacks it and reads with the default
    doc = json.loads(dumps(features))
    doc["object"]["$object"] = "leadscore.features:FeatureConfig"
    del doc["object"]["state"]["recency_types"]
    old = loads(json.dumps(doc).encode())
    assert isinstance(old, FeatureConfig) and old.windows_days == (7, 30)
    assert old.recency_types == FeatureConfig().recency_types


def test_a_flat_dataset_checks_its_nested_sections_when_read(tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text("dataset: d\npath: d.csv\nid_column: id\nlabel_column: y\nmodel:\n  num_leaves: 7\n"
                    "cutoffs:\n  policy: capacity\n  mql: 10\n")
    from leadscore.training.flat import load_config

    with pytest.raises(ConfigError, match=rf"{path.name}:7: cutoffs: policy capacity needs both an mql and an sql"):
        load_config(path)


def test_as_dict_gives_plain_values_for_a_manifest():
    plain = FeatureConfig().as_dict()
    assert plain["windows_days"] == (7, 30, 90)
    assert isinstance(plain["contract"], dict) and plain["contract"] == dataclasses.asdict(FeatureConfig().contract)
