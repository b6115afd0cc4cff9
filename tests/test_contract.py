"""The data contract, rule by rule; quarantine keeps every row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadscore.data import contract
from leadscore.data.contract import ContractError, validate_tables

from .conftest import ts

NOW = ts("2026-01-01")


def rules(report):
    return {(v.table, v.column, v.rule) for v in report.violations}


def only_violation(report):
    """The single rule broken, apart from the cascade onto rows of quarantined leads."""
    own = [v for v in report.violations if v.rule != "lead_quarantined"]
    assert len(own) == 1, report.lines()
    return own[0]


def test_clean_tables_pass(tables):
    report = validate_tables(tables, now=NOW)
    assert report.ok, report.lines()
    assert report.counts()["activities"] == {"rows_in": 4, "clean": 4, "quarantined": 0}


def test_synthetic_data_satisfies_contract(synthetic_dir):
    report = contract.validate_dir(synthetic_dir)
    assert report.ok, report.lines()[:5]


def test_duplicate_lead_id_names_column_and_rows(tables):
    tables["leads"].loc[2, "lead_id"] = "B"
    report = validate_tables(tables, now=NOW)
    v = next(v for v in report.violations if v.rule == "unique")
    assert (v.table, v.column) == ("leads", "lead_id")
    assert list(v.rows) == [1, 2]
    line = v.describe(report.tables["leads"])
    assert line.startswith("leads.lead_id [unique]") and "row 1 (lead_id=B)" in line and "row 2 (lead_id=B)" in line
    # Both duplicates are ambiguous: their activities and lifecycle rows are quarantined with them.
    assert ("activities", "lead_id", "lead_quarantined") in rules(report)
    assert report.counts()["leads"]["quarantined"] == 2


def test_activity_for_unknown_lead(tables):
    tables["activities"].loc[1, "lead_id"] = "ZZZ"
    v = only_violation(validate_tables(tables, now=NOW))
    assert (v.table, v.column, v.rule, list(v.rows)) == ("activities", "lead_id", "known_lead", [1])
    assert "lead_id=ZZZ" in v.describe(tables["activities"])


def test_activity_in_the_future(tables):
    tables["activities"].loc[2, "occurred_at"] = ts("2026-03-01")
    v = only_violation(validate_tables(tables, now=NOW))
    assert (v.table, v.column, v.rule, list(v.rows)) == ("activities", "occurred_at", "not_in_future", [2])


def test_unknown_activity_type(tables):
    tables["activities"].loc[0, "activity_type"] = "page_view_prcing"
    v = only_violation(validate_tables(tables, now=NOW))
    assert (v.table, v.column, v.rule, list(v.rows)) == ("activities", "activity_type", "vocabulary", [0])
    assert "page_view_pricing" in v.message  # the message lists the allowed values


def test_lifecycle_event_before_lead_created(tables):
    tables["lifecycle"].loc[2, "occurred_at"] = ts("2025-01-04")  # lead B created 2025-01-05
    v = only_violation(validate_tables(tables, now=NOW))
    assert (v.table, v.column, v.rule, list(v.rows)) == ("lifecycle", "occurred_at", "after_lead_created", [2])


def test_activity_before_lead_created(tables):
    tables["activities"].loc[3, "occurred_at"] = ts("2025-01-31")
    v = only_violation(validate_tables(tables, now=NOW))
    assert (v.table, v.rule, list(v.rows)) == ("activities", "after_lead_created", [3])


def test_unknown_stage(tables):
    tables["lifecycle"].loc[0, "stage"] = "marketing_qualified"
    v = only_violation(validate_tables(tables, now=NOW))
    assert (v.table, v.column, v.rule) == ("lifecycle", "stage", "vocabulary")


@pytest.mark.parametrize("column,value", [("seniority", "intern"), ("email_domain_type", "gmail"),
                                          ("department", "legal")])
def test_unknown_fit_vocabulary(tables, column, value):
    tables["leads"].loc[0, column] = value
    v = only_violation(validate_tables(tables, now=NOW))
    assert (v.table, v.column, v.rule, list(v.rows)) == ("leads", column, "vocabulary", [0])


def test_company_size_must_be_positive(tables):
    tables["leads"]["company_size"] = pd.array([0, None, None], dtype="Int64")
    v = only_violation(validate_tables(tables, now=NOW))
    assert (v.column, v.rule) == ("company_size", "positive")


def test_negative_amount(tables):
    tables["lifecycle"]["amount"] = [None, -5.0, None]
    v = only_violation(validate_tables(tables, now=NOW))
    assert (v.table, v.column, v.rule, list(v.rows)) == ("lifecycle", "amount", "non_negative", [1])


def test_missing_required_value(tables):
    tables["activities"].loc[0, "activity_type"] = None
    v = only_violation(validate_tables(tables, now=NOW))
    assert (v.column, v.rule) == ("activity_type", "required")


def test_missing_required_column_is_a_table_error(tables):
    tables["lifecycle"] = tables["lifecycle"].drop(columns=["stage"])
    with pytest.raises(ContractError, match=r"lifecycle: required column\(s\) missing: stage"):
        validate_tables(tables, now=NOW)


def test_optional_columns_may_be_absent(tables):
    tables["activities"] = tables["activities"].drop(columns=["detail"])
    tables["lifecycle"] = tables["lifecycle"].drop(columns=["amount"])
    assert validate_tables(tables, now=NOW).ok


def test_unparseable_cells_are_type_violations_not_dropped(tables, tmp_path):
    for name, frame in tables.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    text = (tmp_path / "activities.csv").read_text().replace("2025-01-03", "yesterday", 1)
    (tmp_path / "activities.csv").write_text(text)
    report = contract.validate_dir(tmp_path, now=NOW)
    v = only_violation(report)
    assert (v.table, v.column, v.rule, list(v.rows)) == ("activities", "occurred_at", "type", [1])
    clean, quarantined = report.split()
    assert len(clean["activities"]) + len(quarantined["activities"]) == 4


def test_csv_and_parquet_read_the_same(tables, tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "pq").mkdir()
    for name, frame in tables.items():
        frame.to_csv(tmp_path / "csv" / f"{name}.csv", index=False)
        frame.to_parquet(tmp_path / "pq" / f"{name}.parquet")
    a = contract.validate_dir(tmp_path / "csv", now=NOW)
    b = contract.validate_dir(tmp_path / "pq", now=NOW)
    assert a.ok and b.ok
    for name in contract.TABLES:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name], check_dtype=False)


def test_naive_timestamps_are_utc_and_zoned_ones_converted(tables):
    tables["leads"]["created_at"] = pd.to_datetime(["2025-01-01 10:00", "2025-01-05 00:00", "2025-02-01 00:00"])
    tables["activities"]["occurred_at"] = pd.to_datetime(
        ["2025-01-02", "2025-01-03", "2025-01-06", "2025-02-02"]).tz_localize("Europe/Berlin")
    report = validate_tables(tables, now=NOW)
    assert report.ok
    assert report.tables["leads"]["created_at"].iloc[0] == ts("2025-01-01 10:00")
    assert report.tables["activities"]["occurred_at"].iloc[0] == ts("2025-01-01 23:00")


def test_both_csv_and_parquet_present_is_an_error(tables, tmp_path):
    tables["leads"].to_csv(tmp_path / "leads.csv", index=False)
    tables["leads"].to_parquet(tmp_path / "leads.parquet")
    with pytest.raises(ContractError, match="both leads.parquet and leads.csv"):
        contract.table_path(tmp_path, "leads")


def test_at_most_ten_rows_shown(tables):
    acts = pd.concat([tables["activities"]] * 10, ignore_index=True)
    acts["activity_type"] = "nonsense"
    tables["activities"] = acts
    v = only_violation(validate_tables(tables, now=NOW))
    line = v.describe(acts)
    assert line.count("row ") == 10 and "40 rows" in line and "and 30 more" in line


def test_quarantine_split_keeps_every_row_with_reasons(tables):
    tables["leads"].loc[1, "seniority"] = "boss"
    tables["activities"].loc[0, "activity_type"] = "unknown"
    tables["activities"].loc[0, "occurred_at"] = ts("2027-01-01")
    report = validate_tables(tables, now=NOW)
    clean, quarantined = report.split()
    for name in contract.TABLES:
        assert len(clean[name]) + len(quarantined[name]) == len(tables[name])
    q = quarantined["activities"]
    # Row 0 breaks two rules; row 2 belongs to lead B, which was quarantined.
    reasons = dict(zip(q["source_row"], q["quarantine_reason"]))
    assert "[vocabulary]" in reasons[0] and "[not_in_future]" in reasons[0]
    assert "[lead_quarantined]" in reasons[2]
    assert validate_tables(clean, now=NOW).ok


# --- property: whatever is corrupted, nothing is lost and the clean part is clean ------

corruptions = st.lists(
    st.tuples(
        st.sampled_from(["dup_lead", "unknown_lead", "future", "bad_type", "before_created", "bad_stage",
                         "null_id", "neg_amount"]),
        st.integers(min_value=0, max_value=10_000),
    ),
    max_size=8,
)


def _corrupt(tables, ops) -> dict[str, pd.DataFrame]:
    t = {k: v.copy() for k, v in tables.items()}
    t["lifecycle"]["amount"] = t["lifecycle"]["amount"].astype("float64")
    for op, r in ops:
        if op == "dup_lead":
            t["leads"].loc[r % 3, "lead_id"] = t["leads"]["lead_id"].iloc[(r + 1) % 3]
        elif op == "unknown_lead":
            t["activities"].loc[r % 4, "lead_id"] = "nobody"
        elif op == "future":
            t["activities"].loc[r % 4, "occurred_at"] = ts("2030-01-01")
        elif op == "bad_type":
            t["activities"].loc[r % 4, "activity_type"] = "teleport"
        elif op == "before_created":
            t["lifecycle"].loc[r % 3, "occurred_at"] = ts("2020-01-01")
        elif op == "bad_stage":
            t["lifecycle"].loc[r % 3, "stage"] = "maybe"
        elif op == "null_id":
            t["lifecycle"].loc[r % 3, "lead_id"] = None
        elif op == "neg_amount":
            t["lifecycle"].loc[r % 3, "amount"] = -1.0
    return t


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corruptions)
def test_rows_in_equals_clean_plus_quarantined(tables, ops):
    t = _corrupt(tables, ops)
    report = validate_tables(t, now=NOW)
    clean, quarantined = report.split()
    for name in contract.TABLES:
        assert len(clean[name]) + len(quarantined[name]) == len(t[name])
        assert quarantined[name]["quarantine_reason"].notna().all()
    assert validate_tables(clean, now=NOW).ok
    assert report.ok == (not ops or all(len(quarantined[n]) == 0 for n in contract.TABLES))
    assert np.array_equal(np.sort(quarantined["activities"]["source_row"]), report.failing_rows("activities"))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corruptions, st.integers(min_value=1, max_value=5), st.sampled_from([".parquet", ".csv"]))
def test_staging_activities_in_batches_gives_what_validating_whole_tables_gives(tables, ops, batch_rows, suffix):
    """The scoring job's bounded-memory path: same clean rows, same quarantine, same counts."""
    t = _corrupt(tables, ops)
    t["activities"] = pd.concat([t["activities"]] * 3, ignore_index=True)  # more rows than batches
    _assert_staging_matches_whole(t, batch_rows, suffix)


