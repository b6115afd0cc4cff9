"""Point-in-time features on Spark: the DuckDB feature build's own SQL, run by Spark.

For lead bases whose activity history outgrows one machine. There is one feature definition:
the SQL :mod:`leadscore.features.builder` writes for DuckDB (the registry's aggregates, the
fit attributes, the attribute history as of T, the open-lead rule) is translated to Spark
SQL by SQLGlot, and the Python that turns the aggregates into feature rows (the pivot of the
per-kind aggregates, the derived features, the catalogue's order and dtypes) is the same
function, :func:`leadscore.features.builder.assemble`, run on each bucket of leads in a Spark
pandas UDF. So Spark gives the DuckDB features - the tests compare every column of every lead.

What differs is only how rows are tied together: DuckDB numbers the (lead, as_of) pairs
0..n-1; here a pair is keyed by its lead id and as_of (exact, the same in every stage of the
plan, however Spark partitions it) and numbered within its bucket.

The input tables must be clean contract tables (``leadscore validate --quarantine`` or a
mapping's staged output): Spark reads them as they are, typed like the DuckDB views. pyspark
is an optional extra (``pip install 'leadscore[spark]'``, Java 17+), imported when a function
here is called. Example::

    from pyspark.sql import SparkSession
    from leadscore.features.spark import features_spark

    spark = SparkSession.builder.getOrCreate()
    tables = {name: f"s3://crm/clean/{name}.parquet" for name in ("leads", "activities", "lifecycle")}
    rows = features_spark(spark, tables, as_of="2025-06-01")     # a Spark DataFrame
    rows.write.parquet("s3://crm/features/2025-06-01/")           # what `score_spark` reads
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from leadscore.data.contract import Contract
from leadscore.features import builder as B

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pyspark.sql import DataFrame, SparkSession

INSTALL_HINT = "pip install 'leadscore[spark]'"
_BUCKET = "_bucket"
# DuckDB functions SQLGlot passes through unchanged, with the Spark function doing the same.
_FUNCTIONS = {"EPOCH_US": "UNIX_MICROS", "ARG_MAX_NULL": "MAX_BY"}


def require_pyspark(what: str = "features on Spark") -> None:
    """ImportError saying how to install the extra when pyspark is missing (``what`` needs it)."""
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{what} needs pyspark: {INSTALL_HINT} (pyspark 4.x needs Java 17+)") from exc


@functools.lru_cache(maxsize=256)
def spark_sql(duckdb_sql: str) -> str:
    """``duckdb_sql`` in Spark SQL's dialect (SQLGlot), with the few functions it passes through
    renamed, and decimal literals read as doubles: Spark would compute ``x / 86400000000.0`` in
    decimals, DuckDB in doubles."""
    import sqlglot
    from sqlglot import exp

    def to_spark(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and str(node.this).upper() in _FUNCTIONS:
            node.set("this", _FUNCTIONS[str(node.this).upper()])   # in place: its arguments are visited next
            return node
        if (isinstance(node, exp.Literal) and not node.is_string and "." in node.this
                and not isinstance(node.parent, exp.Cast)):
            return exp.cast(node.copy(), exp.DataType.build("DOUBLE"))
        return node

    tree = sqlglot.parse_one(duckdb_sql, read="duckdb").transform(to_spark)
    return tree.sql(dialect="spark")


def register_tables(spark: SparkSession, tables: Mapping[str, object], contract: Contract) -> None:
    """Temporary views ``leads``, ``activities``, ``lifecycle`` (and ``attribute_history``) with
    the contract's typed columns, like :func:`leadscore.features.builder.connect`'s. A table is
    a Spark DataFrame or a Parquet path."""
    for name in contract.tables:
        if name not in tables:
            raise KeyError(f"missing table {name!r}")
        src = tables[name]
        frame = _utc(spark, src if hasattr(src, "createOrReplaceTempView") else spark.read.parquet(str(src)))
        frame.createOrReplaceTempView(f"_{name}_src")
        spark.sql(spark_sql(B.typed_table_sql(name, f"_{name}_src", set(frame.columns), contract))
                  ).createOrReplaceTempView(name)


def _utc(spark: SparkSession, frame: DataFrame) -> DataFrame:
    """``frame`` with its timestamps without a time zone (TIMESTAMP_NTZ, what Spark reads of a
    naive Parquet timestamp) read as UTC, the contract's rule and DuckDB's - not in the
    session's time zone, as a cast would."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampNTZType

    zone = F.lit(spark.conf.get("spark.sql.session.timeZone"))
    naive = [f.name for f in frame.schema.fields if isinstance(f.dataType, TimestampNTZType)]
    for name in naive:
        frame = frame.withColumn(name, F.convert_timezone(F.lit("UTC"), zone, F.col(name)).cast("timestamp"))
    return frame


