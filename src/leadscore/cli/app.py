"""The ``leadscore`` command line. I/O lives here; the stages it calls are pure functions."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import typer

from leadscore.data import contract
from leadscore.data.funnel import format_funnel, funnel_summary
from leadscore.modeling.cutoffs import TIERS

app = typer.Typer(
    help="Predictive lead scoring with a rule-based baseline alongside. "
    "Data is a directory of the contract tables leads, activities and lifecycle (.parquet or .csv; --data), "
    "or a CRM's own export mapped by a source YAML (--source); see data/README.md.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

EXIT_VIOLATIONS = 1
EXIT_UNUSABLE = 2
EXIT_DELIVERY = 3  # scores written, but alerts could not be delivered


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _version(value: bool) -> None:
    if value:
        from leadscore import __version__

        typer.echo(f"leadscore {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Predictive lead scoring with a rule-based baseline alongside."""


AS_OF_FORMAT = ("ISO 8601: a date (2025-10-01, midnight UTC) or a time (2025-10-01T06:00, UTC unless it carries an "
                "offset such as +02:00)")
JSON_HELP = "Also write {what} as JSON to PATH ('-': print the JSON on standard output instead of the text)."


DATA_HELP = ("Directory with leads, activities, lifecycle (.parquet or .csv); with --source, the directory the "
             "source YAML's file names are relative to.")
SOURCE_HELP = ("Source YAML mapping a CRM's own export onto the data contract (e.g. pipelines/sources/sparse.yaml; "
               "see data/README.md). File names in it are relative to --data, else to the YAML's directory.")


def _source(data: Path | None, source: Path | None):
    """The data source of a command: a contract directory (--data), or an export mapped by a
    source YAML (--source, files relative to --data when given). Exit 2 on a bad YAML."""
    from leadscore.settings import ConfigError
    from leadscore.sources.mapping import load_source

    if source is not None:
        try:
            return load_source(source, data)
        except ConfigError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(EXIT_UNUSABLE) from exc
    if data is None:
        raise typer.BadParameter("give --data DIR (a contract directory) or --source FILE (a source YAML)",
                                 param_hint="--data / --source")
    return contract.ContractDirectory(data)


def _parse_timestamp(value: str | None, option: str) -> pd.Timestamp | None:
    """A UTC timestamp from the command line; a usage error naming ``option`` if it is not one."""
    if value is None:
        return None
    try:
        return contract.utc_timestamp(value)
    except ValueError as exc:
        raise typer.BadParameter(f"not a timestamp: {value!r} ({exc})", param_hint=option) from exc


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Output directory (created if missing)."),
    profile: str = typer.Option("default", "--profile", help="default: the contract's own tables (leads, "
                                "activities, lifecycle), SQL and won stages. sparse: a vendor-style CRM export "
                                "(its own files, column and stage names, day-first local dates, epoch-ms events, "
                                "custom attributes and activity kinds, no SQL stage) plus source.yaml mapping it. "
                                "flat: a one-row-per-lead export (leads.csv: MQL date, attributes, 30-day activity "
                                "counts, converted and when) plus flat.yaml, the dataset config that reads it."),
    leads: int | None = typer.Option(None, "--leads", min=1, help="Number of leads (default: 20,000; sparse 5,000)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical files."),
    start: str | None = typer.Option(None, help="First day leads arrive, UTC date (default: 2024-01-01; sparse "
                                     "2024-07-01)."),
    months: int | None = typer.Option(None, min=2, help="Months of history; the data ends at start + months "
                                      "(default: 21; sparse 15)."),
    horizon_days: int = typer.Option(42, min=1, help="Horizon of the oracle's P(SQL) in truth.parquet."),
    won_horizon_days: int | None = typer.Option(None, min=1, help="Horizon of the oracle's P(won) in truth.parquet "
                                                "(default: 120; sparse 90)."),
    drift: bool = typer.Option(False, "--drift", help="Default profile: from the middle of the history on, the "
                               "channels change what their leads are worth (a model fitted on old outcomes goes "
                               "stale; see benchmarks/bench_backtest.py)."),
    progress: bool = typer.Option(True, help="Show progress on stderr."),
) -> None:
    """Generate a synthetic CRM with known ground truth.

    The default profile writes leads, activities and lifecycle (the data contract), truth.parquet
    (the true probability that each open lead becomes an SQL / closes won within the horizons,
    for weekly as-of dates), the hidden per-lead parameters, and manifest.json. The sparse
    profile writes a vendor-style export of the same world instead (contacts.csv, activities.csv,
    lifecycle_history.csv, closed_deals.csv, plan_changes.csv) with source.yaml, the mapping
    that reads it (`--source OUT/source.yaml`). The flat profile writes the default world's
    tables under OUT/world/ and its one-row-per-MQL export OUT/leads.csv with OUT/flat.yaml
    (`leadscore train --config OUT/flat.yaml`). Then prints the funnel summary.
    """
    from leadscore.synthetic import SynthConfig, generate
    from leadscore.synthetic.sparse import SparseConfig, generate_sparse

    if profile not in ("default", "sparse", "flat"):
        raise typer.BadParameter(f"unknown profile {profile!r}; use default, sparse or flat", param_hint="--profile")
    t0 = time.perf_counter()
    given = {k: v for k, v in (("n_leads", leads), ("start", start), ("months", months),
                               ("won_horizon_days", won_horizon_days)) if v is not None}
    if profile == "sparse":
        if drift:
            raise typer.BadParameter("--drift is an option of the default profile", param_hint="--drift")
        manifest = generate_sparse(SparseConfig(seed=seed, **given), out, progress=progress)
        rows = manifest["rows"]
        typer.echo(f"wrote {out}/: {rows['contacts']:,} contacts, {rows['activities']:,} activities, "
                   f"{rows['lifecycle_history']:,} lifecycle rows, {rows['closed_deals']:,} won deals, "
                   f"{rows['truth']:,} truth rows in {time.perf_counter() - t0:.1f} s; observed until "
                   f"{manifest['observed_until']}; mapped by {out / 'source.yaml'}")
        clean = _load_clean(_source(None, out / "source.yaml"))
        typer.echo("funnel:")
        typer.echo(format_funnel(funnel_summary(clean["leads"], clean["lifecycle"])))
        return
    cfg = SynthConfig(seed=seed, horizon_days=horizon_days, drift=drift, **{"n_leads": 20_000, **given})
    if profile == "flat":
        from leadscore.synthetic.flat import flat_export

        generate(cfg, out / "world", progress=progress)
        config = flat_export(out / "world", out)
        n = sum(1 for _ in open(out / "leads.csv", encoding="utf-8")) - 1
        typer.echo(f"wrote {out / 'leads.csv'}: {n:,} leads (one row per MQL) and {config} in "
                   f"{time.perf_counter() - t0:.1f} s; the world's tables are in {out / 'world'}/")
        return
    manifest = generate(cfg, out, progress=progress)
    elapsed = time.perf_counter() - t0
    rows = manifest["rows"]
    typer.echo(f"wrote {out}/: {rows['leads']:,} leads, {rows['activities']:,} activities, "
               f"{rows['lifecycle']:,} lifecycle events, {rows['truth']:,} truth rows "
               f"in {elapsed:.1f} s; observed until {manifest['observed_until']}")
    typer.echo("funnel:")
    typer.echo(format_funnel(funnel_summary(pd.read_parquet(out / "leads.parquet", columns=["lead_id"]),
                                            pd.read_parquet(out / "lifecycle.parquet"))))


@app.command()
def validate(
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
    source: Path | None = typer.Option(None, "--source", help=SOURCE_HELP),
    quarantine: Path | None = typer.Option(
        None, "--quarantine",
        help="Write clean rows to DIR/clean/ and failing rows, each with its reason, to DIR/quarantined/.",
    ),
    now: str | None = typer.Option(None, help="Timestamps after this are 'in the future' (default: now, UTC)."),
) -> None:
    """Check the tables against the data contract (a directory, or an export through a source YAML).

    Exit 0 when clean; 1 when rows break the contract (each rule is named with its table,
    column and up to 10 offending rows - with a source YAML, the file and the row in it); 2
    when a table cannot be read or lacks a required column. With --quarantine, rows in =
    clean + quarantined for every table. With --source it also says what the mapping did
    (columns not read, attributes the export lacks, activity kinds mapped to `other`).
    """
    src = _source(data, source)
    now_ts = _parse_timestamp(now, "--now")
    try:
        report = contract.validate_source(src, now=now_ts)
    except contract.ContractError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc
    for note in src.notes():
        typer.echo(f"note: {note}")

    for line in report.lines():
        _err(line)
    counts = report.counts()
    for name, c in counts.items():
        typer.echo(f"{name:<17} rows in {c['rows_in']:>10,} = clean {c['clean']:>10,} + quarantined {c['quarantined']:>8,}")
    if quarantine is not None:
        _write_quarantine(report, quarantine)
        typer.echo(f"clean rows in {quarantine / 'clean'}/, quarantined rows with reasons in {quarantine / 'quarantined'}/")
    if report.ok:
        typer.echo(f"{src}: all tables satisfy the contract")
        return
    _err(f"{src}: {len(report.violations)} contract rule(s) broken")
    raise typer.Exit(EXIT_VIOLATIONS)


