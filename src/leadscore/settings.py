"""YAML configuration files: read with line numbers in errors, checked by typed sections.

Every pipeline declaration in ``pipelines/`` is read through :func:`load_yaml` and turned into
its stage's :class:`Section` (a frozen, strict pydantic model) with :func:`build`, so a typo
in a key or a value of the wrong type is an error that names the file, the line and the key -
never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

T = TypeVar("T")
Whole = Annotated[int, Field(ge=1)]        # a count of days, weeks, rows ... that must be at least one
Positive = Annotated[float, Field(gt=0)]


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


BOOLEAN_HINT = " (YAML reads yes/no/on/off/true/false unquoted as a boolean: quote it, e.g. \"NO\")"


def _loc(err: dict) -> tuple:
    """The key path of a pydantic error, without the union members pydantic names in it."""
    return tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "list"))))


def pydantic_error(exc, path: Path | str, lines: dict[tuple, int]) -> ConfigError:
    """A ConfigError naming the file, the line and the key path of every problem pydantic found."""
    problems = []
    for err in exc.errors():
        loc = _loc(err)
        line = next((lines[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in lines), None)
        where = ".".join(str(p) for p in loc) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif isinstance(err.get("input"), bool) and "string" in message:
            message += BOOLEAN_HINT
        problems.append(f"{path}" + (f":{line}" if line else "") + f": {where}: {message}")
    return ConfigError("\n".join(problems))


def load_sections(path: Path, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A YAML file of top-level sections; an unknown section is an error naming the allowed ones."""
    raw = load_yaml(path)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return raw


_PHRASES = {
    "int_type": "must be a whole number", "int_from_float": "must be a whole number",
    "float_type": "must be a finite number", "finite_number": "must be a finite number",
    "bool_type": "must be true or false", "string_type": "must be text",
    "tuple_type": "must be a list", "dict_type": "must be a mapping", "is_instance_of": "cannot be set here",
    "greater_than_equal": "must be >= {ge}", "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}", "less_than": "must be < {lt}",
    "literal_error": "must be one of {expected}", "too_short": "must not be empty",
    "missing": "is required",
}


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _section_at(cls, loc: tuple):
    """The section class the key path ``loc`` leads into (for the allowed keys of an unknown one)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return None
        inner = [t for t in _flat_types(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
        if not inner:
            return None
        cls = inner[0]
    return cls


def _flat_types(annotation) -> list:
    args = typing.get_args(annotation)
    return [annotation] if not args else [t for a in args for t in _flat_types(a)]


def _problem(err: dict, cls, name_of: Callable[[tuple], str]) -> tuple[tuple, str]:
    """(key path, message) of one pydantic error, in the words of our hand checks: ``test_weeks
    must be >= 1, got 0``; a validator's own message after the name of where it checked."""
    loc = _loc(err)
    kind = err["type"]
    if kind == "value_error":
        message = err["msg"].removeprefix("Value error, ")
        return loc, f"{name_of(loc)}: {message}" if loc else message
    if kind == "extra_forbidden":
        parent, owner = name_of(loc[:-1]), _section_at(cls, loc[:-1])
        allowed = "" if owner is None else "; allowed: " + ", ".join(
            sorted(f.alias or n for n, f in owner.model_fields.items()))
        return loc, f"{parent + ': ' if parent else ''}unknown key(s) {loc[-1]}{allowed}"
    name = name_of(loc) or "(top level)"
    phrase = _PHRASES.get(kind)
    if phrase is None:
        return loc, f"{name}: {err['msg']}"
    bounds = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in (err.get("ctx") or {}).items()}
    message = f"{name} {phrase.format(**bounds)}"
    if kind != "missing":
        message += f", got {err['input']!r}"
    if isinstance(err.get("input"), bool) and kind == "string_type":
        message += BOOLEAN_HINT
    return loc, message


def problems(exc: ValidationError, cls: type[BaseModel],
             name_of: Callable[[tuple], str] = _dotted) -> list[tuple[tuple, str]]:
    """Every problem pydantic found validating ``cls``: (key path, plain message); ``name_of``
    renders a key path in messages (default ``split.test_weeks``)."""
    return [_problem(err, cls, name_of) for err in exc.errors()]


def _plain(value):
    """YAML's lists as tuples and its dates as ISO text, all the way down: what the frozen,
    strictly typed sections hold."""
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


class Section(BaseModel):
    """A settings section: frozen, strictly typed (YAML's ``7`` is a whole number, ``"7"``, ``7.5``
    and ``yes`` are not), no unknown keys. Built from a YAML mapping by :func:`build` (errors
    name file, line and key) or in Python with keywords (errors are :attr:`error`, plain
    sentences naming the field). Checks beyond a type or bound are ``model_validator`` checks whose
    ``ValueError`` message names the field."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              arbitrary_types_allowed=True)
    error: ClassVar[type[Exception]] = ValueError

    @model_validator(mode="before")
    @classmethod
    def _yaml_values(cls, data):
        return {k: _plain(v) for k, v in data.items()} if isinstance(data, dict) else data

    def __init__(self, **values):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise self.error("; ".join(message for _, message in problems(exc, type(self)))) from None

    # Only a call in Python comes here: marked as pydantic marks its own __init__, model_validate
    # and nested sections validate directly, keeping each problem's location for build().
    __init__.__pydantic_base_init__ = True

    def replace(self, **changes):
        """A copy with ``changes``, checked as a new section is."""
        return type(self)(**{**dict(self), **changes})

    def as_dict(self) -> dict[str, Any]:
        """Plain values for a manifest (dataclass fields, such as a contract, as dicts)."""
        return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else
                v.as_dict() if isinstance(v, Section) else v for k, v in dict(self).items()}


def build(cls: type[T], mapping: Any, where: str, lines: dict[tuple, int] | None = None, at: tuple = (),
          name_of: Callable[[tuple], str] = _dotted) -> T:
    """Section ``cls`` from a YAML mapping. Errors are a :class:`ConfigError` naming ``where``
    (``"<file>: <section>"``), one line per problem and, given the file's :func:`yaml_lines` and
    the section's key path ``at``, the line of the key at fault (of the section when a problem
    names no key); ``name_of`` renders a key path in the messages."""

    def located(loc: tuple = ()) -> str:
        found = [(lines or {}).get((*at, *loc[:i])) for i in range(len(loc), -1, -1)]
        line = next((n for n in found if n is not None), None)
        if line is None:
            return where
        path, sep, section = where.partition(": ")
        return f"{path}:{line}{sep}{section}"

    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{located()}: expected a mapping, got {type(mapping).__name__}")
    try:
        return cls.model_validate(mapping)
    except ValidationError as exc:
        out = []
        for loc, message in problems(exc, cls, name_of):
            if not loc:  # a check of several keys: the line of the first key it names
                loc = next(((k,) for k in mapping if re.search(rf"\b{re.escape(str(k))}\b", message)), ())
            out.append(f"{located(loc)}: {message}")
        raise ConfigError("\n".join(out)) from None
