"""Overlapping jobs in one working directory (two scheduled retrains that run long): every
registered version holds the bundle its own run trained, both runs finish, and the bundle left
in models/ is a whole one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from leadscore.synthetic import SynthConfig, generate
from leadscore.synthetic.flat import flat_export
from leadscore.training.flat import load_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("concurrent")
    generate(SynthConfig(n_leads=6000, seed=7), out / "world", progress=False)
    config = flat_export(out / "world", out)
    raw = yaml.safe_load(config.read_text())
    raw["model"] = {**raw.get("model", {}), "candidates": ["lightgbm"], "search_trials": 1, "min_positives": 40}
    raw["split"] = {**raw.get("split", {}), "folds": 2}
    raw["cutoffs"] = {**raw.get("cutoffs", {}), "bootstrap": 100}
    raw["models_dir"] = str(out / "models")
    raw["tracking"] = {"tracking_uri": f"sqlite:///{out / 'mlflow.db'}", "artifact_location": str(out / "mlartifacts")}
    config.write_text(yaml.safe_dump(raw))
    return config


def test_two_trainings_at_once_register_each_its_own_bundle(small_export):
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    command = [sys.executable, "-m", "leadscore.cli", "train", "--config", str(small_export)]
    jobs = [subprocess.Popen(command, cwd=small_export.parent, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [job.communicate(timeout=1200)[0] for job in jobs]
    for job, output in zip(jobs, outputs):
        assert job.returncode == 0, output[-3000:]

    import mlflow
    from mlflow.tracking import MlflowClient

    from leadscore.serving.bundle import verify_bundle
    from leadscore.serving.registry import load_scorer, verify_registered

    dataset = load_config(small_export)
    mlflow.set_tracking_uri(dataset.tracking_config.tracking_uri)
    versions = MlflowClient().search_model_versions(f"name='{dataset.bundle_name}'")
    assert len(versions) == 2 and len({v.run_id for v in versions}) == 2
    for v in versions:
        bundle_dir, manifest = verify_registered(f"models:/{v.name}/{v.version}")
        assert manifest["mlflow_run_id"] == v.run_id            # its own run's bundle, not the other's
        data_hash = MlflowClient().get_run(v.run_id).data.tags["data_hash"]
        assert manifest["data_fingerprint"]["hash"] == data_hash
        load_scorer(f"models:/{v.name}/{v.version}")
    published = Path(dataset.models_dir) / dataset.bundle_name
    manifest = verify_bundle(published)                          # whole: one of the two runs' bundles
    assert manifest["mlflow_run_id"] in {v.run_id for v in versions}
    leftovers = sorted(p.name for p in Path(dataset.models_dir).iterdir() if p.name != dataset.bundle_name)
    assert leftovers == [], leftovers                            # no staging directory left behind
    assert json.loads((published / "manifest.json").read_text())["name"] == dataset.bundle_name