def _write_quarantine(report: contract.ValidationReport, out: Path) -> None:
    from leadscore.io import write_json, write_parquet

    clean, quarantined = report.split()
    for name in report.tables:
        write_parquet(clean[name], out / "clean" / f"{name}.parquet")
        write_parquet(quarantined[name], out / "quarantined" / f"{name}.parquet")
    write_json({"counts": report.counts(), "violations": [
        {"table": v.table, "column": v.column, "rule": v.rule, "message": v.message, "rows": v.count}
        for v in report.violations]}, out / "summary.json")


@app.command()
def funnel(
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
    source: Path | None = typer.Option(None, "--source", help=SOURCE_HELP),
) -> None:
    """Print the funnel: leads, MQLs, SQLs, won; MQL->SQL, SQL->won and MQL->won rates (clean rows only).

    A stage the CRM does not record (no SQL stage, say) is named as such.
    """
    src = _source(data, source)
    clean = _load_clean(src)
    typer.echo(f"funnel of {src}:")
    typer.echo(format_funnel(funnel_summary(clean["leads"], clean["lifecycle"])))


def _load_clean(data) -> dict[str, pd.DataFrame]:
    """Contract-checked tables of a source; rows that break the contract are left out and counted."""
    try:
        clean, report = contract.load_clean(data)
    except contract.ContractError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc
    _note_quarantined(report.counts())
    return clean


@contextlib.contextmanager
def _staged(data, **tempdir):
    """The contract-checked tables staged as Parquet in a temporary directory (activities
    checked a batch at a time; ``tempdir``: where, as for TemporaryDirectory), removed after."""
    with tempfile.TemporaryDirectory(**tempdir) as stage:
        try:
            staged = contract.stage_clean(data, stage)
        except contract.ContractError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(EXIT_UNUSABLE) from exc
        yield staged


@contextlib.contextmanager
def _clean_connection(data):
    """A DuckDB connection over the staged clean tables: for the commands that read the data
    through DuckDB, so memory does not grow with the activity history."""
    from leadscore.features.builder import connect

    with _staged(data, prefix="leadscore-stage-") as staged:
        _note_quarantined(staged.counts)
        con = connect(staged.paths, data.contract)
        try:
            yield con
        finally:
            con.close()


def _connect_clean(ctx: typer.Context, data):
    """:func:`_clean_connection` for the rest of the command (cleaned up when it ends)."""
    return ctx.with_resource(_clean_connection(data))


def _note_quarantined(counts: dict[str, dict[str, int]]) -> None:
    for name, c in counts.items():
        if c["quarantined"]:
            _err(f"note: {name}: {c['quarantined']:,} of {c['rows_in']:,} rows break the contract and are left out "
                 "(run `leadscore validate --quarantine DIR` to see them)")


def _config_error(exc: Exception) -> typer.Exit:
    _err(f"error: {exc}")
    return typer.Exit(EXIT_UNUSABLE)


def _pipeline_and_data(config: Path, data: Path | None, source: Path | None = None):
    """The pipeline config and its data source (--data / --source win over the config's
    `data` / `source`; the config's paths are relative to the working directory or the config)."""
    from leadscore.settings import ConfigError
    from leadscore.training.config import load_pipeline

    try:
        pipeline = load_pipeline(config)
    except ConfigError as exc:
        raise _config_error(exc) from exc
    if source is None and pipeline.source is not None:
        source = pipeline.resolve(pipeline.source)
    if data is None and pipeline.data is not None:
        data = Path(pipeline.data)  # relative to the working directory, as --data
    if data is None and source is None:
        raise typer.BadParameter("no data: give --data or --source, or set `data` / `source` in the config",
                                 param_hint="--data")
    return pipeline, _source(data, source)


def _catalogue_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.catalogue.csv")


@app.command()
def features(
    ctx: typer.Context,
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
    source: Path | None = typer.Option(None, "--source", help=SOURCE_HELP),
    as_of: str = typer.Option(..., "--as-of", help="The moment to score at; only data strictly before it is used. "
                              + AS_OF_FORMAT + "."),
    out: Path = typer.Option(..., "--out", help="Output file (.parquet or .csv)."),
    config: Path | None = typer.Option(None, "--config", help="Pipeline YAML whose `features` section to use."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb (the default) or spark: the same features "
                               "computed by Spark in local mode on this machine (pip install 'leadscore[spark]', "
                               "Java 17+), written as a Parquet dataset directory. On a cluster, run the Spark job "
                               "(README: Scale-out on Spark)."),
) -> None:
    """Write the feature rows of every lead open at --as-of (the scoring-time table).

    One row per lead that exists and is not yet SQL or closed at that moment, with the
    columns of the feature catalogue (written next to the output as NAME.catalogue.csv),
    including the attributes and activity kinds a source YAML declares. The data is checked
    against the contract and staged first, whichever the engine.
    """

    from leadscore.features.builder import (
        FeatureConfig,
        feature_catalogue,
        features_as_of,
    )
    from leadscore.io import write_table
    from leadscore.settings import ConfigError
    from leadscore.training.config import load_pipeline

    ts = _parse_timestamp(as_of, "--as-of")
    _check_engine(engine, out)
    src = _source(data, source)
    try:
        feature_config = load_pipeline(config).features if config else FeatureConfig()
        feature_config = feature_config.replace(contract=src.contract)
    except (ConfigError, ValueError) as exc:
        raise _config_error(exc) from exc
    if engine == "spark":
        _spark_features(ctx, src, ts, out, feature_config)
        return
    con = _connect_clean(ctx, src)
    t0 = time.perf_counter()
    rows = features_as_of(con, as_of=ts, config=feature_config)
    write_table(rows, out)
    write_table(feature_catalogue(feature_config), _catalogue_path(out))
    n_leads = con.execute("SELECT count(*) FROM leads").fetchone()[0]
    typer.echo(f"{len(rows):,} open leads as of {ts:%Y-%m-%d %H:%M} (of {n_leads:,} leads), "
               f"{rows.shape[1] - 2} features, in {time.perf_counter() - t0:.1f} s")
    typer.echo(f"wrote {out} and {_catalogue_path(out)}")


def _spark_features(ctx: typer.Context, src, ts, out: Path, feature_config) -> None:
    """``features --engine spark``: the staged clean tables through
    :func:`leadscore.features.spark.features_spark`, written by Spark into ``out``."""
    from leadscore.features.builder import feature_catalogue
    from leadscore.features.spark import write_features
    from leadscore.io import write_table

    spark = _local_spark("leadscore features")   # before staging: say at once when Spark cannot run
    staged = ctx.with_resource(_staged(src, prefix="leadscore-stage-"))
    _note_quarantined(staged.counts)
    t0 = time.perf_counter()
    n_rows = write_features(spark, staged.paths, ts, out, feature_config)
    write_table(feature_catalogue(feature_config), _catalogue_path(out))
    typer.echo(f"{n_rows:,} open leads as of {ts:%Y-%m-%d %H:%M} (of {staged.counts['leads']['clean']:,} leads), "
               f"{len(feature_catalogue(feature_config))} features, on Spark ({spark.sparkContext.master}) in "
               f"{time.perf_counter() - t0:.1f} s")
    typer.echo(f"wrote {out} (a Parquet dataset directory) and {_catalogue_path(out)}")


