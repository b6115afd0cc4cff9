"""YAML configuration files: read with line numbers in errors, checked against dataclasses.

Every pipeline declaration in ``pipelines/`` is read through :func:`load_yaml` and turned into
the stage's config dataclass with :func:`build`, so a typo in a key is an error that names
the file, the section and the allowed keys - never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import re
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


def build(cls: type[T], mapping: Any, where: str, lines: dict[tuple, int] | None = None, at: tuple = ()) -> T:
    """Instantiate dataclass ``cls`` from a mapping; unknown keys and bad values name ``where``
    (``"<file>: <section>"``) and, given the file's :func:`yaml_lines` and the section's key path
    ``at``, the line of the key at fault (of the section when no key is named)."""

    def located(key=None) -> str:
        line = (lines or {}).get((*at, key)) or (lines or {}).get(at)
        if line is None:
            return where
        path, sep, section = where.partition(": ")
        return f"{path}:{line}{sep}{section}"

    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{located()}: expected a mapping, got {type(mapping).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - fields)
    if unknown:
        raise ConfigError(f"{located(unknown[0])}: unknown key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(fields))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in mapping.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        named = [k for k in mapping if re.search(rf"\b{re.escape(str(k))}\b", str(exc))]
        raise ConfigError(f"{located(named[0] if named else None)}: {exc}") from exc
