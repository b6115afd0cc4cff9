"""Features on Spark (``features_spark``, ``leadscore features --engine spark``) equal the DuckDB
features: every column of every lead, floats to 1e-9, the same dtypes - for scoring (the open
leads at one as_of), for training pairs (many as_of dates, pairs before the lead existed), with
declared attributes, kinds and an attribute history (the sparse export), and point in time
(events from as_of on change nothing). Spark local mode; skips only without the spark extra."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark", reason="the spark extra is not installed: pip install 'leadscore[spark]'")
pytestmark = [  # raised inside pyspark 4.3 under pandas 3, not by leadscore
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

from leadscore.cli.app import app
from leadscore.features.builder import FeatureConfig, feature_catalogue, features_as_of
from leadscore.features.spark import features_spark, spark_sql
from leadscore.labels.examples import LABELS, ExampleConfig, build_examples
from leadscore.labels.spark import examples_spark
from leadscore.synthetic.generate import SynthConfig, generate
from leadscore.synthetic.sparse import SOURCE_YAML, SparseConfig, generate_sparse

from .conftest import local_spark, runner, write_config

TABLES = ("leads", "activities", "lifecycle")
AS_OF = pd.Timestamp("2025-06-01", tz="UTC")


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    """A local[2] SparkSession in a time zone other than UTC (the features must not depend on it)."""
    with local_spark("leadscore-test-features", "Asia/Kolkata", tmp_path_factory.mktemp("spark")) as session:
        yield session


@pytest.fixture(scope="module")
def crm(tmp_path_factory) -> dict[str, pd.DataFrame]:
    out = tmp_path_factory.mktemp("spark-features") / "data"
    generate(SynthConfig(n_leads=1500, seed=23), out, progress=False)
    return {n: pd.read_parquet(out / f"{n}.parquet") for n in TABLES}


def collected(spark_rows, tmp_path) -> pd.DataFrame:
    """Spark's rows as pandas reads them back from Parquet (as a user of the output would)."""
    spark_rows.write.parquet(str(tmp_path / "rows"))
    return pd.read_parquet(tmp_path / "rows")


def assert_same_features(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected) > 0
    assert got[["as_of", "lead_id"]].equals(got[["as_of", "lead_id"]].sort_values(["as_of", "lead_id"]))  # sorted
    for col in expected.columns:
        assert got[col].dtype == expected[col].dtype, col
        a, b = got[col], expected[col]
        if b.dtype == "float64":
            np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=1e-9, err_msg=col)
            assert (a.isna() == b.isna()).all(), col
        else:
            assert a.tolist() == b.tolist(), col


def test_spark_features_of_the_open_leads_equal_duckdbs(spark, crm, tmp_path):
    expected = features_as_of(crm, as_of=AS_OF)
    got = collected(features_spark(spark, {n: spark.createDataFrame(crm[n]) for n in TABLES}, as_of=AS_OF), tmp_path)
    assert_same_features(got, expected)
    # the comparison covers activity, recency, lifecycle and missing values
    for col in ("n_email_open_30d", "days_since_last_activity", "engagement_decayed"):
        assert expected[col].astype(float).fillna(0).gt(0).mean() > 0.2, col
    assert expected["days_since_page_view_pricing"].isna().any()   # never did it: missing, not 0


def test_spark_features_of_training_pairs_equal_duckdbs(spark, crm, tmp_path):
    leads = crm["leads"]["lead_id"].sample(400, random_state=2)
    dates = pd.to_datetime(["2024-09-01 00:00", "2025-01-15 12:30", "2025-06-01 00:00"], utc=True)
    pairs = pd.DataFrame([(lead, d) for lead in leads for d in dates], columns=["lead_id", "as_of"])
    expected = features_as_of(crm, pairs)
    parquet = {}
    for n in TABLES:  # Parquet paths, as on a cluster
        parquet[n] = str(tmp_path / f"{n}.parquet")
        crm[n].to_parquet(parquet[n])
    got = collected(features_spark(spark, parquet, pairs, buckets=5), tmp_path)
    assert_same_features(got, expected)
    assert 0 < len(expected) < len(pairs)   # some pairs came before their lead existed: no row
    assert expected["as_of"].nunique() == 3