def _pairs(spark: SparkSession, pairs: pd.DataFrame | None, as_of) -> tuple[DataFrame, int | None]:
    """The pairs to compute for (``lead_id``, ``as_of_us``, ``pair``: their exact key) and the
    single as_of (microseconds) when there is one - the scoring case."""
    from pyspark.sql import functions as F

    if (pairs is None) == (as_of is None):
        raise ValueError("give exactly one of pairs= or as_of=")
    if pairs is None:
        single = B._as_of_us(as_of)
        frame = open_leads_spark(spark, [as_of])
    elif hasattr(pairs, "createOrReplaceTempView"):   # a Spark DataFrame of lead_id, as_of_us
        single, frame = None, pairs
    else:
        given = B._pairs_frame(pairs)
        repeated = given.duplicated()
        if repeated.any():
            first = given[repeated].iloc[0]
            raise ValueError(f"pairs: {int(repeated.sum()):,} (lead_id, as_of) pairs are given more than once, e.g. "
                             f"lead {first['lead_id']!r} at {pd.Timestamp(int(first['as_of_us']), unit='us', tz='UTC')} "
                             f"(rows {', '.join(map(str, np.flatnonzero(given.duplicated(keep=False))[:5]))}); "
                             "give each pair once")
        single = int(given["as_of_us"].iloc[0]) if len(given) and given["as_of_us"].nunique() == 1 else None
        frame = spark.createDataFrame(given, "lead_id string, as_of_us long")
    # The lead id, then the as_of's digits: the last "@" splits them, so no two pairs share a key.
    key = F.concat(F.col("lead_id"), F.lit("@"), F.col("as_of_us").cast("string"))
    return frame.select("lead_id", "as_of_us", key.alias("pair")), single


def open_leads_spark(spark: SparkSession, as_of_dates) -> DataFrame:
    """(lead_id, as_of_us) of every lead open at each date (:func:`leadscore.features.builder.open_leads`),
    from the registered views."""
    dates = B._dates_frame(as_of_dates)
    spark.createDataFrame(dates, "as_of_us long").createOrReplaceTempView("_dates")
    return spark.sql(spark_sql(B.open_leads_sql()))


class SparkQueries:
    """A DuckDB connection's ``execute(sql).fetchall()`` / ``.df()`` on Spark, the SQL translated
    (:func:`spark_sql`): the helpers written for a DuckDB connection that read a few aggregates
    (the data's bounds, the newest outcome) run on Spark unchanged."""

    def __init__(self, spark: SparkSession):
        self.spark = spark
        self._frame = None

    def execute(self, sql: str) -> SparkQueries:
        self._frame = self.spark.sql(spark_sql(sql))
        return self

    def fetchall(self) -> list[tuple]:
        return [tuple(row) for row in self._frame.collect()]

    def df(self) -> pd.DataFrame:
        return self._frame.toPandas()


def register_views(spark: SparkSession, tables: Mapping[str, object], contract: Contract,
                   pairs: pd.DataFrame | None = None, as_of=None) -> int | None:
    """What the builder's SQL reads, as Spark temporary views: the contract tables, typed
    (``tables``: Spark DataFrames or Parquet paths by name), and ``_pairs`` - the given pairs (a
    pandas frame of lead_id, as_of, or a Spark DataFrame of lead_id, as_of_us) or every lead open
    at ``as_of`` - with their exact key ``pair``. Returns the single as_of in microseconds when
    there is one (the scoring case), else None."""
    register_tables(spark, tables, contract)
    pairs_df, single = _pairs(spark, pairs, as_of)
    pairs_df.createOrReplaceTempView("_pairs")
    return single