def _write_tables(t: dict, data, suffix: str = ".parquet", pandas_metadata: bool = True) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data.mkdir(parents=True, exist_ok=True)
    for name, frame in t.items():
        if suffix == ".csv":
            frame.to_csv(data / f"{name}.csv", index=False)
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            pq.write_table(table if pandas_metadata else table.replace_schema_metadata(None), data / f"{name}.parquet")


def _assert_staging_matches_whole(t: dict, batch_rows: int, suffix: str = ".parquet", pandas_metadata: bool = True,
                                  earliest: str | None = None):
    """Staging activities batch by batch gives the clean rows, quarantine and counts that
    validating the whole tables gives. Returns the staging result and the staged rows.
    ``earliest``: the contract's earliest plausible date (default the built-in one)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        data = contract.ContractDirectory(Path(tmp) / "data")
        if earliest is not None:
            data.contract = contract.Contract(earliest=earliest)
        _write_tables(t, data.path, suffix, pandas_metadata)
        clean, report = contract.load_clean(data, now=NOW)
        _, quarantined = report.split()
        staged = contract.stage_clean(data, Path(tmp) / "stage", now=NOW, batch_rows=batch_rows)
        assert staged.counts == report.counts()
        rows = {}
        for name in contract.TABLES:
            q, sq = quarantined[name], staged.quarantined[name]
            assert list(sq["source_row"]) == list(q["source_row"])
            assert list(sq["quarantine_reason"]) == list(q["quarantine_reason"])
            columns = [c.name for c in contract.COLUMNS[name]]
            rows[name] = got = pd.read_parquet(staged.paths[name])
            assert list(got.columns) == columns
            pd.testing.assert_frame_equal(got, clean[name][columns].reset_index(drop=True), check_dtype=False)
        return staged, rows


def test_timestamps_centuries_apart_compare_exactly(tables):
    """Placeholder dates such as 0001-01-01 are outside nanosecond range: the checks (and the
    staged Parquet) keep the contract's microseconds."""
    t = {k: v.copy() for k, v in tables.items()}
    t["leads"]["created_at"] = ["0001-01-01T00:00:00Z", "2025-01-05T00:00:00Z", "2025-02-01T00:00:00Z"]
    t["activities"]["occurred_at"] = ["2025-01-02T00:00:00Z", "1600-06-01T00:00:00Z", "1500-01-01T00:00:00Z",
                                      "2025-02-02T00:00:00Z"]
    # A's activities (rows 0, 1) follow its creation in year 1; B's (row 2) precedes 2025.
    v = only_violation(validate_tables(t, now=NOW, contract=contract.Contract(earliest="0001-01-01")))
    assert (v.table, v.column, v.rule, list(v.rows)) == ("activities", "occurred_at", "after_lead_created", [2])
    staged, rows = _assert_staging_matches_whole(t, batch_rows=2, suffix=".csv", earliest="0001-01-01")
    assert staged.counts["activities"] == {"rows_in": 4, "clean": 3, "quarantined": 1}
    assert rows["leads"]["created_at"].min().year == 1
    # by the built-in earliest plausible date (1990) they are placeholders, not events
    early = [v for v in validate_tables(t, now=NOW).violations if v.rule == "plausible_date"]
    assert [(v.table, list(v.rows)) for v in early] == [("leads", [0]), ("activities", [1, 2])]