@pytest.mark.slow
def test_spark_training_examples_equal_duckdbs(spark, crm, tmp_path):
    """build_examples on Spark: the same as-of dates, pairs, features, labels (immature ones
    null) and report."""
    config = ExampleConfig(start="2025-04-15", max_lead_age_days=200, label_latency_days=3)
    expected, report = build_examples(crm, config)
    frame, got_report = examples_spark(spark, {n: spark.createDataFrame(crm[n]) for n in TABLES}, config)
    got = collected(frame, tmp_path)
    assert_same_features(got.drop(columns=list(LABELS)), expected.drop(columns=list(LABELS)))
    for label in LABELS:
        assert got[label].astype("boolean").tolist() == expected[label].tolist(), label
        assert expected[label].isna().any() and expected[label].fillna(False).any(), label  # immature and positive
    assert got_report == report
    assert report.as_of_dates[0] < report.as_of_dates[-1] and expected["lead_age_days"].max() <= 200


def test_events_from_as_of_on_change_no_spark_feature(spark, crm, tmp_path):
    """Point in time: activities and stage events at as_of and after it are invisible."""
    before = features_spark(spark, {n: spark.createDataFrame(crm[n]) for n in TABLES}, as_of=AS_OF).toPandas()
    later = dict(crm)
    acts = crm["activities"].sample(3000, random_state=4)
    stages = crm["lifecycle"].sample(300, random_state=5)
    shift = lambda t: AS_OF + pd.to_timedelta(np.arange(len(t)) % 40, unit="D")  # noqa: E731 - at as_of, then later
    later["activities"] = pd.concat([crm["activities"], acts.assign(occurred_at=shift(acts))], ignore_index=True)
    later["lifecycle"] = pd.concat([crm["lifecycle"], stages.assign(occurred_at=shift(stages))], ignore_index=True)
    after = features_spark(spark, {n: spark.createDataFrame(later[n]) for n in TABLES}, as_of=AS_OF).toPandas()
    pd.testing.assert_frame_equal(after, before)


def test_spark_reads_history_numbers_naive_times_and_refuses_repeated_pairs_as_duckdb_would(spark, tmp_path):
    """Values the contract accepts read alike in both engines: a company size written "250.0",
    "1e3" or "10.5" in the attribute history (Spark's ANSI cast alone gives NULL), timestamps
    without a zone in Parquet (UTC, not the session's zone). Repeated pairs are refused."""
    from leadscore.data.contract import Contract, validate_tables

    def ts(text):
        return pd.Timestamp(text, tz="UTC")

    leads = pd.DataFrame({"lead_id": ["A", "B", "C"], "created_at": [ts("2025-01-01"), ts("2025-01-05 07:45"),
                                                                      ts("2025-02-01")],
                          "company_size": pd.array([250, None, 12], dtype="Int64"), "country": ["US", "DE", None],
                          "job_title": ["VP of Sales", None, "Student"], "seniority": ["vp", None, "student"],
                          "department": ["sales", None, None], "industry": ["Software", None, "Education"],
                          "lead_source": ["referral", "paid_search", "social"],
                          "email_domain_type": ["corporate", "free", "student"]})
    activities = pd.DataFrame({"lead_id": ["A", "A", "B", "C"], "occurred_at": [ts("2025-01-02"), ts("2025-01-03 23:30"),
                                                                                  ts("2025-01-06"), ts("2025-02-02")],
                               "activity_type": ["page_view_pricing", "demo_request", "email_open", "content_download"]})
    lifecycle = pd.DataFrame({"lead_id": ["A", "B"], "stage": ["mql", "mql"],
                              "occurred_at": [ts("2025-01-03"), ts("2025-01-07")]})
    history = pd.DataFrame({"lead_id": ["A", "B", "C"], "attribute": ["company_size"] * 3,
                            "value": ["250.0", "1e3", "10.5"],
                            "valid_from": [ts("2025-01-01"), ts("2025-01-05"), ts("2025-02-01")]})
    contract = Contract(history_attributes=("company_size",))
    tables = {"leads": leads, "activities": activities, "lifecycle": lifecycle, "attribute_history": history}
    assert not validate_tables(tables, now=ts("2025-06-01"), contract=contract).violations
    config = FeatureConfig(contract=contract)
    expected = features_as_of(tables, as_of="2025-03-01", config=config)
    assert expected["company_size_band"].tolist() == ["201-1000", "201-1000", "11-50"]   # 250, 1000, 11
    paths = {}
    for name, frame in tables.items():   # naive UTC times, as many exports write them
        naive = {c: frame[c].dt.tz_localize(None).astype("datetime64[us]") for c in frame.columns
                 if isinstance(frame[c].dtype, pd.DatetimeTZDtype)}
        paths[name] = str(tmp_path / f"{name}.parquet")
        frame.assign(**naive).to_parquet(paths[name])
    got = collected(features_spark(spark, paths, as_of="2025-03-01", config=config), tmp_path)
    assert_same_features(got, expected)

    pairs = pd.DataFrame({"lead_id": ["A", "B", "A"], "as_of": [ts("2025-03-01"), ts("2025-03-01"), ts("2025-03-01")]})
    with pytest.raises(ValueError, match=r"given more than once.*lead 'A'.*rows 0, 2"):
        features_spark(spark, paths, pairs, config=config)