@app.command()
def examples(
    ctx: typer.Context,
    config: Path = typer.Option(Path("pipelines/train.yaml"), "--config", help="Pipeline YAML (examples, features, leakage)."),
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP + " Overrides `data` in the config."),
    source: Path | None = typer.Option(None, "--source", help=SOURCE_HELP + " Overrides `source` in the config."),
    out: Path = typer.Option(..., "--out", help="Output file (.parquet or .csv)."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb (the default) or spark: the same examples built "
                               "by Spark in local mode on this machine, written as a Parquet dataset directory; the "
                               "leakage audit then reads a uniform sample of 100,000 matured examples per label."),
) -> None:
    """Build the training table: (lead, as_of) examples with features and matured labels.

    Prints how many examples are immature (their horizon reaches past the observed data;
    left unlabelled, never counted as negatives) and the leakage audit of the features
    against each outcome the data records (became_sql, won).
    """

    from leadscore.features.builder import (
        feature_names,
        point_in_time_features,
    )
    from leadscore.io import write_table
    from leadscore.labels.examples import (
        LABEL_SPECS,
        build_examples,
        matured,
        stage_counts,
        weights_of,
    )
    from leadscore.labels.leakage import AuditSkipped, format_audit, leakage_audit

    _check_engine(engine, out)
    pipeline, src = _pipeline_and_data(config, data, source)
    feature_config = pipeline.features.replace(contract=src.contract)
    if engine == "spark":
        labelled_rows, recorded = _spark_examples(ctx, pipeline, src, out, feature_config)
    else:
        con = _connect_clean(ctx, src)
        t0 = time.perf_counter()
        try:
            table, report = build_examples(con, pipeline.examples, feature_config)
        except ValueError as exc:
            raise _config_error(exc) from exc
        write_table(table, out)
        _built(report, f"in {time.perf_counter() - t0:.1f} s; wrote {out}", out, feature_config)
        recorded = set(stage_counts(con))

        def labelled_rows(name: str):
            return matured(table, name)
    lk = pipeline.leakage
    for label in LABEL_SPECS.values():
        if label.stage not in recorded:
            typer.echo(f"{label.name}: the data records no `{label.stage}` stage; no leakage audit")
            continue
        labelled = labelled_rows(label.name)
        typer.echo(f"{label.name}:")
        try:
            audit = leakage_audit(labelled[feature_names(feature_config)], labelled[label.name].astype(bool),
                                  lk.threshold, lk.min_support, lk.n_bins, lk.min_positives,
                                  point_in_time_features(feature_config), weights_of(labelled))
        except AuditSkipped as exc:
            typer.echo(str(exc))
            continue
        typer.echo(format_audit(audit, threshold=lk.threshold))


def _spark_examples(ctx: typer.Context, pipeline, src, out: Path, feature_config):
    """``examples --engine spark``: the staged clean tables through
    :func:`leadscore.labels.spark.examples_spark`, written by Spark into ``out``. Returns (a
    function giving a label's matured examples as pandas - a uniform sample of at most
    100,000 - and the stages the data records)."""
    from leadscore.features.spark import SparkQueries, write_dataset
    from leadscore.labels.examples import stage_counts
    from leadscore.labels.spark import examples_spark
    from leadscore.training.pipeline import AUDIT_SAMPLE

    spark = _local_spark("leadscore examples")
    from pyspark.sql import functions as F

    if pipeline.examples.max_examples is not None:
        typer.echo(f"note: examples.max_examples ({pipeline.examples.max_examples:,}) samples leads for training on "
                   "one machine; on Spark every example of the window is built")

    staged = ctx.with_resource(_staged(src, prefix="leadscore-stage-"))
    _note_quarantined(staged.counts)
    t0 = time.perf_counter()
    try:
        frame, report = examples_spark(spark, staged.paths, pipeline.examples, feature_config)
    except ValueError as exc:
        raise _config_error(exc) from exc
    write_dataset(frame, out)
    _built(report, f"on Spark ({spark.sparkContext.master}) in {time.perf_counter() - t0:.1f} s; wrote {out} "
                   "(a Parquet dataset directory)", out, feature_config)
    written = spark.read.parquet(str(out))

    def sample(label: str):
        n = report.examples - report.immature[label]
        rows = written.where(F.col(label).isNotNull())
        if n <= AUDIT_SAMPLE:
            return rows.toPandas()
        some = rows.sample(fraction=min(1.0, 1.2 * AUDIT_SAMPLE / n), seed=0).toPandas()
        return some.sample(n=min(AUDIT_SAMPLE, len(some)), random_state=0)   # uniform over every as_of

    return sample, set(stage_counts(SparkQueries(spark)))


def _built(report, how: str, out: Path, feature_config) -> None:
    """After the examples are written: the catalogue beside them, the report, how they were built."""
    from leadscore.features.builder import feature_catalogue
    from leadscore.io import write_table

    write_table(feature_catalogue(feature_config), _catalogue_path(out))
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"built {how} and {_catalogue_path(out)}")


def _local_spark(app_name: str):
    """A Spark session in local mode on this machine, or exit 2 saying what is missing."""
    from leadscore.features.spark import spark_session

    try:
        return spark_session(app_name, master="local[*]")
    except (ImportError, RuntimeError) as exc:
        raise _config_error(exc) from exc


def _check_engine(engine: str, out: Path) -> None:
    if engine not in ("duckdb", "spark"):
        raise _config_error(ValueError(f"--engine must be duckdb or spark, got {engine!r}"))
    if engine == "spark" and out.suffix != ".parquet":
        raise _config_error(ValueError(f"--engine spark writes a Parquet dataset directory: give --out a path "
                                       f"ending in .parquet, not {out}"))


@app.command()
def audit(
    flat: Path = typer.Option(..., "--flat", help="Dataset YAML of a flat export (e.g. pipelines/xeducation.yaml)."),
    data: Path | None = typer.Option(None, "--data", help="The export file (overrides `path` in the YAML)."),
    include_excluded: bool = typer.Option(False, "--include-excluded", help="Audit the excluded columns too."),
    threshold: float = typer.Option(0.9, help="Single-feature ROC AUC at which a column is suspected leakage."),
    min_support: int = typer.Option(30, help="Fewest rows a value needs to keep its own positive rate."),
    top: int = typer.Option(15, help="How many columns to list."),
) -> None:
    """Leakage audit of a flat one-row-per-lead export: single-feature ROC AUC per column.

    Exit 0 when no column reaches the threshold, 1 when some do (they are named).
    """
    from leadscore.labels.leakage import AuditSkipped, format_audit, leakage_audit
    from leadscore.settings import ConfigError
    from leadscore.training.flat import load_config, load_flat

    try:
        flat_data = load_flat(load_config(flat), data, include_excluded=include_excluded)
    except ConfigError as exc:
        raise _config_error(exc) from exc
    try:
        result = leakage_audit(flat_data.features, flat_data.y, threshold=threshold, min_support=min_support)
    except AuditSkipped as exc:
        typer.echo(str(exc))
        return
    typer.echo(f"{len(flat_data.features):,} leads, {flat_data.y.mean():.1%} positive, "
               f"{flat_data.features.shape[1]} columns audited"
               + ("" if include_excluded else f", {len(flat_data.excluded)} excluded by the config"))
    typer.echo(format_audit(result, top=top, threshold=threshold))
    if result["suspected"].any():
        raise typer.Exit(EXIT_VIOLATIONS)


@app.command()
def baseline(
    ctx: typer.Context,
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
    source: Path | None = typer.Option(None, "--source", help=SOURCE_HELP),
    as_of: str = typer.Option(..., "--as-of", help="The moment to score at; only data strictly before it is used. "
                              + AS_OF_FORMAT + "."),
    rules: Path = typer.Option(None, "--rules", help="Rule set YAML (default: the packaged rules, leadscore/modeling/rules.yaml).", show_default=False),
    out: Path = typer.Option(..., "--out", help="Output file (.parquet or .csv)."),
    horizon_days: int | None = typer.Option(None, "--horizon-days", min=1, help="Horizon of the realised rate per "
                                            "tier (default: 42 days for SQL, 120 for won)."),
) -> None:
    """Score every lead open at --as-of with the rule-based points baseline.

    Writes per lead fit_points, engagement_points, total_points, baseline_tier (lead / MQL /
    SQL), grid (A1 best .. C3) and fired_rules. Prints the tier shares and, when the data
    reaches --horizon-days past --as-of, the share of each tier that became an SQL within it
    (closed won, for a CRM that records no SQL stage).
    """
    from leadscore.io import write_table
    from leadscore.labels.examples import (
        LABEL_SPECS,
        ExampleConfig,
        label_examples,
        observed_end,
        stage_counts,
    )
    from leadscore.modeling.baseline import DEFAULT_RULES, load_rules, score_baseline
    from leadscore.settings import ConfigError

    ts = _parse_timestamp(as_of, "--as-of")
    src = _source(data, source)
    try:
        rule_set = load_rules(rules or DEFAULT_RULES, src.contract)
    except ConfigError as exc:
        raise _config_error(exc) from exc
    con = _connect_clean(ctx, src)
    scores = score_baseline(con, rule_set, as_of=ts, contract=src.contract)
    write_table(scores, out)
    typer.echo(f"{len(scores):,} open leads as of {ts:%Y-%m-%d %H:%M} scored with {len(rule_set.rule_names)} rules "
               f"from {rules}; wrote {out}")
    observed_until = observed_end(con, ExampleConfig())
    label = LABEL_SPECS["became_sql" if stage_counts(con).get("sql") else "won"]
    config = ExampleConfig() if horizon_days is None else ExampleConfig(**{label.horizon_field: horizon_days})
    horizon = label.horizon(config)
    labels = None
    if ts + pd.Timedelta(days=horizon) <= observed_until:
        labels = label_examples(con, scores[["lead_id", "as_of"]], config, observed_until)[label.name].astype(bool)
    outcome = "SQL" if label.name == "became_sql" else "won"
    typer.echo("tier     leads      share" + (f"   {outcome} within {horizon} days" if labels is not None else ""))
    for tier in TIERS:
        mask = scores["baseline_tier"] == tier
        line = f"{tier:<6}{int(mask.sum()):>9,}   {mask.mean():7.1%}"
        if labels is not None:
            line += f"   {labels[mask].mean():6.2%} ({int(labels[mask].sum()):,})" if mask.any() else "   -"
        typer.echo(line)
    if labels is not None:
        qualified = scores["baseline_tier"] != "lead"
        typer.echo(f"MQL or better: {labels[qualified].mean():.2%} {label.noun}, the rest {labels[~qualified].mean():.2%}")
    else:
        typer.echo(f"(outcomes not yet observed {horizon} days past {ts:%Y-%m-%d}: no realised rates)")


