"""Self-contained HTML reports: plots embedded as PNG data URIs, inline CSS, no scripts or
network references, so a report opens offline. Generic helpers first (reused by monitoring),
then the training report's content.

Pages are Jinja2 templates (``leadscore/reporting/templates/*.j2``, autoescaped): the Python side
prepares numbers, already formatted by :func:`fmt` (one place decides the precision: rates
as percentages with one decimal, counts as whole numbers with thousands separators, PSI
with three decimals), and tables, escaped by :func:`html_table`.

Figures are plain :class:`matplotlib.figure.Figure` objects on an Agg canvas - never pyplot -
so no global backend is set, nothing is registered with pyplot's figure manager, and calls
on different threads do not share state.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter, PercentFormatter

from leadscore.io import atomic_path
from leadscore.labels.examples import WEIGHT, weights_of
from leadscore.modeling.metrics import binned_rates, gains_curve, reliability_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_BIN_ROWS = 30      # a reliability bin with fewer rows is noise: not drawn as a point
PROBABILITY_FLOOR = 1e-4  # logit axes stop here: lead probabilities below 0.01 % are not worth the room
MQL_COLOUR, SQL_COLOUR = "tab:orange", "tab:red"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;
color:#222;padding:1em 1.5em 3em;line-height:1.4}
h1{margin:.3em 0 .2em}h2{margin-top:2em;border-bottom:2px solid #e4e4e4;padding-bottom:.2em}
h3{margin-top:1.5em}
.scroll{overflow-x:auto;max-width:100%;margin:.8em 0}
table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #d0d0d0;padding:3px 8px;text-align:right;vertical-align:top}
td{white-space:nowrap}table.text td{white-space:normal}
th{background:#f3f3f3;font-weight:600}
td:first-child,th:first-child,td.t,th.t,table.text td,table.text th{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.note{background:#fff3cd;border-left:4px solid #e0a800;padding:.5em 1em;font-weight:600}
.info{color:#444;font-size:.95em}
.verdict{border-left:6px solid;padding:.6em 1.2em;margin:1em 0;border-radius:3px}
.verdict p{margin:.3em 0}.verdict ul{margin:.3em 0 .3em 1.2em;padding:0}
.verdict-title{font-size:1.35em;font-weight:700}
.verdict-ok{background:#e6f4ea;border-color:#1e8e3e}
.verdict-review{background:#fef4e0;border-color:#e37400}
.verdict-alert{background:#fce8e6;border-color:#c5221f}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.card{flex:1 1 210px;max-width:30em;border:1px solid #ddd;border-radius:6px;padding:.6em .9em;background:#fcfcfc}
.card-label{font-size:.85em;color:#555}
.card-value{font-size:1.35em;font-weight:700;margin:.1em 0}
.card-detail{font-size:.85em;color:#444}
.card-ok{border-top:4px solid #1e8e3e}.card-review{border-top:4px solid #e37400}
.card-alert{border-top:4px solid #c5221f}
figure{margin:1em 0}
figcaption{font-size:.9em;color:#444;max-width:60em}
img{max-width:100%;height:auto;display:block}
""".strip()


# --- generic helpers -------------------------------------------------------------------

def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (not pyplot): nothing global to set up or to close."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, cropped to what is drawn (no label cut off at the edge; no
    'Software' metadata: the file carries no URL or version)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.1)
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> Markup:
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError(f"{alt!r}: not PNG bytes")
    return Markup(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
                  f'{base64.b64encode(png).decode("ascii")}">')


def _missing(value) -> bool:
    return value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value))