def test_the_sql_spark_runs_computes_in_doubles_and_spark_functions():
    sql = spark_sql("SELECT (as_of_us - epoch_us(t)) / 86400000000.0 AS age, arg_max_null(v, epoch_us(t)) "
                    "FILTER (WHERE a = 'x') AS latest, CAST(n AS DOUBLE) AS n FROM h")
    assert "UNIX_MICROS(t)" in sql and "MAX_BY(v, UNIX_MICROS(t))" in sql
    assert "CAST(86400000000.0 AS DOUBLE)" in sql
    assert "EPOCH_US" not in sql and "ARG_MAX_NULL" not in sql


@pytest.mark.slow
def test_cli_features_engine_spark_on_a_vendor_export_equals_duckdb(spark, tmp_path):
    """The sparse export: declared attributes and kinds, day-first local dates through a source
    mapping, an attribute history read as of T - the CLI's two engines write the same rows."""
    export = tmp_path / "export"
    generate_sparse(SparseConfig(n_leads=800, seed=5), export, progress=False)
    args = ["features", "--source", str(SOURCE_YAML), "--data", str(export), "--as-of", "2025-06-01"]
    duck = runner.invoke(app, [*args, "--out", str(tmp_path / "duck.parquet")])
    assert duck.exit_code == 0, duck.output
    on_spark = runner.invoke(app, [*args, "--engine", "spark", "--out", str(tmp_path / "spark.parquet")])
    assert on_spark.exit_code == 0, on_spark.output
    assert "on Spark (local[2])" in on_spark.output
    expected = pd.read_parquet(tmp_path / "duck.parquet")
    assert_same_features(pd.read_parquet(tmp_path / "spark.parquet"), expected)
    catalogue = pd.read_csv(tmp_path / "spark.catalogue.csv")
    assert catalogue["name"].tolist() == expected.columns[2:].tolist()
    declared = set(catalogue["name"]) - set(feature_catalogue(FeatureConfig())["name"])
    assert declared, "the sparse export declares attributes and kinds"

    # the training table too: the attribute history read as of each of many as_of dates
    config = write_config(tmp_path / "sparse.yaml", export, base="sparse.yaml")
    args = ["examples", "--config", str(config), "--data", str(export)]
    duck = runner.invoke(app, [*args, "--out", str(tmp_path / "duck-examples.parquet")])
    assert duck.exit_code == 0, duck.output
    on_spark = runner.invoke(app, [*args, "--engine", "spark", "--out", str(tmp_path / "spark-examples.parquet")])
    assert on_spark.exit_code == 0, on_spark.output
    expected = pd.read_parquet(tmp_path / "duck-examples.parquet")
    got = pd.read_parquet(tmp_path / "spark-examples.parquet")
    assert_same_features(got.drop(columns=list(LABELS)), expected.drop(columns=list(LABELS)))
    for label in LABELS:
        assert got[label].astype("boolean").tolist() == expected[label].astype("boolean").tolist(), label
    report = [line for line in duck.output.splitlines() if "matured" in line or "examples of" in line]
    assert report and all(line in on_spark.output for line in report)   # the same counts
    audits = [line for line in duck.output.splitlines() if line.startswith(("  ", "leakage", "won:", "became_sql:"))
              and "matured" not in line]
    assert audits and all(line in on_spark.output for line in audits)   # under 100,000 rows: the same audit


def test_cli_features_engine_spark_needs_a_parquet_output(tmp_path):
    result = runner.invoke(app, ["features", "--data", str(tmp_path), "--as-of", "2025-06-01", "--engine", "spark",
                                 "--out", str(tmp_path / "rows.csv")])
    assert result.exit_code == 2
    assert "Parquet dataset directory" in result.output and "rows.csv" in result.output
