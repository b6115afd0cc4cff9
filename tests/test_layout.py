"""The package layout: imports between leadscore's stage packages flow one way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import leadscore
from leadscore.devtools.layout import find_cycle, layers, main, package_graph

ROOT = Path(leadscore.__file__).parent


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_leadscore_packages_import_one_way():
    graph = package_graph(ROOT)
    assert find_cycle(graph) is None, main(["--root", str(ROOT)])
    order = {node: i for i, layer in enumerate(layers(graph)) for node in layer}
    # the stages sit in the order of the data flow
    flow = ["data", "features", "labels", "modeling", "serving", "training", "cli"]
    assert [order[f"leadscore.{n}"] for n in flow] == sorted(order[f"leadscore.{n}"] for n in flow)
    assert not graph["leadscore.io"] and not graph["leadscore.settings"]  # the base imports nothing of ours
    assert set(graph["leadscore.data"]) <= {"leadscore.io", "leadscore.settings"}


def test_a_cycle_through_a_function_level_import_is_found_and_named(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "def f():\n    from pkg.high.b import g\n    return g\n",
        "high/__init__.py": "",
        "high/b.py": "from pkg.low import a\n\ndef g():\n    return a\n",
        "base.py": "",
    })
    graph = package_graph(root)
    assert set(graph["pkg.high"]) == {"pkg.low"} and set(graph["pkg.low"]) == {"pkg.high"}
    assert sorted(find_cycle(graph)) == ["pkg.high", "pkg.low"]
    done = subprocess.run([sys.executable, "-m", "leadscore.devtools.layout", "--root", str(root)],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "CYCLE:" in done.stdout and "pkg.low.a imports pkg.high.b" in done.stdout


def test_relative_imports_and_from_package_import_module_count(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "",
        "mid/__init__.py": "",
        "mid/m.py": "from ..low import a\n",
        "top.py": "from pkg import mid\n",
    })
    graph = package_graph(root)
    assert set(graph["pkg.mid"]) == {"pkg.low"} and set(graph["pkg.top"]) == {"pkg.mid"}
    assert find_cycle(graph) is None
    assert layers(graph) == [["pkg.low"], ["pkg.mid"], ["pkg.top"]]
