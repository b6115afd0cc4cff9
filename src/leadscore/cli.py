"""The ``leadscore`` command line. I/O lives here; the stages it calls are pure functions."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import typer

from leadscore import contract
from leadscore.funnel import format_funnel, funnel_summary

app = typer.Typer(
    help="Predictive lead scoring with a rule-based baseline alongside. "
    "Data directories hold the contract tables leads, activities and lifecycle (.parquet or .csv); "
    "see data/README.md.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

EXIT_VIOLATIONS = 1
EXIT_UNUSABLE = 2


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _parse_now(now: str | None) -> pd.Timestamp | None:
    if now is None:
        return None
    try:
        ts = pd.Timestamp(now)
    except ValueError as exc:
        raise typer.BadParameter(f"not a timestamp: {now!r} ({exc})", param_hint="--now") from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@app.command()
def synth(
    leads: int = typer.Option(20_000, "--leads", min=1, help="Number of leads to generate."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical files."),
    out: Path = typer.Option(..., "--out", help="Output directory (created if missing)."),
    start: str = typer.Option("2024-01-01", help="First day leads arrive (UTC date)."),
    months: int = typer.Option(21, min=2, help="Months of history; the data ends at start + months."),
    horizon_days: int = typer.Option(42, min=1, help="Horizon of the oracle's P(SQL) in truth.parquet."),
    won_horizon_days: int = typer.Option(120, min=1, help="Horizon of the oracle's P(won) in truth.parquet."),
    progress: bool = typer.Option(True, help="Show progress on stderr."),
) -> None:
    """Generate a synthetic B2B funnel with known ground truth.

    Writes leads, activities and lifecycle (the data contract), truth.parquet (the true
    probability that each open lead becomes an SQL / closes won within the horizons, for
    weekly as-of dates), the hidden per-lead parameters, and manifest.json; then prints
    the funnel summary.
    """
    from leadscore.synthetic import SynthConfig, generate

    t0 = time.perf_counter()
    cfg = SynthConfig(n_leads=leads, seed=seed, start=start, months=months,
                      horizon_days=horizon_days, won_horizon_days=won_horizon_days)
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
    data: Path = typer.Option(..., "--data", help="Directory with leads, activities, lifecycle (.parquet or .csv)."),
    quarantine: Path | None = typer.Option(
        None, "--quarantine",
        help="Write clean rows to DIR/clean/ and failing rows, each with its reason, to DIR/quarantined/.",
    ),
    now: str | None = typer.Option(None, help="Timestamps after this are 'in the future' (default: now, UTC)."),
) -> None:
    """Check the three tables against the data contract.

    Exit 0 when clean; 1 when rows break the contract (each rule is named with its table,
    column and up to 10 offending rows); 2 when a table cannot be read or lacks a required
    column. With --quarantine, rows in = clean + quarantined for every table.
    """
    try:
        report = contract.validate_dir(data, now=_parse_now(now))
    except contract.ContractError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc

    for line in report.lines():
        _err(line)
    counts = report.counts()
    for name, c in counts.items():
        typer.echo(f"{name:<11} rows in {c['rows_in']:>10,} = clean {c['clean']:>10,} + quarantined {c['quarantined']:>8,}")
    if quarantine is not None:
        _write_quarantine(report, quarantine)
        typer.echo(f"clean rows in {quarantine / 'clean'}/, quarantined rows with reasons in {quarantine / 'quarantined'}/")
    if report.ok:
        typer.echo(f"{data}: all tables satisfy the contract")
        return
    _err(f"{data}: {len(report.violations)} contract rule(s) broken")
    raise typer.Exit(EXIT_VIOLATIONS)


def _write_quarantine(report: contract.ValidationReport, out: Path) -> None:
    from leadscore.io import write_json, write_parquet

    clean, quarantined = report.split()
    for name in contract.TABLES:
        write_parquet(clean[name], out / "clean" / f"{name}.parquet")
        write_parquet(quarantined[name], out / "quarantined" / f"{name}.parquet")
    write_json({"counts": report.counts(), "violations": [
        {"table": v.table, "column": v.column, "rule": v.rule, "message": v.message, "rows": v.count}
        for v in report.violations]}, out / "summary.json")


@app.command()
def funnel(
    data: Path = typer.Option(..., "--data", help="Directory with leads, activities, lifecycle."),
) -> None:
    """Print the funnel: leads, MQLs, SQLs, won; MQL->SQL and SQL->won rates (clean rows only)."""
    try:
        clean, report = contract.load_clean(data)
    except contract.ContractError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from exc
    quarantined = {k: v["quarantined"] for k, v in report.counts().items() if v["quarantined"]}
    if quarantined:
        _err(f"note: rows breaking the contract are left out: {quarantined} (run `leadscore validate` for details)")
    typer.echo(f"funnel of {data}:")
    typer.echo(format_funnel(funnel_summary(clean["leads"], clean["lifecycle"])))


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="leadscore")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