def fmt(value, kind: str | None = None) -> str:
    """One value as the reports show it (plain text; escaping is the template's job).

    ``kind``: ``pct`` a rate or share, as a percentage with one decimal (``14.2%``); ``count``
    a whole number with thousands separators (``1,234``); ``psi`` three decimals; ``prob`` a
    probability or other small number, 4 significant digits; ``ratio`` two decimals;
    ``logodds`` signed, three decimals; ``date`` / ``datetime``; ``text``. Without a kind:
    integers as counts, floats to 4 significant digits (large ones as whole numbers), anything
    else as text. Missing values are empty."""
    if _missing(value):
        return ""
    if kind == "text" or isinstance(value, str):
        return str(value)
    if kind in ("date", "datetime"):
        return pd.Timestamp(value).strftime("%Y-%m-%d" if kind == "date" else "%Y-%m-%d %H:%M")
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if not isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    if not math.isfinite(float(value)):
        return str(float(value))
    if kind is None:
        if isinstance(value, (int, np.integer)):
            return f"{int(value):,}"
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    if kind == "count":
        return f"{round(float(value)):,}"
    if kind not in _FORMATS:
        raise ValueError(f"unknown format kind {kind!r}")
    return _FORMATS[kind].format(float(value))


_FORMATS = {"pct": "{:.1%}", "psi": "{:.3f}", "prob": "{:.4g}", "ratio": "{:.2f}", "logodds": "{:+.3f}"}


def fmt_interval(point, low, high, kind: str | None = None) -> str:
    """'14.2% (12.1–16.0%)', '113 (100–125)'; the point alone without a (finite) interval."""
    if _missing(point):
        return ""
    if _missing(low) or _missing(high):
        return fmt(point, kind)
    if kind == "pct":
        return f"{fmt(point, kind)} ({float(low) * 100:.1f}–{fmt(high, kind)})"
    return f"{fmt(point, kind)} ({fmt(low, kind)}–{fmt(high, kind)})"


def html_table(frame: pd.DataFrame, index: bool | None = None, formats: dict[str, str] | None = None,
               headers: dict[str, str] | None = None, css_class: str | None = None) -> Markup:
    """The frame as an HTML table; every header and cell escaped. Values keep their column's
    type unless ``formats`` names a :func:`fmt` kind for the column; ``headers`` renames
    columns for display. ``index`` None: shown unless it is an unnamed default RangeIndex
    (give ``index=False`` for a slice of a frame, whose index is noise). ``css_class``: e.g.
    ``text`` for a table of sentences (left-aligned, wrapped). Numbers align right; a column of
    words (class ``t``) left. Templates wrap it in ``<div class="scroll">`` so a wide table
    scrolls, not the page."""
    if index is None:
        index = not (isinstance(frame.index, pd.RangeIndex) and frame.index.name is None)
    formats, headers = formats or {}, headers or {}
    columns = [str(c) for c in frame.columns]
    names = ([frame.index.name or ""] if index else []) + [headers.get(c, c) for c in columns]
    kinds = ([None] if index else []) + [formats.get(c) for c in columns]
    cells = [[fmt(v, k) for v, k in zip(row, kinds, strict=True)] for row in frame.itertuples(index=index, name=None)]
    # numbers align right (CSS default); a column of words (after the first, left anyway) aligns left
    text = [j > 0 and css_class != "text" and any(c[j] for c in cells) and
            not any(_NUMERIC.match(c[j]) for c in cells) for j in range(len(names))]
    attr = [' class="t"' if t else "" for t in text]
    head = "".join(f"<th{a}>{html.escape(str(c))}</th>" for c, a in zip(names, attr, strict=True))
    rows = ["<tr>" + "".join(f"<td{a}>{html.escape(c)}</td>" for c, a in zip(row, attr, strict=True)) + "</tr>"
            for row in cells]
    opening = f'<table class="{html.escape(css_class)}">' if css_class else "<table>"
    return Markup(f"{opening}<tr>{head}</tr>{''.join(rows)}</table>")


_NUMERIC = re.compile(r"^[-+]?(\d[\d,]*(\.\d*)?|\.\d+)(e[-+]?\d+)?%?( \(.*\))?$|^-?(inf|nan)$")