METRIC_COLUMNS = ("auc", "pr_auc", "logloss", "brier", "ece", "lift_top_decile", "capture_top_decile")


def _metric_table(comparison: pd.DataFrame) -> str:
    cols = [c for c in METRIC_COLUMNS if c in comparison.columns]
    lines = ["model     " + "".join(f"{c:>19}" for c in cols)]
    for name, row in comparison.iterrows():
        lines.append(f"{name:<10}" + "".join(f"{row[c]:>19.4f}" for c in cols))
    return "\n".join(lines)


def _is_flat_config(path: Path) -> bool:
    from leadscore.settings import ConfigError, load_yaml

    try:
        return "dataset" in load_yaml(path)
    except ConfigError as exc:
        raise _config_error(exc) from exc


@contextlib.contextmanager
def _summarised_warnings(where: str):
    """Library warnings raised inside (scikit-learn's convergence notes, LightGBM's ...) are
    collected and printed once each, with a count, instead of flooding the output. Deprecation
    notices between the libraries (a pandas API pyarrow still uses) are for their developers,
    not for a user of leadscore: they are dropped."""
    import warnings
    from collections import Counter

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            shown = [w for w in caught
                     if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))]
            seen = Counter((w.category.__name__, str(w.message).strip().splitlines()[0][:160]) for w in shown)
            if seen:
                _err(f"{sum(seen.values()):,} warning(s) from the libraries during {where}, "
                     f"{len(seen)} distinct:")
                for (category, message), n in seen.most_common(5):
                    _err(f"  {n:>5,} x {category}: {message}")
                if len(seen) > 5:
                    _err(f"  ... and {len(seen) - 5} more kinds")


def _with_tracking_uri(settings, tracking_uri: str | None):
    """``settings`` (a TrackingConfig) with --tracking-uri in place of the config's URI."""

    return settings if tracking_uri is None else settings.replace(tracking_uri=tracking_uri)


def _train_pipeline_run(ctx: typer.Context, config: Path, data: Path | None, models_dir: Path | None,
                        source: Path | None = None, progress: bool = True, tracking_uri: str | None = None):
    """Load the pipeline config, stage the data (:func:`_connect_clean`: the connection lives as
    long as the command), train; returns (pipeline, run, connection, bundle dir)."""

    from leadscore.modeling.cutoffs import CutoffError
    from leadscore.modeling.model import InsufficientData
    from leadscore.progress import Heartbeat
    from leadscore.settings import ConfigError
    from leadscore.training.pipeline import train_pipeline

    pipeline, src = _pipeline_and_data(config, data, source)
    pipeline = pipeline.replace(tracking=_with_tracking_uri(pipeline.tracking, tracking_uri))
    con = _connect_clean(ctx, src)
    base = getattr(src, "base", getattr(src, "path", None))
    try:
        with _summarised_warnings("training"), Heartbeat("training", enabled=progress) as beat:
            def echo(line: str) -> None:
                typer.echo(line)
                beat.stage(line)

            run = train_pipeline(pipeline, con, data_dir=base, echo=echo, contract=src.contract)
    except InsufficientData as exc:
        _err(f"not trained: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc
    except (CutoffError, ConfigError) as exc:
        raise _config_error(exc) from exc
    bundle_dir = (models_dir or Path(pipeline.models_dir)) / pipeline.name
    return pipeline, run, con, bundle_dir


def _print_run(run) -> None:
    label = run.primary
    p = label.short
    typer.echo(f"\nwalk-forward backtest, {label.name} (primary label), AUC per fold:")
    table = run.backtest
    models = [m for m in ("model", "logreg", "baseline", "oracle") if f"{m}_auc" in table.columns]
    typer.echo("  fold  cut-off     tested                      " + "".join(f"{m:>10}" for m in models))
    for _, r in table.iterrows():
        typer.echo(f"  {r['fold']:<5} {r.get('cutoff', '') if isinstance(r.get('cutoff'), str) else '':<11} "
                   f"{r.get('tested', '') if isinstance(r.get('tested'), str) else '':<27} "
                   + "".join(f"{r[f'{m}_auc']:>10.4f}" for m in models))
    typer.echo(f"\nnewest fold's test slice, {label.name}:")
    typer.echo(_metric_table(run.comparison))
    for name, other in run.labels.items():
        if name != label.name and other.metrics:
            q = other.label.short
            typer.echo(f"{name}: auc {other.metrics[f'{q}_auc']:.4f}, ece {other.metrics[f'{q}_ece']:.4f} "
                       f"(its newest fold)")
    for name, why in run.skipped.items():
        typer.echo(f"{name}: not trained ({why})")
    if f"{p}_auc_vs_oracle" in run.metrics:
        typer.echo(f"model / oracle AUC on the newest fold: {run.metrics[f'{p}_auc_vs_oracle']:.3f}")
    typer.echo(f"the shipped model: fitted on examples as of {run.params['train_from']} .. {run.params['train_until']}, "
               f"calibrated out of fold on its examples as of {run.params['calibration_from']} .. "
               f"{run.params['calibration_until']} (outcomes observed until {run.params['observed_until'][:10]}): "
               f"{run.params['candidate']} - {run.params['model_description']}")
    typer.echo("cutoffs of the policy in the newest fold, on its test slice (95 % bootstrap intervals; for the whole "
               "lead base: new leads crossing the cutoff per week, and open leads at or above it on an average day):")
    for _, r in run.cutoffs.iterrows():
        typer.echo(f"  {r['cutoff']}: {label.probability} >= {r['threshold']:.4g}: {_leads(r, 'new_leads_per_week')} "
                   f"new leads/week, {_leads(r, 'open_leads')} open; conversion "
                   f"{r['conversion_rate']:.1%} ({r['conversion_rate_low']:.1%}-{r['conversion_rate_high']:.1%}), "
                   f"recall {r['recall']:.1%} ({r['recall_low']:.1%}-{r['recall_high']:.1%})")


def _leads(row, key: str) -> str:
    """A load as whole leads with its interval: '1,831 (1,700-1,950)'; 'n/a' where it cannot be measured."""
    def whole(v) -> str:
        return "n/a" if v != v else f"{v:,.0f}"
    low, high = row.get(f"{key}_low", float("nan")), row.get(f"{key}_high", float("nan"))
    return whole(row[key]) + ("" if low != low else f" ({whole(low)}-{whole(high)})")


TRACKING_URI_HELP = ("MLflow tracking URI to log and register in (overrides `tracking.tracking_uri` in the config; "
                     "default sqlite:///mlflow.db).")
TRAIN_PROGRESS_HELP = "Every 30 s, print the elapsed time and the stage running on stderr."


@app.command()
def train(
    ctx: typer.Context,
    config: Path = typer.Option(Path("pipelines/train.yaml"), "--config",
                                help="Pipeline YAML (pipelines/train.yaml), or a flat-export dataset YAML "
                                     "(pipelines/xeducation.yaml: out-of-time and k-fold evaluation)."),
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP + " Overrides `data` in the config."),
    source: Path | None = typer.Option(None, "--source", help=SOURCE_HELP + " Overrides `source` in the config."),
    models_dir: Path | None = typer.Option(None, "--models-dir", help="Where bundles go (default: `models_dir` in the config, models/)."),
    tracking: bool = typer.Option(True, help="Log the run to MLflow and register the model."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_URI_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=TRAIN_PROGRESS_HELP),
) -> None:
    """Train, calibrate, cut off, evaluate and record a lead-scoring model.

    Builds point-in-time examples with matured labels, for each outcome the CRM records -
    `became_sql` when it has an SQL stage, `won` when it records won deals. A walk-forward
    backtest (`split`: folds placed from the end of the matured outcomes backwards) fits
    LightGBM at each fold's cut-off on what was known then and tests it on the weeks after,
    beside a logistic regression, the rule baseline and, on synthetic data, the generator's
    oracle. The shipped model is then refitted on every matured outcome up to the newest,
    with the folds' median number of trees, calibrated out of fold on the newest matured
    weeks (a share of their leads held out to compare a future challenger on), and gets
    MQL/SQL cutoffs on the primary label by the configured policy. Prints the backtest per fold and the windows that trained and calibrated the shipped
    model. Constant features are left out and listed. Writes the bundle
    `models/<name>/` (scorer, manifest.json with hashes, report.html), logs the run to MLflow
    (SQLite store `mlflow.db` by default) and registers the scorer; the first registered
    version becomes `champion`. A label with too few conversions is skipped (the message
    says how many); with none trainable it refuses (exit 2) and the rule baseline stays.
    """
    if _is_flat_config(config):
        return _train_flat(config, data, models_dir, tracking, tracking_uri, progress)
    from leadscore.training.pipeline import write_outputs

    pipeline, run, _, bundle_dir = _train_pipeline_run(ctx, config, data, models_dir, source, progress, tracking_uri)
    _print_run(run)
    if not tracking or not pipeline.tracking.enabled:
        report, _ = write_outputs(run, bundle_dir)
        typer.echo(f"\nwrote the bundle {bundle_dir}/ and the report {report} (MLflow tracking off)")
        return
    from leadscore.training.publish import publish_training

    run_id = publish_training(pipeline, run, bundle_dir, typer.echo)
    report = bundle_dir / "report.html"
    typer.echo(f"\nreport: {report}\nbundle: {bundle_dir}/\nMLflow run {run_id} in "
               f"{pipeline.tracking.tracking_uri}")


