"""Scale-out scoring on Spark: the registered pyfunc model as a ``mlflow.pyfunc.spark_udf``.

For lead bases that outgrow one machine. The input is a Spark DataFrame of prepared feature
rows - the columns ``leadscore features`` writes: ``lead_id``, ``as_of`` and the feature
catalogue's columns - and the output has one row per input row with the batch job's scoring
columns (:data:`leadscore.serving.columns.EXPLAINED_COLUMNS`): lead_id, as_of, p_sql, p_won, score,
tier, fit_score, engagement_score, grid, reasons (+ baseline_points / baseline_tier copied
through when the input carries them). Every executor runs the same ``Scorer`` as
``leadscore score`` and ``mlflow models serve``, so the scores are the same.

pyspark is an optional extra (``pip install 'leadscore[spark]'``; pyspark 4.x needs Java 17+)
and is imported only when a function here is called. Example::

    import mlflow
    from pyspark.sql import SparkSession
    from leadscore.serving.spark import score_spark

    mlflow.set_tracking_uri("sqlite:///mlflow.db")      # the store the model is registered in
    spark = SparkSession.builder.getOrCreate()
    features = spark.read.parquet("s3://crm/features/2025-06-01/")   # `leadscore features` output
    scores = score_spark(features, "models:/leadscore@champion")
    scores.write.mode("overwrite").parquet("s3://crm/scores/2025-06-01/")

``env_manager="local"`` (the default) runs the model in the executors' own Python, which must
have leadscore and the versions pinned in constraints.txt installed; ``"virtualenv"``,
``"uv"`` or ``"conda"`` make MLflow rebuild the model's logged environment on every executor
instead (slower to start, but independent of what the cluster has installed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leadscore.features.spark import require_pyspark
from leadscore.serving.columns import BASELINE_COLUMNS, SPARK_FIELDS

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pyspark.sql import DataFrame, SparkSession

# The pyfunc's scoring columns after the keys, with their Spark types. lead_id and as_of are
# taken from the input rather than from the model's output (spark_udf result types allow only
# int/long/float/double/string/boolean, no timestamps); rows stay aligned because a pandas UDF
# returns one row per input row.
RESULT_FIELDS = SPARK_FIELDS
PASSTHROUGH = BASELINE_COLUMNS  # copied from the input when present, as the scorer does
_RESULT = "_leadscore"


def _require_pyspark() -> None:
    require_pyspark("Spark scoring")


def result_type():
    """The Spark struct the scoring UDF returns: :data:`RESULT_FIELDS`."""
    _require_pyspark()
    from pyspark.sql.types import (
        DoubleType,
        IntegerType,
        StringType,
        StructField,
        StructType,
    )

    types = {"double": DoubleType(), "int": IntegerType(), "string": StringType()}
    return StructType([StructField(name, types[kind], nullable=True) for name, kind in RESULT_FIELDS])


def scoring_udf(model_uri: str, spark: SparkSession | None = None, env_manager: str = "local",
                tracking_uri: str | None = None):
    """``mlflow.pyfunc.spark_udf`` on ``model_uri`` returning :func:`result_type`; call it on
    ``struct(*columns)`` of the feature rows. ``tracking_uri`` (else MLflow's current one,
    e.g. ``MLFLOW_TRACKING_URI``) is where ``models:/`` URIs are resolved. The registered copy
    is checked first (:func:`leadscore.serving.registry.verify_registered`): a model whose code or
    bundle differs from what its training run recorded is refused before it runs anywhere."""
    _require_pyspark()
    import mlflow
    from pyspark.sql import SparkSession

    from leadscore.serving.registry import verify_registered

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    verify_registered(model_uri)   # before MLflow imports the model's code on the executors
    spark = spark or SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError("no active SparkSession: pass spark= or create one first")
    return mlflow.pyfunc.spark_udf(spark, model_uri, result_type=result_type(), env_manager=env_manager)


def utc_wall_clock(column, spark: SparkSession):
    """A TIMESTAMP column as TIMESTAMP_NTZ holding its UTC wall-clock time.

    A pandas UDF receives TIMESTAMP values as naive times in ``spark.sql.session.timeZone``,
    while the pyfunc reads naive ``as_of`` values as UTC; this hands it UTC whatever the
    session's time zone is (TIMESTAMP_NTZ values reach pandas unchanged)."""
    _require_pyspark()
    from pyspark.sql import functions as F

    return F.convert_timezone(F.lit(spark.conf.get("spark.sql.session.timeZone")), F.lit("UTC"),
                              column.cast("timestamp_ntz"))


