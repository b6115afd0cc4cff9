"""The package graph of leadscore, and a check that imports flow one way.

    python -m leadscore.devtools.layout          # print the graph; exit 1 on a cycle

Every ``import`` of a leadscore module counts, at module level or inside a function: a cycle
broken only by a function-level import is still a cycle in the design. A node is a stage
package (``leadscore.features``, ``leadscore.serving``, ...) or a top-level module
(``leadscore.io``); imports inside one package are not edges. Read from the source with
:mod:`ast`, so nothing is imported or run.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT_PACKAGE = "leadscore"


def module_name(path: Path, root: Path) -> str:
    """``leadscore.serving.scorer`` for ``<root>/serving/scorer.py`` (``root``: the package dir)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([root.name, *parts])


def imported_modules(path: Path, module: str, root_package: str = ROOT_PACKAGE) -> set[str]:
    """The ``root_package`` modules a file imports, wherever the import statement sits."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            # `from leadscore.serving import scorer` imports the module leadscore.serving.scorer
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return {n for n in found if n == root_package or n.startswith(root_package + ".")}


def node_of(module: str, nodes: Iterable[str]) -> str | None:
    """The graph node a module belongs to: the longest node name that is it or a prefix of it."""
    best = None
    for node in nodes:
        if (module == node or module.startswith(node + ".")) and (best is None or len(node) > len(best)):
            best = node
    return best


Graph = dict[str, dict[str, list[tuple[str, str]]]]  # node -> imported node -> (module, imported module) pairs


def package_graph(root: Path) -> Graph:
    """Nodes: the stage packages and top-level modules under ``root`` (the ``leadscore`` dir);
    ``graph[a][b]`` lists the (importing module, imported module) pairs that make a import b."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}
    nodes = {f"{root.name}.{p.relative_to(root).parts[0].removesuffix('.py')}" for p in files.values()
             if p.relative_to(root).parts[0] != "__init__.py"}
    graph: Graph = {node: {} for node in sorted(nodes)}
    for module, path in files.items():
        source = node_of(module, nodes)
        for imported in sorted({node_of(name, files) for name in imported_modules(path, module, root.name)} - {None}):
            target = node_of(imported, nodes)
            if source is None or target is None or source == target:
                continue
            graph[source].setdefault(target, []).append((module, imported))
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle of the graph (its nodes in import order), or None when imports flow one way."""
    try:
        layers(graph)
    except CycleError as exc:
        return list(reversed(exc.args[1][:-1]))  # graphlib lists it against the import direction
    return None


def layers(graph: Graph) -> list[list[str]]:
    """The nodes from the bottom up: each layer imports only from layers below it."""
    sorter = TopologicalSorter({node: set(targets) for node, targets in graph.items()})
    sorter.prepare()
    out = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        out.append(ready)
        sorter.done(*ready)
    return out


def describe(graph: Graph, prefix: str = ROOT_PACKAGE + ".") -> str:
    short = {n: n.removeprefix(prefix) for n in graph}
    lines = []
    cycle = find_cycle(graph)
    if cycle is None:
        lines.append("layers, bottom up (each imports only from those below):")
        for i, layer in enumerate(layers(graph)):
            lines.append(f"  {i}  " + ", ".join(short[n] for n in layer))
    lines.append("imports:")
    for node, targets in graph.items():
        names = sorted(short[t] for t in targets)
        lines.append(f"  {short[node]:<12} -> {', '.join(names) if names else '(nothing in leadscore)'}")
    if cycle is not None:
        lines.append("CYCLE: " + " -> ".join(short[n] for n in [*cycle, cycle[0]]))
        for a, b in zip(cycle, [*cycle[1:], cycle[0]]):
            for module, imported in graph[a][b]:
                lines.append(f"    {module} imports {imported}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leadscore.devtools.layout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the package directory to read (default: the installed leadscore)")
    args = parser.parse_args(argv)
    graph = package_graph(args.root)
    print(describe(graph))
    return 1 if find_cycle(graph) else 0


if __name__ == "__main__":
    sys.exit(main())
