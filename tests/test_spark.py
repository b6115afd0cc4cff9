"""Spark scale-out: ``score_spark`` on the registered champion, in Spark local mode, gives the
pandas job's scores for the same leads. Skips only when the ``spark`` extra is not installed."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark", reason="the spark extra is not installed: pip install 'leadscore[spark]'")
pytestmark = [  # raised inside pyspark 4.3 under pandas 3, not by leadscore
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

from leadscore.cli.app import app
from leadscore.features.builder import features_as_of
from leadscore.serving import spark_job
from leadscore.serving.batch import read_scores
from leadscore.serving.registry import load_scorer
from leadscore.serving.spark import score_spark, utc_wall_clock
from leadscore.training.config import load_pipeline

from .conftest import local_spark, runner

MODEL = "models:/leadscore@champion"
# Not UTC on purpose: Spark hands pandas UDFs naive times in the session time zone, and the
# scores must not depend on it.
SESSION_TZ = "America/New_York"



@pytest.fixture(scope="module")
def tracking_uri(trained):
    config, _ = trained
    return load_pipeline(config).tracking.tracking_uri


@pytest.fixture(scope="module")
def spark(tracking_uri, tmp_path_factory):
    """A local[2] SparkSession whose Python workers use this interpreter and the test's MLflow store."""
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    with local_spark("leadscore-test", SESSION_TZ, tmp_path_factory.mktemp("spark"), env) as session:
        yield session


@pytest.fixture(scope="module")
def rows(train_dir, tracking_uri):
    scorer, _ = load_scorer(MODEL, tracking_uri=tracking_uri)
    frame = features_as_of({n: train_dir / f"{n}.parquet" for n in ("leads", "activities", "lifecycle")},
                           as_of="2025-06-01", config=scorer.feature_config)
    return scorer, frame.sample(400, random_state=1).reset_index(drop=True)


def test_spark_scores_equal_the_pandas_jobs_scores(spark, rows):
    scorer, frame = rows
    local = scorer.score(frame)
    sdf = spark.createDataFrame(frame).repartition(3)  # several partitions / Arrow batches
    scored = score_spark(sdf, MODEL)
    assert scored.columns == ["lead_id", "as_of", "p_sql", "p_won", "score", "tier", "fit_score",
                              "engagement_score", "grid", "reasons"]
    # one model call per row batch: the struct's fields are read from a single Python UDF node
    plan = scored._jdf.queryExecution().executedPlan().toString()
    assert plan.count("ArrowEvalPython") == 1, plan

    got = scored.toPandas()
    assert len(got) == len(frame) and got["lead_id"].is_unique
    assert set(got["lead_id"]) == set(local["lead_id"])
    got = got.set_index("lead_id").loc[local["lead_id"]].reset_index()
    # toPandas renders TIMESTAMP values as naive times in the session time zone
    as_of = pd.to_datetime(got["as_of"]).dt.tz_localize(SESSION_TZ).dt.tz_convert("UTC")
    assert (as_of.to_numpy() == local["as_of"].to_numpy()).all()
    for col in ("p_sql", "p_won", "fit_score", "engagement_score"):
        np.testing.assert_allclose(got[col].to_numpy(float), local[col].to_numpy(float), rtol=1e-9, atol=0,
                                   err_msg=col)
    for col in ("score", "tier", "grid", "reasons"):
        assert got[col].astype(str).tolist() == local[col].astype(str).tolist(), col
    assert local["tier"].nunique() > 1  # the comparison covers more than one tier


def test_the_model_sees_as_of_in_utc_whatever_the_session_time_zone(spark):
    from pyspark.sql import functions as F

    sdf = spark.createDataFrame(pd.DataFrame({"as_of": pd.to_datetime(["2025-06-01 00:00", "2025-01-15 13:30"], utc=True)}))

    @F.pandas_udf("string")
    def seen(ts: pd.Series) -> pd.Series:  # what a pandas UDF (and so the pyfunc) receives
        zone = "" if ts.dt.tz is None else f" {ts.dt.tz}"
        return ts.dt.strftime("%Y-%m-%d %H:%M:%S") + zone

    naive = sdf.select(seen(F.col("as_of")).alias("raw"), seen(utc_wall_clock(F.col("as_of"), spark)).alias("utc"))
    out = naive.toPandas()
    assert out["utc"].tolist() == ["2025-06-01 00:00:00", "2025-01-15 13:30:00"]
    assert out["raw"].tolist() != out["utc"].tolist()  # without the conversion: New York wall clock


