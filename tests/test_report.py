"""The self-contained HTML report: figures, tables, escaping, optional sections, atomic writes."""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import stat
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection

from leadscore.modeling.cutoffs import tradeoff_curve
from leadscore.modeling.metrics import (
    classification_metrics,
    gains_curve,
    reliability_table,
    wilson_interval,
)
from leadscore.reporting.report import (
    MIN_BIN_ROWS,
    PNG_SIGNATURE,
    TrainingReportInputs,
    _cutoff_plot,
    fmt,
    fmt_interval,
    html_table,
    img_tag,
    render_training_report,
    training_figure_objects,
    training_figures,
    write_report,
)

N = 3000
FIGURES = {"reliability.png", "gains.png", "score_distribution.png", "cutoffs.png"}
# what leadscore.modeling.cutoffs.cutoff_report returns: the flow (new leads per week crossing the cutoff)
# and the stock (open leads at or above on an average as-of date), each with its interval
CUTOFFS = pd.DataFrame({
    "cutoff": ["MQL", "SQL"], "policy": ["capacity", "capacity"], "threshold": [0.05, 0.12], "target": [150.0, 40.0],
    "examples": [900, 250],
    "new_leads_per_week": [112.4, 31.25], "new_leads_per_week_low": [100.0, 28.0],
    "new_leads_per_week_high": [125.0, 35.0],
    "open_leads": [450.2, 113.2], "open_leads_low": [420.0, 101.0], "open_leads_high": [480.0, 125.0],
    "share_of_examples": [0.3, 0.083],
    "conversion_rate": [0.142, 0.25], "conversion_rate_low": [0.121, 0.2], "conversion_rate_high": [0.16, 0.3],
    "recall": [0.7, 0.4], "recall_low": [np.nan, 0.35], "recall_high": [np.nan, 0.45],
    "band_new_leads_per_week": [81.2, 31.25], "band_open_leads": [337.0, 113.2],
    "band_share_of_examples": [0.217, 0.083], "band_conversion_rate": [0.11, 0.25],
    "band_conversion_rate_low": [0.09, 0.2], "band_conversion_rate_high": [0.13, 0.3],
})


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def make_inputs(seed: int = 0, oracle: bool = True, **overrides) -> TrainingReportInputs:
    """A test slice with y ~ Bernoulli(p), small probabilities (mostly < 0.1) like real leads."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=N)
    p_true = sigmoid(-3.3 + 1.1 * x)
    y = (rng.random(N) < p_true).astype(int)
    seen = x + rng.normal(scale=0.6, size=N)
    points = np.round(10 * seen + rng.normal(scale=8, size=N))
    bucket = np.floor(points / 10)
    scores = pd.DataFrame({
        "y": y,
        "model": sigmoid(-3.3 + 0.9 * seen),
        "model_uncalibrated": sigmoid(-2.0 + 1.4 * seen),
        "logreg": sigmoid(-3.2 + 0.6 * seen + rng.normal(scale=0.5, size=N)),
        "baseline_points": points,
        # a coarse per-bucket rate: its ranking (ties, noise) differs from the points'
        "baseline": pd.Series(y).groupby(bucket).transform("mean").clip(0.001, 0.999).to_numpy(),
    })
    ranking = {"baseline": "baseline_points"}
    if oracle:
        scores["oracle"] = p_true
    models = ["model", "logreg", "baseline"] + (["oracle"] if oracle else [])
    metrics = pd.DataFrame({m: classification_metrics(y, scores[m], score=scores[ranking.get(m, m)])
                            for m in models}).T
    calibration = pd.DataFrame({
        name: {k: classification_metrics(y, scores[col])[k] for k in ("logloss", "brier", "ece")}
        for name, col in (("before", "model_uncalibrated"), ("after", "model"))}).T
    as_of = pd.Series(pd.Timestamp("2025-01-06", tz="UTC") + pd.to_timedelta(rng.integers(0, 8, N) * 7, unit="D"))
    fields = {
        "title": "leadscore training run: demo",
        "facts": [("run id", "r-123"), ("model", "demo v1"), ("test slice", f"{N:,} examples")],
        "metrics": metrics, "scores": scores, "uncalibrated": "model_uncalibrated", "ranking": ranking,
        "cutoffs": CUTOFFS, "tradeoff": tradeoff_curve(scores["model"].to_numpy(), y, as_of),
        "calibration": calibration,
        "extra_tables": [("Leakage audit", pd.DataFrame({"feature": ["f1", "f2"], "auc": [0.91, 0.55]}))],
        "notes": ["suspected leakage: f1"],
    }
    return TrainingReportInputs(**{**fields, **overrides})


@pytest.fixture(scope="module")
def inputs():
    return make_inputs()


@pytest.fixture(scope="module")
def figures(inputs):
    return training_figures(inputs)


@pytest.fixture(scope="module")
def page(inputs, figures):
    return render_training_report(inputs, figures)


def embedded_pngs(text: str) -> list[bytes]:
    return [base64.b64decode(b, validate=True) for b in re.findall(r'src="data:image/png;base64,([^"]*)"', text)]


class Tags(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


# --- figures ---------------------------------------------------------------------------------

def test_figures_are_named_pngs_of_a_readable_size(figures):
    assert set(figures) == FIGURES
    for name, png in figures.items():
        assert png.startswith(PNG_SIGNATURE), name
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width >= 500 and height >= 300, (name, width, height)


def test_reliability_has_every_model_and_the_uncalibrated_curve_from_reliability_table(inputs):
    fig = training_figure_objects(inputs)["reliability.png"]
    equal_width, deciles = fig.axes[:2]
    lines = lines_by_label(equal_width)
    assert {"model", "logreg", "baseline", "oracle", "model before calibration"} <= set(lines)
    table = reliability_table(inputs.scores["y"], inputs.scores["model_uncalibrated"], 10)
    drawn = table[table["rows"] >= MIN_BIN_ROWS]
    assert len(drawn) < len(table)  # this slice has bins of a few rows: they must not be drawn
    np.testing.assert_allclose(lines["model before calibration"].get_xdata(), drawn["predicted"])
    np.testing.assert_allclose(lines["model before calibration"].get_ydata(), drawn["observed"])
    # every drawn bin has its 95 % Wilson interval as an error bar
    low, high = wilson_interval(drawn["observed"] * drawn["rows"], drawn["rows"])
    bars = [c for c in equal_width.collections if isinstance(c, LineCollection)]
    spans = sorted((float(seg[0][1]), float(seg[1][1])) for c in bars for seg in c.get_segments())
    for lo, hi in zip(low, high, strict=True):
        assert any(abs(a - lo) < 1e-9 and abs(b - hi) < 1e-9 for a, b in spans), (lo, hi)
    # honest axes: linear from 0 to where the drawn bins are (not up to 1 for nothing)
    assert equal_width.get_xscale() == "linear" and equal_width.get_xlim()[0] == 0
    assert drawn["predicted"].max() < equal_width.get_xlim()[1] <= 1
    assert "not drawn" in " ".join(t.get_text() for t in equal_width.texts)
    # the low range is readable: log-odds axes over deciles, ten points per curve, limits in (0, 1)
    assert deciles.get_xscale() == "logit" and deciles.get_yscale() == "logit"
    assert len(lines_by_label(deciles)["model"].get_xdata()) == 10
    lo, hi = deciles.get_ylim()
    assert 1e-4 <= lo < hi < 1 and hi / lo < 1e4  # not 1e-15 .. 1e-1
    assert deciles.get_xlim() == deciles.get_ylim()


def test_gains_rank_by_the_ranking_column(inputs):
    capture = lines_by_label(training_figure_objects(inputs)["gains.png"].axes[0])
    y = inputs.scores["y"]
    by_points = gains_curve(y, inputs.scores["baseline_points"], points=40)["capture"]
    by_probability = gains_curve(y, inputs.scores["baseline"], points=40)["capture"]
    assert not np.allclose(by_points, by_probability)  # otherwise this test could not tell them apart
    np.testing.assert_allclose(capture["baseline (ranked by baseline_points)"].get_ydata(), by_points)
    assert {"model", "logreg", "oracle", "random"} <= set(capture)


def test_score_distribution_counts_each_outcome_on_a_log_odds_axis_with_the_share_above_each_cutoff(inputs):
    others, converters = training_figure_objects(inputs)["score_distribution.png"].axes
    y, p = inputs.scores["y"].to_numpy().astype(bool), inputs.scores["model"].to_numpy()
    for ax, label, n in ((others, "did not convert", (~y).sum()), (converters, "converted", y.sum())):
        assert ax.get_xscale() == "logit"
        (handle,), (text,) = ax.get_legend_handles_labels()
        assert text == f"{label} ({n:,} examples)"
        # counts, not densities: the bars add up to the examples of the outcome
        assert sum(bar.get_height() for bar in ax.patches) == n
        assert ax.get_ylabel() == "examples (count)"
        # both cutoffs drawn, with the share of the outcome at or above each
        vertical = {line.get_xdata()[0] for line in ax.get_lines() if len(set(line.get_xdata())) == 1}
        assert vertical == {0.05, 0.12}
        title = ax.get_legend().get_title().get_text()
        for threshold in (0.05, 0.12):
            share = (p[y] >= threshold).mean() if ax is converters else (p[~y] >= threshold).mean()
            assert f"{threshold:.3g}: {share:.1%} of" in title
    assert "of converters at or above" in converters.get_legend().get_title().get_text()


PANELS = ["conversion rate at or above", "share of converters at or above",
          "new leads per week crossing the cutoff", "open leads at or above, on an average as-of date"]


def horizontal_lines(ax) -> set:
    return {line.get_ydata()[0] for line in ax.get_lines()
            if len(line.get_ydata()) == 2 and len(set(line.get_ydata())) == 1}


def test_cutoff_plot_marks_both_thresholds_on_every_panel(inputs):
    fig = training_figure_objects(inputs)["cutoffs.png"]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in axes] == PANELS
    for ax in axes:
        vertical = {line.get_xdata()[0] for line in ax.get_lines() if len(set(line.get_xdata())) == 1}
        assert vertical == {0.05, 0.12}
        assert ax.get_xscale() == "logit"
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "MQL cutoff 0.05" in legend and "SQL cutoff 0.12" in legend
    # the new leads per week panel plots the curve's flow column, the open leads panel its stock
    curve = {ax.get_ylabel(): ax.get_lines()[0] for ax in axes}
    np.testing.assert_allclose(curve[PANELS[2]].get_ydata(), inputs.tradeoff["new_leads_per_week"])
    np.testing.assert_allclose(curve[PANELS[3]].get_ydata(), inputs.tradeoff["open_leads"])


@pytest.mark.parametrize(("policy", "targets", "panel"), [
    ("conversion_rate", [0.1, 0.2], PANELS[0]), ("recall", [0.7, 0.4], PANELS[1]),
    ("capacity", [150.0, 40.0], PANELS[2]), ("capacity", [0.3, 0.08], None),  # a share of examples: no panel
    ("expected_value", [np.nan, np.nan], None)])
def test_cutoff_plot_draws_the_policys_targets_on_their_panel(policy, targets, panel):
    fig = _cutoff_plot(make_inputs(cutoffs=CUTOFFS.assign(policy=policy, target=targets)))
    for ax in fig.axes:
        expected = set(targets) if ax.get_ylabel() == panel else set()
        assert horizontal_lines(ax) == expected, ax.get_ylabel()
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert ("target" in legend) == (panel is not None)


def test_figures_do_not_leak_state_between_calls(inputs, figures):
    other = make_inputs(seed=5, oracle=False)
    assert training_figures(other)["gains.png"] != figures["gains.png"]
    assert training_figures(inputs) == figures  # same inputs, same bytes after a different call


def test_the_module_never_touches_pyplot():
    code = ("import sys; from tests.test_report import make_inputs; from leadscore.reporting.report import training_figures; "
            "training_figures(make_inputs()); assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# --- the HTML ------------------------------------------------------------------------------

def test_every_figure_is_an_embedded_png(page, figures):
    pngs = embedded_pngs(page)
    assert sorted(pngs) == sorted(figures.values())
    assert all(png.startswith(PNG_SIGNATURE) for png in pngs)
    assert not any(b"http" in png for png in pngs)  # no URL even in the PNG metadata


def test_figures_are_made_when_not_given(inputs, figures):
    assert sorted(embedded_pngs(render_training_report(inputs))) == sorted(figures.values())


def test_every_model_and_metric_appears_rounded_to_4_significant_digits(inputs, page):
    for model in ["model", "logreg", "baseline", "oracle"]:
        assert f"<td>{model}</td>" in page
    for metric in inputs.metrics.columns:
        assert f"<th>{metric}</th>" in page
    for value in inputs.metrics.to_numpy().ravel():
        assert f"<td>{value:.4g}</td>" in page
    auc = inputs.metrics.loc["model", "auc"]
    assert repr(float(auc)) not in page and f"{auc:.6f}" not in page


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "main", "section", "div", "figure",
                "figcaption", "ul", "li", "h1", "h2", "h3", "p", "table", "tr", "th", "td", "img"}


def test_the_document_is_self_contained(page):
    lowered = page.lower()
    for forbidden in ("http://", "https://", "<script", "<link", "<iframe", "url(", "@import", "javascript:"):
        assert forbidden not in lowered, forbidden
    tags = Tags(page).tags
    assert {t for t, _ in tags} <= ALLOWED_TAGS
    for tag, attrs in tags:
        assert "href" not in attrs
        if "src" in attrs:
            assert tag == "img" and attrs["src"].startswith("data:image/png;base64,")
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)


def test_notes_facts_calibration_and_extra_tables_are_shown(page):
    assert '<p class="note">suspected leakage: f1</p>' in page
    assert page.index("suspected leakage") < page.index("<h2>")  # highlighted at the top
    assert "<td>r-123</td>" in page and "<td>demo v1</td>" in page
    assert "<td>before</td>" in page and "<td>after</td>" in page
    assert ('<h2>Leakage audit</h2>\n<div class="scroll"><table><tr><th>feature</th><th>auc</th></tr>'
            "<tr><td>f1</td><td>0.91</td>") in page


def test_the_page_is_html5_with_a_language_a_title_and_alt_texts(page):
    assert page.startswith('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">')
    assert "<title>leadscore training run: demo</title>" in page
    images = [attrs for tag, attrs in Tags(page).tags if tag == "img"]
    assert len(images) == len(FIGURES) and all(attrs.get("alt") for attrs in images)


def test_html_special_characters_are_escaped(inputs, figures):
    metrics = inputs.metrics.rename(index={"logreg": "log<reg>"})
    scores = inputs.scores.rename(columns={"logreg": "log<reg>"})
    text = render_training_report(dataclasses.replace(
        inputs, title='Leads <Q1> & "co"', facts=[("data <source>", "<b>&")], metrics=metrics, scores=scores,
        notes=["<script>alert('x')</script>"],
        extra_tables=[("Audit <x>", pd.DataFrame({"a<b": ["x&y"]}))]), figures)
    # the templates escape quotes as numeric references (markupsafe), the tables as html.escape does
    assert "<title>Leads &lt;Q1&gt; &amp; &#34;co&#34;</title>" in text
    assert "<th>data &lt;source&gt;</th>" in text or "<td>data &lt;source&gt;</td>" in text
    assert "<td>&lt;b&gt;&amp;</td>" in text and "<b>&" not in text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text and "<script" not in text
    assert "<h2>Audit &lt;x&gt;</h2>" in text and "<th>a&lt;b</th>" in text and "<td>x&amp;y</td>" in text
    assert "<td>log&lt;reg&gt;</td>" in text
    assert {t for t, _ in Tags(text).tags} <= ALLOWED_TAGS


def test_cutoffs_are_formatted_with_their_intervals(page):
    header = page[page.index("<h2>Cutoffs"):]
    header = header[:header.index("</tr>")]
    for column in ("target", "threshold", "new leads per week crossing the cutoff",
                   "open leads at or above, on an average as-of date", "conversion rate at or above",
                   "share of converters at or above"):
        assert f">{column}</th>" in header, column
    assert "<td>14.2% (12.1–16.0%)</td>" in page  # rates: percentages, one decimal
    assert "<td>112 (100–125)</td>" in page and "<td>31 (28–35)</td>" in page  # leads: whole numbers
    assert "<td>450 (420–480)</td>" in page and "<td>113 (101–125)</td>" in page
    assert "<td>70.0%</td>" in page  # no interval (NaN bounds): the point alone
    assert "<td>40.0% (35.0–45.0%)</td>" in page
    assert "<td>150</td>" in page and "<td>40</td>" in page  # capacity targets: leads per week
    assert "<td>MQL</td>" in page and "<td>SQL</td>" in page


def test_missing_optional_inputs_are_left_out():
    inputs = make_inputs(oracle=False, uncalibrated=None, cutoffs=None, tradeoff=None, calibration=None,
                         extra_tables=[], notes=[])
    figures = training_figures(inputs)
    assert set(figures) == FIGURES - {"cutoffs.png"}
    text = render_training_report(inputs, figures)
    assert len(embedded_pngs(text)) == 3
    assert "oracle" not in text and "Cutoffs" not in text and 'class="note"' not in text
    assert "<td>before</td>" not in text
    equal_width = training_figure_objects(inputs)["reliability.png"].axes[0]
    assert not any("before calibration" in label for label in lines_by_label(equal_width))


@pytest.mark.parametrize("given", ["cutoffs", "tradeoff"])
def test_cutoff_section_with_only_the_table_or_only_the_curve(given):
    inputs = make_inputs(**{"tradeoff" if given == "cutoffs" else "cutoffs": None})
    figures = training_figures(inputs)
    text = render_training_report(inputs, figures)
    assert "<h2>Cutoffs" in text
    assert ("cutoffs.png" in figures) == (given == "tradeoff")
    assert ("cutoff trade-offs" in text) == (given == "tradeoff")
    assert ("<td>14.2% (12.1–16.0%)</td>" in text) == (given == "cutoffs")
    if given == "tradeoff":  # no chosen thresholds to mark
        fig = training_figure_objects(inputs)["cutoffs.png"]
        assert all(not ax.texts and not horizontal_lines(ax) for ax in fig.axes)
        assert "cutoff" not in " ".join(t.get_text() for t in fig.legends[0].get_texts())


def test_inputs_naming_a_missing_column_are_refused(inputs):
    with pytest.raises(ValueError, match="no_such_column"):
        dataclasses.replace(inputs, uncalibrated="no_such_column")
    with pytest.raises(ValueError, match="points_missing"):
        dataclasses.replace(inputs, ranking={"baseline": "points_missing"})


# --- generic helpers -------------------------------------------------------------------------

def test_html_table_keeps_column_types_rounds_and_escapes():
    frame = pd.DataFrame({"rows": [12345, 7], "rate": [0.123456, np.nan], "name": ["<x>", "ok"]},
                         index=pd.Index(["a", "b"], name="a&b"))
    text = html_table(frame)
    # a column of words aligns left (class t), numbers right
    assert '<th>a&amp;b</th><th>rows</th><th>rate</th><th class="t">name</th>' in text
    assert '<tr><td>a</td><td>12,345</td><td>0.1235</td><td class="t">&lt;x&gt;</td></tr>' in text
    assert '<tr><td>b</td><td>7</td><td></td><td class="t">ok</td></tr>' in text
    assert "<th>a&amp;b</th>" not in html_table(frame, index=False)
    plain = frame.reset_index(drop=True)
    assert html_table(plain).startswith("<table><tr><th>rows</th>")  # a default RangeIndex is noise
    assert html_table(plain, index=True).startswith("<table><tr><th></th><th>rows</th>")


def test_html_table_formats_by_kind_renames_and_skips_the_index():
    frame = pd.DataFrame({"rate": [0.12345, np.nan], "rows": [1234.6, 7.0], "psi": [0.04567, 1e-6]},
                         index=pd.Index([3, 9]))
    text = html_table(frame, index=False, formats={"rate": "pct", "rows": "count", "psi": "psi"},
                      headers={"rate": "realized rate"})
    assert text.startswith("<table><tr><th>realized rate</th><th>rows</th><th>psi</th></tr>")
    assert "<tr><td>12.3%</td><td>1,235</td><td>0.046</td></tr>" in text
    assert "<tr><td></td><td>7</td><td>0.000</td></tr>" in text
    assert "<td>3</td>" not in text and "<td>9</td>" not in text


def test_fmt_is_the_one_place_for_precision():
    assert fmt(0.14237, "pct") == "14.2%" and fmt(12345.4, "count") == "12,345" and fmt(0.12345, "psi") == "0.123"
    assert fmt(np.nan, "pct") == "" and fmt(None, "count") == "" and fmt("text", "pct") == "text"
    assert fmt_interval(0.142, 0.121, 0.16, "pct") == "14.2% (12.1–16.0%)"
    assert fmt_interval(112.4, 100.0, 125.2, "count") == "112 (100–125)"
    assert fmt_interval(0.7, np.nan, np.nan, "pct") == "70.0%"
    with pytest.raises(ValueError, match="unknown format kind"):
        fmt(1.0, "percent")


def test_img_tag_refuses_bytes_that_are_not_png():
    with pytest.raises(ValueError, match="not PNG"):
        img_tag(b"GIF89a...", "x")
    assert img_tag(PNG_SIGNATURE + b"rest", 'a "b"').startswith('<img alt="a &quot;b&quot;" src="data:image/png;base64,')


# --- atomic writes -------------------------------------------------------------------------

def test_write_report_replaces_the_whole_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "out" / "report.html"
    assert write_report("x" * 100_000, path) == path
    write_report("<p>short – ünïcode</p>", path)
    assert path.read_text(encoding="utf-8") == "<p>short – ünïcode</p>"
    assert os.listdir(path.parent) == ["report.html"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failure_in_the_middle_of_the_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("old report", encoding="utf-8")
    real_write = Path.write_bytes

    def half_then_fail(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_report("new report " * 1000, path)
    assert path.read_text(encoding="utf-8") == "old report"
    assert os.listdir(tmp_path) == ["report.html"]


def test_text_that_cannot_be_encoded_keeps_the_old_file(tmp_path):
    path = tmp_path / "report.html"
    path.write_text("old report", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        write_report("a" * 100_000 + "\ud800" + "b" * 100, path)  # a lone surrogate, after a long prefix
    assert path.read_text(encoding="utf-8") == "old report"
    assert os.listdir(tmp_path) == ["report.html"]


def test_a_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("old report", encoding="utf-8")

    def fail(*args):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="rename failed"):
        write_report("new report", path)
    assert path.read_text(encoding="utf-8") == "old report"
    assert os.listdir(tmp_path) == ["report.html"]
