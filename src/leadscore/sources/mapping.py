"""Source mappings: a CRM's own export mapped onto the data contract by a YAML file, no code.

A source YAML (``pipelines/sources/<name>.yaml``; reference in ``data/README.md``) says per
contract table where its rows are - files (CSV or Parquet, globs) or a DuckDB query over
files - and how to read them: column renames, constant columns, timestamp formats (day-first,
epoch, a time zone for naive values), value maps (the CRM's stage and activity names to the
contract's), custom lead attributes, activity kinds beyond the built-in vocabulary (and what
happens to undeclared ones), and an optional attribute history read as of any moment.

:func:`load_source` reads and checks the YAML (errors name the file, the line and the key);
the :class:`MappedSource` it returns offers what :class:`leadscore.data.contract.ContractDirectory`
offers - the tables as raw contract tables, timestamp formats, the :class:`Contract` - so
every stage validates a mapped export exactly like a data directory: nothing is dropped, a
row that breaks the contract is quarantined with the file and row it came from.
"""

from __future__ import annotations

import datetime
import glob
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from leadscore.data.contract import (
    ACTIVITY_TYPES,
    EARLIEST_PLAUSIBLE,
    FIT_ATTRIBUTE_COLUMNS,
    HISTORY,
    LABELLED_ATTRIBUTES,
    OTHER_KIND,
    SOURCE_FILE,
    SOURCE_ROW,
    STAGES,
    AttributeSpec,
    Contract,
    ContractError,
    KindSpec,
    TimestampFormat,
    _frame_of,
)
from leadscore.settings import ConfigError, load_yaml, pydantic_error, yaml_lines

TABLE_NAMES = ("leads", "activities", "lifecycle", HISTORY)
OPTIONAL_TABLES = ("activities", HISTORY)
OTHER_DESCRIPTION = "did something the source maps to no declared kind"


def _listed(value):
    return [value] if isinstance(value, str) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvOptions(_Strict):
    delimiter: str = ","
    encoding: str = "utf-8"


class TimestampSpec(_Strict):
    """``format``: iso8601, epoch_s, epoch_ms or strftime pattern(s) tried in order."""

    format: Annotated[list[str], BeforeValidator(_listed)] = ["iso8601"]
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _check(self):
        self.to_format()
        return self

    def to_format(self) -> TimestampFormat:
        return TimestampFormat(format=tuple(self.format) if len(self.format) > 1 else self.format[0],
                               timezone=self.timezone)


def _timestamp(value):
    return {"format": value} if isinstance(value, (str, list)) else value


class Part(_Strict):
    """Where some of a table's rows are, and which export column is which contract column.
    ``csv``: how its CSV files are written (default: the table's)."""

    files: Annotated[list[str] | None, BeforeValidator(_listed)] = None
    query: str | None = None
    inputs: dict[str, str] = {}
    columns: dict[str, str] = {}
    constants: dict[str, str | float | int | None] = {}
    csv: CsvOptions | None = None

    @model_validator(mode="after")
    def _one_origin(self):
        return _check_origin(self)


def _check_origin(part):
    if (part.files is None) == (part.query is None):
        raise ValueError("give either files (CSV or Parquet, globs allowed) or a query")
    if part.inputs and part.query is None:
        raise ValueError("inputs name the files a query reads; give a query too")
    if part.files is not None and not part.files:
        raise ValueError("files is empty")
    return part


def _text_keys(value):
    """YAML reads 1, 1.0 and yes as numbers and booleans; a value map's keys are export values as text."""
    if not isinstance(value, dict):
        return value
    return {col: ({_as_text(k): v for k, v in m.items()} if isinstance(m, dict) else m) for col, m in value.items()}


def _as_text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Table(Part):
    """A table: one part inline (files or query) or several under ``parts``; how its values
    read (timestamps, value maps, missing-value markers, CSV options) applies to all of them."""

    files: Annotated[list[str] | None, BeforeValidator(_listed)] = None
    parts: list[Part] | None = None
    timestamps: dict[str, Annotated[TimestampSpec, BeforeValidator(_timestamp)]] = {}
    values: Annotated[dict[str, dict[str, str | None]], BeforeValidator(_text_keys)] = {}
    missing_values: list[str] = []

    @model_validator(mode="after")
    def _one_origin(self):
        if self.parts is not None:
            if self.files is not None or self.query is not None or self.columns or self.constants or self.inputs:
                raise ValueError("give the table's rows either inline (files or query, columns, constants) or as "
                                 "parts, not both")
            if not self.parts:
                raise ValueError("parts is empty")
            return self
        return _check_origin(self)

    def all_parts(self) -> list[Part]:
        parts = self.parts if self.parts is not None else [
            Part(files=self.files, query=self.query, inputs=self.inputs, columns=self.columns,
                 constants=self.constants, csv=self.csv)]
        return [p if p.csv is not None else p.model_copy(update={"csv": self.csv or CsvOptions()}) for p in parts]