def test_integer_ids_with_nulls_read_alike_in_batches_and_whole(tables):
    """A Parquet file without pandas metadata (Spark, plain Arrow) with integer ids and a
    null: id 2 is lead "2" in every batch, not "2.0" where a batch holds the null."""
    t = {k: v.copy() for k, v in tables.items()}
    t["leads"]["lead_id"] = [1, 2, 3]
    t["activities"]["lead_id"] = pd.array([1, 1, 2, None], dtype="Int64")
    t["lifecycle"]["lead_id"] = [1, 1, 2]
    staged, rows = _assert_staging_matches_whole(t, batch_rows=2, pandas_metadata=False)
    assert staged.counts["activities"] == {"rows_in": 4, "clean": 3, "quarantined": 1}
    assert list(staged.quarantined["activities"]["source_row"]) == [3]
    assert list(rows["activities"]["lead_id"]) == ["1", "1", "2"]


def test_staging_an_empty_activities_file_still_checks_its_columns(tables, tmp_path):
    t = {k: v.copy() for k, v in tables.items()}
    t["activities"] = t["activities"].iloc[:0].drop(columns=["activity_type"])
    _write_tables(t, tmp_path / "data")
    with pytest.raises(ContractError, match="activities: required column.*activity_type"):
        contract.stage_clean(tmp_path / "data", tmp_path / "stage", now=NOW)


