"""Source mappings: a CRM's own export read through a YAML onto the contract - renames, timestamp
formats, value maps, custom attributes and activity kinds, attribute history - with clear errors
and nothing lost."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadscore.cli.app import app
from leadscore.data import contract
from leadscore.data.contract import AttributeSpec, Contract, KindSpec, TimestampFormat
from leadscore.features.builder import FeatureConfig, feature_catalogue, features_as_of
from leadscore.modeling.baseline import parse_rules, score_baseline
from leadscore.settings import ConfigError
from leadscore.sources.mapping import load_source

from .conftest import runner

NOW = pd.Timestamp("2026-01-01", tz="UTC")

SOURCE = """\
source: tiny-crm
tables:
  leads:
    files: contacts.csv
    columns: {lead_id: Contact, created_at: Created, lead_source: Origin}
    timestamps:
      created_at: {format: "%d-%m-%Y %H:%M", timezone: America/Sao_Paulo}
    missing_values: ["(none)"]
    attributes:
      landing_page: {column: Landing, label: Landing page}
      revenue: {column: Revenue, kind: numeric}
  activities:
    files: events-*.csv
    columns: {lead_id: Contact, occurred_at: At, activity_type: What}
    timestamps: {occurred_at: epoch_s}
    values:
      activity_type: {Visited pricing: page_view_pricing, Catalogue: catalog_view}
    kinds:
      catalog_view: viewed the catalogue
    unknown_kinds: other
  lifecycle:
    parts:
      - files: stages.csv
        columns: {lead_id: Contact, stage: Stage, occurred_at: When}
      - files: deals.csv
        columns: {lead_id: Contact, occurred_at: Won}
        constants: {stage: won}
    timestamps:
      occurred_at: {format: ["%d-%m-%Y %H:%M", "%d-%m-%Y"], timezone: America/Sao_Paulo}
    values:
      stage: {Qualified: mql, Closed Won: won}
