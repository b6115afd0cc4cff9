"""Training examples on Spark: :func:`leadscore.labels.examples.build_examples` for lead bases
one machine cannot hold - the same (lead, as_of) pairs, features and matured labels.

The as-of dates come from the same helpers (their few aggregates run on Spark through
:class:`~leadscore.features.spark.SparkQueries`), the open leads and the features from
:mod:`leadscore.features.spark`, and the labels from the same query (:data:`LABEL_SQL`,
translated) and the same row-by-row rule (:func:`labels_of`) in a pandas UDF. The tests
compare every column of every example with DuckDB's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from leadscore.features.builder import FeatureConfig
from leadscore.labels.examples import (
    LABEL_SQL,
    LABELS,
    ExampleConfig,
    ExampleReport,
    as_of_dates,
    data_bounds,
    labels_of,
    observed_end,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pyspark.sql import DataFrame, SparkSession


def examples_spark(spark: SparkSession, tables: Mapping[str, object], config: ExampleConfig | None = None,
                   feature_config: FeatureConfig | None = None) -> tuple[DataFrame, ExampleReport]:
    """(examples, report): the feature rows with ``became_sql`` and ``won`` (null where immature)
    of every lead open at every as-of date of the window, sorted by (as_of, lead_id), as a Spark
    DataFrame - and the report :func:`~leadscore.labels.examples.build_examples` gives, counted
    on Spark. ``tables``: the clean contract tables (Spark DataFrames or Parquet paths). The
    feature rows are persisted (memory, then disk) for the actions on the result; they are
    released with the session, or by ``spark.catalog.clearCache()``."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.types import (
        BooleanType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    from leadscore.features.spark import (
        SparkQueries,
        features_spark,
        open_leads_spark,
        register_tables,
        spark_sql,
    )

    config = config or ExampleConfig()
    feature_config = feature_config or FeatureConfig()
    register_tables(spark, tables, feature_config.contract)
    queries = SparkQueries(spark)
    first_created, _ = data_bounds(queries)
    observed_until = observed_end(queries, config)
    dates = as_of_dates(config, first_created, observed_until)
    pairs = open_leads_spark(spark, dates)
    features = features_spark(spark, tables, pairs, config=feature_config)
    if config.max_lead_age_days is not None:
        features = features.where(F.col("lead_age_days") <= config.max_lead_age_days)
    # read twice below (the labels' keys, the join) and again by every action on the result
    features = features.persist(StorageLevel.MEMORY_AND_DISK)
    keys = features.select("lead_id", F.unix_micros("as_of").alias("as_of_us"))
    keys.createOrReplaceTempView("_label_pairs")
    first = spark.sql(spark_sql(LABEL_SQL))
    schema = StructType([StructField("lead_id", StringType()), StructField("as_of_us", LongType())]
                        + [StructField(label, BooleanType()) for label in LABELS])

    def per_batch(batches):
        for batch in batches:
            labels = labels_of(batch.reset_index(drop=True), config, observed_until)
            yield labels.assign(lead_id=batch["lead_id"].to_numpy(), as_of_us=batch["as_of_us"].to_numpy())[
                ["lead_id", "as_of_us", *LABELS]]

    labels = first.mapInPandas(per_batch, schema)
    examples = (features.withColumn("_as_of_us", F.unix_micros("as_of"))
                .join(labels.withColumnRenamed("as_of_us", "_as_of_us"), ["lead_id", "_as_of_us"], "left")
                .drop("_as_of_us").orderBy("as_of", "lead_id"))
    counts = examples.agg(
        F.count(F.lit(1)).alias("examples"), F.countDistinct("lead_id").alias("leads"),
        *[F.count_if(F.col(label).isNull()).alias(f"immature_{label}") for label in LABELS],
        *[F.count_if(F.col(label)).alias(f"positives_{label}") for label in LABELS]).collect()[0]
    report = ExampleReport(as_of_dates=dates, observed_until=observed_until, examples=int(counts["examples"]),
                           leads=int(counts["leads"]),
                           immature={label: int(counts[f"immature_{label}"]) for label in LABELS},
                           positives={label: int(counts[f"positives_{label}"]) for label in LABELS})
    return examples, report
