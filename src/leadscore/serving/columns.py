"""The columns leadscore's scores come in: declared once, read by the scorer, the batch job's
Parquet schema and the Spark UDF's struct."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Column:
    name: str
    arrow: pa.DataType
    spark: str           # the Spark SQL type of the UDF's struct field (no timestamps there)
    about: str


KEYS = (
    Column("lead_id", pa.string(), "string", "the lead"),
    Column("as_of", pa.timestamp("us", tz="UTC"), "timestamp", "the moment scored, UTC"),
)
PROBABILITIES = (
    Column("p_sql", pa.float64(), "double", "calibrated probability of becoming an SQL within the horizon"),
    Column("p_won", pa.float64(), "double", "calibrated probability of a won deal within the won horizon"),
)
SCORE = (
    Column("score", pa.int16(), "int", "1-99, the primary probability on a fixed scale"),
    Column("tier", pa.string(), "string", "lead, MQL or SQL by the cutoffs"),
)
EXPLANATION = (
    Column("fit_score", pa.float64(), "double", "log-odds from who the lead is"),
    Column("engagement_score", pa.float64(), "double", "log-odds from what the lead did"),
    Column("grid", pa.string(), "string", "A-C fit x 1-3 engagement"),
    Column("reasons", pa.string(), "string", "the top reasons in words"),
)
BASELINE = (
    Column("baseline_points", pa.float64(), "double", "the rule baseline's points"),
    Column("baseline_tier", pa.string(), "string", "the rule baseline's tier"),
)
BATCH_ONLY = (
    Column("incomplete_history", pa.bool_(), "boolean", "some of the lead's events were quarantined"),
    Column("change_reasons", pa.string(), "string",
           "with --previous: why the score moved by at least change_threshold points since that run"),
)
PROVENANCE = (
    Column("model_version", pa.string(), "string", "the registered model version (or bundle) that scored"),
    Column("run_id", pa.string(), "string", "the scoring run"),
)


def names(*groups: tuple[Column, ...]) -> tuple[str, ...]:
    return tuple(c.name for group in groups for c in group)


KEY_COLUMNS = names(KEYS)
BASELINE_COLUMNS = names(BASELINE)
SCORE_COLUMNS = names(KEYS, PROBABILITIES, SCORE)
# What batch scoring and the served model return per lead (baseline columns when the rows carry them).
EXPLAINED_COLUMNS = names(KEYS, PROBABILITIES, SCORE, EXPLANATION)
BATCH = (*KEYS, *PROBABILITIES, *SCORE, *EXPLANATION, *BATCH_ONLY, *BASELINE, *PROVENANCE)
OUTPUT_COLUMNS = names(BATCH)
# What a score history keeps of each run (leadscore.serving.history): no reasons.
HISTORY_COLUMNS = (*names(KEYS, PROBABILITIES, SCORE), "baseline_tier", *names(PROVENANCE))
OUTPUT_SCHEMA = pa.schema([(c.name, c.arrow) for c in BATCH])
# The Spark UDF returns the scorer's columns after the keys (the input DataFrame keeps its own).
SPARK_FIELDS = tuple((c.name, c.spark) for c in (*PROBABILITIES, *SCORE, *EXPLANATION))