@functools.lru_cache(maxsize=1)
def template_env():
    """The Jinja2 environment of the packaged templates. Templates are named ``*.html.j2``, so
    autoescaping is switched on for ``.j2`` explicitly (``select_autoescape()``'s defaults only
    cover ``.html``/``.htm``/``.xml``) and by default."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("leadscore.reporting", "templates"),
                      autoescape=select_autoescape(enabled_extensions=("html", "htm", "xml", "j2"), default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = fmt
    return env


def render_template(name: str, **context) -> str:
    """A packaged template rendered with the report CSS."""
    return template_env().get_template(name).render(css=Markup(CSS), **context)


def figure_item(figures: dict[str, bytes], name: str, alt: str, caption: str = "") -> dict | None:
    """What the templates' ``figure`` macro shows; None when the figure is not in ``figures``."""
    if name not in figures:
        return None
    return {"img": img_tag(figures[name], alt), "caption": caption}


def card(label: str, value: str, detail: str = "", status: str = "") -> dict:
    """One headline figure: label, value, a line of detail; status ok / review / alert colours it."""
    return {"label": label, "value": value, "detail": detail, "status": status}


def write_report(text: str, path) -> Path:
    """Atomic: written to a temporary file in the same directory, then renamed over ``path``;
    on any failure the previous file (if any) is untouched and the temporary file removed."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
        tmp.chmod(0o644)  # mkstemp creates 0600; a report is meant to be shared
    return path


# --- shared figure pieces --------------------------------------------------------------

def wilson(k, n) -> tuple[np.ndarray, np.ndarray]:
    """95 % Wilson interval of k positives in n rows (element-wise; NaN where n == 0)."""
    from leadscore.modeling.metrics import wilson_interval

    return wilson_interval(k, n, 0.95)


def logit_limits(values, floor: float = PROBABILITY_FLOOR, ceiling: float = 1 - PROBABILITY_FLOOR,
                 margin: float = 0.35) -> tuple[float, float]:
    """Limits of a logit axis around the probabilities ``values``: ``margin`` log-odds beyond
    the smallest and largest value in (0, 1), never past ``floor`` / ``ceiling``."""
    v = np.asarray(values, dtype="float64").ravel()
    v = v[np.isfinite(v) & (v > 0) & (v < 1)]
    if not len(v):
        return 1e-3, 0.5
    z = np.log(v / (1 - v))
    zf, zc = math.log(floor / (1 - floor)), math.log(ceiling / (1 - ceiling))
    lo, hi = max(zf, float(z.min()) - margin), min(zc, float(z.max()) + margin)
    if hi - lo < 1:
        lo, hi = lo - 0.5, hi + 0.5
    return 1 / (1 + math.exp(-lo)), 1 / (1 + math.exp(-hi))


def reliability_points(ax, predicted, observed, low, high, rows, *, label: str, min_rows: int = MIN_BIN_ROWS,
                       limits: tuple[float, float] | None = None, clip_x: bool = True, **style) -> tuple[int, int]:
    """One reliability curve: points (with a line) at (mean predicted, observed rate) and the
    observed rate's interval as error bars, for the bins with at least ``min_rows`` rows.
    ``limits``: clip the rates onto these (a logit axis cannot show a rate of 0), and
    ``predicted`` too unless ``clip_x`` is false (x is a position, not a probability).
    Returns (bins not drawn, rows in them)."""
    predicted, observed, low, high, rows = (np.asarray(v, dtype="float64")
                                            for v in (predicted, observed, low, high, rows))
    keep = rows >= min_rows
    x, y, lo, hi = predicted[keep], observed[keep], low[keep], high[keep]
    if limits is not None:
        y, lo, hi = (np.clip(v, *limits) for v in (y, lo, hi))
        x = np.clip(x, *limits) if clip_x else x
    (line,) = ax.plot(x, y, marker="o", ms=4, label=label, **style)
    if len(x):
        err = np.nan_to_num(np.clip(np.vstack([y - lo, hi - y]), 0, None))
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor=line.get_color(), elinewidth=1, capsize=2, alpha=0.6)
    return int((~keep).sum()), int(rows[~keep].sum())


def percent_ticks(axis) -> None:
    """Probability ticks as percentages with the digits they need (0.01%, 1%, 50%, 99.9%);
    no labels on minor ticks."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:.3g}%"))
    axis.set_minor_formatter(NullFormatter())