"""


def write_export(tmp_path: Path, source: str = SOURCE) -> Path:
    (tmp_path / "contacts.csv").write_text(textwrap.dedent("""\
        Contact,Created,Origin,Landing,Revenue,Unused
        A,05-01-2025 09:30,Referral,lp-1,1200,x
        B,06-01-2025 10:00,(none),lp-2,,y
        C,07-01-2025 11:00,Ads,(none),50,z
        """))
    (tmp_path / "events-1.csv").write_text(textwrap.dedent("""\
        Contact,At,What
        A,1736170200,Visited pricing
        A,1736256600,Catalogue
        """))
    (tmp_path / "events-2.csv").write_text(textwrap.dedent("""\
        Contact,At,What
        B,1736250000,Live chat
        C,1736350000,Catalogue
        """))
    (tmp_path / "stages.csv").write_text(textwrap.dedent("""\
        Contact,Stage,When
        A,Qualified,05-01-2025 09:30
        B,Qualified,06-01-2025 10:00
        """))
    (tmp_path / "deals.csv").write_text("Contact,Won\nA,20-02-2025\n")
    path = tmp_path / "source.yaml"
    path.write_text(source)
    return path


def test_an_export_is_read_onto_the_contract_by_configuration(tmp_path):
    source = load_source(write_export(tmp_path))
    report = contract.validate_source(source, now=NOW)
    assert report.ok, report.lines()
    clean, _ = report.split()
    leads = clean["leads"].set_index("lead_id")
    # day-first local time (Sao Paulo, UTC-3) -> UTC
    assert leads.loc["A", "created_at"] == pd.Timestamp("2025-01-05 12:30", tz="UTC")
    assert pd.isna(leads.loc["B", "lead_source"]) and leads.loc["A", "lead_source"] == "Referral"
    assert leads.loc["A", "landing_page"] == "lp-1" and pd.isna(leads.loc["C", "landing_page"])
    assert leads.loc["A", "revenue"] == 1200.0 and pd.isna(leads.loc["B", "revenue"])
    acts = clean["activities"]
    assert sorted(acts["activity_type"]) == ["catalog_view", "catalog_view", "other", "page_view_pricing"]
    assert acts["occurred_at"].min() == pd.Timestamp(1736170200, unit="s", tz="UTC")
    lc = clean["lifecycle"].sort_values(["lead_id", "occurred_at"]).reset_index(drop=True)
    assert lc["stage"].tolist() == ["mql", "won", "mql"]
    assert lc.loc[1, "occurred_at"] == pd.Timestamp("2025-02-20 03:00", tz="UTC")  # date only, local midnight
    notes = " | ".join(source.notes())
    assert "Unused" in notes and "Live chat (1)" in notes and "other" in notes
    assert "job_title" in notes  # built-in attributes the export lacks read as missing, and it says so


def test_undeclared_kinds_are_quarantined_by_name_when_the_source_says_so(tmp_path):
    source = load_source(write_export(tmp_path, SOURCE.replace("unknown_kinds: other", "unknown_kinds: quarantine")))
    report = contract.validate_source(source, now=NOW)
    clean, quarantined = report.split()
    q = quarantined["activities"]
    assert len(q) == 1 and q.loc[0, "activity_type"] == "Live chat"
    assert q.loc[0, "source_file"] == "events-2.csv" and q.loc[0, "source_row"] == 0
    line = next(x for x in report.lines() if "activity_type" in x)
    assert "events-2.csv row 0 (line 2) (lead_id=B)" in line and "(values: 'Live chat')" in line
    counts = report.counts()["activities"]
    assert counts["rows_in"] == 4 == counts["clean"] + counts["quarantined"]
    assert "quarantined" in " ".join(source.notes()) and "Live chat" in " ".join(source.notes())


def test_a_date_in_another_format_is_quarantined_with_file_row_and_the_expected_format(tmp_path):
    path = write_export(tmp_path)
    (tmp_path / "contacts.csv").write_text((tmp_path / "contacts.csv").read_text() + "D,2025-01-08 10:00,Ads,lp-1,,w\n")
    report = contract.validate_source(load_source(path), now=NOW)
    line = next(x for x in report.lines() if "created_at" in x)
    assert "[type]" in line and "format %d-%m-%Y %H:%M" in line and "America/Sao_Paulo" in line
    assert "contacts.csv row 3 (line 5) (lead_id=D)" in line
    assert report.counts()["leads"] == {"rows_in": 4, "clean": 3, "quarantined": 1}


def test_a_query_over_files_is_a_table_too(tmp_path):
    path = write_export(tmp_path)
    text = SOURCE.replace("""    parts:
      - files: stages.csv
        columns: {lead_id: Contact, stage: Stage, occurred_at: When}
      - files: deals.csv
        columns: {lead_id: Contact, occurred_at: Won}
        constants: {stage: won}
""", """    query: |
      SELECT Contact AS lead_id, Stage AS stage, "When" AS occurred_at FROM stages
      UNION ALL SELECT Contact, 'Closed Won', Won FROM deals
    inputs: {stages: stages.csv, deals: deals.csv}