def score_spark(features_df: DataFrame, model_uri: str, spark: SparkSession | None = None,
                env_manager: str = "local", tracking_uri: str | None = None) -> DataFrame:
    """Score a Spark DataFrame of feature rows with the registered pyfunc model.

    Returns lead_id, as_of (both as given), p_sql, p_won, score, tier, fit_score,
    engagement_score, grid, reasons, then baseline_points / baseline_tier when the input has
    them; one row per input row. Lazy, like any Spark transformation: nothing is scored until
    the result is written or collected. ``as_of`` may be a TIMESTAMP (an instant; handed to the
    model as its UTC wall-clock time, whatever ``spark.sql.session.timeZone`` is) or a
    TIMESTAMP_NTZ (read as UTC, like the pyfunc does).
    """
    _require_pyspark()
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampType

    columns = list(features_df.columns)
    for key in ("lead_id", "as_of"):
        if key not in columns:
            raise ValueError(f"feature rows lack the key column {key!r}")
    spark = spark or features_df.sparkSession
    predict = scoring_udf(model_uri, spark=spark, env_manager=env_manager, tracking_uri=tracking_uri)

    schema = predict.metadata.get_input_schema()
    if schema is not None and schema.has_input_names():
        missing = [c for c in schema.required_input_names() if c not in columns]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise ValueError(f"feature rows lack column(s) {shown}; give the columns `leadscore features` "
                             "writes (lead_id, as_of and the feature catalogue)")
        inputs = [c for c in schema.input_names() if c in columns]
    else:
        inputs = [c for c in columns if c not in PASSTHROUGH]

    def model_column(name: str):
        if name == "as_of" and isinstance(features_df.schema["as_of"].dataType, TimestampType):
            return utc_wall_clock(F.col("as_of"), spark).alias("as_of")
        return F.col(name)

    scored = features_df.select(
        "lead_id", "as_of", *[c for c in PASSTHROUGH if c in columns],
        predict(F.struct(*[model_column(c) for c in inputs])).alias(_RESULT),
    )
    return scored.select(
        "lead_id", "as_of", *[f"{_RESULT}.{name}" for name, _ in RESULT_FIELDS],
        *[c for c in PASSTHROUGH if c in columns],
    )


def baseline_spark(spark: SparkSession, tables, rules, pairs=None, *, as_of=None, contract=None) -> DataFrame:
    """The rule baseline's points on Spark (:func:`leadscore.modeling.baseline.score_baseline`
    without ``fired_rules``): lead_id, as_of, fit_points, engagement_points, total_points,
    baseline_tier and grid of the pairs, or of every lead open at ``as_of``. The same two
    queries, translated by SQLGlot, and the same row-by-row points
    (:func:`~leadscore.modeling.baseline.points_of`) in a pandas UDF."""
    _require_pyspark()
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.types import (
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    from leadscore.data.contract import DEFAULT_CONTRACT
    from leadscore.features.spark import register_views, spark_sql
    from leadscore.modeling.baseline import baseline_sql, points_of

    contract = contract or DEFAULT_CONTRACT
    register_views(spark, tables, contract, pairs, as_of)
    attributes, engagement = (spark.sql(spark_sql(sql)) for sql in baseline_sql(rules, contract))
    rows = attributes.join(engagement, ["lead_id", "as_of_us"], "left")
    points = ("fit_points", "engagement_points", "total_points", "baseline_tier", "grid")
    schema = StructType([StructField("lead_id", StringType()), StructField("as_of_us", LongType())]
                        + [StructField(c, DoubleType() if c.endswith("points") else StringType()) for c in points])

    def per_batch(batches):
        for batch in batches:
            out = points_of(batch.reset_index(drop=True), rules, explain=False)
            yield pd.DataFrame({"lead_id": batch["lead_id"].to_numpy(), "as_of_us": batch["as_of_us"].to_numpy(),
                                **{c: out[c].to_numpy() for c in points}})

    return rows.mapInPandas(per_batch, schema).select(
        "lead_id", F.timestamp_micros("as_of_us").alias("as_of"), *points)


def score_leads_spark(spark: SparkSession, tables, as_of, model_uri: str, env_manager: str = "local",
                      tracking_uri: str | None = None, scorer=None) -> DataFrame:
    """Every lead open at ``as_of`` scored on Spark, end to end: its features
    (:func:`leadscore.features.spark.features_spark`, with the model's feature settings and its
    source's attributes and kinds), the rule baseline's points beside them
    (:func:`baseline_spark`, the model's rules), then the registered model (:func:`score_spark`).
    ``tables``: the clean contract tables (Spark DataFrames or Parquet paths) by name. Returns
    :func:`score_spark`'s columns with baseline_points and baseline_tier. ``scorer``: the model
    already read (:func:`leadscore.serving.registry.load_scorer`), else it is read here."""
    _require_pyspark()
    import mlflow

    from leadscore.features.spark import features_spark
    from leadscore.serving.registry import load_scorer

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    if scorer is None:
        scorer, _ = load_scorer(model_uri)
    if scorer.flat:
        raise ValueError(f"{model_uri} was trained on a flat export (one row per lead): score the export's rows as "
                         "they are with score_spark")
    rows = features_spark(spark, tables, as_of=as_of, config=scorer.feature_config)
    if scorer.rules is not None:
        points = baseline_spark(spark, tables, scorer.rules, as_of=as_of, contract=scorer.feature_config.contract)
        rows = rows.join(points.selectExpr("lead_id", "as_of", "total_points AS baseline_points", "baseline_tier"),
                         ["lead_id", "as_of"], "left")
    return score_spark(rows, model_uri, spark=spark, env_manager=env_manager).orderBy("as_of", "lead_id")