class AttributeDecl(_Strict):
    column: str | None = None
    kind: Literal["categorical", "numeric"] = "categorical"
    label: str = ""
    description: str = ""
    labels: dict[str, str] = {}  # code -> how explanations read it


class KindDecl(_Strict):
    description: str = ""
    hand_raiser: bool = False


def _kind(value):
    return {"description": value} if isinstance(value, str) else ({} if value is None else value)


class LeadsTable(Table):
    attributes: dict[str, AttributeDecl] = {}


class ActivitiesTable(Table):
    kinds: dict[str, Annotated[KindDecl, BeforeValidator(_kind)]] = {}
    unknown_kinds: Literal["quarantine", "other"] = "quarantine"


class HistoryTable(Table):
    attributes: list[str] = Field(min_length=1)


class Tables(_Strict):
    leads: LeadsTable
    lifecycle: Table
    activities: ActivitiesTable | None = None
    attribute_history: HistoryTable | None = None


class SourceSpec(_Strict):
    source: str
    description: str = ""
    earliest_date: datetime.date = datetime.date.fromisoformat(EARLIEST_PLAUSIBLE)  # earlier: quarantined
    value_labels: dict[str, dict[str, str]] = {}  # built-in attribute -> {code: how explanations read it}
    tables: Tables

    def contract(self) -> Contract:
        t = self.tables
        attributes = tuple(AttributeSpec(name, a.kind, a.label, a.description) for name, a in t.leads.attributes.items())
        kinds = []
        if t.activities is not None:
            kinds = [KindSpec(name, k.description, k.hand_raiser) for name, k in t.activities.kinds.items()]
            targets = {v for v in t.activities.values.get("activity_type", {}).values() if v is not None}
            if (t.activities.unknown_kinds == "other" or OTHER_KIND in targets) and OTHER_KIND not in t.activities.kinds:
                kinds.append(KindSpec(OTHER_KIND, OTHER_DESCRIPTION))
        history = tuple(t.attribute_history.attributes) if t.attribute_history is not None else ()
        labels = [(name, code, label) for name, codes in self.value_labels.items() for code, label in codes.items()]
        labels += [(name, code, label) for name, a in t.leads.attributes.items() for code, label in a.labels.items()]
        return Contract(attributes=attributes, activity_kinds=tuple(kinds), history_attributes=history,
                        earliest=self.earliest_date.isoformat(), value_labels=tuple(labels))


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

