"""Self-contained HTML reports: plots embedded as PNG data URIs, inline CSS, no scripts or
network references, so a report opens offline. Generic helpers first (reused by monitoring),
then the training report's content.
"""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from leadscore.metrics import gains_curve, reliability_table

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.note{background:#fff3cd;padding:.5em 1em}
img{max-width:100%}"""


# --- generic helpers -------------------------------------------------------------------

def figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def html_table(frame: pd.DataFrame, index: bool = True) -> str:
    cols = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for idx, row in frame.iterrows():
        cells = ([_cell(idx)] if index else []) + [_cell(v) for v in row]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def html_page(title: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{html.escape(h)}</h2>\n{content}\n" for h, content in sections)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n")


def write_report(text: str, path) -> Path:
    """Atomic: a temporary file in the same directory, then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- the training report ------------------------------------------------------------------

@dataclass
class TrainingReportInputs:
    title: str
    facts: list[tuple[str, str]]
    metrics: pd.DataFrame
    scores: pd.DataFrame
    uncalibrated: str | None = None
    ranking: dict[str, str] = field(default_factory=dict)
    cutoffs: pd.DataFrame | None = None
    tradeoff: pd.DataFrame | None = None
    calibration: pd.DataFrame | None = None
    extra_tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return [m for m in self.metrics.index if m in self.scores.columns]


def _reliability(inputs: TrainingReportInputs) -> Figure:
    fig = Figure(figsize=(11, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    y = inputs.scores["y"].to_numpy()
    curves = [(m, inputs.scores[m].to_numpy()) for m in inputs.models]
    if inputs.uncalibrated:
        curves.append(("model before calibration", inputs.scores[inputs.uncalibrated].to_numpy()))
    for name, p in curves:
        t = reliability_table(y, p, 10)
        ax1.plot(t["predicted"], t["observed"], marker="o", label=name)
        # quantile bins: readable where most probabilities are small
        q = pd.qcut(pd.Series(p).rank(method="first"), 10, labels=False)
        g = pd.DataFrame({"p": p, "y": y, "q": q}).groupby("q").mean()
        ax2.plot(g["p"], g["y"], marker="o", label=name)
    for ax, title in ((ax1, "equal-width bins"), (ax2, "deciles of the prediction (log axes)")):
        lim = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([1e-5, lim], [1e-5, lim], "k--", lw=1, label="perfect")
        ax.set(xlabel="predicted probability", ylabel="observed rate", title=f"Reliability: {title}")
    ax2.set(xscale="log", yscale="log")
    ax1.legend(fontsize=8)
    return fig


def _gains(inputs: TrainingReportInputs) -> Figure:
    fig = Figure(figsize=(11, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    y = inputs.scores["y"].to_numpy()
    for m in inputs.models:
        g = gains_curve(y, inputs.scores[inputs.ranking.get(m, m)].to_numpy(), points=40)
        ax1.plot(g["top_fraction"], g["capture"], label=m)
        ax2.plot(g["top_fraction"], g["lift"], label=m)
    ax1.plot([0, 1], [0, 1], "k--", lw=1, label="random")
    ax1.set(xlabel="top fraction of examples", ylabel="share of conversions captured", title="Gains")
    ax2.set(xlabel="top fraction of examples", ylabel="lift", title="Lift", xscale="log")
    ax1.legend(fontsize=8)
    return fig


def _distribution(inputs: TrainingReportInputs) -> Figure:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    p, y = inputs.scores["model"].to_numpy(), inputs.scores["y"].to_numpy()
    bins = np.logspace(np.log10(max(p.min(), 1e-6)), np.log10(p.max()), 50)
    for value, label in ((0, "did not convert"), (1, "converted")):
        ax.hist(p[y == value], bins=bins, density=True, histtype="step", lw=2, label=label)
    ax.set(xscale="log", xlabel="model probability", ylabel="density", title="Scores by outcome (test slice)")
    ax.legend()
    return fig


def _cutoff_plot(inputs: TrainingReportInputs) -> Figure:
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 3)
    t = inputs.tradeoff
    for ax, col in zip(axes, ("conversion_rate", "recall", "leads_per_week")):
        ax.plot(t["threshold"], t[col])
        ax.set(xscale="log", xlabel="p_sql cutoff", title=col.replace("_", " "))
        if inputs.cutoffs is not None:
            for _, r in inputs.cutoffs.iterrows():
                ax.axvline(r["threshold"], ls="--", color="red" if r["cutoff"] == "SQL" else "orange")
                ax.text(r["threshold"], ax.get_ylim()[1], r["cutoff"], va="top", fontsize=8)
    return fig


def training_figures(inputs: TrainingReportInputs) -> dict[str, bytes]:
    figures = {"reliability.png": _reliability(inputs), "gains.png": _gains(inputs),
               "score_distribution.png": _distribution(inputs)}
    if inputs.tradeoff is not None:
        figures["cutoffs.png"] = _cutoff_plot(inputs)
    return {name: figure_png(fig) for name, fig in figures.items()}


def _interval_table(cutoffs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"threshold": cutoffs["threshold"].map(lambda v: f"{v:.4f}")}, index=cutoffs["cutoff"])
    for col in ("leads_per_week", "conversion_rate", "recall"):
        fmt = "{:.0f}" if col == "leads_per_week" else "{:.1%}"
        out[col] = [f"{fmt.format(r[col])} ({fmt.format(r[col + '_low'])}–{fmt.format(r[col + '_high'])})"
                    for _, r in cutoffs.iterrows()]
    out.index.name = "cutoff"
    return out


def render_training_report(inputs: TrainingReportInputs, figures: dict[str, bytes] | None = None) -> str:
    figures = figures if figures is not None else training_figures(inputs)
    facts = "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                                for k, v in inputs.facts) + "</table>"
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in inputs.notes)
    sections = [("Run", notes + facts),
                ("Out-of-time test slice: model and references", html_table(inputs.metrics)),
                ("Calibration", (html_table(inputs.calibration) if inputs.calibration is not None else "")
                 + img_tag(figures["reliability.png"], "reliability diagram")),
                ("Gains and lift", img_tag(figures["gains.png"], "gains and lift")),
                ("Score distributions", img_tag(figures["score_distribution.png"], "score distributions"))]
    if inputs.cutoffs is not None:
        content = html_table(_interval_table(inputs.cutoffs))
        if "cutoffs.png" in figures:
            content += img_tag(figures["cutoffs.png"], "cutoff trade-offs")
        sections.append(("Cutoffs (95 % bootstrap intervals over leads)", content))
    sections += [(title, html_table(table)) for title, table in inputs.extra_tables]
    return html_page(inputs.title, sections)
