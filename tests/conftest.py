from __future__ import annotations

import os

# as the `leadscore` command does (cli.main): LightGBM's idle OpenMP threads sleep instead of
# spinning, here and in every subprocess the tests start - the pytest process and a server or a
# second training it starts share 2 cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import contextlib  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from leadscore.cli.app import app
from leadscore.synthetic import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A small synthetic CRM (3,000 leads), generated once per test session."""
    out = tmp_path_factory.mktemp("synthetic") / "data"
    generate(SynthConfig(n_leads=3000, seed=11), out, progress=False)
    return out


@pytest.fixture(scope="session")
def funnel_dir(tmp_path_factory):
    """The acceptance data set: 20,000 leads, seed 7."""
    out = tmp_path_factory.mktemp("funnel") / "data"
    generate(SynthConfig(n_leads=20_000, seed=7), out, progress=False)
    return out


@pytest.fixture(scope="session")
def xeducation_csv() -> Path:
    """The real X Education export next to the repository; tests that need it skip without it."""
    for base in (REPO.parent / "shared", Path("/work/shared")):
        path = base / "datasets" / "xeducation" / "Leads.csv"
        if path.exists():
            return path
    pytest.skip("X Education export not found next to the repository (../shared/datasets/xeducation)")


@pytest.fixture(scope="session")
def train_dir(tmp_path_factory):
    """8,000 synthetic leads (seed 3): enough outcomes to train, calibrate and test a model."""
    out = tmp_path_factory.mktemp("train") / "data"
    generate(SynthConfig(n_leads=8000, seed=3), out, progress=False)
    return out


def write_config(path: Path, data: Path, base: str = "train.yaml", **overrides) -> Path:
    """pipelines/``base`` (train.yaml) pointed at ``data``, with models and MLflow next to ``path``
    and its other files (rules, source) found in pipelines/ (no rules: the packaged ones)."""
    raw = yaml.safe_load((REPO / "pipelines" / base).read_text())
    raw["data"] = str(data)
    if raw.get("rules"):
        raw["rules"] = str(REPO / "pipelines" / raw["rules"])
    if raw.get("source"):
        raw["source"] = str(REPO / "pipelines" / raw["source"])
    raw["models_dir"] = str(path.parent / "models")
    raw.setdefault("tracking", {}).update(tracking_uri=f"sqlite:///{path.parent / 'mlflow.db'}",
                                          artifact_location=str(path.parent / "mlartifacts"))
    raw["cutoffs"]["bootstrap"] = 200
    # every positive and a weighted sample of the negatives (the documented max_fit_rows path):
    # fits on ~20k instead of ~230k examples keep the suite inside its time budget
    raw.setdefault("model", {})["max_fit_rows"] = 20_000
    for section, values in overrides.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def trained(train_dir, tmp_path_factory):
    """One CLI training run into a fresh MLflow store: (config path, CLI output)."""
    work = tmp_path_factory.mktemp("run")
    config = write_config(work / "train.yaml", train_dir)
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return config, result.output


def write_flat_config(path: Path, data: Path, base: Path | str = "xeducation.yaml", **overrides) -> Path:
    """A flat dataset YAML (``base``: a file, or one in pipelines/) reading ``data``, with models
    and MLflow next to ``path``."""
    raw = yaml.safe_load((REPO / "pipelines" / base if isinstance(base, str) else base).read_text())
    raw["path"] = str(data)
    if raw.get("rules"):
        raw["rules"] = str(REPO / "pipelines" / raw["rules"])
    raw["models_dir"] = str(path.parent / "models")
    raw["tracking"] = {"tracking_uri": f"sqlite:///{path.parent / 'mlflow.db'}",
                       "artifact_location": str(path.parent / "mlartifacts")}
    raw.setdefault("cutoffs", {})["bootstrap"] = 200
    for section, values in overrides.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def flat_trained(xeducation_csv, tmp_path_factory):
    """One CLI training run on the X Education export into a fresh MLflow store: (config, output)."""
    work = tmp_path_factory.mktemp("flat-run")
    config = write_flat_config(work / "xeducation.yaml", xeducation_csv, split={"cv_folds": 3})
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return config, result.output


@pytest.fixture(scope="session")
def trained_bundle(trained) -> Path:
    """The bundle directory the session's training run wrote."""
    from leadscore.training.config import load_pipeline

    pipeline = load_pipeline(trained[0])
    return Path(pipeline.models_dir) / pipeline.name


@pytest.fixture(scope="module")
def frames(train_dir) -> dict[str, pd.DataFrame]:
    """The training data's tables (leads, activities, lifecycle) as DataFrames, per module."""
    return {n: pd.read_parquet(train_dir / f"{n}.parquet") for n in ("leads", "activities", "lifecycle")}


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


@pytest.fixture
def tables():
    """Three tiny contract tables that satisfy every rule."""
    leads = pd.DataFrame({
        "lead_id": ["A", "B", "C"],
        "created_at": [ts("2025-01-01"), ts("2025-01-05"), ts("2025-02-01")],
        "job_title": ["VP of Sales", None, "Student"],
        "seniority": ["vp", None, "student"],
        "department": ["sales", None, None],
        "company_size": pd.array([250, None, None], dtype="Int64"),
        "industry": ["Software", None, "Education"],
        "country": ["US", "DE", None],
        "lead_source": ["referral", "paid_search", "social"],
        "email_domain_type": ["corporate", "free", "student"],
    })
    activities = pd.DataFrame({
        "lead_id": ["A", "A", "B", "C"],
        "occurred_at": [ts("2025-01-02"), ts("2025-01-03"), ts("2025-01-06"), ts("2025-02-02")],
        "activity_type": ["page_view_pricing", "demo_request", "email_open", "content_download"],
        "detail": [None, None, None, "ebook-01"],
    })
    lifecycle = pd.DataFrame({
        "lead_id": ["A", "A", "B"],
        "stage": ["mql", "sql", "mql"],
        "occurred_at": [ts("2025-01-03"), ts("2025-01-10"), ts("2025-01-07")],
        "amount": [None, None, None],
    })
    return {"leads": leads, "activities": activities, "lifecycle": lifecycle}


SPARK_LOG4J = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
"""


@contextlib.contextmanager
def local_spark(app_name: str, time_zone: str, workdir: Path, env: dict[str, str] | None = None):
    """A local[2] SparkSession in ``time_zone`` (UI, console progress and logs below errors
    off), whose Python workers run this interpreter, with ``env`` set before the JVM starts (the
    driver and the workers inherit it); stopped at the end."""
    from pyspark.sql import SparkSession

    log4j = workdir / "log4j2.properties"
    log4j.write_text(SPARK_LOG4J)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**(env or {}), "PYSPARK_PYTHON": sys.executable,
                            "PYSPARK_DRIVER_PYTHON": sys.executable}.items():
            mp.setenv(name, value)
        session = (SparkSession.builder.master("local[2]").appName(app_name)
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.shuffle.partitions", "3")
                   .config("spark.default.parallelism", "2")
                   .config("spark.sql.session.timeZone", time_zone)
                   .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                   .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
                   .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j}")
                   .getOrCreate())
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()