@app.command()
def retrain(
    ctx: typer.Context,
    config: Path = typer.Option(Path("pipelines/train.yaml"), "--config", help="Pipeline YAML."),
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP + " With the newest outcomes."),
    source: Path | None = typer.Option(None, "--source", help=SOURCE_HELP + " Overrides `source` in the config."),
    models_dir: Path | None = typer.Option(None, "--models-dir", help="Where bundles go."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_URI_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=TRAIN_PROGRESS_HELP),
) -> None:
    """Train a challenger on data with newer outcomes; promote it only if it beats the champion.

    The challenger is fitted like any training run, on the newest matured outcomes. Champion
    and challenger are compared on outcomes neither was trained on: the challenger's promotion
    slice (leads held out of its newest matured weeks) as of dates after everything the
    champion was fitted and calibrated on. The challenger takes the `champion` alias only when
    it is better there by the `promotion` margins (AUC or log loss) without a worse ECE; when
    the data has no newer matured outcome than the champion's (the window did not move), it
    says so and promotes nothing. The decision and both sets of metrics are logged to MLflow
    either way; the challenger is registered with the alias `challenger`. Exit 0 either way;
    the decision is printed on the last line.
    """
    from leadscore.training.publish import retrain_and_promote

    pipeline, run, con, bundle_dir = _train_pipeline_run(ctx, config, data, models_dir, source, progress, tracking_uri)
    _print_run(run)
    decision = retrain_and_promote(pipeline, run, con, bundle_dir, typer.echo)
    typer.echo(f"\nreport: {decision.report}")
    typer.echo(f"{pipeline.tracking.registered_model} version {decision.version}: {decision.reason}")


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def _load_model(model: str, tracking_uri: str | None):
    """(scorer, manifest) from a bundle directory or an MLflow model URI; exit 2 with the reason."""
    scorer, manifest, _ = _load_model_bundle(model, tracking_uri)
    return scorer, manifest


