"""The bad-input suite: every class of hostile input the contract, the source mappings and the
flat exports meet, each with the outcome it must have - quarantined with a reason naming the
column and the rule (rows in = clean + quarantined for every table, the bad row among the
quarantined, an untouched row clean), or a clear error naming the file and/or column, never a
traceback. One parametrized case per class; cases marked xfail(strict) are known bugs."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.cli.app import EXIT_UNUSABLE, app
from leadscore.data import contract
from leadscore.data.contract import HISTORY, Contract, ContractError, validate_tables
from leadscore.settings import ConfigError
from leadscore.sources.mapping import load_source
from leadscore.training.flat import load_config, load_flat

from .conftest import runner, ts

NOW = ts("2026-01-01")
HISTORY_CONTRACT = Contract(history_attributes=("seniority", "company_size"))


# ---------------------------------------------------------------------------
# Corruptions of the `tables` fixture (leads A B C; activities A A B C; lifecycle A A B)
# ---------------------------------------------------------------------------

def cell(table: str, row: int, column: str, value) -> Callable[[dict], None]:
    """One cell set to ``value`` (the column becomes object, so any value fits)."""
    def corrupt(t):
        frame = t[table].astype({column: object})
        frame.loc[row, column] = value
        t[table] = frame
    return corrupt


def column(table: str, name: str, values) -> Callable[[dict], None]:
    def corrupt(t):
        t[table] = t[table].assign(**{name: values})
    return corrupt


def append(table: str, **row) -> Callable[[dict], None]:
    def corrupt(t):
        t[table] = pd.concat([t[table], pd.DataFrame([row])], ignore_index=True)
    return corrupt


def both(*corruptions) -> Callable[[dict], None]:
    def corrupt(t):
        for c in corruptions:
            c(t)
    return corrupt


def append_line(name: str, line: str) -> Callable[[Path], None]:
    def edit(data: Path):
        with open(data / f"{name}.csv", "a") as f:
            f.write(line + "\n")
    return edit


def history() -> pd.DataFrame:
    return pd.DataFrame({
        "lead_id": ["A", "A", "B", "C"],
        "attribute": ["seniority", "company_size", "company_size", "seniority"],
        "value": ["vp", "250", "40", "student"],
        "valid_from": [ts("2025-01-02"), ts("2025-01-02"), ts("2025-01-06"), ts("2025-02-02")],
    })


def write_tables(t: dict, data: Path, store: str) -> Path:
    data.mkdir(parents=True, exist_ok=True)
    for name, frame in t.items():
        if store == "csv":
            frame.to_csv(data / f"{name}.csv", index=False)
        else:
            frame.to_parquet(data / f"{name}.parquet")
    return data


@dataclass(frozen=True)
class Bad:
    """A corruption and where its rows must land: every (table, column, rule, row) of ``bad``
    quarantined with that reason; ``good`` (table, row), untouched by it, stays clean."""

    corrupt: Callable[[dict], None]
    bad: tuple[tuple[str, str, str, int], ...]
    good: tuple[str, int] | None
    store: str = "frame"  # frame: validate_tables on the frames; csv / parquet: a data directory on disk
    edit: Callable[[Path], None] | None = None  # after writing the files: edit them
    history: bool = False  # with an attribute_history table (HISTORY_CONTRACT)


def case(id: str, corrupt, bad, good, marks=(), **kw):
    return pytest.param(Bad(corrupt, tuple(bad), good, **kw), id=id, marks=marks)


NFC, NFD = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")

QUARANTINE = [
    # --- leads --------------------------------------------------------------------------
    case("leads-duplicate-lead_id", cell("leads", 2, "lead_id", "B"),
         [("leads", "lead_id", "unique", 1), ("leads", "lead_id", "unique", 2),
          ("activities", "lead_id", "lead_quarantined", 2), ("lifecycle", "lead_id", "lead_quarantined", 2)],
         ("leads", 0)),
    case("leads-lead_id-missing", cell("leads", 1, "lead_id", None),
         [("leads", "lead_id", "required", 1), ("activities", "lead_id", "known_lead", 2)], ("leads", 0)),
    case("leads-lead_id-empty-string-parquet",
         both(cell("leads", 1, "lead_id", ""), cell("activities", 2, "lead_id", "")),
         [("leads", "lead_id", "required", 1), ("activities", "lead_id", "required", 2)], ("leads", 0),
         store="parquet"),
    case("leads-created_at-missing", cell("leads", 1, "created_at", None),
         [("leads", "created_at", "required", 1), ("activities", "lead_id", "lead_quarantined", 2)], ("activities", 0)),
    case("leads-created_at-unparseable", cell("leads", 1, "created_at", "next tuesday"),
         [("leads", "created_at", "type", 1), ("lifecycle", "lead_id", "lead_quarantined", 2)], ("leads", 0)),
    case("leads-created_at-bad-utc-offset", cell("leads", 1, "created_at", "2025-01-05T00:00:00+25:00"),
         [("leads", "created_at", "type", 1)], ("leads", 0)),
    case("leads-created_at-integers-parquet", column("leads", "created_at", [1735689600, 1736035200, 1738368000]),
         [("leads", "created_at", "type", r) for r in range(3)] + [("activities", "lead_id", "lead_quarantined", 0)],
         None, store="parquet"),
    case("leads-created_at-in-future", cell("leads", 1, "created_at", ts("2026-06-01")),
         [("leads", "created_at", "not_in_future", 1)], ("leads", 0)),
    case("leads-seniority-unknown", cell("leads", 0, "seniority", "intern"),
         [("leads", "seniority", "vocabulary", 0), ("activities", "lead_id", "lead_quarantined", 0)], ("leads", 1)),
    case("leads-department-unknown", cell("leads", 0, "department", "legal"),
         [("leads", "department", "vocabulary", 0)], ("leads", 1)),
    case("leads-email_domain_type-unknown", cell("leads", 0, "email_domain_type", "gmail"),
         [("leads", "email_domain_type", "vocabulary", 0)], ("leads", 1)),
    case("leads-company_size-zero", cell("leads", 1, "company_size", 0),
         [("leads", "company_size", "positive", 1)], ("leads", 0)),
    case("leads-company_size-negative", cell("leads", 1, "company_size", -3),
         [("leads", "company_size", "positive", 1)], ("leads", 0)),
    case("leads-company_size-text", cell("leads", 1, "company_size", "12a"),
         [("leads", "company_size", "type", 1)], ("leads", 0)),
    case("leads-company_size-fraction", cell("leads", 1, "company_size", 1.5),
         [("leads", "company_size", "type", 1)], ("leads", 0)),
    case("leads-company_size-nan-text", cell("leads", 1, "company_size", "NaN"),
         [("leads", "company_size", "type", 1)], ("leads", 0)),
    case("leads-company_size-infinite", cell("leads", 1, "company_size", float("inf")),
         [("leads", "company_size", "type", 1)], ("leads", 0)),
    case("leads-company_size-beyond-64-bits-csv", cell("leads", 1, "company_size", "99999999999999999999"),
         [("leads", "company_size", "type", 1)], ("leads", 0), store="csv"),
    case("leads-company_size-2^63-csv", column("leads", "company_size", ["250", "9223372036854775808", "3"]),
         [("leads", "company_size", "type", 1)], ("leads", 0), store="csv"),
    case("leads-company_size-1e30-parquet", column("leads", "company_size", [250.0, 1e30, np.nan]),
         [("leads", "company_size", "type", 1)], ("leads", 0), store="parquet"),
    # the lead "B " is clean, but "B"'s rows refer to no lead
    case("leads-lead_id-trailing-space", cell("leads", 1, "lead_id", "B "),
         [("activities", "lead_id", "known_lead", 2), ("lifecycle", "lead_id", "known_lead", 2)], ("leads", 1)),
    # NFC and NFD spellings of one name are different ids: the NFD activity refers to no lead
    case("leads-lead_id-nfc-vs-nfd", both(cell("leads", 1, "lead_id", NFC), cell("activities", 2, "lead_id", NFD),
                                          cell("lifecycle", 2, "lead_id", NFC)),
         [("activities", "lead_id", "known_lead", 2)], ("lifecycle", 2)),
    # --- activities ---------------------------------------------------------------------
    case("activities-lead_id-unknown", cell("activities", 1, "lead_id", "ZZZ"),
         [("activities", "lead_id", "known_lead", 1)], ("activities", 0)),
    case("activities-lead-quarantined", cell("leads", 2, "seniority", "intern"),
         [("leads", "seniority", "vocabulary", 2), ("activities", "lead_id", "lead_quarantined", 3)],
         ("activities", 2)),
    case("activities-activity_type-unknown", cell("activities", 0, "activity_type", "page_view_prcing"),
         [("activities", "activity_type", "vocabulary", 0)], ("activities", 1)),
    case("activities-activity_type-wrong-case", cell("activities", 2, "activity_type", "Email_Open"),
         [("activities", "activity_type", "vocabulary", 2)], ("activities", 0)),
    case("activities-activity_type-empty-string", cell("activities", 2, "activity_type", ""),
         [("activities", "activity_type", "required", 2)], ("activities", 0)),  # empty is missing, as in a CSV
    case("activities-activity_type-empty-cell-csv", cell("activities", 2, "activity_type", ""),
         [("activities", "activity_type", "required", 2)], ("activities", 0), store="csv"),
    case("activities-occurred_at-before-lead-created", cell("activities", 3, "occurred_at", ts("2025-01-31")),
         [("activities", "occurred_at", "after_lead_created", 3)], ("activities", 2)),
    case("activities-occurred_at-in-future", cell("activities", 2, "occurred_at", ts("2026-03-01")),
         [("activities", "occurred_at", "not_in_future", 2)], ("activities", 0)),
    case("activities-occurred_at-missing", cell("activities", 2, "occurred_at", None),
         [("activities", "occurred_at", "required", 2)], ("activities", 0)),
    case("activities-occurred_at-unparseable", cell("activities", 1, "occurred_at", "yesterday"),
         [("activities", "occurred_at", "type", 1)], ("activities", 0)),
    case("activities-csv-row-too-few-fields", lambda t: None,
         [("activities", "activity_type", "required", 4)], ("activities", 0), store="csv",
         edit=append_line("activities", "A,2025-01-04T00:00:00Z")),
    # --- lifecycle ----------------------------------------------------------------------
    case("lifecycle-stage-unknown", cell("lifecycle", 0, "stage", "marketing_qualified"),
         [("lifecycle", "stage", "vocabulary", 0)], ("lifecycle", 1)),
    case("lifecycle-stage-missing", cell("lifecycle", 2, "stage", None),
         [("lifecycle", "stage", "required", 2)], ("lifecycle", 0)),
    case("lifecycle-amount-negative", cell("lifecycle", 1, "amount", -5.0),
         [("lifecycle", "amount", "non_negative", 1)], ("lifecycle", 0)),
    case("lifecycle-amount-text", cell("lifecycle", 1, "amount", "ten"),
         [("lifecycle", "amount", "type", 1)], ("lifecycle", 0)),
    case("lifecycle-amount-infinite", cell("lifecycle", 1, "amount", float("inf")),
         [("lifecycle", "amount", "type", 1)], ("lifecycle", 0)),
    case("lifecycle-occurred_at-before-lead-created", cell("lifecycle", 2, "occurred_at", ts("2025-01-04")),
         [("lifecycle", "occurred_at", "after_lead_created", 2)], ("lifecycle", 0)),
    case("lifecycle-occurred_at-in-future", cell("lifecycle", 2, "occurred_at", ts("2026-06-01")),
         [("lifecycle", "occurred_at", "not_in_future", 2)], ("lifecycle", 0)),
    case("lifecycle-lead_id-unknown", cell("lifecycle", 2, "lead_id", "Q"),
         [("lifecycle", "lead_id", "known_lead", 2)], ("lifecycle", 0)),
    case("lifecycle-lead_id-missing", cell("lifecycle", 2, "lead_id", None),
         [("lifecycle", "lead_id", "required", 2)], ("lifecycle", 0)),
    # --- implausible dates and stage order ---------------------------------------------
    case("leads-created_at-placeholder-0001-01-01", cell("leads", 1, "created_at", "0001-01-01"),
         [("leads", "created_at", "plausible_date", 1), ("activities", "lead_id", "lead_quarantined", 2),
          ("lifecycle", "lead_id", "lead_quarantined", 2)], ("leads", 0)),
    case("leads-created_at-excel-1900-csv", cell("leads", 2, "created_at", "1900-01-01"),
         [("leads", "created_at", "plausible_date", 2), ("activities", "lead_id", "lead_quarantined", 3)],
         ("leads", 0), store="csv"),
    case("activities-occurred_at-epoch-zero", cell("activities", 3, "occurred_at", ts("1970-01-01")),
         [("activities", "occurred_at", "plausible_date", 3), ("activities", "occurred_at", "after_lead_created", 3)],
         ("activities", 2)),
    case("lifecycle-won-before-sql",
         append("lifecycle", lead_id="A", stage="won", occurred_at=ts("2025-01-05"), amount=1000.0),
         [("lifecycle", "occurred_at", "stage_order", 3)], ("lifecycle", 1)),
    case("lifecycle-opportunity-before-sql",
         append("lifecycle", lead_id="A", stage="opportunity", occurred_at=ts("2025-01-09"), amount=500.0),
         [("lifecycle", "occurred_at", "stage_order", 3)], ("lifecycle", 1)),
    # --- attribute_history (a contract that reads seniority and company_size as of T) ---
    case("history-two-values-one-moment",
         append(HISTORY, lead_id="A", attribute="seniority", value="manager", valid_from=ts("2025-01-02")),
         [(HISTORY, "valid_from", "unique_change", 0), (HISTORY, "valid_from", "unique_change", 4)], (HISTORY, 2),
         history=True),
    case("history-numeric-value-not-a-number", cell(HISTORY, 1, "value", "many"),
         [(HISTORY, "value", "type", 1)], (HISTORY, 0), history=True),
    case("history-company_size-below-one", cell(HISTORY, 2, "value", "0"),
         [(HISTORY, "value", "positive", 2)], (HISTORY, 0), history=True),
    case("history-value-vocabulary", cell(HISTORY, 3, "value", "janitor"),
         [(HISTORY, "value", "vocabulary", 3)], (HISTORY, 0), history=True),
    case("history-attribute-undeclared", cell(HISTORY, 3, "attribute", "plan"),
         [(HISTORY, "attribute", "vocabulary", 3)], (HISTORY, 0), history=True),
    case("history-lead_id-unknown", cell(HISTORY, 2, "lead_id", "Z"),
         [(HISTORY, "lead_id", "known_lead", 2)], (HISTORY, 0), history=True),
    case("history-valid_from-missing", cell(HISTORY, 2, "valid_from", None),
         [(HISTORY, "valid_from", "required", 2)], (HISTORY, 0), history=True),
    case("history-lead-quarantined", cell("leads", 2, "seniority", "intern"),
         [(HISTORY, "lead_id", "lead_quarantined", 3)], (HISTORY, 0), history=True),
]
CASES = {p.id: p.values[0] for p in QUARANTINE}


def _report(tables: dict, case: Bad, tmp_path: Path) -> contract.ValidationReport:
    if case.history:
        tables[HISTORY] = history()
    case.corrupt(tables)
    if case.store == "frame":
        return validate_tables(tables, now=NOW, contract=HISTORY_CONTRACT if case.history else None)
    data = write_tables(tables, tmp_path / "data", case.store)
    if case.edit:
        case.edit(data)
    return contract.validate_dir(data, now=NOW)


def _rows_in(tables: dict, case: Bad, tmp_path: Path) -> dict[str, int]:
    if case.store == "csv":  # as written (an edit may have added lines)
        return {name: len(pd.read_csv(tmp_path / "data" / f"{name}.csv", dtype=str)) for name in tables}
    return {name: len(frame) for name, frame in tables.items()}


@pytest.mark.parametrize("case", QUARANTINE)
def test_bad_rows_are_quarantined_with_column_and_rule(tables, tmp_path, case):
    report = _report(tables, case, tmp_path)
    rows_in = _rows_in(tables, case, tmp_path)
    counts = report.counts()
    clean, quarantined = report.split()
    assert set(counts) == set(rows_in)
    for name, n in rows_in.items():  # nothing lost, nothing made up
        assert counts[name]["rows_in"] == n == counts[name]["clean"] + counts[name]["quarantined"], counts
        assert (len(clean[name]), len(quarantined[name])) == (counts[name]["clean"], counts[name]["quarantined"])
    lines = report.lines()
    for table, col, rule, row in case.bad:
        assert any(line.startswith(f"{table}.{col} [{rule}]") for line in lines), lines
        reasons = quarantined[table].set_index("source_row")["quarantine_reason"]
        assert row in reasons.index, (table, row, lines)
        assert f"{col}: " in reasons[row] and f"[{rule}]" in reasons[row], reasons[row]
    if case.good is not None:
        table, row = case.good
        assert row not in report.failing_rows(table), lines


STAGED = ["leads-duplicate-lead_id", "leads-created_at-unparseable", "leads-seniority-unknown",
          "leads-company_size-text", "leads-lead_id-trailing-space", "activities-lead_id-unknown",
          "activities-lead-quarantined",
          "activities-activity_type-unknown", "activities-occurred_at-before-lead-created",
          "activities-occurred_at-in-future", "activities-occurred_at-missing", "activities-occurred_at-unparseable",
          "activities-csv-row-too-few-fields", "lifecycle-stage-unknown"]


@pytest.mark.parametrize("name", STAGED)
def test_batched_staging_quarantines_what_whole_validation_does(tables, tmp_path, name):
    """The scoring job's path (activities two rows at a time, from CSV) lands every bad row where
    validating the whole tables does."""
    case = CASES[name]
    case.corrupt(tables)
    data = write_tables(tables, tmp_path / "data", "csv")
    if case.edit:
        case.edit(data)
    report = contract.validate_dir(data, now=NOW)
    staged = contract.stage_clean(data, tmp_path / "stage", now=NOW, batch_rows=2)
    assert staged.counts == report.counts()
    _, quarantined = report.split()
    for table in contract.TABLES:
        q, sq = quarantined[table], staged.quarantined[table]
        assert list(sq["source_row"]) == list(q["source_row"])
        assert list(sq["quarantine_reason"]) == list(q["quarantine_reason"])
        c = staged.counts[table]
        assert c["rows_in"] == len(pd.read_parquet(staged.paths[table])) + len(sq) == c["clean"] + c["quarantined"]
    for table, col, rule, row in case.bad:
        reasons = staged.quarantined[table].set_index("source_row")["quarantine_reason"]
        assert f"{col}: " in reasons[row] and f"[{rule}]" in reasons[row]


# ---------------------------------------------------------------------------
# Inputs the contract reads rather than quarantines
# ---------------------------------------------------------------------------

def _zoned(report, tables):
    assert report.tables["leads"]["created_at"].iloc[0] == ts("2025-01-01 08:00")  # +02:00 converted to UTC


def _naive(report, tables):
    assert report.tables["leads"]["created_at"].iloc[0] == ts("2025-01-01 10:00")  # naive means UTC


def _extra_column(report, tables):
    clean, _ = report.split()  # passed through as it is, never a reason to quarantine
    assert clean["leads"]["colour"].tolist() == ["red", "green", "blue"]


def _won_only(report, tables):
    assert report.tables["lifecycle"]["stage"].tolist()[-1] == "won"  # no sql to be out of order with


def _won_after_sql(report, tables):
    assert report.tables["lifecycle"]["stage"].tolist()[-1] == "won"


@pytest.mark.parametrize("corrupt, check", [
    pytest.param(append("lifecycle", lead_id="B", stage="won", occurred_at=ts("2025-01-08"), amount=10.0), _won_only,
                 id="lifecycle-won-without-sql"),
    pytest.param(append("lifecycle", lead_id="A", stage="won", occurred_at=ts("2025-01-10"), amount=10.0),
                 _won_after_sql, id="lifecycle-won-at-the-moment-of-sql"),
    pytest.param(cell("leads", 0, "created_at", "2025-01-01T10:00:00+02:00"), _zoned, id="leads-created_at-zoned"),
    pytest.param(cell("leads", 0, "created_at", "2025-01-01 10:00"), _naive, id="leads-created_at-naive"),
    pytest.param(column("leads", "colour", ["red", "green", "blue"]), _extra_column, id="leads-extra-unknown-column"),
])
def test_inputs_the_contract_reads_are_not_quarantined(tables, corrupt, check):
    corrupt(tables)
    report = validate_tables(tables, now=NOW)
    assert report.ok, report.lines()
    assert all(c["quarantined"] == 0 and c["rows_in"] == len(tables[n]) for n, c in report.counts().items())
    check(report, tables)


def test_an_extra_column_is_not_staged(tables, tmp_path):
    tables["leads"]["colour"] = ["red", "green", "blue"]
    staged = contract.stage_clean(write_tables(tables, tmp_path / "data", "parquet"), tmp_path / "stage", now=NOW)
    assert staged.counts["leads"] == {"rows_in": 3, "clean": 3, "quarantined": 0}
    assert "colour" not in pd.read_parquet(staged.paths["leads"]).columns


# ---------------------------------------------------------------------------
# File level: `leadscore validate` exits 2 with an error line naming the file / column
# ---------------------------------------------------------------------------

def _missing_column(t, d):
    t["leads"] = t["leads"].drop(columns=["created_at"])
    write_tables(t, d, "csv")


def _csv_and_parquet(t, d):
    write_tables(t, d, "csv")
    t["leads"].to_parquet(d / "leads.parquet")


def _corrupt_parquet(t, d):
    write_tables(t, d, "parquet")
    (d / "activities.parquet").write_bytes(b"PAR1 this is not a parquet file")


def _ragged_row(t, d):
    write_tables(t, d, "csv")
    append_line("activities", "A,2025-01-04T00:00:00Z,email_open,,surplus")(d)


def _empty_activities(t, d):
    t["activities"] = t["activities"].iloc[:0].drop(columns=["activity_type"])
    write_tables(t, d, "csv")


def _missing_table(t, d):
    write_tables(t, d, "csv")
    (d / "lifecycle.csv").unlink()


def _wrong_extension(t, d):
    write_tables(t, d, "csv")
    (d / "leads.csv").rename(d / "leads.xlsx")


def _zero_bytes(t, d):
    write_tables(t, d, "csv")
    (d / "leads.csv").write_bytes(b"")


def _latin1(t, d):
    t["leads"].loc[0, "job_title"] = "Directeur général"
    write_tables(t, d, "csv")
    t["leads"].to_csv(d / "leads.csv", index=False, encoding="latin-1")


def _semicolons(t, d):
    write_tables(t, d, "csv")
    t["leads"].to_csv(d / "leads.csv", index=False, sep=";")


@pytest.mark.parametrize("setup, expected", [
    pytest.param(_missing_column, ["leads: required column(s) missing: created_at"], id="file-required-column-missing"),
    pytest.param(_csv_and_parquet, ["leads: both leads.parquet and leads.csv"], id="file-both-csv-and-parquet"),
    pytest.param(_corrupt_parquet, ["activities: cannot read", "activities.parquet"], id="file-corrupt-parquet"),
    pytest.param(_ragged_row, ["activities: cannot parse", "activities.csv", "line 6"], id="file-csv-ragged-row"),
    pytest.param(_empty_activities, ["activities: required column(s) missing: activity_type"],
                 id="file-empty-activities-columns-checked"),
    pytest.param(_missing_table, ["lifecycle: no lifecycle.parquet or lifecycle.csv"], id="file-table-missing"),
    pytest.param(_wrong_extension, ["leads: no leads.parquet or leads.csv"], id="file-wrong-extension"),
    pytest.param(_zero_bytes, ["leads: cannot parse", "leads.csv"], id="file-zero-byte-csv"),
    pytest.param(_latin1, ["leads: cannot parse", "leads.csv", "utf-8"], id="file-csv-not-utf8"),
    pytest.param(_semicolons, ["leads: required column(s) missing: lead_id"], id="file-csv-other-delimiter"),
])
def test_unusable_files_are_an_error_naming_file_or_column(tables, tmp_path, setup, expected):
    d = tmp_path / "d"
    d.mkdir()
    setup(tables, d)
    res = runner.invoke(app, ["validate", "--data", str(d), "--now", "2026-01-01"])
    assert res.exit_code == EXIT_UNUSABLE, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)  # a message, not a traceback
    assert "Traceback" not in res.output
    error = next((line for line in res.stderr.splitlines() if line.startswith("error: ")), None)
    assert error is not None, res.output
    for part in expected:
        assert part in error, error


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_staging_an_empty_activities_file_checks_its_columns(tables, tmp_path, suffix):
    tables["activities"] = tables["activities"].iloc[:0].drop(columns=["activity_type"])
    data = write_tables(tables, tmp_path / "data", suffix.lstrip("."))
    with pytest.raises(ContractError, match=r"activities: required column\(s\) missing: activity_type"):
        contract.stage_clean(data, tmp_path / "stage", now=NOW)


# ---------------------------------------------------------------------------
# A mapped CRM export (source YAML)
# ---------------------------------------------------------------------------

SOURCE = """\
source: probe
tables:
  leads:
    files: contacts.csv
    columns: {lead_id: Contact, created_at: Created}
    timestamps: {created_at: "%d/%m/%Y %H:%M"}
  activities:
    files: events.csv
    columns: {lead_id: Contact, occurred_at: At, activity_type: What}
    timestamps: {occurred_at: epoch_s}
    values:
      activity_type: {Pricing: page_view_pricing, Demo: demo_request}
  lifecycle:
    files: stages.csv
    columns: {lead_id: Contact, stage: Stage, occurred_at: When}
    timestamps: {occurred_at: "%d/%m/%Y %H:%M"}
    values:
      stage: {Qualified: mql, Won: won, Junk: null}