def test_missing_feature_columns_are_named(spark, rows):
    _, frame = rows
    sdf = spark.createDataFrame(frame.head(5)).drop("n_demo_request_30d")
    with pytest.raises(ValueError, match="n_demo_request_30d"):
        score_spark(sdf, MODEL)


def test_without_pyspark_the_error_says_how_to_install_it(monkeypatch):
    import leadscore.serving.spark as module

    monkeypatch.setitem(sys.modules, "pyspark", None)  # `import pyspark` raises ImportError
    with pytest.raises(ImportError, match=r"leadscore\[spark\]"):
        module.result_type()


@pytest.mark.slow
def test_the_spark_job_scores_the_open_leads_as_the_batch_job_does(spark, train_dir, tracking_uri, tmp_path, capsys):
    """features -> rule baseline -> registered model on Spark (the spark-submit job) gives
    `leadscore score`'s output for the same data: probabilities, score, tier, grid, reasons and
    the baseline's points and tier of every open lead."""
    batch = tmp_path / "batch.parquet"
    result = runner.invoke(app, ["score", "--model", MODEL, "--tracking-uri", tracking_uri, "--data", str(train_dir),
                                 "--as-of", "2025-06-01", "--out", str(batch), "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "scores"
    code = spark_job.main(["--tables", str(train_dir), "--as-of", "2025-06-01", "--model", MODEL,
                           "--tracking-uri", tracking_uri, "--out", str(out)], spark=spark)
    assert code == 0
    expected = read_scores(batch).sort_values(["as_of", "lead_id"]).reset_index(drop=True)
    got = pd.read_parquet(out)
    assert got["lead_id"].tolist() == expected["lead_id"].tolist()   # every open lead, sorted
    assert (got["as_of"] == expected["as_of"]).all()
    for col in ("p_sql", "p_won", "fit_score", "engagement_score", "baseline_points"):
        np.testing.assert_allclose(got[col].to_numpy(float), expected[col].to_numpy(float), rtol=1e-9, atol=1e-12,
                                   err_msg=col)
    for col in ("score", "tier", "grid", "reasons", "baseline_tier"):
        assert got[col].astype(str).tolist() == expected[col].astype(str).tolist(), col
    assert expected["baseline_tier"].nunique() > 1 and expected["tier"].nunique() > 1
    capsys.readouterr()
    again = spark_job.main(["--tables", str(train_dir), "--as-of", "2025-06-01", "--model", MODEL,
                            "--tracking-uri", tracking_uri, "--out", str(out)], spark=spark)
    assert again == 2 and "--mode overwrite" in capsys.readouterr().err   # an existing output is kept
    assert pd.read_parquet(out)["lead_id"].tolist() == got["lead_id"].tolist()


def test_the_spark_job_says_what_is_wrong_and_exits_2(spark, tracking_uri, train_dir, tmp_path, capsys):
    def run(*changed: str) -> tuple[int, str]:
        args = {"--tables": str(train_dir), "--as-of": "2025-06-01", "--model": MODEL, "--tracking-uri": tracking_uri,
                "--out": str(tmp_path / "scores")}
        args.update(dict(zip(changed[::2], changed[1::2])))
        capsys.readouterr()
        code = spark_job.main([part for pair in args.items() for part in pair], spark=spark)
        return code, capsys.readouterr().err

    code, err = run("--tables", str(tmp_path / "nowhere"))
    assert code == 2 and f"table leads: cannot read {tmp_path / 'nowhere'}/leads.parquet" in err
    code, err = run("--as-of", "next tuesday")
    assert code == 2 and "--as-of 'next tuesday' is not a date or time" in err
    code, err = run("--model", "models:/no-such-model@champion")
    assert code == 2 and "cannot load the model models:/no-such-model@champion" in err
    assert not (tmp_path / "scores").exists()