def _load_model_bundle(model: str, tracking_uri: str | None):
    """(scorer, manifest, the verified bundle directory it was read from) of :func:`_load_model`."""
    import os

    from leadscore.serving import registry as T
    from leadscore.serving.bundle import BundleError, load_bundle

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if ":/" not in model and not Path(model).is_dir():
        _err(f"error: --model {model}: not a bundle directory and not an MLflow model URI (models:/NAME@ALIAS, "
             "models:/NAME/VERSION, runs:/ID/scorer)")
        raise typer.Exit(EXIT_UNUSABLE)
    try:
        bundle = T.bundle_of(model, tracking_uri=uri)
        manifest, objects = load_bundle(bundle)
        return objects[T.SCORER_FILE], manifest, bundle
    except BundleError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc
    except Exception as exc:  # MLflow: unknown model, alias or store
        _err(f"error: cannot load model {model} from {uri}: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc


@app.command()
def serve(
    model: str = typer.Option(..., "--model", help="models:/leadscore@champion, models:/leadscore/3, or a bundle "
                                                   "directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only)."),
    port: int = typer.Option(5001, "--port", min=1, max=65535, help="Port to listen on."),
    max_rows: int = typer.Option(10_000, "--max-rows", min=1, help="Largest batch of rows one request may send (413 above)."),
    max_bytes: int = typer.Option(10_000_000, "--max-bytes", min=1, help="Largest request body in bytes (413 above)."),
    allow_unauthenticated: bool = typer.Option(False, "--allow-unauthenticated",
                                               help="Serve on a non-loopback address without LEADSCORE_API_KEY "
                                                    "(only behind a gateway that authenticates)."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI for models:/ URIs."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes, each with its own copy of the model "
                                "(memory: one per worker) scoring its own requests; up to one per core."),
) -> None:
    """Serve the model over HTTP with an API key and request limits (MLflow's protocol).

    `POST /invocations` takes `{"dataframe_split": ...}` or `{"dataframe_records": ...}` of
    feature rows and answers `{"predictions": [...]}` with the batch job's scoring columns;
    `GET /ping` answers 200. With LEADSCORE_API_KEY set, requests need `Authorization: Bearer
    <key>` or `X-API-Key` (401 otherwise). A batch over --max-rows or a body over --max-bytes
    gets 413; bad input 400 naming the problem; never a stack trace. The model is verified and
    read by leadscore (no code from the registry copy runs) - unlike `mlflow models serve`.
    Each worker process scores one batch at a time, in a thread: /ping answers meanwhile.
    """
    from leadscore.serving.server import serve as run_server

    scorer, manifest, bundle = _load_model_bundle(model, tracking_uri)   # read here: a bad model fails here
    typer.echo(f"serving {model} ({manifest.get('name', '')}) on http://{host}:{port}/invocations"
               + (f" with {workers} worker processes" if workers > 1 else ""))
    if workers > 1:
        scorer = None   # each worker process reads its own copy
    try:
        run_server(scorer, host, port, max_rows, max_bytes, allow_unauthenticated,
                   workers=workers, bundle=str(bundle), manifest=manifest)
    except ValueError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc


@app.command()
def verify(
    model: str = typer.Option(..., "--model", help="A registered model (models:/NAME@ALIAS, models:/NAME/VERSION) "
                                                   "or a bundle directory."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=f"MLflow tracking URI (default: "
                                            f"$MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})."),
) -> None:
    """Check a model without running any of its code: every bundle file against the manifest's
    hashes, the manifest's signature (when LEADSCORE_SIGNING_KEY is set), the library versions,
    and for a registered model its MLflow files - no pickle, every code file as the manifest
    records, the bundle written by the run that registered the version. Run it before
    `mlflow models serve` or a Spark job loads the model (MLflow itself runs the model's code
    unchecked). Exit 0 when it passes, 2 with every problem named."""
    scorer, manifest = _load_model(model, tracking_uri)
    typer.echo(f"OK {model}: {manifest.get('name', '')} written {manifest.get('created_at', '')}, "
               f"{len(manifest['files'])} files and {len(manifest.get('code') or {})} code files as recorded"
               + (", signature valid" if _signing_key_set() else " (unsigned: LEADSCORE_SIGNING_KEY not set)"))


def _signing_key_set() -> bool:
    from leadscore.serving.bundle import signing_key

    return signing_key() is not None


@app.command()
def explain(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", help="models:/leadscore@champion, models:/leadscore/3, or a bundle "
                              "directory such as models/leadscore."),
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
    source: Path | None = typer.Option(None, "--source", help=SOURCE_HELP),
    as_of: str | None = typer.Option(None, "--as-of", help="The moment to explain the score at; only data strictly "
                                     "before it is used. Required but with --flat. " + AS_OF_FORMAT + "."),
    lead_id: str = typer.Option(..., "--lead-id", help="The lead to explain."),
    flat: Path | None = typer.Option(None, "--flat", help="Dataset YAML of a one-row-per-lead export: explain its "
                                     "row of --data (a CSV; default the config's path)."),
    top: int = typer.Option(3, "--top", min=1, help="Reasons to show in each direction."),
    since: Path | None = typer.Option(None, "--since", metavar="FILE", help="An earlier scoring run's output "
                                      "(leadscore score --out): also show the lead's score at that run's as_of and "
                                      "what changed since, in words, the changes adding up to the margin's move."),
    history: Path | None = typer.Option(None, "--history", metavar="DIR", help="A score history (leadscore score "
                                        "--history): also show the lead's score and tier at every run up to "
                                        "--as-of, as a trend line."),
    json_out: str | None = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP.format(
        what="the explanation, with every contribution, the base value and the margin,")),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI for models:/ URIs "
                                            "(default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."),
) -> None:
    """Why a lead scored as it did: its probability (p_sql, or p_won for a won-only CRM), tier and the decision, reasons in words.

    Shows the lead's calibrated probability and tier with the cutoffs that decided it, the top
    reasons for and against (exact SHAP contributions of the LightGBM model, in log-odds),
    fit_score and engagement_score with the A/B/C x 1/2/3 grid cell, and the rule baseline's
    points and fired rules. Contributions plus the base value equal the model's margin; the
    calibrator maps that margin monotonically to the probability.
    """

    from leadscore.serving.explain import UnknownLead, explain_lead, explanation_text
    from leadscore.training.flat_pipeline import explain_flat_lead

    ts = _parse_timestamp(as_of, "--as-of")
    scorer, _ = _load_model(model, tracking_uri)
    if flat is None and ts is None:
        raise typer.BadParameter("give the moment to explain at, e.g. --as-of 2025-10-01", param_hint="--as-of")
    if history is not None and not history.is_dir():
        raise typer.BadParameter(f"{history}: no such directory", param_hint="--history")
    if history is not None and flat is not None:
        raise typer.BadParameter("a flat export is scored as one snapshot, without a history", param_hint="--history")
    since_as_of = None
    if since is not None:
        if flat is not None:
            raise typer.BadParameter("a flat export has no history to compare with", param_hint="--since")
        since_as_of = _run_as_of(since, "--since")
        if since_as_of >= ts:
            raise typer.BadParameter(f"{since} is the run of {since_as_of.isoformat()}, not before --as-of "
                                     f"{ts.isoformat()}", param_hint="--since")
    try:
        if flat is not None:
            result = _flat_input(explain_flat_lead, scorer, model, flat, data, lead_id, ts, top)
        else:
            src = _source(data, source)
            _check_model_source(scorer, src)
            result = explain_lead(scorer, _connect_clean(ctx, src), lead_id, ts, k=top, since=since_as_of)
    except UnknownLead as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_VIOLATIONS) from exc
    result["model"] = model
    if history is not None:
        from leadscore.serving.history import lead_trend, trend_line

        trend = lead_trend(history, lead_id)
        trend = trend[pd.to_datetime(trend["as_of"], utc=True) <= ts]
        result["history"] = {"trend": trend_line(trend), "runs": [
            {"as_of": pd.Timestamp(r.as_of).isoformat(), "score": int(r.score), "tier": str(r.tier),
             scorer.probability: None if pd.isna(getattr(r, scorer.probability)) else float(getattr(r, scorer.probability)),
             "model_version": r.model_version} for r in trend.itertuples()]}
    _emit(result, explanation_text(result), json_out)


def _run_as_of(path: Path, option: str):
    """The as_of of a scoring run's output file (exit 2 when it is not one)."""
    from leadscore.serving import alerts
    from leadscore.serving.batch import read_scores

    try:
        _, at = alerts.previous_run(read_scores(path))
    except (OSError, ValueError) as exc:
        _err(f"error: {option} {path}: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc
    if at is None:
        _err(f"error: {option} {path}: the run scored no lead, so it has no as_of")
        raise typer.Exit(EXIT_UNUSABLE)
    return at


def _emit(result: dict, text: str, json_out: str | None) -> None:
    """The text on standard output, and the JSON to ``json_out``; ``-``: the JSON instead of the text."""
    import json

    from leadscore.io import write_json

    if json_out == "-":
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(text)
    if json_out is not None:
        write_json(result, Path(json_out))
        typer.echo(f"json: {json_out}")


def _check_model_source(scorer, src) -> None:
    """Exit 2 when the data source lacks what the model's features read."""
    from leadscore.features.builder import check_source

    try:
        check_source(scorer.feature_config, src.contract)
    except ValueError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc


_STOPPED_BY: list[int] = []   # the signal that stopped a job, for main()'s exit code


def _stop_on_sigterm() -> None:
    """A scheduler's SIGTERM (and Ctrl-C) unwinds the job, so temporary outputs are removed on
    the way out; :func:`main` then exits 143 (130 for Ctrl-C) saying it was interrupted -
    also when the signal arrived inside a DuckDB query, which reports it as its own error."""
    import signal

    def stop(signum, frame):
        _STOPPED_BY.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


@app.command()
def score(
    model: str = typer.Option(..., "--model", help="models:/leadscore@champion, models:/leadscore/3, or a bundle "
                              "directory such as models/leadscore."),
    data: Path | None = typer.Option(None, "--data", help=DATA_HELP),
    source: Path | None = typer.Option(None, "--source", help=SOURCE_HELP),
    as_of: str | None = typer.Option(None, "--as-of", help="The run time: leads open at this moment are scored from "
                                     "data strictly before it. Required but with --flat (there: the as_of of leads "
                                     "without a date; default now). " + AS_OF_FORMAT + "."),
    out: Path = typer.Option(..., "--out", help="Output file (.parquet or .csv), one row per open lead."),
    flat: Path | None = typer.Option(None, "--flat", help="Dataset YAML of a one-row-per-lead export (e.g. "
                                     "pipelines/xeducation.yaml): score every row of --data (a CSV; default the "
                                     "config's path) with a model trained on that export."),
    previous: Path | None = typer.Option(None, "--previous", help="The previous run's output: write the stage "
                                         "transitions since then (and POST them when a webhook is configured), and "
                                         "give the leads whose score moved by change_threshold points (default 5) "
                                         "change_reasons, why in words."),
    transitions_out: Path | None = typer.Option(None, "--transitions", help="Transitions file (default: "
                                                "OUT's name + .transitions)."),
    quarantine_out: Path | None = typer.Option(None, "--quarantine", help="Quarantine file for rows that break "
                                               "the contract (default: OUT's name + .quarantine)."),
    history: Path | None = typer.Option(None, "--history", help="Score history directory: add this run's scores "
                                        "there, compact (keys, probabilities, score, tiers, model version; no "
                                        "reasons), one file per --as-of (scoring a moment again replaces it). "
                                        "`leadscore explain --history` shows a lead's trend from it; `leadscore "
                                        "monitor --scores` reads it."),
    config: Path | None = typer.Option(None, "--config", help="Scoring YAML (see pipelines/score.yaml)."),
    chunk_size: int | None = typer.Option(None, "--chunk-size", min=1, help="Leads per chunk (overrides config)."),
    top: int | None = typer.Option(None, "--top", min=1, help="Reasons per direction (overrides config)."),
    max_quarantine: float | None = typer.Option(None, "--max-quarantine", min=0.0, max=1.0,
                                                help="Largest share of a table that may be quarantined."),
    webhook: str | None = typer.Option(None, "--webhook", help="POST transitions to this URL (replaces the config's "
                                       "URL; its batch size, deadline and retries still apply)."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI for models:/ URIs "
                                            "(default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress on stderr."),
) -> None:
    """Score every lead open at --as-of: the nightly batch job.

    Writes one row per open lead: lead_id, as_of, p_sql, p_won, score (1-99), tier (lead / MQL /
    SQL by the model's cutoffs), fit_score, engagement_score, grid, reasons, incomplete_history,
    baseline_points, baseline_tier, model_version, run_id. Rows that break the data contract are
    quarantined with their reason; more than the configured share of a table stops the job
    (exit 1) before anything is scored. A lead some of whose activities or stage events were
    quarantined is scored with incomplete_history true (or, with `incomplete_history: hold` in
    the config, held back and listed in the quarantine file). Output is written atomically and is byte-identical for the same inputs,
    model and --as-of. With --previous, leads that entered MQL or SQL or dropped out since then
    go to a transitions file and, if a webhook is configured, are POSTed to it (exit 3 when
    delivery fails; the scores are still written).
    """
    import os

    from leadscore.serving.batch import QuarantineLimitExceeded, load_scoring
    from leadscore.serving.job import PreviousRunError, run_scoring_job
    from leadscore.serving.registry import model_identity
    from leadscore.settings import ConfigError

    _stop_on_sigterm()
    ts = _parse_timestamp(as_of, "--as-of")
    if history is not None and history.exists() and not history.is_dir():
        _err(f"error: --history {history}: not a directory")
        raise typer.Exit(EXIT_UNUSABLE)
    if flat is not None:
        if history is not None:
            raise typer.BadParameter("a flat export is scored as one snapshot: keep its outputs instead of a "
                                     "history", param_hint="--history")
        return _score_flat(model, flat, data, ts, out, quarantine_out, top, tracking_uri)
    if ts is None:
        raise typer.BadParameter("give the run time, e.g. --as-of 2025-10-01", param_hint="--as-of")
    src = _source(data, source)
    try:
        settings, hook = load_scoring(config, webhook_url=webhook)
        settings = settings.replace(**{k: v for k, v in (
            ("chunk_size", chunk_size), ("top_reasons", top), ("max_quarantine_fraction", max_quarantine))
            if v is not None})
    except (ConfigError, ValueError) as exc:
        raise _config_error(exc) from exc
    if previous is not None and not previous.exists():
        _err(f"error: --previous {previous}: no such file")
        raise typer.Exit(EXIT_UNUSABLE)
    scorer, manifest = _load_model(model, tracking_uri)
    _check_model_source(scorer, src)
    version, run_id = model_identity(model, manifest, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                                     or DEFAULT_TRACKING_URI)
    try:
        with _summarised_warnings("scoring"):
            report = run_scoring_job(scorer, manifest, src, ts, out, settings=settings, version=version,
                                     run_id=run_id, say=typer.echo, warn=_err, hook=hook, previous=previous,
                                     transitions_out=transitions_out, quarantine_out=quarantine_out,
                                     history=history, progress=progress)
    except (contract.ContractError, PreviousRunError) as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc
    except QuarantineLimitExceeded as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_VIOLATIONS) from exc
    if report.delivery is not None and not report.delivery.ok:
        _err(f"error: {report.delivery.failed:,} transitions were not delivered to {hook.display_url}; they are in "
             f"{report.transitions}")
        raise typer.Exit(EXIT_DELIVERY)


