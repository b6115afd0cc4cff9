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

from leadscore.cutoffs import tradeoff_curve
from leadscore.metrics import classification_metrics, gains_curve, reliability_table
from leadscore.report import (
    PNG_SIGNATURE,
    TrainingReportInputs,
    html_table,
    img_tag,
    render_training_report,
    training_figure_objects,
    training_figures,
    write_report,
)

N = 3000
FIGURES = {"reliability.png", "gains.png", "score_distribution.png", "cutoffs.png"}
CUTOFFS = pd.DataFrame({
    "cutoff": ["MQL", "SQL"], "policy": ["capacity", "capacity"], "threshold": [0.05, 0.12], "examples": [900, 250],
    "leads_per_week": [112.5, 31.25], "leads_per_week_low": [100.0, 28.0], "leads_per_week_high": [125.0, 35.0],
    "conversion_rate": [0.142, 0.25], "conversion_rate_low": [0.121, 0.2], "conversion_rate_high": [0.16, 0.3],
    "recall": [0.7, 0.4], "recall_low": [np.nan, 0.35], "recall_high": [np.nan, 0.45],
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
    np.testing.assert_allclose(lines["model before calibration"].get_xdata(), table["predicted"])
    np.testing.assert_allclose(lines["model before calibration"].get_ydata(), table["observed"])
    # the low range is readable: log axes over deciles, ten points per curve
    assert deciles.get_xscale() == "log" and deciles.get_yscale() == "log"
    assert len(lines_by_label(deciles)["model"].get_xdata()) == 10
    # row counts as marker sizes, one marker per bin, larger where there are more rows
    sizes = equal_width.collections[0].get_sizes()
    rows = reliability_table(inputs.scores["y"], inputs.scores["model"], 10)["rows"].to_numpy()
    assert len(sizes) == len(rows) and np.argmax(sizes) == np.argmax(rows)


def test_gains_rank_by_the_ranking_column(inputs):
    capture = lines_by_label(training_figure_objects(inputs)["gains.png"].axes[0])
    y = inputs.scores["y"]
    by_points = gains_curve(y, inputs.scores["baseline_points"], points=40)["capture"]
    by_probability = gains_curve(y, inputs.scores["baseline"], points=40)["capture"]
    assert not np.allclose(by_points, by_probability)  # otherwise this test could not tell them apart
    np.testing.assert_allclose(capture["baseline (ranked by baseline_points)"].get_ydata(), by_points)
    assert {"model", "logreg", "oracle", "random"} <= set(capture)


def test_score_distribution_separates_outcomes_on_log_x(inputs):
    ax = training_figure_objects(inputs)["score_distribution.png"].axes[0]
    assert ax.get_xscale() == "log"
    labels = ax.get_legend_handles_labels()[1]
    assert len(labels) == 2 and labels[0].startswith("did not convert") and labels[1].startswith("converted")


def test_cutoff_plot_marks_both_thresholds_on_every_panel(inputs):
    axes = training_figure_objects(inputs)["cutoffs.png"].axes
    assert [ax.get_ylabel() for ax in axes] == ["conversion rate at or above", "recall (share of conversions)",
                                                "leads per week"]
    for ax in axes:
        vertical = {line.get_xdata()[0] for line in ax.get_lines() if len(set(line.get_xdata())) == 1}
        assert vertical == {0.05, 0.12}
        texts = " ".join(t.get_text() for t in ax.texts)
        assert "MQL" in texts and "SQL" in texts


def test_figures_do_not_leak_state_between_calls(inputs, figures):
    other = make_inputs(seed=5, oracle=False)
    assert training_figures(other)["gains.png"] != figures["gains.png"]
    assert training_figures(inputs) == figures  # same inputs, same bytes after a different call


def test_the_module_never_touches_pyplot():
    code = ("import sys; from tests.test_report import make_inputs; from leadscore.report import training_figures; "
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


def test_the_document_is_self_contained(page):
    lowered = page.lower()
    for forbidden in ("http://", "https://", "<script", "<link", "<iframe", "url(", "@import", "javascript:"):
        assert forbidden not in lowered, forbidden
    tags = Tags(page).tags
    allowed = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "tr", "th", "td", "img"}
    assert {t for t, _ in tags} <= allowed
    for tag, attrs in tags:
        assert "href" not in attrs
        if "src" in attrs:
            assert tag == "img" and attrs["src"].startswith("data:image/png;base64,")
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)


def test_notes_facts_calibration_and_extra_tables_are_shown(page):
    assert "<p class='note'>suspected leakage: f1</p>" in page
    assert page.index("suspected leakage") < page.index("<h2>")  # highlighted at the top
    assert "<td>r-123</td>" in page and "<td>demo v1</td>" in page
    assert "<td>before</td>" in page and "<td>after</td>" in page
    assert "<h2>Leakage audit</h2>\n<table><tr><th>feature</th><th>auc</th></tr><tr><td>f1</td><td>0.91</td>" in page


def test_html_special_characters_are_escaped(inputs, figures):
    metrics = inputs.metrics.rename(index={"logreg": "log<reg>"})
    scores = inputs.scores.rename(columns={"logreg": "log<reg>"})
    text = render_training_report(dataclasses.replace(
        inputs, title='Leads <Q1> & "co"', facts=[("data <source>", "<b>&")], metrics=metrics, scores=scores,
        notes=["<script>alert('x')</script>"],
        extra_tables=[("Audit <x>", pd.DataFrame({"a<b": ["x&y"]}))]), figures)
    assert "<title>Leads &lt;Q1&gt; &amp; &quot;co&quot;</title>" in text
    assert "<th>data &lt;source&gt;</th>" in text or "<td>data &lt;source&gt;</td>" in text
    assert "<td>&lt;b&gt;&amp;</td>" in text and "<b>&" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text and "<script" not in text
    assert "<h2>Audit &lt;x&gt;</h2>" in text and "<th>a&lt;b</th>" in text and "<td>x&amp;y</td>" in text
    assert "<td>log&lt;reg&gt;</td>" in text
    assert {t for t, _ in Tags(text).tags} <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p",
                                                "table", "tr", "th", "td", "img"}