class MappedSource:
    """A CRM export read through a source YAML; see the module docstring.

    ``base``: the directory the YAML's file names are relative to (``--data``, else the
    YAML's own directory)."""

    def __init__(self, spec: SourceSpec, path: Path, base: Path, lines: dict[tuple, int] | None = None):
        self.spec, self.path, self.base = spec, Path(path), Path(base)
        self.contract = spec.contract()
        self.lines = lines or {}
        self._notes: dict[str, str] = {}
        self._unknown: Counter = Counter()

    def __repr__(self) -> str:
        return f"{self.path} (files in {self.base})"

    @property
    def name(self) -> str:
        return self.spec.source

    def table(self, name: str) -> Table | None:
        return getattr(self.spec.tables, name)

    def formats(self, name: str) -> dict[str, TimestampFormat]:
        table = self.table(name)
        return {} if table is None else {col: ts.to_format() for col, ts in table.timestamps.items()}

    def notes(self) -> list[str]:
        """What the mapping did that a user should know (read as missing, mapped to other, ...)."""
        return list(self._notes.values())

    def read(self, name: str) -> pd.DataFrame:
        return pd.concat(list(self.batches(name, None)) or [self._empty(name)], ignore_index=True)

    def batches(self, name: str, batch_rows: int | None):
        """The table as raw contract columns (cells as exported: text for CSV), in batches of
        at most ``batch_rows`` rows (None: one batch per file), with each row's file and row."""
        table = self.table(name)
        if table is None:
            if name not in OPTIONAL_TABLES:
                raise ContractError(f"{self.path}: tables.{name} is required")
            yield self._empty(name)
            return
        if name == "activities":
            self._unknown = Counter()  # counted afresh on every read
        yielded = False
        parts = table.all_parts()
        for i, part in enumerate(parts):
            where = ("tables", name, "parts", i) if table.parts is not None else ("tables", name)
            for label, frame in self._read_part(name, part, batch_rows, where, i if len(parts) > 1 else None):
                yield self._map(name, table, part, frame, label, where)
                yielded = True
        if not yielded:
            yield self._empty(name)

    # -- one part -----------------------------------------------------------------------

    def _at(self, where: tuple) -> str:
        """``FILE:LINE: key.path`` of a place in the YAML, for messages."""
        line = next((self.lines[where[:i]] for i in range(len(where), 0, -1) if where[:i] in self.lines), None)
        return f"{self.path}" + (f":{line}" if line else "") + f": {'.'.join(map(str, where))}"

    def _wanted(self, name: str) -> list[str]:
        cols = [c.name for c in self.contract.columns(name)]
        if name == "leads":  # attributes the history gives as of any moment are not read from leads
            cols = [c for c in cols if c not in self.contract.history_attributes]
        return cols

    def _attribute_columns(self) -> dict[str, str]:
        """contract attribute -> export column, for the declared attributes the leads export
        gives (not those read from the attribute history)."""
        return {n: a.column or n for n, a in self.spec.tables.leads.attributes.items()
                if n not in self.contract.history_attributes}

    def _empty(self, name: str) -> pd.DataFrame:
        return pd.DataFrame({c.name: pd.Series(dtype="str") for c in self.contract.columns(name) if c.required}
                            | {SOURCE_FILE: pd.Series(dtype="str"), SOURCE_ROW: pd.Series(dtype="int64")})

    def _files(self, name: str, patterns: list[str], where: tuple) -> list[Path]:
        found: list[Path] = []
        for pattern in patterns:
            full = Path(pattern) if Path(pattern).is_absolute() else self.base / pattern
            # a name that exists is that file, even if it holds glob characters such as [
            matches = [full] if full.is_file() else sorted(Path(p) for p in glob.glob(str(full)))
            if not matches:
                raise ContractError(f"{name}: {pattern!r} matches no file in {self.base} ({self._at(where)}); "
                                    "file names are relative to --data, else to the source YAML's directory")
            found += [m for m in matches if m not in found]  # a file two patterns match is read once
        return found

    def _label(self, path: Path) -> str:
        return str(path.relative_to(self.base)) if path.is_relative_to(self.base) else str(path)

    def _read_part(self, name: str, part: Part, batch_rows: int | None, where: tuple, index: int | None):
        """(label for messages, frame of export columns with SOURCE_ROW) per batch."""
        table = self.table(name)
        na = ["", *table.missing_values]
        if part.query is not None:
            label = "query" if index is None else f"query of part {index + 1}"
            yield from self._query(name, part, batch_rows, na, label, where)
            return
        for path in self._files(name, part.files, (*where, "files")):
            offset = 0
            for frame in self._read_file(name, path, part.csv, batch_rows, na):
                frame[SOURCE_ROW] = range(offset, offset + len(frame))
                offset += len(frame)
                yield self._label(path), frame

    def _read_file(self, name: str, path: Path, csv: CsvOptions, batch_rows: int | None, na: list[str]):
        import pyarrow.parquet as pq

        try:
            if path.suffix.lower() == ".parquet":
                parquet = pq.ParquetFile(path)
                if parquet.metadata.num_rows == 0:
                    yield _frame_of(parquet.schema_arrow.empty_table())
                    return
                for batch in parquet.iter_batches(batch_size=batch_rows or 1_000_000):
                    yield _as_missing(_frame_of(batch), na)
            else:
                options = {"dtype": str, "keep_default_na": False, "na_values": na, "sep": csv.delimiter,
                           "encoding": csv.encoding}
                if batch_rows is None:
                    yield pd.read_csv(path, **options)
                else:
                    yield from pd.read_csv(path, chunksize=batch_rows, **options)
        except ContractError:
            raise
        except UnicodeDecodeError as exc:
            raise ContractError(f"{name}: cannot read {path}: not {csv.encoding} text ({exc.reason} at byte "
                                f"{exc.start}); set the file's encoding, e.g. csv: {{encoding: latin-1}}") from exc
        except Exception as exc:  # unreadable file, unparsable CSV
            raise ContractError(f"{name}: cannot read {path}: {exc}") from exc

    def _query(self, name: str, part: Part, batch_rows: int | None, na: list[str], label: str, where: tuple):
        import duckdb

        con = duckdb.connect()
        view = None
        try:
            for view, pattern in part.inputs.items():
                files = [str(p) for p in self._files(name, [pattern], (*where, "inputs", view))]
                parquet = [f.lower().endswith(".parquet") for f in files]
                if any(parquet) and not all(parquet):
                    raise ContractError(f"{name}: inputs.{view} ({pattern!r}) matches both Parquet and CSV files "
                                        f"({self._at((*where, 'inputs', view))}); give each its own input")
                quoted = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
                if all(parquet):
                    relation = f"read_parquet({quoted})"
                else:
                    delim = part.csv.delimiter.replace("'", "''")
                    encoding = part.csv.encoding.replace("'", "''")
                    relation = (f"read_csv({quoted}, all_varchar = true, header = true, delim = '{delim}', "
                                f"encoding = '{encoding}')")
                con.execute(f'CREATE VIEW "{view}" AS SELECT * FROM {relation}')
            view = None
            offset = 0
            for batch in con.sql(part.query).to_arrow_reader(batch_size=batch_rows or 1_000_000):
                frame = _as_missing(_frame_of(batch), na)
                frame[SOURCE_ROW] = range(offset, offset + len(frame))
                offset += len(frame)
                yield label, frame
        except ContractError:
            raise
        except (duckdb.Error, OSError, ValueError) as exc:  # bad SQL, unreadable input, a failed cast
            what = f"reading inputs.{view}" if view else "the query"
            raise ContractError(f"{name}: {what} failed ({self._at((*where, 'inputs', view) if view else (*where, 'query'))}): "
                                f"{str(exc).strip().splitlines()[0]}") from exc
        finally:
            con.close()

    def _map(self, name: str, table: Table, part: Part, frame: pd.DataFrame, label: str, where: tuple) -> pd.DataFrame:
        """Export columns -> contract columns: renames, constants, value maps, unknown kinds."""
        renames = dict(part.columns)
        if name == "leads":
            renames.update({attr: col for attr, col in self._attribute_columns().items() if attr not in renames})
        missing = {contract_col: col for contract_col, col in renames.items() if col not in frame.columns}
        if missing:
            contract_col, col = next(iter(missing.items()))
            key = (*where, "columns", contract_col) if contract_col in part.columns else \
                ("tables", "leads", "attributes", contract_col)
            found = [c for c in frame.columns if c != SOURCE_ROW]
            hint = ""
            if len(found) == 1 and any(sep in found[0] for sep in ";\t|,"):
                hint = " - is the file's delimiter something else? set csv: {delimiter: ...}"
            raise ContractError(f"{name}: column(s) {', '.join(repr(c) for c in missing.values())} named in "
                                f"{self._at(key)} are not in {label} (found: {', '.join(repr(c) for c in found)})"
                                + hint)
        wanted = self._wanted(name)
        out = {}
        for col in wanted:
            if col in part.constants:
                value = part.constants[col]
                out[col] = pd.Series([None if value is None else str(value)] * len(frame), index=frame.index,
                                     dtype="object")
            elif col in renames:
                out[col] = frame[renames[col]]
            elif col in frame.columns and col not in renames.values():
                out[col] = frame[col]
        mapped = pd.DataFrame(out, index=frame.index)
        used = set(renames.values()) | {c for c in wanted if c in frame.columns}
        ignored = [c for c in frame.columns if c not in used and c != SOURCE_ROW]
        if ignored:
            self._note(f"ignored:{name}:{label}", f"{name}: {label}: column(s) not mapped, not read: "
                       + ", ".join(ignored[:12]) + (f" and {len(ignored) - 12} more" if len(ignored) > 12 else ""))
        if name == "leads":
            absent = [c for c in FIT_ATTRIBUTE_COLUMNS if c not in mapped.columns and c not in
                      self.contract.history_attributes]
            if absent:
                self._note("absent:leads", f"leads: the export gives no {', '.join(absent)}: read as missing")
            for col in FIT_ATTRIBUTE_COLUMNS:  # attributes read from the history: today's value is not read
                if col not in mapped.columns:
                    mapped[col] = pd.Series(None, index=mapped.index, dtype="object")
        for col, mapping in table.values.items():
            if col in mapped.columns:
                mapped[col] = _apply_map(mapped[col], mapping)
        if name == HISTORY:
            mapped = self._history_values(mapped)
        if name == "activities" and "activity_type" in mapped.columns:
            mapped["activity_type"] = self._unknown_kinds(table, mapped["activity_type"])
        mapped[SOURCE_FILE] = label
        mapped[SOURCE_ROW] = frame[SOURCE_ROW].to_numpy()
        return mapped.reset_index(drop=True)

    def _history_values(self, mapped: pd.DataFrame) -> pd.DataFrame:
        """History values of an attribute read like the leads table reads it: its value map
        (the CRM's seniority names, say) applies to them too."""
        leads_maps = self.spec.tables.leads.values
        if "attribute" not in mapped or "value" not in mapped:
            return mapped
        for attribute in self.contract.history_attributes:
            if attribute in leads_maps:
                rows = (mapped["attribute"] == attribute).to_numpy()
                mapped.loc[rows, "value"] = _apply_map(mapped.loc[rows, "value"], leads_maps[attribute])
        return mapped

    def _unknown_kinds(self, table: ActivitiesTable, kinds: pd.Series) -> pd.Series:
        known = set(self.contract.kinds)
        unknown = kinds.notna() & ~kinds.astype("str").isin(known)
        if not unknown.any():
            return kinds
        self._unknown.update(kinds[unknown].astype("str"))
        names = ", ".join(f"{k} ({n:,})" for k, n in self._unknown.most_common(8))
        if table.unknown_kinds == "other":
            self._note("other", f"activities: {sum(self._unknown.values()):,} rows of kinds the source does not "
                                f"declare mapped to {OTHER_KIND}: {names}")
            return kinds.where(~unknown, OTHER_KIND)
        self._note("other", f"activities: {sum(self._unknown.values()):,} rows of kinds the source does not declare "
                            f"are quarantined (unknown_kinds: quarantine): {names}")
        return kinds

    def _note(self, key: str, text: str) -> None:
        self._notes[key] = text


