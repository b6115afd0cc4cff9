"""Self-contained HTML reports: plots embedded as PNG data URIs, inline CSS, no scripts or
network references, so a report opens offline. Generic helpers first (reused by monitoring),
then the training report's content.

Figures are plain :class:`matplotlib.figure.Figure` objects on an Agg canvas - never pyplot -
so no global backend is set, nothing is registered with pyplot's figure manager, and calls
on different threads do not share state.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leadscore.io import atomic_path
from leadscore.metrics import gains_curve, reliability_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.note{background:#fff3cd;border-left:4px solid #e0a800;padding:.5em 1em;font-weight:600}
img{max-width:100%;display:block;margin:1em 0}"""


# --- generic helpers -------------------------------------------------------------------

def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (not pyplot): nothing global to set up or to close."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (no 'Software' metadata: the file carries no URL or version)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError(f"{alt!r}: not PNG bytes")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def format_value(value) -> str:
    """One table cell: floats to 4 significant digits (large ones as whole numbers), integers
    with thousands separators, missing values empty, anything else as text (HTML-escaped)."""
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return html.escape(str(value))


def html_table(frame: pd.DataFrame, index: bool | None = None) -> str:
    """The frame as an HTML table; every header and cell escaped. Values keep their column's type.
    ``index`` None: shown unless it is an unnamed default RangeIndex."""
    if index is None:
        index = not (isinstance(frame.index, pd.RangeIndex) and frame.index.name is None)
    names = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in names)
    rows = ["<tr>" + "".join(f"<td>{format_value(v)}</td>" for v in row) + "</tr>"
            for row in frame.itertuples(index=index, name=None)]
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def html_page(title: str, sections: list[tuple[str, str]], notes: list[str] = ()) -> str:
    """The whole document: title, highlighted notes, then (heading, HTML content) sections.
    Headings, the title and notes are text (escaped here); section content is HTML already."""
    top = "".join(f"<p class='note'>{html.escape(n)}</p>\n" for n in notes)
    body = "".join(f"<h2>{html.escape(h)}</h2>\n{content}\n" for h, content in sections)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{top}{body}</body></html>\n")