def logit_axis(ax, which: str, lo: float, hi: float) -> None:
    """A log-odds axis ('x' or 'y') from ``lo`` to ``hi`` with percentage ticks."""
    getattr(ax, f"set_{which}scale")("logit")
    getattr(ax, f"set_{which}lim")(lo, hi)
    percent_ticks(getattr(ax, f"{which}axis"))


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


def _distinct(inputs: TrainingReportInputs, column=lambda m: m) -> list[tuple[str, str]]:
    """(label, model) of the models to draw, one per distinct ``column(model)`` values: a
    model identical to one before it (the chosen candidate is the model) joins its label."""
    kept: list[list] = []
    for m in inputs.models:
        values = inputs.scores[column(m)].to_numpy()
        for k in kept:
            if np.array_equal(values, k[2], equal_nan=True):
                k[0] += f" (= {m})"
                break
        else:
            kept.append([m, m, values])
    return [(label, m) for label, m, _ in kept]


def _curves(inputs: TrainingReportInputs) -> list[tuple[str, str, dict]]:
    """(label, column of scores, line style) of the reliability curves."""
    curves = [(label, m, _style(m)) for label, m in _distinct(inputs)]
    if inputs.uncalibrated:
        curves.append((f"{inputs.main_model} before calibration", inputs.uncalibrated, {"ls": "--"}))
    return curves


def _reliability(inputs: TrainingReportInputs) -> Figure:
    """Left: 10 equal-width bins of every model on linear axes limited to where the bins are;
    right: deciles of the model's prediction (before and after calibration; the oracle's as a
    line) on logit axes, readable where probabilities are small. 95 % Wilson intervals of the
    observed rate; bins with fewer than :data:`MIN_BIN_ROWS` rows are not drawn (a note counts
    them)."""
    fig = new_figure(12, 5.2)
    ax1, ax2 = fig.subplots(1, 2)
    y, w = inputs.scores["y"].to_numpy(dtype="float64"), weights_of(inputs.scores)  # w: a sample's weights
    deciles, hidden_bins, hidden_rows, top = [], 0, 0, 0.0
    for label, col, style in _curves(inputs):
        p = inputs.scores[col].to_numpy(dtype="float64")
        t = reliability_table(y, p, 10, weight=w)
        n = t["effective_rows"] if "effective_rows" in t else t["rows"]  # a weighted bin: Kish's effective rows
        low, high = wilson(t["observed"] * n, n)
        bins, rows = reliability_points(ax1, t["predicted"], t["observed"], low, high, n, label=label, **style)
        hidden_bins, hidden_rows = hidden_bins + bins, hidden_rows + rows
        shown = (n >= MIN_BIN_ROWS).to_numpy()
        top = max(top, float(np.nanmax(np.r_[t["predicted"].to_numpy()[shown], high[shown], 0.0])))
        if col in (inputs.main_model, inputs.uncalibrated, "oracle"):
            decile = pd.qcut(pd.Series(p).rank(method="first"), 10, labels=False).to_numpy()  # of the sample's rows
            g = binned_rates(decile, y, p, weights_of(inputs.scores, ones=True)).set_index("bin")
            g = g.assign(rows=g["effective_rows"], positives=g["observed"] * g["effective_rows"])
            deciles.append((label, col, style, g))
    top = min(1.0, math.ceil(max(top, 0.01) * 1.08 * 50) / 50)
    ax1.plot([0, top], [0, top], color="grey", lw=1, ls="-.", label="perfectly calibrated")
    ax1.set(xlim=(0, top), ylim=(0, top), xlabel="mean predicted probability", ylabel="observed conversion rate",
            title="Reliability: 10 equal-width bins, 95 % Wilson intervals")
    ax1.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax1.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    if hidden_bins:
        ax1.text(0.98, 0.02, f"not drawn: {hidden_bins} bin(s) with < {MIN_BIN_ROWS} rows ({hidden_rows:,} rows)",
                 transform=ax1.transAxes, ha="right", va="bottom", fontsize=8, color="dimgrey")
    ax1.legend(fontsize=8, loc="upper left")
    values = np.concatenate([np.r_[g["predicted"], g["observed"]] for *_, g in deciles])
    lo, hi = logit_limits(values)
    colours = {line.get_label(): line.get_color() for line in ax1.get_lines()}
    for label, col, style, g in deciles:
        style = {"color": colours.get(label), **style}
        if col == "oracle":  # the reference line: no intervals, they would hide the model's
            ax2.plot(np.clip(g["predicted"], lo, hi), np.clip(g["observed"], lo, hi), label=label, **style)
            continue
        low, high = wilson(g["positives"], g["rows"])
        reliability_points(ax2, g["predicted"], g["observed"], low, high, g["rows"], label=label, min_rows=1,
                           limits=(lo, hi), **style)
    ax2.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="-.", label="perfectly calibrated")
    logit_axis(ax2, "x", lo, hi)
    logit_axis(ax2, "y", lo, hi)
    ax2.set(xlabel="mean predicted probability (log-odds scale)", ylabel="observed conversion rate (log-odds scale)",
            title=f"Reliability: deciles of {inputs.main_model}'s prediction (10 % of rows each)")
    ax2.legend(fontsize=8, loc="upper left")
    ax2.text(0.98, 0.02, "a decile with no conversion sits on the lower edge", transform=ax2.transAxes,
             ha="right", va="bottom", fontsize=8, color="dimgrey")
    return fig


