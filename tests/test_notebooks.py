"""Every notebook in notebooks/ runs headless against a small model trained in the test setup."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from leadscore.config import load_pipeline
from leadscore.flat import load_config

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook_to_run():
    assert [p.name for p in NOTEBOOKS] == ["01-why-leads-qualified.ipynb", "02-why-flat-leads-convert.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_headless_against_the_registered_champion(path: Path, request, tmp_path, monkeypatch):
    if path.name.startswith("02-"):  # the flat export's champion (X Education)
        config, _ = request.getfixturevalue("flat_trained")
        dataset = load_config(config)
        monkeypatch.setenv("LEADSCORE_FLAT_MODEL", f"models:/{dataset.bundle_name}@champion")
        monkeypatch.setenv("LEADSCORE_FLAT_CONFIG", str(config))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", dataset.tracking_config.tracking_uri)
    else:
        config, _ = request.getfixturevalue("trained")
        pipeline = load_pipeline(config)
        monkeypatch.setenv("LEADSCORE_MODEL", "models:/leadscore@champion")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline.tracking.tracking_uri)
        monkeypatch.setenv("LEADSCORE_DATA", str(request.getfixturevalue("train_dir")))
        monkeypatch.setenv("LEADSCORE_AS_OF", "2025-06-01")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o["data"]]
    if path.name.startswith("01-"):
        # six leads explained (decision + reasons + baseline), a waterfall each, then the global plots
        assert text.count("reasons for:") == 6 and text.count("rule baseline:") == 6
        assert len(images) >= 6 + 4
    else:
        # four contrasting leads in words with the baseline's rules, then the tier, importance,
        # beeswarm and first-reason plots
        assert text.count("reasons for:") == 4 and text.count("rule baseline:") == 4
        assert "did not convert, ranked highest" in text and "p_converted" in text
        assert len(images) >= 4