def _as_missing(frame: pd.DataFrame, na: list[str]) -> pd.DataFrame:
    """Text cells that mean "empty" (an empty string, the table's missing_values) as missing, in
    typed inputs (Parquet, query results) as CSV reading does."""
    text = [c for c in frame.columns if pd.api.types.is_object_dtype(frame[c]) or pd.api.types.is_string_dtype(frame[c])]
    for col in text:
        frame[col] = frame[col].mask(frame[col].isin(na))
    return frame


def _apply_map(values: pd.Series, mapping: dict[str, str | None]) -> pd.Series:
    """Exported values -> contract values; a value the map does not name is kept (the contract
    then says whether it is allowed); a value mapped to null becomes missing. Numbers and
    booleans are matched by their text (1.0 as "1", True as "true")."""
    text = values.map(_as_text, na_action="ignore")
    hit = text.isin(list(mapping))
    out = values.astype("object").copy()
    out[hit] = text[hit].map(mapping)
    return out


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

def load_source(path: Path | str, data_dir: Path | str | None = None) -> MappedSource:
    """Read and check a source YAML; file names in it are relative to ``data_dir`` if given,
    else to the YAML's own directory. Errors name the file, the line and the key."""
    path = Path(path)
    raw = load_yaml(path)
    lines = yaml_lines(path)
    try:
        spec = SourceSpec.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_error(exc, path, lines) from None
    _check_names(spec, path, lines)
    base = Path(data_dir) if data_dir is not None else path.parent
    if not base.is_dir():
        raise ConfigError(f"{path}: the data directory {base} does not exist")
    return MappedSource(spec, path, base, lines)