def _gains(inputs: TrainingReportInputs) -> Figure:
    fig = new_figure(12, 4.5)
    ax1, ax2 = fig.subplots(1, 2)
    y, w = inputs.scores["y"].to_numpy(), weights_of(inputs.scores)
    for name, m in _distinct(inputs, lambda m: inputs.ranking.get(m, m)):
        col = inputs.ranking.get(m, m)
        g = gains_curve(y, inputs.scores[col].to_numpy(), points=40, weight=w)
        label = name if col == m else f"{name} (ranked by {col})"
        ax1.plot(g["top_fraction"], g["capture"], label=label, **_style(m))
        ax2.plot(g["top_fraction"], g["lift"], label=label, **_style(m))
    ax1.plot([0, 1], [0, 1], color="grey", lw=1, ls="-.", label="random")
    ax2.axhline(1, color="grey", lw=1, ls="-.", label="random")
    ax1.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="top share of examples by score",
            ylabel="share of conversions captured", title="Cumulative gains")
    ax2.set(xscale="log", xlabel="top share of examples by score (log scale)", ylabel="lift over the overall rate",
            title="Lift")
    for axis in (ax1.xaxis, ax1.yaxis, ax2.xaxis):
        axis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax1.legend(fontsize=8)
    return fig


def _cutoff_rows(inputs: TrainingReportInputs) -> list[tuple[str, float, str]]:
    """(name, threshold, colour) of the chosen cutoffs, MQL first."""
    if inputs.cutoffs is None:
        return []
    return [(str(r["cutoff"]), float(r["threshold"]), SQL_COLOUR if r["cutoff"] == "SQL" else MQL_COLOUR)
            for _, r in inputs.cutoffs.iterrows()]


def at_or_above_shares(p, y, threshold: float, weight=None) -> tuple[float, float]:
    """(share of converters, share of non-converters) with ``p >= threshold`` (shares of the
    rows' sampling ``weight``, when given)."""
    p, y = np.asarray(p, dtype="float64"), np.asarray(y).astype(bool)
    w = np.ones(len(p)) if weight is None else np.asarray(weight, dtype="float64")
    above = p >= threshold
    share = (lambda m: float(w[m & above].sum() / w[m].sum()) if m.any() else math.nan)
    return share(y), share(~y)