def _score_flat(model: str, flat: Path, data: Path | None, as_of, out: Path, quarantine_out: Path | None,
                top: int | None, tracking_uri: str | None) -> None:
    """Score every row of a flat export: the scorer's columns, the model's identity, one row per
    lead; rows that cannot be scored are quarantined with the reason (rows in = scored + quarantined)."""
    import os

    from leadscore.io import write_table
    from leadscore.serving.job import sibling_path
    from leadscore.serving.registry import model_identity
    from leadscore.training.flat_pipeline import flat_scoring_rows

    scorer, manifest = _load_model(model, tracking_uri)
    rows, quarantined = _flat_input(flat_scoring_rows, scorer, model, flat, data, as_of)
    version, run_id = model_identity(model, manifest, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                                     or DEFAULT_TRACKING_URI)
    if len(rows) == 0:   # every row quarantined: say so, keep the reasons, write no scores
        if len(quarantined):
            write_table(quarantined, quarantine_out or sibling_path(out, "quarantine"))
        _err(f"error: no row of {data or flat} can be scored ({len(quarantined):,} quarantined with their reasons)")
        raise typer.Exit(EXIT_VIOLATIONS)
    scored = scorer.score(rows, top_reasons=top or 3)
    scored["model_version"], scored["run_id"] = version, run_id
    if len(quarantined):
        path = quarantine_out or sibling_path(out, "quarantine")
        write_table(quarantined, path)
        _err(f"{len(quarantined):,} rows cannot be scored; quarantined with their reasons in {path}")
    write_table(scored, out)
    typer.echo(f"{len(rows) + len(quarantined):,} rows in = {len(scored):,} scored + {len(quarantined):,} quarantined "
               f"with {version}")
    baseline = "baseline_tier" in scored
    typer.echo("tier       model" + ("  baseline" if baseline else ""))
    for tier in TIERS:
        typer.echo(f"{tier:<6}{int((scored['tier'] == tier).sum()):>11,}"
                   + (f"{int((scored['baseline_tier'] == tier).sum()):>10,}" if baseline else ""))
    typer.echo(f"scores: {out}")