def write_report(text: str, path) -> Path:
    """Atomic: written to a temporary file in the same directory, then renamed over ``path``;
    on any failure the previous file (if any) is untouched and the temporary file removed."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
        tmp.chmod(0o644)  # mkstemp creates 0600; a report is meant to be shared
    return path


# --- the training report ------------------------------------------------------------------

@dataclass
class TrainingReportInputs:
    title: str
    facts: list[tuple[str, str]]
    metrics: pd.DataFrame                 # rows = models, columns = metric names
    scores: pd.DataFrame                  # test slice: "y" and one probability column per model
    uncalibrated: str | None = None       # column of scores: the model before calibration
    ranking: dict[str, str] = field(default_factory=dict)  # model -> column to rank by
    cutoffs: pd.DataFrame | None = None
    tradeoff: pd.DataFrame | None = None
    calibration: pd.DataFrame | None = None
    extra_tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figure_sections: list[tuple[str, list[str]]] = field(default_factory=list)  # title, figure names
    metrics_title: str = "Out of time, the newest backtest fold's test weeks: model and references"

    def __post_init__(self):
        needed = ["y"] + [c for c in [self.uncalibrated, *self.ranking.values()] if c]
        missing = [c for c in needed if c not in self.scores.columns]
        if missing:
            raise ValueError(f"scores lacks the column(s) {missing}")
        if not self.models:
            raise ValueError("no row of metrics has a probability column in scores")

    @property
    def models(self) -> list[str]:
        """The models to plot: rows of ``metrics`` with a probability column in ``scores``."""
        return [m for m in self.metrics.index if m in self.scores.columns]

    @property
    def main_model(self) -> str:
        return "model" if "model" in self.models else self.models[0]


def _style(name: str) -> dict:
    return {"color": "black", "ls": ":"} if name == "oracle" else {}


def _reliability(inputs: TrainingReportInputs) -> Figure:
    fig = new_figure(12, 4.8)
    ax1, ax2 = fig.subplots(1, 2)
    y = inputs.scores["y"].to_numpy(dtype="float64")
    curves = [(m, m) for m in inputs.models]
    if inputs.uncalibrated:
        curves.append((f"{inputs.main_model} before calibration", inputs.uncalibrated))
    positive = []
    for label, col in curves:
        p = inputs.scores[col].to_numpy(dtype="float64")
        t = reliability_table(y, p, 10)
        style = {"ls": "--"} if col == inputs.uncalibrated else _style(label)
        (line,) = ax1.plot(t["predicted"], t["observed"], label=label, **style)
        ax1.scatter(t["predicted"], t["observed"], s=15 + 400 * t["rows"] / len(y), color=line.get_color(), alpha=0.5)
        # deciles of the prediction: ten equal-count bins, readable where probabilities are small
        decile = pd.qcut(pd.Series(p).rank(method="first"), 10, labels=False)
        g = pd.DataFrame({"p": p, "y": y, "bin": decile}).groupby("bin").mean()
        ax2.plot(g["p"], g["y"], marker="o", label=label, color=line.get_color(), ls=line.get_linestyle())
        positive += [v for v in (*g["p"], *g["y"]) if v > 0]
    ax1.plot([0, 1], [0, 1], color="grey", lw=1, ls="-.", label="perfectly calibrated")
    ax1.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed conversion rate",
            title="Reliability: 10 equal-width bins (marker area ∝ rows)")
    lo, hi = (min(positive) / 1.5, max(positive) * 1.5) if positive else (1e-3, 1)
    ax2.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="-.", label="perfectly calibrated")
    ax2.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="mean predicted probability (log)",
            ylabel="observed conversion rate (log)", title="Reliability: deciles of each prediction (10 % of rows each)")
    ax1.legend(fontsize=8)
    return fig


def _gains(inputs: TrainingReportInputs) -> Figure:
    fig = new_figure(12, 4.5)
    ax1, ax2 = fig.subplots(1, 2)
    y = inputs.scores["y"].to_numpy()
    for m in inputs.models:
        col = inputs.ranking.get(m, m)
        g = gains_curve(y, inputs.scores[col].to_numpy(), points=40)
        label = m if col == m else f"{m} (ranked by {col})"
        ax1.plot(g["top_fraction"], g["capture"], label=label, **_style(m))
        ax2.plot(g["top_fraction"], g["lift"], label=label, **_style(m))
    ax1.plot([0, 1], [0, 1], color="grey", lw=1, ls="-.", label="random")
    ax2.axhline(1, color="grey", lw=1, ls="-.", label="random")
    ax1.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="top fraction of examples by score",
            ylabel="share of conversions captured", title="Cumulative gains")
    ax2.set(xscale="log", xlabel="top fraction of examples by score (log)", ylabel="lift over the overall rate",
            title="Lift")
    ax1.legend(fontsize=8)
    return fig


def _distribution(inputs: TrainingReportInputs) -> Figure:
    fig = new_figure(7, 4.2)
    ax = fig.subplots()
    name = inputs.main_model
    p, y = inputs.scores[name].to_numpy(dtype="float64"), inputs.scores["y"].to_numpy()
    p = np.clip(p, 1e-6, 1)
    lo, hi = p.min(), max(p.max(), p.min() * 1.01)
    bins = np.logspace(np.log10(lo), np.log10(hi), 50)
    for value, label in ((0, "did not convert"), (1, "converted")):
        if (y == value).any():
            ax.hist(p[y == value], bins=bins, density=True, histtype="step", lw=2,
                    label=f"{label} ({int((y == value).sum()):,})")
    ax.set(xscale="log", xlabel=f"{name} probability (log)", ylabel="density",
           title=f"{name}: scores by outcome (test slice)")
    ax.legend()
    return fig


def _cutoff_plot(inputs: TrainingReportInputs) -> Figure:
    fig = new_figure(13, 4)
    axes = fig.subplots(1, 3)
    t = inputs.tradeoff
    log_x = bool((t["threshold"] > 0).all())
    for ax, col, label in zip(axes, ("conversion_rate", "recall", "leads_per_week"),
                              ("conversion rate at or above", "recall (share of conversions)", "leads per week"),
                              strict=True):
        ax.plot(t["threshold"], t[col])
        ax.set(xscale="log" if log_x else "linear", xlabel="probability threshold" + (" (log)" if log_x else ""),
               ylabel=label, title=f"{label} vs threshold")
        for _, r in (inputs.cutoffs.iterrows() if inputs.cutoffs is not None else ()):
            color = "tab:red" if r["cutoff"] == "SQL" else "tab:orange"
            ax.axvline(r["threshold"], ls="--", color=color)
            ax.text(r["threshold"], 0.98, f"{r['cutoff']} {r['threshold']:.3g} ", color=color, va="top", ha="right",
                    rotation=90, fontsize=8, transform=ax.get_xaxis_transform())
    return fig


def training_figure_objects(inputs: TrainingReportInputs) -> dict[str, Figure]:
    """The training report's figures as matplotlib figures (for tests and notebooks)."""
    figures = {"reliability.png": _reliability(inputs), "gains.png": _gains(inputs),
               "score_distribution.png": _distribution(inputs)}
    if inputs.tradeoff is not None:
        figures["cutoffs.png"] = _cutoff_plot(inputs)
    return figures