@pytest.mark.parametrize("value, fmt", [("99999999999999999999", "csv"), (1e30, "parquet"), (-1e300, "parquet")])
def test_a_number_too_large_for_its_integer_column_is_a_violation_naming_the_row(tables, tmp_path, value, fmt):
    leads = tables["leads"].astype({"company_size": "object"})
    leads.loc[1, "company_size"] = value
    for name, frame in {**tables, "leads": leads}.items():
        if name == "leads" and fmt == "parquet":
            frame.assign(company_size=[250.0, value, np.nan]).to_parquet(tmp_path / "leads.parquet")
        else:
            frame.to_csv(tmp_path / f"{name}.csv", index=False)
    report = contract.validate_dir(tmp_path, now=NOW)
    v = only_violation(report)
    assert (v.table, v.column, v.rule, list(v.rows)) == ("leads", "company_size", "type", [1])
    assert "whole number" in v.message
    clean, quarantined = report.split()
    assert len(clean["leads"]) + len(quarantined["leads"]) == 3


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.text(max_size=4), unique=True, max_size=30),
       picks=st.lists(st.one_of(st.none(), st.integers(0, 40), st.text(max_size=4)), max_size=80))
def test_a_lead_id_is_found_where_arrow_finds_it(keys, picks):
    """LeadKeys.positions (one hash table for all batches) answers what pyarrow's index_in
    answers for every id: known, unknown ("") and missing, with repeats."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = [keys[p] if isinstance(p, int) and p < len(keys) else (f"x{p}" if isinstance(p, int) else p) for p in picks]
    lead_keys = contract.LeadKeys(ids=pa.array(keys, type=pa.string()), quarantined=np.zeros(len(keys) + 1, bool),
                                  created=np.full(len(keys) + 1, np.datetime64("NaT", "us")))
    batch = pa.array(ids, type=pa.string())
    expected = pc.index_in(batch, value_set=lead_keys.ids).fill_null(-1).to_numpy(zero_copy_only=False)
    for _ in range(2):  # the table is built once and asked again
        assert lead_keys.positions(batch).tolist() == expected.tolist()