# What a value map may map a column onto, per table.
def _vocabularies(contract: Contract) -> dict[str, dict[str, tuple]]:
    from leadscore.data.contract import (
        DEPARTMENTS,
        EMAIL_DOMAIN_TYPES,
        SENIORITY_LEVELS,
    )

    return {"lifecycle": {"stage": tuple(STAGES)}, "activities": {"activity_type": tuple(contract.kinds)},
            HISTORY: {"attribute": contract.history_attributes},
            "leads": {"seniority": SENIORITY_LEVELS, "department": DEPARTMENTS,
                      "email_domain_type": EMAIL_DOMAIN_TYPES}}


VOCABULARY_HINTS = {
    "stage": "the lifecycle stages are fixed; map each CRM stage onto one of them (or to null)",
    "activity_type": "declare a kind of your own under tables.activities.kinds",
    "attribute": "list the attribute under tables.attribute_history.attributes (and declare it under "
                 "tables.leads.attributes if it is not built in)",
}


def _check_names(spec: SourceSpec, path: Path, lines: dict[tuple, int]) -> None:
    """Declared names must make a valid contract and features (no clash with the built-in
    ones); column names in ``columns``, ``constants``, ``timestamps`` and ``values`` must be the
    contract's; value maps must map onto the contract's vocabularies."""
    def fail(where: tuple, message: str):
        line = next((lines[where[:i]] for i in range(len(where), 0, -1) if where[:i] in lines), None)
        raise ConfigError(f"{path}" + (f":{line}" if line else "") + f": {'.'.join(map(str, where))}: {message}")

    t = spec.tables
    for name, decl in t.leads.attributes.items():
        try:
            AttributeSpec(name, decl.kind, decl.label, decl.description)
        except ValueError as exc:
            fail(("tables", "leads", "attributes", name), str(exc))
    if t.activities is not None:
        for kind, decl in t.activities.kinds.items():
            if kind in ACTIVITY_TYPES:
                fail(("tables", "activities", "kinds", kind), "a built-in activity kind; map the export's name to it "
                                                                "under values.activity_type instead")
            try:
                KindSpec(kind, decl.description, decl.hand_raiser)
            except ValueError as exc:
                fail(("tables", "activities", "kinds", kind), str(exc))
    for name in spec.value_labels:
        if name not in LABELLED_ATTRIBUTES:
            declared = t.leads.attributes.get(name)
            hint = (f"label a declared attribute's codes under tables.leads.attributes.{name}.labels"
                    if declared is not None else f"labelled attributes: {', '.join(LABELLED_ATTRIBUTES)}")
            fail(("value_labels", name), f"not a built-in categorical attribute; {hint}")
    for name, decl in t.leads.attributes.items():
        if decl.labels and decl.kind != "categorical":
            fail(("tables", "leads", "attributes", name, "labels"), "only a categorical attribute has codes to label")
    try:
        contract = spec.contract()
    except ValueError as exc:
        fail(("tables", "attribute_history", "attributes") if "history" in str(exc) else ("tables", "leads", "attributes"),
             str(exc))
    from leadscore.features.builder import FeatureConfig

    try:  # declared names must not collide with the features' own
        FeatureConfig(contract=contract)
    except ValueError as exc:
        fail(("tables",), str(exc))
    vocabularies = _vocabularies(contract)
    for name in TABLE_NAMES:
        table = getattr(t, name)
        if table is None:
            continue
        columns = [c.name for c in contract.columns(name)]
        where = ("tables", name)
        for i, part in enumerate(table.all_parts()):
            at = (*where, "parts", i) if table.parts is not None else where
            for key in ("columns", "constants"):
                for col in getattr(part, key):
                    if col not in columns:
                        fail((*at, key, col), f"not a column of the contract's {name} table; columns: "
                                              f"{', '.join(columns)}")
        for col in table.timestamps:
            if col not in [c.name for c in contract.columns(name) if c.kind == "timestamp"]:
                fail((*where, "timestamps", col), f"not a timestamp column of {name}")
        for col, mapping in table.values.items():
            if col not in columns:
                fail((*where, "values", col), f"not a column of the contract's {name} table")
            allowed = vocabularies.get(name, {}).get(col)
            if allowed is not None:
                bad = sorted({v for v in mapping.values() if v is not None and v not in allowed})
                if bad:
                    hint = VOCABULARY_HINTS.get(col, "")
                    fail((*where, "values", col), f"maps onto {', '.join(bad)}, not in the vocabulary "
                                                  f"({', '.join(allowed)})" + (f"; {hint}" if hint else ""))