def _distribution(inputs: TrainingReportInputs) -> Figure:
    """Counts of examples by score, one panel per outcome (each on its own count scale, as
    converters are few), on a log-odds axis; each cutoff drawn with the share of each outcome
    at or above it."""
    fig = new_figure(12, 5.6)
    ax_neg, ax_pos = fig.subplots(2, 1, sharex=True)
    name = inputs.main_model
    p, y = inputs.scores[name].to_numpy(dtype="float64"), inputs.scores["y"].to_numpy().astype(bool)
    w = weights_of(inputs.scores, ones=True)
    counts = "examples (count)" if WEIGHT not in inputs.scores else "examples (estimated: the sample weighted)"
    pc = np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    z = np.log(pc / (1 - pc))
    z_lo, z_hi = float(z.min()), float(z.max())
    if z_hi - z_lo < 1:
        z_lo, z_hi = z_lo - 0.5, z_hi + 0.5
    edges = 1 / (1 + np.exp(-np.linspace(z_lo, z_hi, 61)))
    cutoffs = _cutoff_rows(inputs)
    for ax, positive, label, colour in ((ax_neg, False, "did not convert", "tab:blue"),
                                        (ax_pos, True, "converted", "tab:green")):
        sel = y == positive
        ax.hist(pc[sel], bins=edges, weights=w[sel], color=colour, alpha=0.75,
                label=f"{label} ({w[sel].sum():,.0f} examples)")
        ax.set_ylabel(counts)
        ax.set_xscale("logit")
        lines = []
        for cut, threshold, c in cutoffs:
            ax.axvline(threshold, ls="--", color=c, lw=1.5)
            share = at_or_above_shares(p, y, threshold, w)[0 if positive else 1]
            lines.append(f"{cut} cutoff {threshold:.3g}: {share:.1%} of {'converters' if positive else 'the others'}"
                         " at or above")
        ax.legend(loc="upper left", fontsize=9, title="\n".join(lines) or None, title_fontsize=9,
                  alignment="left")
    logit_axis(ax_pos, "x", edges[0], edges[-1])
    ax_pos.set_xlabel(f"{name} probability (log-odds scale)")
    ax_neg.set_title(f"{name}: examples by score and outcome (counts; the panels have their own scales)")
    return fig


TRADEOFF_PANELS = (  # column of the trade-off curve and cutoff table, axis label, format kind
    ("conversion_rate", "conversion rate at or above", "pct"),
    ("recall", "share of converters at or above", "pct"),
    ("new_leads_per_week", "new leads per week crossing the cutoff", "count"),
    ("open_leads", "open leads at or above, on an average as-of date", "count"),
)
# Which panel shows a policy's target. capacity: a target >= 1 is a number of new leads per
# week crossing the cutoff (the flow, see leadscore.modeling.cutoffs); below 1 it is a share of
# examples, which no panel shows. expected_value has no target.
TARGET_PANEL = {"conversion_rate": "conversion_rate", "recall": "recall", "capacity": "new_leads_per_week"}


def _target_panel(policy: str, target: float) -> str | None:
    if _missing(target) or policy not in TARGET_PANEL or (policy == "capacity" and target < 1):
        return None
    return TARGET_PANEL[policy]