""")
    path.write_text(text)
    clean, report = contract.load_clean(load_source(path), now=NOW)
    assert report.ok, report.lines()
    assert sorted(clean["lifecycle"]["stage"]) == ["mql", "mql", "won"]


@pytest.mark.parametrize("change, message", [
    (("columns: {lead_id: Contact, created_at: Created, lead_source: Origin}",
      "columns: {lead_id: Contact, created_at: Created, lead_source: Origin, colour: Origin}"),
     r"source.yaml:5: tables.leads.columns.colour: not a column of the contract's leads table"),
    (("    unknown_kinds: other", "    unknown_kinds: other\n    colour: red"),
     r"source.yaml:\d+: tables.activities.colour: unknown key"),
    (("Catalogue: catalog_view}", "Catalogue: catalogue_view}"),
     r"tables.activities.values.activity_type: maps onto catalogue_view, not in the vocabulary"),
    (("occurred_at: epoch_s}", "occurred_at: epoch_days}"), r"tables.activities.timestamps.occurred_at.*epoch_days"),
    (("columns: {lead_id: Contact, created_at: Created, lead_source: Origin}",
      "columns: {lead_id: Contact, created_at: Created, lead_source: Source}"),
     r"leads: column\(s\) 'Source' named in .*source.yaml:5: tables.leads.columns.lead_source are not in "
     r"contacts.csv \(found: 'Contact', 'Created'"),
    (("files: stages.csv", "files: staging-*.csv"), r"lifecycle: 'staging-\*.csv' matches no file"),
])
def test_mapping_errors_name_file_line_and_key(tmp_path, change, message):
    path = write_export(tmp_path, SOURCE.replace(*change))
    with pytest.raises((ConfigError, contract.ContractError), match=message):
        contract.validate_source(load_source(path), now=NOW)


def test_a_source_labels_codes_for_explanations_and_bad_labels_name_the_line(tmp_path):
    from leadscore.serving.explain import declared_phrases

    labelled = SOURCE.replace("source: tiny-crm\n", "source: tiny-crm\nvalue_labels:\n  lead_source: {referral: a "
                              "customer's referral}\n").replace(
        "landing_page: {column: Landing, label: Landing page}",
        "landing_page: {column: Landing, label: Landing page, labels: {lp-1: the pricing page}}")
    src = load_source(write_export(tmp_path, labelled))
    phrases = declared_phrases(FeatureConfig(contract=src.contract))
    assert phrases["lead_source"]("referral") == "Came in through a customer's referral"
    assert phrases["lead_source"]("paid_search") == "Came in through paid search ads"  # the built-in label stays
    assert phrases["landing_page"]("lp-1") == "Landing page = the pricing page"
    assert phrases["landing_page"]("lp-2") == "Landing page = lp-2"
    for bad, message in (("value_labels:\n  colour: {red: Red}\n", r"source.yaml:3: value_labels.colour: not a "
                                                                    r"built-in categorical attribute"),
                         ("value_labels:\n  landing_page: {lp-1: x}\n", r"under tables.leads.attributes.landing_page"
                                                                        r".labels")):
        path = write_export(tmp_path, SOURCE.replace("source: tiny-crm\n", "source: tiny-crm\n" + bad))
        with pytest.raises(ConfigError, match=message):
            load_source(path)
    numeric = SOURCE.replace("revenue: {column: Revenue, kind: numeric}",
                             "revenue: {column: Revenue, kind: numeric, labels: {a: b}}")
    with pytest.raises(ConfigError, match=r"attributes.revenue.labels: only a categorical attribute"):
        load_source(write_export(tmp_path, numeric))


def test_cli_validate_and_funnel_take_a_source(tmp_path):
    path = write_export(tmp_path)
    result = runner.invoke(app, ["validate", "--source", str(path), "--now", "2026-01-01"])
    assert result.exit_code == 0, result.output
    assert "note: activities: 1 rows of kinds the source does not declare mapped to other: Live chat (1)" \
        in result.output
    result = runner.invoke(app, ["funnel", "--source", str(path)])
    assert result.exit_code == 0, result.output
    assert "no SQL stage recorded" in result.output and "MQL -> won" in result.output
    # files relative to --data when given
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "source.yaml").write_text(path.read_text())
    result = runner.invoke(app, ["validate", "--source", str(other / "source.yaml"), "--data", str(tmp_path),
                                 "--now", "2026-01-01"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 2 and "--data DIR" in result.output


def test_timestamp_formats():
    day_first = TimestampFormat(("%d/%m/%Y %H:%M", "%d/%m/%Y"), "America/Sao_Paulo")
    parsed = day_first.parse(pd.Series(["31/12/2024 10:00", "01/02/2025", "2025-02-01", None]))
    assert parsed.iloc[0] == pd.Timestamp("2024-12-31 13:00", tz="UTC")
    assert parsed.iloc[1] == pd.Timestamp("2025-02-01 03:00", tz="UTC")
    assert parsed.iloc[2:].isna().all()
    assert TimestampFormat("epoch_ms").parse(pd.Series(["1735689600000"])).iloc[0] == pd.Timestamp("2025-01-01", tz="UTC")
    berlin = TimestampFormat("iso8601", "Europe/Berlin").parse(pd.Series(["2025-01-01T10:00", "2025-01-01T10:00Z"]))
    assert berlin.tolist() == [pd.Timestamp("2025-01-01 09:00", tz="UTC"), pd.Timestamp("2025-01-01 10:00", tz="UTC")]
    for bad in ("dd/mm/yyyy", ("iso8601", "%d/%m/%Y")):
        with pytest.raises(ValueError, match="format"):
            TimestampFormat(bad)
    with pytest.raises(ValueError, match="unknown time zone"):
        TimestampFormat("iso8601", "Mars/Olympus")


# ---------------------------------------------------------------------------
# Custom attributes, declared kinds and the attribute history in the features
# ---------------------------------------------------------------------------

def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


HISTORY_CONTRACT = Contract(attributes=(AttributeSpec("plan", label="Plan"), AttributeSpec("seats", "numeric")),
                            activity_kinds=(KindSpec("catalog_view", "viewed the catalogue"),
                                            KindSpec("price_sim", "ran the price simulator", hand_raiser=True)),
                            history_attributes=("plan", "seats", "company_size"))


def history_tables(history: pd.DataFrame) -> dict[str, pd.DataFrame]:
    leads = pd.DataFrame({
        "lead_id": ["A", "B", "C"], "created_at": [ts("2025-01-01"), ts("2025-01-02"), ts("2025-01-03")],
        "job_title": None, "seniority": None, "department": None,
        "company_size": pd.array([5000, 5000, 5000], dtype="Int64"),  # today's values: must not be read
        "industry": None, "country": ["US", "DE", None], "lead_source": "ads", "email_domain_type": None,
        "plan": "Paid", "seats": 99.0,
    })
    acts = pd.DataFrame({"lead_id": ["A", "A", "B"], "occurred_at": [ts("2025-01-05"), ts("2025-01-06"), ts("2025-01-07")],
                         "activity_type": ["catalog_view", "price_sim", "email_open"], "detail": None})
    lc = pd.DataFrame({"lead_id": ["A"], "stage": ["mql"], "occurred_at": [ts("2025-01-02")], "amount": [None]})
    return {"leads": leads, "activities": acts, "lifecycle": lc, "attribute_history": history}


BASE_HISTORY = pd.DataFrame({
    "lead_id": ["A", "A", "B", "B", "C"],
    "attribute": ["plan", "plan", "plan", "company_size", "seats"],
    "value": ["Free", "Trial", "Free", "120", "3"],
    "valid_from": [ts("2025-01-01"), ts("2025-02-01"), ts("2025-01-02"), ts("2025-01-02"), ts("2025-01-03")],
})


def test_features_read_declared_attributes_kinds_and_history_as_of():
    config = FeatureConfig(contract=HISTORY_CONTRACT)
    rows = features_as_of(history_tables(BASE_HISTORY), as_of="2025-01-20", config=config).set_index("lead_id")
    assert rows.loc["A", "plan"] == "Free"            # the Trial of 2025-02-01 is in the future
    assert rows.loc["C", "plan"] == "missing"         # no history before as_of: not today's "Paid"
    assert rows.loc["B", "company_size_band"] == "51-200"  # 120 as of then, not today's 5000
    assert rows.loc["A", "company_size_band"] == "missing"
    assert rows.loc["C", "seats"] == 3.0 and np.isnan(rows.loc["A", "seats"])
    assert rows.loc["A", "n_catalog_view_30d"] == 1 and rows.loc["A", "n_price_sim_30d"] == 1
    assert rows.loc["A", "n_hand_raiser_total"] == 1 and rows.loc["A", "days_since_price_sim"] == pytest.approx(14)
    cat = feature_catalogue(config).set_index("name")
    assert cat.loc["plan", "group"] == "fit" and cat.loc["seats", "kind"] == "numeric"
    assert cat.loc["n_catalog_view_7d", "group"] == "engagement" and "days_since_catalog_view" in cat.index


def test_attribute_history_rules_are_checked():
    history = pd.concat([BASE_HISTORY, pd.DataFrame({
        "lead_id": ["A", "B", "Z"], "attribute": ["plan", "seats", "plan"], "value": ["Other", "many", "Free"],
        "valid_from": [ts("2025-02-01"), ts("2025-01-05"), ts("2025-01-05")]})], ignore_index=True)
    raw = history_tables(history)
    report = contract.validate_tables(raw, now=NOW, contract=HISTORY_CONTRACT)
    rules = {(v.column, v.rule): v.rows.tolist() for v in report.violations}
    assert rules[("valid_from", "unique_change")] == [1, 5]      # two values of A's plan on 2025-02-01
    assert rules[("value", "type")] == [6]                        # seats must be a number
    assert rules[("lead_id", "known_lead")] == [7]
    counts = report.counts()["attribute_history"]
    assert counts == {"rows_in": 8, "clean": 4, "quarantined": 4}


PLAN_RULES = parse_rules({
    "fit": {"rules": [{"name": "Paid plan", "attribute": "plan", "values": ["Paid"], "points": 30},
                      {"name": "Big company", "attribute": "company_size", "range": [1000, 100000], "points": 20},
                      {"name": "Many seats", "attribute": "seats", "range": [5, 100], "points": 10}]},
    "engagement": {"rules": [{"name": "Price simulation", "activity": "price_sim", "points": 25}]},
    "thresholds": {"mql": 20, "sql": 50}}, contract=HISTORY_CONTRACT)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.sampled_from(["plan", "seats", "company_size"]),
                                  st.integers(0, 40), st.sampled_from(["Paid", "7", "9000", None])),
                        max_size=6),
       as_of_day=st.integers(5, 25))
def test_property_changing_an_attribute_after_as_of_changes_no_feature_row(changes, as_of_day):
    """New values from as_of on, and rewritten values of changes made from as_of on, are
    invisible: the feature rows as of that moment are identical."""
    config = FeatureConfig(contract=HISTORY_CONTRACT)
    as_of = ts("2025-01-01") + pd.Timedelta(days=as_of_day)
    before = features_as_of(history_tables(BASE_HISTORY), as_of=as_of, config=config)
    later = BASE_HISTORY.copy()
    future = later["valid_from"] >= as_of
    later.loc[future, "value"] = "rewritten"
    added = pd.DataFrame([{"lead_id": lead, "attribute": attr, "value": value,
                           "valid_from": as_of + pd.Timedelta(hours=hours)} for lead, attr, hours, value in changes])
    later = pd.concat([later, added], ignore_index=True).drop_duplicates(["lead_id", "attribute", "valid_from"])
    tables = history_tables(later)
    tables["leads"]["plan"] = "Enterprise"  # today's values change too
    tables["leads"]["company_size"] = pd.array([1, 1, 1], dtype="Int64")
    after = features_as_of(tables, as_of=as_of, config=config)
    pd.testing.assert_frame_equal(before, after)
    points = [score_baseline(t, PLAN_RULES, as_of=as_of, contract=HISTORY_CONTRACT)
              for t in (history_tables(BASE_HISTORY), tables)]
    pd.testing.assert_frame_equal(*points)


def test_a_model_refuses_a_source_without_its_attributes():
    from leadscore.features.builder import check_source

    config = FeatureConfig(contract=HISTORY_CONTRACT)
    with pytest.raises(ValueError, match="attribute plan; attribute seats; activity kind catalog_view; activity kind "
                                         "price_sim; an attribute history of plan, seats, company_size"):
        check_source(config, Contract())
    check_source(config, HISTORY_CONTRACT)
    # a model trained on current values refuses a source that reads them from a history
    with pytest.raises(ValueError, match="read at their current value, not from an attribute history"):
        check_source(FeatureConfig(), Contract(history_attributes=("company_size",)))


DOC_FILES = {
    # the generic example
    0: {"contacts-1.csv": "Record ID;Create Date;Job Seniority;Landing Page;Price\n"  # csv: {delimiter: ";"}
                          "A;05/01/2025 09:30;C-Level;lp-1;10\nB;06/01/2025 10:00;(not set);lp-2;\n",
        "events.parquet": None,
        "stages.csv": "Contact ID,Stage,Entered On\nA,Marketing Qualified Lead,05/01/2025 09:30\n",
        "won_deals.csv": "mql_id,won_date,deal_value\nA,20/02/2025,100\n",
        "property_history.csv": "Contact ID,Property,New Value,Changed At\nA,Plan,Free,2025-01-05T10:00:00Z\n"},
    # HubSpot-style
    1: {"hubspot-contacts-1.csv": "Record ID,Create Date,Original Source,Job Title,Industry,Number of Employees,"
                                  "Country/Region,Persona,Became a Marketing Qualified Lead Date,"
                                  "Became a Sales Qualified Lead Date,Became a Customer Date\n"
                                  "101,2025-01-05 09:30,Organic Search,CTO,Software,120,United States,Tech buyer,"
                                  "2025-01-06 10:00,2025-01-20 11:00,2025-03-01 12:00\n"
                                  "102,2025-01-07 10:00,Paid Search,,,,Germany,,2025-01-08 10:00,,\n",
        "hubspot-events.csv": "Contact ID,Timestamp,Event Type\n101,2025-01-05T09:45:00Z,Form submission\n"
                              "101,2025-01-10T10:00:00Z,Meeting booked\n102,2025-01-09T10:00:00Z,Webinar\n"},
    # Salesforce-style: the status history becomes the lifecycle, tracked fields are read as of T
    2: {"Lead.csv": "Id,CreatedDate,LeadSource,Title,Industry,NumberOfEmployees,Country,Rating,ConvertedOpportunityId\n"
                    "00Q1,2025-01-05T09:30:00.000+0000,Web,VP Sales,Software,5000,US,Hot,006A\n"
                    "00Q2,2025-01-06T09:30:00.000+0000,Partner,,,,DE,Cold,\n",
        "LeadHistory.csv": "LeadId,Field,OldValue,NewValue,CreatedDate\n"
                           "00Q1,Status,Open - Not Contacted,Working - Contacted,2025-01-06T10:00:00.000+0000\n"
                           "00Q1,Status,Working - Contacted,Qualified,2025-01-20T10:00:00.000+0000\n"
                           "00Q1,Rating,,Warm,2025-01-05T09:30:00.000+0000\n"
                           "00Q1,Rating,Warm,Hot,2025-02-01T10:00:00.000+0000\n"
                           "00Q1,NumberOfEmployees,,120,2025-01-05T09:30:00.000+0000\n"
                           "00Q1,NumberOfEmployees,120,5000,2025-03-05T10:00:00.000+0000\n"
                           "00Q2,Status,Open - Not Contacted,Closed - Not Converted,2025-02-06T10:00:00.000+0000\n",
        "Opportunity.csv": "Id,IsWon,CloseDate,Amount\n006A,true,2025-03-05,12000\n"},
}


def test_the_documented_example_mappings_read_their_exports(tmp_path):
    """data/README.md's source YAML examples (generic, HubSpot-style, Salesforce-style) read a tiny
    export of the shape they describe, so the documentation cannot drift from the code."""
    import re

    text = (Path(__file__).resolve().parents[1] / "data" / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S) if b.startswith("source:")]
    assert len(blocks) == 3
    for i, block in enumerate(blocks):
        work = tmp_path / f"example-{i}"
        work.mkdir()
        for name, content in DOC_FILES[i].items():
            if content is None:  # the generic example's events, in Parquet with epoch ms
                pd.DataFrame({"contact_id": ["A"], "ts": [1736170200000], "event": ["Catalog Viewed"],
                              "asset": [""]}).to_parquet(work / name)
            else:
                (work / name).write_text(content)
        (work / "source.yaml").write_text(block)
        source = load_source(work / "source.yaml")
        report = contract.validate_source(source, now=NOW)
        assert report.ok, (i, report.lines())
        clean, _ = report.split()
        assert len(clean["leads"]) == 2 and len(clean["lifecycle"]) >= 1
        if i == 2:  # Salesforce: stages from the status history, the won deal from the opportunity
            stages = clean["lifecycle"].sort_values("occurred_at")["stage"].tolist()
            assert stages == ["mql", "sql", "disqualified", "won"]
            pairs = pd.DataFrame({"lead_id": ["00Q1", "00Q2"], "as_of": [ts("2025-02-15")] * 2})
            rows = features_as_of(clean, pairs, config=FeatureConfig(contract=source.contract)).set_index("lead_id")
            # as of 2025-02-15: 120 employees and rating Hot; today's 5000 employees are not read
            assert rows.loc["00Q1", "company_size_band"] == "51-200" and rows.loc["00Q1", "rating"] == "Hot"
            assert rows.loc["00Q2", "rating"] == "missing"


def write_files(tmp_path: Path, files: dict[str, str], source: str) -> Path:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    (tmp_path / "source.yaml").write_text(source)
    return tmp_path / "source.yaml"


MINIMAL = """\
source: minimal
tables:
  leads:
    files: leads.parquet
    columns: {lead_id: id, created_at: created, seniority: level, lead_source: origin}
    values:
      seniority: {1: c_level, 2: manager}
  lifecycle:
    files: stages.csv