def test_cutoffs_are_formatted_with_their_intervals(page):
    assert "<td>0.142 (0.121–0.160)</td>" in page
    assert "<td>112.5 (100.0–125.0)</td>" in page
    assert "<td>0.700</td>" in page  # no interval (NaN bounds): the point alone
    assert "<td>0.400 (0.350–0.450)</td>" in page
    assert "<td>MQL</td>" in page and "<td>SQL</td>" in page


def test_missing_optional_inputs_are_left_out():
    inputs = make_inputs(oracle=False, uncalibrated=None, cutoffs=None, tradeoff=None, calibration=None,
                         extra_tables=[], notes=[])
    figures = training_figures(inputs)
    assert set(figures) == FIGURES - {"cutoffs.png"}
    text = render_training_report(inputs, figures)
    assert len(embedded_pngs(text)) == 3
    assert "oracle" not in text and "Cutoffs" not in text and "class='note'" not in text
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
    assert ("<td>0.142 (0.121–0.160)</td>" in text) == (given == "cutoffs")
    if given == "tradeoff":  # no chosen thresholds to mark
        assert all(not ax.texts for ax in training_figure_objects(inputs)["cutoffs.png"].axes)


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
    assert "<th>a&amp;b</th><th>rows</th><th>rate</th><th>name</th>" in text
    assert "<tr><td>a</td><td>12,345</td><td>0.1235</td><td>&lt;x&gt;</td></tr>" in text
    assert "<tr><td>b</td><td>7</td><td></td><td>ok</td></tr>" in text
    assert "<th>a&amp;b</th>" not in html_table(frame, index=False)
    plain = frame.reset_index(drop=True)
    assert html_table(plain).startswith("<table><tr><th>rows</th>")  # a default RangeIndex is noise
    assert html_table(plain, index=True).startswith("<table><tr><th></th><th>rows</th>")


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