def _cutoff_plot(inputs: TrainingReportInputs) -> Figure:
    """Per measure of the trade-off curve: its value at every threshold, the chosen cutoffs
    (vertical lines, and their test-slice value with its bootstrap interval) and the policy's
    targets (horizontal lines), named in one legend above the panels. Panels for columns the
    curve lacks are left out."""
    t = inputs.tradeoff
    panels = [p for p in TRADEOFF_PANELS if p[0] in t.columns]
    n_rows = math.ceil(len(panels) / 2)
    fig = new_figure(12, 3.9 * n_rows + 0.5)
    axes = np.atleast_1d(fig.subplots(n_rows, 2)).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    rows = [r for _, r in inputs.cutoffs.iterrows()] if inputs.cutoffs is not None else []
    thresholds = np.r_[t["threshold"].to_numpy(dtype="float64"), [float(r["threshold"]) for r in rows]]
    logit_x = bool(((thresholds > 0) & (thresholds < 1)).all())
    legend: dict[str, object] = {}
    for ax, (col, label, kind) in zip(axes, panels, strict=False):
        (curve,) = ax.plot(t["threshold"], t[col], color="tab:blue", lw=1.8)
        legend.setdefault("at each threshold, on the test slice", curve)
        for r in rows:
            colour = SQL_COLOUR if r["cutoff"] == "SQL" else MQL_COLOUR
            line = ax.axvline(r["threshold"], ls="--", color=colour, lw=1.2)
            legend.setdefault(f"{r['cutoff']} cutoff {r['threshold']:.3g}", line)
            if col in r and not _missing(r[col]):
                lo, hi = r.get(f"{col}_low"), r.get(f"{col}_high")
                err = None if _missing(lo) or _missing(hi) else \
                    [[max(0.0, r[col] - lo)], [max(0.0, hi - r[col])]]
                ax.errorbar([r["threshold"]], [r[col]], yerr=err, fmt="o", color=colour, capsize=3, ms=5)
            target = r.get("target")
            if _target_panel(str(r.get("policy", "")), target) == col:
                line = ax.axhline(target, ls=":", color=colour, lw=1.5)
                legend.setdefault(f"{r['cutoff']} target: {fmt(target, kind)} ({r['policy']})", line)
                ax.text(0.01, target, f" {r['cutoff']} target {fmt(target, kind)}", color=colour, va="bottom",
                        fontsize=8, transform=ax.get_yaxis_transform())
        if logit_x:
            logit_axis(ax, "x", *logit_limits(thresholds, margin=0.2))
        if kind == "pct":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
        ax.set_ylim(bottom=0)
        ax.set(xlabel="probability threshold" + (" (log-odds scale)" if logit_x else ""), ylabel=label)
        ax.set_title(label, fontsize=10)
    if rows:
        legend["dot: the cutoff's value, bar: its bootstrap interval"] = \
            axes[0].errorbar([], [], yerr=[], fmt="o", color="dimgrey", capsize=3, ms=5)
    fig.legend(list(legend.values()), list(legend), loc="outside upper center", ncols=min(3, len(legend)),
               fontsize=9, frameon=False)
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


CUTOFF_COLUMNS = (  # column of the cutoff table (with _low / _high), header, format kind
    ("new_leads_per_week", "new leads per week crossing the cutoff", "count"),
    ("open_leads", "open leads at or above, on an average as-of date", "count"),
    ("conversion_rate", "conversion rate at or above", "pct"),
    ("recall", "share of converters at or above", "pct"),
)


def _target_text(policy: str, target) -> str:
    if _missing(target):
        return ""
    if policy in ("conversion_rate", "recall") or (policy == "capacity" and target < 1):
        return fmt(target, "pct")
    return fmt(target, "count")


def cutoff_table(cutoffs: pd.DataFrame) -> pd.DataFrame:
    """The cutoffs with their intervals as text, one row per cutoff."""
    out = pd.DataFrame(index=pd.Index(cutoffs["cutoff"].astype(str), name="cutoff"))
    policy = cutoffs["policy"].astype(str) if "policy" in cutoffs else pd.Series("", index=cutoffs.index)
    if "policy" in cutoffs:
        out["policy"] = policy.to_numpy()
    if "target" in cutoffs:
        out["target"] = [_target_text(pol, t) for pol, t in zip(policy, cutoffs["target"], strict=True)]
    out["threshold"] = [fmt(v, "prob") for v in cutoffs["threshold"]]
    if "examples" in cutoffs:
        out["examples at or above"] = [fmt(v, "count") for v in cutoffs["examples"]]
    for col, header, kind in CUTOFF_COLUMNS:
        if col in cutoffs:
            out[header] = [fmt_interval(r.get(col), r.get(f"{col}_low"), r.get(f"{col}_high"), kind)
                           for _, r in cutoffs.iterrows()]
    return out


def _metric(inputs: TrainingReportInputs, model: str, name: str) -> float:
    m = inputs.metrics
    return float(m.loc[model, name]) if model in m.index and name in m.columns and pd.notna(m.loc[model, name]) \
        else math.nan