def training_figures(inputs: TrainingReportInputs) -> dict[str, bytes]:
    """name -> PNG bytes: reliability, gains, score_distribution and (with a tradeoff) cutoffs."""
    return {name: figure_png(fig) for name, fig in training_figure_objects(inputs).items()}


def _with_interval(row: pd.Series, col: str, fmt: str) -> str:
    """'0.142 (0.121–0.160)'; the point alone when there is no (finite) interval."""
    point, low, high = row.get(col), row.get(f"{col}_low"), row.get(f"{col}_high")
    if point is None or pd.isna(point):
        return ""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return fmt.format(point)
    return f"{fmt.format(point)} ({fmt.format(low)}–{fmt.format(high)})"


def cutoff_table(cutoffs: pd.DataFrame) -> pd.DataFrame:
    """The cutoffs with their intervals as text, one row per cutoff."""
    out = pd.DataFrame(index=pd.Index(cutoffs["cutoff"].astype(str), name="cutoff"))
    if "policy" in cutoffs:
        out["policy"] = cutoffs["policy"].to_numpy()
    out["threshold"] = cutoffs["threshold"].to_numpy()
    if "examples" in cutoffs:
        out["examples"] = cutoffs["examples"].to_numpy()
    for col, fmt in (("leads_per_week", "{:,.1f}"), ("conversion_rate", "{:.3f}"), ("recall", "{:.3f}")):
        out[col] = [_with_interval(r, col, fmt) for _, r in cutoffs.iterrows()]
    return out


def render_training_report(inputs: TrainingReportInputs, figures: dict[str, bytes] | None = None) -> str:
    """The training report's HTML. ``figures`` defaults to :func:`training_figures`; a figure
    missing from it is left out."""
    figures = training_figures(inputs) if figures is None else figures

    def img(name: str, alt: str) -> str:
        return img_tag(figures[name], alt) if name in figures else ""

    facts = pd.DataFrame({"value": [str(v) for _, v in inputs.facts]},
                         index=pd.Index([str(k) for k, _ in inputs.facts], name="fact"))
    sections = [("Run", html_table(facts)),
                (inputs.metrics_title, html_table(inputs.metrics)),
                ("Calibration", (html_table(inputs.calibration) if inputs.calibration is not None else "")
                 + img("reliability.png", "reliability diagram")),
                ("Gains and lift", img("gains.png", "cumulative gains and lift")),
                ("Score distributions", img("score_distribution.png", "score distributions by outcome"))]
    if inputs.cutoffs is not None or "cutoffs.png" in figures:
        table = html_table(cutoff_table(inputs.cutoffs)) if inputs.cutoffs is not None else ""
        sections.append(("Cutoffs chosen in the newest fold, on its test weeks (bootstrap intervals in brackets)",
                         table + img("cutoffs.png", "cutoff trade-offs")))
    sections += [(title, "".join(img(name, name.removesuffix(".png").replace("_", " ")) for name in names))
                 for title, names in inputs.figure_sections]
    sections += [(title, html_table(table)) for title, table in inputs.extra_tables]
    return html_page(inputs.title, sections, inputs.notes)