"""


def test_typed_inputs_read_like_csv(tmp_path):
    """Parquet: an empty string is missing, numbers and booleans match a value map by their text."""
    pd.DataFrame({"id": ["A", "B", ""], "created": pd.to_datetime(["2025-01-01", "2025-01-02", "2025-01-03"], utc=True),
                  "level": [1.0, 2.0, None], "origin": ["ads", "", None]}).to_parquet(tmp_path / "leads.parquet")
    path = write_files(tmp_path, {"stages.csv": "lead_id,stage,occurred_at\nA,mql,2025-01-02T00:00:00Z\n"}, MINIMAL)
    report = contract.validate_source(load_source(path), now=NOW)
    clean, quarantined = report.split()
    assert clean["leads"]["seniority"].tolist() == ["c_level", "manager"]
    assert clean["leads"]["lead_source"].isna().tolist() == [False, True]
    assert quarantined["leads"]["quarantine_reason"].str.contains("required").all()  # the empty id


def test_a_file_two_patterns_match_is_read_once(tmp_path):
    path = write_export(tmp_path, SOURCE.replace("files: events-*.csv", "files: [events-1.csv, events-*.csv]"))
    assert contract.validate_source(load_source(path), now=NOW).counts()["activities"]["rows_in"] == 4


@pytest.mark.parametrize("change, files, message", [
    (("    parts:", "    query: SELECT CAST(Contact AS INTEGER) AS lead_id FROM stages\n    inputs: {stages: stages.csv}\n"
                     "    parts_:"), {}, r"lifecycle: the query failed \(.*source.yaml:\d+: tables.lifecycle.query\)"),
    (("files: deals.csv", "files: deals.csv\n        csv: {encoding: ascii}"), {"deals.csv": "Contact,Won\nÄ,20-02-2025\n"},
     r"cannot read .*deals.csv: not ascii text .* csv: \{encoding: latin-1\}"),
    (("columns: {lead_id: Contact, created_at: Created, lead_source: Origin}",
      "columns: {lead_id: Contact, created_at: Created, lead_source: Origin, lead_source: Source}"), {},
     r"source.yaml: line 5, column \d+: malformed YAML: duplicate key 'lead_source'"),
    (("revenue: {column: Revenue, kind: numeric}", "lead_age_days: {column: Revenue, kind: numeric}"), {},
     r"attribute 'lead_age_days' is a built-in feature or column name"),
    (("catalog_view: viewed the catalogue", "activities: viewed the catalogue"), {},
     r"activity kind 'activities' would make the feature\(s\) n_activities_7d"),
])
def test_more_mapping_errors(tmp_path, change, files, message):
    text = SOURCE.replace(*change)
    if "parts_:" in text:  # the query replaces the parts of the lifecycle table
        head, _, tail = text.partition("    parts_:")
        text = head + tail[tail.index("    timestamps:"):]
    path = write_export(tmp_path, text)
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="latin-1")
    with pytest.raises((ConfigError, contract.ContractError), match=message):
        contract.validate_source(load_source(path), now=NOW)


def test_history_values_follow_the_attributes_rules():
    history = pd.DataFrame({"lead_id": ["A", "A", "B"], "attribute": ["seniority", "company_size", "company_size"],
                            "value": ["Janitor", "-5", "40"], "valid_from": [ts("2025-01-02")] * 3})
    raw = history_tables(history)
    report = contract.validate_tables(raw, now=NOW, contract=Contract(history_attributes=("seniority", "company_size")))
    rules = {(v.column, v.rule): (v.rows.tolist(), v.values) for v in report.violations if v.table == "attribute_history"}
    assert rules[("value", "vocabulary")] == ([0], ("Janitor",))
    assert rules[("value", "positive")][0] == [1]