def training_summary(inputs: TrainingReportInputs) -> list[dict]:
    """The headline figures: the model's ranking and calibration against the references, the
    test slice, and what each cutoff delivers."""
    main = inputs.main_model
    refs = [m for m in ("baseline", "logreg") if m in inputs.metrics.index and m != main]
    cards = []
    auc = _metric(inputs, main, "auc")
    if math.isfinite(auc):
        cards.append(card("AUC (ranking)", f"{auc:.3f}",
                          ", ".join(f"{r} {_metric(inputs, r, 'auc'):.3f}" for r in refs)))
    ece = _metric(inputs, main, "ece")
    if math.isfinite(ece):
        loss = _metric(inputs, main, "logloss")
        cards.append(card("Calibration error (ECE)", f"{ece:.4f}",
                          f"log loss {loss:.4f}" if math.isfinite(loss) else ""))
    y = inputs.scores["y"]
    w = weights_of(inputs.scores, ones=True)
    cards.append(card("Examples evaluated", f"{len(y):,}" + (f" (a sample of {w.sum():,.0f})" if WEIGHT in inputs.scores
                                                              else ""),
                      f"{int(y.sum()):,} converted ({(y.to_numpy() * w).sum() / w.sum():.1%})"))
    if inputs.cutoffs is not None:
        for _, r in inputs.cutoffs.iterrows():
            parts = []
            if "recall" in r and not _missing(r["recall"]):
                parts.append(f"{fmt(r['recall'], 'pct')} of converters at or above")
            if "new_leads_per_week" in r and not _missing(r["new_leads_per_week"]):
                parts.append(f"{fmt(r['new_leads_per_week'], 'count')} new leads per week cross it")
            if "open_leads" in r and not _missing(r["open_leads"]):
                parts.append(f"{fmt(r['open_leads'], 'count')} open at or above on an average as-of date")
            value = fmt(r.get("conversion_rate"), "pct")
            cards.append(card(f"{r['cutoff']} cutoff: p ≥ {fmt(r['threshold'], 'prob')}",
                              f"{value} convert" if value else "", "; ".join(parts)))
    return cards


def render_training_report(inputs: TrainingReportInputs, figures: dict[str, bytes] | None = None) -> str:
    """The training report's HTML. ``figures`` defaults to :func:`training_figures`; a figure
    missing from it is left out."""
    figures = training_figures(inputs) if figures is None else figures
    facts = pd.DataFrame({"value": [str(v) for _, v in inputs.facts]},
                         index=pd.Index([str(k) for k, _ in inputs.facts], name="fact"))
    cutoffs = None
    if inputs.cutoffs is not None or "cutoffs.png" in figures:
        cutoffs = {"table": html_table(cutoff_table(inputs.cutoffs)) if inputs.cutoffs is not None else None,
                   "figure": figure_item(figures, "cutoffs.png", "cutoff trade-offs",
                                         "Each measure at every threshold on the test slice (blue); dashed: the "
                                         "chosen cutoffs, with their value and bootstrap interval; dotted: the "
                                         "policy's targets.")}
    extra_figures = [(title, [f for f in (figure_item(figures, n, n.removesuffix(".png").replace("_", " "))
                                          for n in names) if f])
                     for title, names in inputs.figure_sections]
    return render_template(
        "training.html.j2", title=inputs.title, notes=inputs.notes, summary=training_summary(inputs),
        facts=html_table(facts, css_class="text"), metrics_title=inputs.metrics_title,
        metrics=html_table(inputs.metrics),
        calibration=html_table(inputs.calibration) if inputs.calibration is not None else None,
        reliability=figure_item(figures, "reliability.png", "reliability diagram",
                                f"95 % Wilson intervals of each observed rate; bins with fewer than {MIN_BIN_ROWS} "
                                "rows are not drawn (their rate is noise)."),
        gains=figure_item(figures, "gains.png", "cumulative gains and lift"),
        distribution=figure_item(figures, "score_distribution.png", "score distributions by outcome",
                                 "Counts of examples per score bin, each outcome on its own count scale"
                                 + ("; the legends give the share of each outcome at or above each cutoff."
                                    if inputs.cutoffs is not None else ".")),
        cutoffs=cutoffs, figure_sections=extra_figures,
        extra_tables=[(title, html_table(table)) for title, table in inputs.extra_tables])