"""
EXPORT = {
    "contacts.csv": "Contact,Created\nA,05/01/2025 09:30\nB,06/01/2025 10:00\nC,07/01/2025 11:00\n",
    "events.csv": "Contact,At,What\nA,1736170200,Pricing\nB,1736250000,Demo\nC,1736350000,Pricing\n",
    "stages.csv": "Contact,Stage,When\nA,Qualified,05/01/2025 10:00\nB,Qualified,07/01/2025 10:00\n"
                  "A,Won,20/02/2025 10:00\n",
}


def write_export(tmp_path: Path, file: str | None = None, old: str = "", new: str = "") -> Path:
    for name, text in EXPORT.items():
        (tmp_path / name).write_text(text.replace(old, new) if name == file else text)
    (tmp_path / "source.yaml").write_text(SOURCE)
    return tmp_path / "source.yaml"


def test_the_untouched_inputs_are_clean(tables, tmp_path):
    """Every case above breaks one thing in inputs that satisfy every rule."""
    assert validate_tables(tables, now=NOW).ok
    assert validate_tables({**tables, HISTORY: history()}, now=NOW, contract=HISTORY_CONTRACT).ok
    assert contract.validate_source(load_source(write_export(tmp_path)), now=NOW).ok
    data = load_flat(_flat(tmp_path / "flat"), scoring=True)
    assert len(data.ids) == 4 and len(data.quarantined) == 0


@pytest.mark.parametrize("file, old, new, table, col, rule, row, says", [
    pytest.param("contacts.csv", "C,07/01/2025 11:00", "C,2025-01-07 11:00", "leads", "created_at", "type", 2,
                 "not a timestamp in format %d/%m/%Y %H:%M", id="source-timestamp-not-in-declared-format"),
    pytest.param("stages.csv", "B,Qualified", "B,Closed Lost", "lifecycle", "stage", "vocabulary", 1,
                 "(values: 'Closed Lost')", id="source-value-unmapped-no-fallback"),
    pytest.param("stages.csv", "A,Won", "A,Junk", "lifecycle", "stage", "required", 2,
                 "required value is missing", id="source-value-mapped-to-null"),
    pytest.param("events.csv", "B,1736250000,Demo", "B,1736250000,Webinar", "activities", "activity_type",
                 "vocabulary", 1, "(values: 'Webinar')", id="source-activity-kind-undeclared"),
    pytest.param("events.csv", "C,1736350000", "C,yesterday", "activities", "occurred_at", "type", 2,
                 "not seconds since 1970 (epoch_s)", id="source-epoch-not-a-number"),
    pytest.param("events.csv", "C,1736350000", "C,1736350000000", "activities", "occurred_at", "not_in_future", 2,
                 "timestamp after now", id="source-epoch-ms-in-epoch_s-column"),
])
def test_mapped_export_rows_are_quarantined_with_file_row_and_reason(tmp_path, file, old, new, table, col, rule,
                                                                     row, says):
    source = load_source(write_export(tmp_path, file, old, new))
    report = contract.validate_source(source, now=NOW)
    counts = report.counts()
    assert counts[table]["quarantined"] >= 1
    for name, text in EXPORT.items():  # every table: rows in (the file's lines) = clean + quarantined
        t = {"contacts.csv": "leads", "events.csv": "activities", "stages.csv": "lifecycle"}[name]
        assert counts[t]["rows_in"] == text.count("\n") - 1 == counts[t]["clean"] + counts[t]["quarantined"]
    line = next((x for x in report.lines() if x.startswith(f"{table}.{col} [{rule}]")), None)
    assert line is not None, report.lines()
    assert says in line and f"{file} row {row} (line {row + 2})" in line
    _, quarantined = report.split()
    q = quarantined[table]
    hit = q[(q["source_file"] == file) & (q["source_row"] == row)]
    assert len(hit) == 1
    reason = hit["quarantine_reason"].iloc[0]
    assert f"{col}: " in reason and f"[{rule}]" in reason, reason
    assert not ((q["source_file"] == file) & (q["source_row"] == 0)).any()  # row 0 of every file is fine
    staged = contract.stage_clean(source, tmp_path / "stage", now=NOW, batch_rows=1)
    assert staged.counts == counts
    assert list(staged.quarantined[table]["source_row"]) == list(q["source_row"])


@pytest.mark.parametrize("file, old, new, match", [
    pytest.param("contacts.csv", "Contact,Created", "Contact,CreatedAt",
                 r"leads: column\(s\) 'Created' named in .*source.yaml:\d+: tables.leads.columns.created_at are not in "
                 r"contacts.csv \(found: 'Contact', 'CreatedAt'\)", id="source-mapped-column-absent"),
    pytest.param("contacts.csv", ",", ";", r"leads: .*not in contacts.csv .*set csv: \{delimiter: ...\}",
                 id="source-csv-other-delimiter"),
    pytest.param("stages.csv", "B,Qualified", "Zoë,Qualified", r"lifecycle: cannot read .*stages.csv: not utf-8 text",
                 id="source-csv-not-utf8"),
    pytest.param(None, "", "",
                 r"lifecycle: 'stages.csv' matches no file in .*\(.*source.yaml:\d+: tables.lifecycle.files\)",
                 id="source-file-matches-nothing"),
])
def test_unusable_mapped_exports_are_an_error_naming_file_and_key(tmp_path, file, old, new, match):
    path = write_export(tmp_path, file, old, new)
    if file == "stages.csv":
        (tmp_path / file).write_bytes((tmp_path / file).read_text().encode("latin-1"))
    if file is None:
        (tmp_path / "stages.csv").unlink()
    with pytest.raises(ContractError, match=match):
        contract.validate_source(load_source(path), now=NOW)


# ---------------------------------------------------------------------------
# Flat exports (one row per lead)
# ---------------------------------------------------------------------------

FLAT = "dataset: t\npath: t.csv\nid_column: id\nlabel_column: Converted\nnumeric: [visits]\ncategorical: [origin]\n"
DATED = "date_column: created\n"


def _flat(tmp_path: Path, edit: Callable[[dict], None] | None = None, extra: str = ""):
    rows = {"id": ["a", "b", "c", "d"], "Converted": ["1", "0", "0", "1"], "visits": ["1", "2", "3", "4"],
            "origin": ["ads", "web", "ads", "web"]}
    if extra:
        rows["created"] = ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04"]
        rows["won"] = ["2025-01-05", "", "", "2025-01-09"]
    if edit:
        edit(rows)
    tmp_path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "t.yaml").write_text(FLAT + extra + ("outcome_date_column: won\n" if extra else ""))
    return load_config(tmp_path / "t.yaml")


def put(col: str, row: int, value) -> Callable[[dict], None]:
    def edit(rows):
        rows[col][row] = value
    return edit


def add_column(name: str) -> Callable[[dict], None]:
    def edit(rows):
        rows[name] = ["x"] * len(rows["id"])
    return edit


@pytest.mark.parametrize("edit, lines, col, says, good", [
    pytest.param(put("visits", 2, "lots"), [4], "visits", "'visits' is not a finite number", "d",
                 id="flat-score-numeric-not-a-number"),
    pytest.param(put("visits", 2, "inf"), [4], "visits", "'visits' is not a finite number", "d",
                 id="flat-score-numeric-infinite"),
    pytest.param(put("id", 2, ""), [4], "id", "'id' is empty", "d", id="flat-score-id-empty"),
    pytest.param(put("id", 2, "a"), [2, 4], "id", "'id' appears more than once", "b", id="flat-score-id-twice"),
])
def test_flat_rows_that_cannot_be_scored_are_quarantined(tmp_path, edit, lines, col, says, good):
    data = load_flat(_flat(tmp_path, edit), scoring=True)
    q = data.quarantined
    assert len(data.ids) + len(q) == 4  # rows in = scored + quarantined
    assert q["row"].tolist() == lines  # file lines (the header is line 1)
    assert (q["column"] == col).all() and q["reason"].str.contains(says, regex=False).all()
    assert good in data.ids.tolist() and len(data.features) == len(data.y) == len(data.ids)


@pytest.mark.parametrize("edit, extra, scoring, match", [
    pytest.param(put("visits", 2, "lots"), "", False,
                 r"t.csv \(config t\): numeric column 'visits' has non-numbers in rows \[2\], e.g. 'lots'",
                 id="flat-train-numeric-not-a-number"),
    pytest.param(put("Converted", 2, ""), "", False,
                 r"t.csv \(config t\): label column 'Converted' is empty in rows \[2\]",
                 id="flat-train-label-empty"),
    pytest.param(put("created", 2, "01/02/2025"), DATED, False,
                 r"t.csv \(config t\): date column 'created' in rows \[2\] \(of 1\) is '01/02/2025', not an ISO 8601 "
                 r"timestamp; set date_format", id="flat-date-unparseable"),
    pytest.param(put("created", 2, "01/02/2025"), DATED, True,
                 r"t.csv \(config t\): date column 'created' in rows \[2\]",
                 id="flat-score-date-unparseable"),
    pytest.param(put("created", 1, ""), DATED, True,
                 r"t.csv \(config t\): date column 'created' in rows \[1\] .* is empty",
                 id="flat-date-empty"),
    pytest.param(put("won", 3, "soon"), DATED, False, r"t.csv \(config t\): date column 'won' in rows \[3\] .* 'soon'",
                 id="flat-outcome-date-unparseable"),
    pytest.param(add_column("Notes"), "", False,
                 r"t.csv \(config t\): column\(s\) neither categorical, numeric nor excluded: \['Notes'\]",
                 id="flat-column-undeclared"),
    pytest.param(lambda rows: rows.pop("origin"), "", True,
                 r"t.csv \(config t\): config names column\(s\) not in the file: \['origin'\]",
                 id="flat-declared-column-absent"),
])
def test_flat_exports_that_cannot_be_read_are_an_error_naming_file_and_column(tmp_path, edit, extra, scoring, match):
    config = _flat(tmp_path, edit, extra)
    with pytest.raises(ConfigError, match=match):
        load_flat(config, scoring=scoring)


def test_flat_data_file_missing_is_an_error_naming_it(tmp_path):
    config = _flat(tmp_path)
    with pytest.raises(ConfigError, match=r"t: data file not found: .*gone.csv"):
        load_flat(config, path=tmp_path / "gone.csv")


def test_flat_label_outside_its_values_is_an_error_naming_column_value_and_line(tmp_path):
    config = _flat(tmp_path, put("Converted", 2, "yes"))
    with pytest.raises(ConfigError, match=r"label column 'Converted' has value\(s\) \['yes'\] in lines \[4\].*"
                                          r"neither positive_values \[1\] nor negative_values \[0\]"):
        load_flat(config)


def test_flat_label_written_as_a_float_reads_as_its_number(tmp_path):
    config = _flat(tmp_path, put("Converted", 2, "1.0"))
    assert load_flat(config).y[2]


# ---------------------------------------------------------------------------
# The CLI on a value that crashes the reader (an integer in [2^63, 2^64) in a CSV column)
# ---------------------------------------------------------------------------

def test_cli_validate_reports_a_huge_integer_without_a_traceback(tables, tmp_path):
    tables["leads"]["company_size"] = ["250", "9223372036854775808", "3"]
    d = write_tables(tables, tmp_path / "d", "csv")
    res = runner.invoke(app, ["validate", "--data", str(d), "--now", "2026-01-01"])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 1 and "leads.company_size [type]" in res.stderr, res.output


# ---------------------------------------------------------------------------
# The earliest plausible date is the source's to set
# ---------------------------------------------------------------------------

def test_a_source_sets_its_own_earliest_plausible_date(tmp_path):
    path = write_export(tmp_path)
    path.write_text("earliest_date: 2025-01-06\n" + SOURCE)
    report = contract.validate_source(load_source(path), now=NOW)
    line = next(x for x in report.lines() if x.startswith("leads.created_at [plausible_date]"))
    assert "timestamp before 2025-01-06" in line and "contacts.csv row 0 (line 2) (lead_id=A)" in line
    counts = report.counts()
    assert counts["leads"] == {"rows_in": 3, "clean": 2, "quarantined": 1}
    path.write_text("earliest_date: 06/01/2025\n" + SOURCE)
    with pytest.raises(ConfigError, match=r"source.yaml.*earliest_date"):
        load_source(path)


# ---------------------------------------------------------------------------
# Leads whose history lost rows to the quarantine (what `leadscore score` flags or holds back)
# ---------------------------------------------------------------------------

def test_leads_with_quarantined_history_are_found_by_their_id_as_a_reader_reads_it(tables):
    from leadscore.serving.batch import id_key, incomplete_history_keys

    tables["leads"].loc[1, "lead_id"] = NFC                                  # B is now José (NFC)
    tables["activities"] = pd.concat([tables["activities"], pd.DataFrame({
        "lead_id": ["A ", NFD, "C", "C"], "occurred_at": [ts("2025-01-04")] * 3 + [ts("2025-02-03")],
        "activity_type": ["email_open", "email_open", "carrier_pigeon", "email_open"], "detail": None})],
        ignore_index=True)
    tables["activities"].loc[2, "lead_id"] = NFC
    tables["lifecycle"].loc[2, "lead_id"] = NFC
    report = validate_tables(tables, now=NOW)
    _, quarantined = report.split()
    assert len(quarantined["activities"]) == 3                               # "A ", NFD José, the pigeon
    keys = incomplete_history_keys(quarantined)
    assert keys == set(id_key(pd.Series(["A", NFC, "C"])))
    # a row quarantined only because its lead was does not mark anyone: that lead is not scored
    tables["leads"].loc[2, "seniority"] = "intern"
    _, quarantined = validate_tables(tables, now=NOW).split()
    assert "C" not in {k.upper() for k in incomplete_history_keys(quarantined)}
