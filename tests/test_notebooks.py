"""Every notebook in notebooks/ runs headless against a small model trained in the test setup."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from leadscore.modeling.baseline import DEFAULT_RULES
from leadscore.training.config import load_pipeline
from leadscore.training.flat import load_config

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
WHY_QUALIFIED = REPO / "notebooks" / "01-why-leads-qualified.ipynb"


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
        monkeypatch.setenv("LEADSCORE_RULES", str(DEFAULT_RULES))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o["data"]]
    if path.name.startswith("01-"):
        # four contrasting leads: an SQL hit, an MQL, the near miss below the MQL cutoff and a false
        # positive, at different tiers or scores, each explained in words with a waterfall
        picks = re.findall(r"^picked (SQL|MQL|near miss|false positive)\s+(\S+)\s+score\s+(\d+)\s+tier (\w+)",
                           text, re.M)
        assert [(what, tier) for what, _, _, tier in picks] == [
            ("SQL", "SQL"), ("MQL", "MQL"), ("near miss", "lead"), ("false positive", "SQL")], text
        assert len({(tier, score) for _, _, score, tier in picks}) == 4, picks
        for what, lead_id, _, _ in picks:
            assert f"=== {what}: {lead_id}," in text
        # the placement chart, four waterfalls, the contrast chart, importance, beeswarm, the tiers
        # beside the rules' and each rule's lift
        assert len(images) >= 10
        # ends in a conclusion about the rules, not in bare tables
        assert "Rules that fire on leads that rarely convert" in text and "Signals the rules miss" in text
    else:
        # four contrasting leads in words with the baseline's rules, then the tier, importance,
        # beeswarm and first-reason plots
        assert text.count("reasons for:") == 4 and text.count("rule baseline:") == 4
        assert "did not convert, ranked highest" in text and "p_converted" in text
        assert len(images) >= 4


@pytest.mark.parametrize("missing", ["everything", "mlflow store", "registered model"])
def test_notebook_01_without_a_trained_model_says_so_and_writes_nothing(missing, request, tmp_path, monkeypatch):
    """Run before `make demo` (or pointed at the wrong place) the notebook stops in its first cell
    with what to do, and leaves no empty mlflow.db, mlruns/ or mlartifacts/ behind."""
    empty, cwd = tmp_path / "empty", tmp_path / "cwd"
    empty.mkdir()
    cwd.mkdir()
    model, tracking, data = "models:/leadscore@champion", f"sqlite:///{empty / 'mlflow.db'}", empty / "data"
    store = None
    if missing != "everything":
        data = request.getfixturevalue("train_dir")
    if missing == "registered model":  # a store that exists, without that alias
        pipeline = load_pipeline(request.getfixturevalue("trained")[0])
        store = Path(pipeline.tracking.tracking_uri.removeprefix("sqlite:///"))
        model, tracking = "models:/leadscore@no-such-alias", f"sqlite:///{store}"
    before = hashlib.sha256(store.read_bytes()).hexdigest() if store else None
    monkeypatch.setenv("LEADSCORE_MODEL", model)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("LEADSCORE_DATA", str(data))
    nb = nbformat.read(WHY_QUALIFIED, as_version=4)
    with pytest.raises(CellExecutionError) as failed:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    message = str(failed.value)
    assert f"no trained model at {model}" in message
    assert "run `make demo` first (or set LEADSCORE_MODEL / MLFLOW_TRACKING_URI / LEADSCORE_DATA)" in message
    assert "Traceback" not in message  # the message, not a stack trace
    setup = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert [o.ename for o in setup.outputs if o.output_type == "error"] == ["NoTrainedModel"]  # the first cell stops
    assert list(empty.iterdir()) == [] and list(cwd.iterdir()) == []
    if store:
        assert hashlib.sha256(store.read_bytes()).hexdigest() == before
