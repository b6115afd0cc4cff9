"""Every notebook in notebooks/ runs headless against a small model trained in the test setup."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from leadscore.config import load_pipeline

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook_to_run():
    assert [p.name for p in NOTEBOOKS if p.name.startswith("01-")] == ["01-why-leads-qualified.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_headless_against_the_registered_champion(path: Path, trained, train_dir, tmp_path, monkeypatch):
    config, _ = trained
    pipeline = load_pipeline(config)
    monkeypatch.setenv("LEADSCORE_MODEL", "models:/leadscore@champion")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline.tracking.tracking_uri)
    monkeypatch.setenv("LEADSCORE_DATA", str(train_dir))
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