def _score_files(paths: list[Path]) -> list[Path]:
    """The scoring outputs under --scores: files as given, directories searched for .parquet
    and .csv files that are not a run's quarantine or transitions file, nor hidden (a running
    or killed job's staging directory and unfinished files)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".csv")
                            and not p.stem.endswith((".quarantine", ".transitions"))
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.exists():
            found.append(path)
        else:
            _err(f"error: --scores {path}: no such file or directory")
            raise typer.Exit(EXIT_UNUSABLE)
    if not found:
        _err(f"error: --scores {', '.join(map(str, paths))}: no scoring output (.parquet or .csv) found")
        raise typer.Exit(EXIT_UNUSABLE)
    return found


@app.command()
def monitor(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", help="The model the scores came from: models:/leadscore@champion, "
                              "models:/leadscore/3, or a bundle directory."),
    source: Path | None = typer.Option(None, "--source", help=SOURCE_HELP),
    data: Path | None = typer.Option(None, "--data", help="Directory with leads, activities, lifecycle (or the files "
                                     "of --source), now including "
                              "the outcomes that happened after the scoring runs."),
    scores: list[Path] = typer.Option(..., "--scores", help="Past `leadscore score` outputs: files or "
                                      "directories (repeatable). Quarantine and transitions files are skipped."),
    out: Path = typer.Option(..., "--out", help="The HTML report (self-contained, images embedded)."),
    json_out: str | None = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP.format(
        what="every figure (verdict, rates, calibration, drift, capacity)")),
    ece_limit: float = typer.Option(0.01, "--ece-limit", min=0.0, help="Flag calibration drift above this ECE."),
    psi_watch: float = typer.Option(0.1, "--psi-watch", min=0.0, help="PSI at which a feature is watched."),
    psi_act: float = typer.Option(0.25, "--psi-act", min=0.0, help="PSI at which drift triggers 'retrain'."),
    target_tolerance: float = typer.Option(0.2, "--target-tolerance", min=0.0, max=0.99, help="Realized "
                                           "conversion counts as off target when its 95 % interval lies wholly "
                                           "below target x (1 - tolerance)."),
    observed_until: str | None = typer.Option(None, "--observed-until", help="End of the observed outcomes "
                                              "(default: as training reads it - the newest lifecycle event minus "
                                              "the model's label_latency_days). " + AS_OF_FORMAT + "."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: "
                                            "$MLFLOW_TRACKING_URI or sqlite:///mlflow.db)."),
    experiment: str = typer.Option("leadscore-monitoring", "--experiment", help="MLflow experiment of the "
                                   "monitoring runs."),
    tracking: bool = typer.Option(True, "--tracking/--no-tracking", help="Log the check as an MLflow run."),
    flat: Path | None = typer.Option(None, "--flat", help="Dataset YAML of a one-row-per-lead export: the "
                                     "outcomes come from --data (the export now, with its outcome column; default "
                                     "the config's path), the reference population from the config's path (what "
                                     "the model was trained on) or --reference."),
    reference: Path | None = typer.Option(None, "--reference", help="With --flat: the export the model was "
                                          "trained on (default: the config's path)."),
) -> None:
    """How past scores performed, and whether to act: no action, review cutoffs, or retrain.

    Realized rates of the model's primary outcome (MQL->SQL and SQL->won; MQL->won for a CRM
    without an SQL stage) per tier and score band against the predicted ones (matured outcome
    windows only; immature rows are counted and left out), the same for the
    rule baseline's tiers, calibration (ECE, reliability), population drift (PSI per feature
    and of the score between the training window and the latest run, unseen categories), and
    the characteristics over-represented among disqualified leads. Exit codes: 0 no action,
    5 review cutoffs (realized conversion below the cutoffs' targets), 4 retrain (drift or
    calibration beyond the limits) - a scheduler can chain `leadscore retrain` on 4.
    """
    import json
    import os

    from leadscore.io import write_json
    from leadscore.monitoring.monitor import FlatOutcomes
    from leadscore.monitoring.monitor import monitor as run_monitor
    from leadscore.monitoring.report import monitor_figures, render_monitor_report
    from leadscore.monitoring.result import MonitorConfig
    from leadscore.reporting.report import write_report
    from leadscore.serving.batch import read_scores
    from leadscore.serving.registry import TrackingConfig

    def say(line: str) -> None:  # with --json -, standard output is the JSON's alone
        typer.echo(line, err=json_out == "-")

    if observed_until is not None:
        observed_until = _parse_timestamp(observed_until, "--observed-until").isoformat()
    try:
        settings = MonitorConfig(ece_limit=ece_limit, psi_watch=psi_watch, psi_act=psi_act,
                                 target_tolerance=target_tolerance, observed_until=observed_until)
    except ValueError as exc:
        raise _config_error(exc) from exc
    files = _score_files(scores)
    frames = []
    for path in files:
        try:
            frames.append(read_scores(path))
        except Exception as exc:  # unreadable file: name it
            _err(f"error: --scores {path}: cannot read a scoring output: {exc}")
            raise typer.Exit(EXIT_UNUSABLE) from exc
    scored = pd.concat(frames, ignore_index=True)
    scorer, manifest = _load_model(model, tracking_uri)
    con = outcomes = None
    if flat is not None:
        outcomes = _flat_input(FlatOutcomes.read, scorer, model, flat, data, reference, settings)
        say(f"monitoring {len(scored):,} scored rows from {len(files)} file(s) against the outcomes in "
                   f"{data or flat}")
    else:
        src = _source(data, source)
        _check_model_source(scorer, src)
        con = _connect_clean(ctx, src)
        say(f"monitoring {len(scored):,} scored rows from {len(files)} file(s) against the outcomes in {src}")
    try:
        with _summarised_warnings("monitoring"):
            result = run_monitor(scorer, manifest, con, scored, config=settings, data=outcomes)
    except ValueError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc
    figures = monitor_figures(result)
    write_report(render_monitor_report(result, figures), out)
    if json_out == "-":
        typer.echo(json.dumps(result.to_json(), indent=2, sort_keys=True, default=str))
    elif json_out is not None:
        write_json(result.to_json(), Path(json_out))
    f = result.facts
    say(f"runs: {f['runs']} ({f['first_run'][:10]} .. {f['latest_run'][:10]}); rows: {f['scored_rows']:,} "
               f"scored, {f['matured_rows']:,} matured, {f['immature_rows']:,} immature (left out)")
    flow = result.capacity.dropna(subset=["new_mql_or_better"]).tail(1)
    if len(flow):
        c = flow.iloc[0]
        say(f"handed over on {c['as_of']:%Y-%m-%d}: {c['new_mql_or_better']:,.0f} leads new to MQL or better "
            f"({c['new_mql_or_better_per_week']:,.0f} a week), {c['new_sql']:,.0f} new to SQL "
            f"({c['new_sql_per_week']:,.0f} a week) since the run {c['days_since_previous']:.0f} days before; "
            f"open: {c['open_mql_or_better']:,} MQL or better, {c['open_sql']:,} SQL")
    say(f"verdict: {result.verdict.upper()} (exit {result.exit_code})")
    for reason in result.reasons:
        say(f"  {reason}")
    for note in result.notes:
        say(f"  note: {note}")
    say(f"report: {out}" + (f"\njson: {json_out}" if json_out not in (None, "-") else ""))
    if tracking:
        from leadscore.serving.registry import log_monitoring

        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        artifacts = "mlartifacts"  # beside a SQLite store, as training puts them by default
        if uri.startswith("sqlite:///"):
            artifacts = str(Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts")
        run_id = log_monitoring(TrackingConfig(tracking_uri=uri, artifact_location=artifacts, experiment=experiment),
                                result, out, figures, model)
        say(f"MLflow run {run_id} (experiment {experiment}) in {uri}")
    raise typer.Exit(result.exit_code)


def _flat_input(read, scorer, model: str, *args):
    """``read(scorer, *args)`` of a flat export; exit 2 when the model or the export does not fit."""
    from leadscore.settings import ConfigError
    from leadscore.training.flat_pipeline import NotThisModel

    try:
        return read(scorer, *args)
    except NotThisModel as exc:
        _err(f"error: --model {model}: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc
    except ConfigError as exc:
        raise _config_error(exc) from exc


def _train_flat(config: Path, data: Path | None, models_dir: Path | None, tracking: bool,
                tracking_uri: str | None = None, progress: bool = True) -> None:
    """Flat one-row-per-lead export: evaluate (out of time when it has dates, then the random
    split), then fit the model to deploy on every matured lead, write its bundle and register it."""
    from leadscore.modeling.model import InsufficientData
    from leadscore.progress import Heartbeat
    from leadscore.settings import ConfigError
    from leadscore.training.flat import load_config
    from leadscore.training.flat_pipeline import train_flat, write_flat_outputs

    try:
        dataset = load_config(config)
        with Heartbeat("training", enabled=progress) as beat:
            def echo(line: str) -> None:
                typer.echo(line)
                beat.stage(line)

            run = train_flat(dataset, data, echo=echo)
    except ConfigError as exc:
        raise _config_error(exc) from exc
    except InsufficientData as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    label = run.label

    def table(result, title: str) -> None:
        means = result.summary.xs("mean", axis=1, level=1)[list(METRIC_COLUMNS)]
        means = means.rename(index={"lgbm_default": "lgbm_dflt"})
        typer.echo(f"\n{title}, {label}:")
        typer.echo(_metric_table(means))
        typer.echo(f"{label}_auc {means.loc['model', 'auc']:.4f}, logreg_{label}_auc {means.loc['logreg', 'auc']:.4f}, "
                   f"default LightGBM {means.loc['lgbm_dflt', 'auc']:.4f}"
                   + (f", rule baseline {means.loc['baseline', 'auc']:.4f}" if "baseline" in means.index else ""))

    ev, folds = run.evaluation, run.dataset.split_settings.cv_folds
    if ev.out_of_time:
        table(ev, f"out of time, mean over {ev.folds['fold'].nunique()} walk-forward folds")
        table(run.random_split, f"random split - optimistic when the funnel drifts, mean over {folds} stratified folds")
    else:
        table(ev, f"mean over {folds} stratified folds")
    bundle_dir = (models_dir or Path(dataset.models_dir)) / dataset.bundle_name
    settings = _with_tracking_uri(dataset.tracking_config, tracking_uri)
    if not tracking or not settings.enabled:
        report, _ = write_flat_outputs(run, bundle_dir)
        typer.echo(f"\nwrote the bundle {bundle_dir}/ and the report {report} (MLflow tracking off)")
        return
    from leadscore.training.publish import publish_flat

    run_id = publish_flat(run, config, bundle_dir, settings, typer.echo)
    typer.echo(f"\nreport: {bundle_dir / 'report.html'}\nbundle: {bundle_dir}/\nMLflow run {run_id} in "
               f"{settings.tracking_uri}")


def main() -> None:
    """The console entry point: the commands, plus exits that name what happened instead of a
    traceback - interrupted by a signal (128 + its number), or a full disk (2)."""
    import errno
    import os
    import signal

    # LightGBM's idle OpenMP threads sleep instead of spinning (before its library loads): two
    # jobs overlapping on 2 cores took 39 s instead of over 300 s, one alone 30 s instead of 33 s,
    # and a server answers faster between requests
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    def interrupted() -> None:
        signum = _STOPPED_BY[0]
        _err(f"interrupted by {signal.Signals(signum).name}: stopped, temporary files removed, no output written")
        sys.exit(128 + signum)

    try:
        app(prog_name="leadscore")
    except SystemExit:
        if _STOPPED_BY:
            interrupted()
        raise
    except BaseException as exc:
        if _STOPPED_BY:
            interrupted()
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            where = Path(exc.filename).parent if exc.filename else Path.cwd()
            _err(f"error: no space left on the device of {where} ({exc.filename or 'writing an output'}); "
                 "free space or write elsewhere - no partial output was kept")
            sys.exit(EXIT_UNUSABLE)
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