def _schema(plan: B.Plan):
    from pyspark.sql.types import (
        ByteType,
        DoubleType,
        IntegerType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    types = {"str": StringType(), "int32": IntegerType(), "int8": ByteType(), "float64": DoubleType()}
    return StructType([StructField("lead_id", StringType()), StructField("as_of_us", LongType())]
                      + [StructField(s.name, types[s.dtype]) for s in B.feature_specs(plan.config)])


def _bucket_rows(plan: B.Plan):
    """The pandas UDF: one bucket's per-lead and per-kind aggregates -> its feature rows,
    through :func:`leadscore.features.builder.assemble` with the pairs numbered in the bucket."""

    def rows(per_lead: pd.DataFrame, per_kind: pd.DataFrame) -> pd.DataFrame:
        per_lead = per_lead.drop(columns=[_BUCKET]).sort_values(["as_of_us", "lead_id"], kind="stable")
        number = pd.Index(per_lead["pair"].to_numpy())
        n = len(number)
        at = number.get_indexer(per_kind["pair"].to_numpy())
        per_lead = per_lead.assign(pair=np.arange(n, dtype=np.int64))
        per_kind = per_kind.drop(columns=[_BUCKET]).assign(pair=np.where(at >= 0, at, n).astype(np.int64))
        out = B.assemble(pa.Table.from_pandas(per_lead, preserve_index=False),
                         pa.Table.from_pandas(per_kind, preserve_index=False), n + 1, plan)
        as_of_us = out.pop("as_of").astype("datetime64[us, UTC]").astype("int64")
        out.insert(1, "as_of_us", as_of_us)
        return out

    return rows


def features_spark(spark: SparkSession, tables: Mapping[str, object], pairs: pd.DataFrame | None = None, *,
                   as_of=None, config: B.FeatureConfig | None = None, buckets: int | None = None) -> DataFrame:
    """:func:`leadscore.features.builder.features_as_of` on Spark: the same columns, values and
    dtypes, as a Spark DataFrame sorted by (as_of, lead_id).

    ``tables``: the clean contract tables (Spark DataFrames or Parquet paths) by name; give
    either ``pairs`` (a pandas frame of lead_id, as_of, or a Spark DataFrame of lead_id,
    as_of_us; training) or ``as_of`` (every lead open then; scoring). ``buckets``: how many
    groups of leads the rows are assembled in (default: Spark's ``spark.sql.shuffle.partitions``).
    Lazy, like any Spark transformation."""
    require_pyspark()
    from pyspark.sql import functions as F

    config = config or B.FeatureConfig()
    plan = B.Plan(config)
    single = register_views(spark, tables, config.contract, pairs, as_of)
    per_kind = spark.sql(spark_sql(B.per_kind_sql(plan, single, details=None)))
    per_lead = spark.sql(spark_sql(B.per_lead_sql(plan, single, distinct_assets=True)))
    if buckets is not None and buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    partitions = spark.conf.get("spark.sql.shuffle.partitions")   # a number, or e.g. "auto" on Databricks
    n = buckets or (int(partitions) if partitions.isdigit() else spark.sparkContext.defaultParallelism)
    bucket = F.pmod(F.xxhash64("pair"), F.lit(n)).alias(_BUCKET)
    rows = (per_lead.select(bucket, "*").groupBy(_BUCKET)
            .cogroup(per_kind.select(bucket, "*").groupBy(_BUCKET))
            .applyInPandas(_bucket_rows(plan), schema=_schema(plan)))
    names = [s.name for s in B.feature_specs(config)]
    return (rows.select("lead_id", F.timestamp_micros("as_of_us").alias("as_of"), *names)
            .orderBy("as_of", "lead_id"))


def spark_session(app_name: str, master: str | None = None) -> SparkSession:
    """The active SparkSession, or a new one on ``master`` (None: the one spark-submit gives,
    else ``local[*]``); Python workers run this interpreter (where leadscore is installed)
    unless ``PYSPARK_PYTHON`` says otherwise. Raises RuntimeError, saying why, when Spark
    cannot start (no Java 17+)."""
    require_pyspark()
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = SparkSession.getActiveSession()
    if session is None:
        builder = SparkSession.builder.appName(app_name)
        try:
            session = (builder.master(master) if master else builder).getOrCreate()
        except Exception as exc:  # pyspark raises its own errors when the JVM cannot start
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RuntimeError(f"could not start Spark ({first}); Spark needs Java 17 or newer on the PATH or in "
                               "JAVA_HOME") from exc
        session.sparkContext.setLogLevel("ERROR")
    return session


def timestamps_in_micros(spark: SparkSession) -> None:
    """Spark writes Parquet timestamps as microseconds in UTC from now on - what pandas and DuckDB
    read as UTC instants (Spark's default, INT96, reads back without a time zone)."""
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")


def write_dataset(frame: DataFrame, out) -> int:
    """``frame`` written by Spark as a Parquet dataset directory at ``out`` (a local path), which
    replaces what was there only once it is complete (timestamps: :func:`timestamps_in_micros`).
    Returns the number of rows written."""
    import tempfile
    from pathlib import Path

    spark = frame.sparkSession
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    timestamps_in_micros(spark)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
        written = Path(work) / "rows"
        frame.write.parquet(str(written))
        n = spark.read.parquet(str(written)).count()
        if out.is_dir():
            out.rename(Path(work) / "previous")   # removed with the work directory
        elif out.exists():
            out.unlink()
        written.rename(out)
    return n


def write_features(spark: SparkSession, tables: Mapping[str, object], as_of, out, config: B.FeatureConfig) -> int:
    """The features of every lead open at ``as_of`` (:func:`features_spark`) written as a Parquet
    dataset directory at ``out`` (:func:`write_dataset`). Returns the number of rows."""
    return write_dataset(features_spark(spark, tables, as_of=as_of, config=config), out)
