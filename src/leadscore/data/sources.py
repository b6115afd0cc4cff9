"""Source mappings: a CRM's own export mapped onto the data contract by a YAML file, no code.

A source YAML (``pipelines/sources/<name>.yaml``; reference in ``data/README.md``) says per
contract table where its rows are - files (CSV or Parquet, globs) or a DuckDB query over
files - and how to read them: column renames, constant columns, timestamp formats (day-first,
epoch, a time zone for naive values), value maps (the CRM's stage and activity names to the
contract's), custom lead attributes, activity kinds beyond the built-in vocabulary (and what
happens to undeclared ones), and an optional attribute history read as of any moment.

:func:`load_source` reads and checks the YAML (errors name the file, the line and the key);
the :class:`MappedSource` it returns offers what :class:`leadscore.contract.ContractDirectory`
offers - the tables as raw contract tables, timestamp formats, the :class:`Contract` - so
every stage validates a mapped export exactly like a data directory: nothing is dropped, a
row that breaks the contract is quarantined with the file and row it came from.
"""

from __future__ import annotations

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

from leadscore.config import ConfigError, load_yaml, pydantic_error, yaml_lines
from leadscore.contract import (
    ACTIVITY_TYPES,
    FIT_ATTRIBUTE_COLUMNS,
    HISTORY,
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
    """Where some of a table's rows are, and which export column is which contract column."""

    files: Annotated[list[str] | None, BeforeValidator(_listed)] = None
    query: str | None = None
    inputs: dict[str, str] = {}
    columns: dict[str, str] = {}
    constants: dict[str, str | float | int | None] = {}
    csv: CsvOptions = CsvOptions()

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


class Table(Part):
    """A table: one part inline (files or query) or several under ``parts``; how its values
    read (timestamps, value maps, missing-value markers) applies to all of them."""

    files: Annotated[list[str] | None, BeforeValidator(_listed)] = None
    parts: list[Part] | None = None
    timestamps: dict[str, Annotated[TimestampSpec, BeforeValidator(_timestamp)]] = {}
    values: dict[str, dict[str, str | None]] = {}
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
        if self.parts is not None:
            return list(self.parts)
        return [Part(files=self.files, query=self.query, inputs=self.inputs, columns=self.columns,
                     constants=self.constants, csv=self.csv)]


class AttributeDecl(_Strict):
    column: str | None = None
    kind: Literal["categorical", "numeric"] = "categorical"
    label: str = ""
    description: str = ""


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
    tables: Tables

    @model_validator(mode="after")
    def _contract(self):
        self.contract()  # names, kinds and history attributes must make a valid contract
        return self

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
        return Contract(attributes=attributes, activity_kinds=tuple(kinds), history_attributes=history)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

class MappedSource:
    """A CRM export read through a source YAML; see the module docstring.

    ``base``: the directory the YAML's file names are relative to (``--data``, else the
    YAML's own directory)."""

    def __init__(self, spec: SourceSpec, path: Path, base: Path):
        self.spec, self.path, self.base = spec, Path(path), Path(base)
        self.contract = spec.contract()
        self._notes: dict[str, str] = {}

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
        yielded = False
        for part in table.all_parts():
            for label, frame in self._read_part(name, part, batch_rows):
                yield self._map(name, table, part, frame, label)
                yielded = True
        if not yielded:
            yield self._empty(name)

    # -- one part -----------------------------------------------------------------------

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

    def _files(self, name: str, patterns: list[str]) -> list[Path]:
        found: list[Path] = []
        for pattern in patterns:
            full = pattern if Path(pattern).is_absolute() else str(self.base / pattern)
            matches = sorted(Path(p) for p in glob.glob(full))
            if not matches:
                raise ContractError(f"{name}: {pattern!r} matches no file in {self.base} ({self.path})")
            found += matches
        return found

    def _read_part(self, name: str, part: Part, batch_rows: int | None):
        """(label for messages, frame of export columns with SOURCE_ROW) per batch."""
        table = self.table(name)
        na = [""] + list(table.missing_values)
        if part.query is not None:
            yield from self._query(name, part, batch_rows, na)
            return
        for path in self._files(name, part.files):
            label = str(path.relative_to(self.base)) if path.is_relative_to(self.base) else str(path)
            offset = 0
            for frame in self._read_file(name, path, part.csv, batch_rows, na):
                frame[SOURCE_ROW] = range(offset, offset + len(frame))
                offset += len(frame)
                yield label, frame

    def _read_file(self, name: str, path: Path, csv: CsvOptions, batch_rows: int | None, na: list[str]):
        import pyarrow.parquet as pq

        try:
            if path.suffix.lower() == ".parquet":
                parquet = pq.ParquetFile(path)
                if parquet.metadata.num_rows == 0:
                    yield _frame_of(parquet.schema_arrow.empty_table())
                    return
                for batch in parquet.iter_batches(batch_size=batch_rows or 1_000_000):
                    frame = _frame_of(batch)
                    yield frame.mask(frame.astype("str").isin(na[1:]) & frame.notna()) if len(na) > 1 else frame
            else:
                options = {"dtype": str, "keep_default_na": False, "na_values": na, "sep": csv.delimiter,
                           "encoding": csv.encoding}
                if batch_rows is None:
                    yield pd.read_csv(path, **options)
                else:
                    yield from pd.read_csv(path, chunksize=batch_rows, **options)
        except ContractError:
            raise
        except Exception as exc:  # unreadable file, bad encoding, unparsable CSV
            raise ContractError(f"{name}: cannot read {path}: {exc}") from exc

    def _query(self, name: str, part: Part, batch_rows: int | None, na: list[str]):
        import duckdb

        con = duckdb.connect()
        try:
            for view, pattern in part.inputs.items():
                files = [str(p) for p in self._files(name, [pattern])]
                quoted = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
                if all(f.lower().endswith(".parquet") for f in files):
                    relation = f"read_parquet({quoted})"
                else:
                    delim = part.csv.delimiter.replace("'", "''")
                    relation = f"read_csv({quoted}, all_varchar = true, header = true, delim = '{delim}')"
                con.execute(f'CREATE VIEW "{view}" AS SELECT * FROM {relation}')
            try:
                reader = con.sql(part.query).to_arrow_reader(batch_size=batch_rows or 1_000_000)
            except duckdb.Error as exc:
                raise ContractError(f"{name}: the query in {self.path} failed: {exc}") from exc
            offset = 0
            for batch in reader:
                frame = _frame_of(batch)
                if len(na) > 1:
                    frame = frame.mask(frame.astype("str").isin(na[1:]) & frame.notna())
                frame[SOURCE_ROW] = range(offset, offset + len(frame))
                offset += len(frame)
                yield "query", frame
        finally:
            con.close()

    def _map(self, name: str, table: Table, part: Part, frame: pd.DataFrame, label: str) -> pd.DataFrame:
        """Export columns -> contract columns: renames, constants, value maps, unknown kinds."""
        renames = dict(part.columns)
        if name == "leads":
            renames.update({attr: col for attr, col in self._attribute_columns().items() if attr not in renames})
        missing = sorted({col for col in renames.values() if col not in frame.columns})
        if missing:
            found = ", ".join(c for c in frame.columns if c != SOURCE_ROW)
            raise ContractError(f"{name}: column(s) {', '.join(map(repr, missing))} named in {self.path} are not in "
                                f"{label} (found: {found})")
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
            for col in absent:
                mapped[col] = pd.Series(None, index=mapped.index, dtype="object")
        for col, mapping in table.values.items():
            if col in mapped.columns:
                mapped[col] = _apply_map(mapped[col], mapping)
        if name == "activities" and "activity_type" in mapped.columns:
            mapped["activity_type"] = self._unknown_kinds(table, mapped["activity_type"])
        mapped[SOURCE_FILE] = label
        mapped[SOURCE_ROW] = frame[SOURCE_ROW].to_numpy()
        return mapped.reset_index(drop=True)

    def _unknown_kinds(self, table: ActivitiesTable, kinds: pd.Series) -> pd.Series:
        known = set(self.contract.kinds)
        unknown = kinds.notna() & ~kinds.astype("str").isin(known)
        if not unknown.any():
            return kinds
        counts = Counter(kinds[unknown].astype("str"))
        self._counts = getattr(self, "_counts", Counter()) + counts
        names = ", ".join(f"{k} ({n:,})" for k, n in self._counts.most_common(8))
        if table.unknown_kinds == "other":
            self._note("other", f"activities: {sum(self._counts.values()):,} rows of kinds the source does not "
                                f"declare mapped to {OTHER_KIND}: {names}")
            return kinds.where(~unknown, OTHER_KIND)
        self._note("other", f"activities: {sum(self._counts.values()):,} rows of kinds the source does not declare "
                            f"are quarantined (unknown_kinds: quarantine): {names}")
        return kinds

    def _note(self, key: str, text: str) -> None:
        self._notes[key] = text


def _apply_map(values: pd.Series, mapping: dict[str, str | None]) -> pd.Series:
    """Exported values -> contract values; a value the map does not name is kept (the contract
    then says whether it is allowed); a value mapped to null becomes missing."""
    text = values.astype("object").where(values.isna(), values.astype("str"))
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
    try:
        spec = SourceSpec.model_validate(raw)
    except ValidationError as exc:
        raise pydantic_error(exc, path, yaml_lines(path)) from None
    _check_names(spec, path, yaml_lines(path))
    base = Path(data_dir) if data_dir is not None else path.parent
    if not base.is_dir():
        raise ConfigError(f"{path}: the data directory {base} does not exist")
    return MappedSource(spec, path, base)


def _check_names(spec: SourceSpec, path: Path, lines: dict[tuple, int]) -> None:
    """Column names in ``columns``, ``constants``, ``timestamps`` and ``values`` must be the
    contract's; value maps must map onto the contract's vocabularies."""
    contract = spec.contract()

    def fail(where: tuple, message: str):
        line = next((lines[where[:i]] for i in range(len(where), 0, -1) if where[:i] in lines), None)
        raise ConfigError(f"{path}" + (f":{line}" if line else "") + f": {'.'.join(map(str, where))}: {message}")

    for name in TABLE_NAMES:
        table = getattr(spec.tables, name)
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
        for col, ts in table.timestamps.items():
            if col not in [c.name for c in contract.columns(name) if c.kind == "timestamp"]:
                fail((*where, "timestamps", col), f"not a timestamp column of {name}")
        for col, mapping in table.values.items():
            if col not in columns:
                fail((*where, "values", col), f"not a column of the contract's {name} table")
            allowed = {"lifecycle": {"stage": STAGES}, "activities": {"activity_type": contract.kinds},
                       HISTORY: {"attribute": contract.history_attributes}}.get(name, {}).get(col)
            if allowed is not None:
                bad = sorted({v for v in mapping.values() if v is not None and v not in allowed})
                if bad:
                    fail((*where, "values", col), f"maps onto {', '.join(bad)}, not in the vocabulary "
                                                  f"({', '.join(allowed)}); declare activity kinds under kinds")
    if spec.tables.activities is not None:
        for kind in spec.tables.activities.kinds:
            if kind in ACTIVITY_TYPES:
                fail(("tables", "activities", "kinds", kind), "a built-in activity kind; map the export's name to "
                                                                "it under values.activity_type instead")
