"""Both HTML reports as documents: valid HTML5 (tidy), readable in a browser (a Chromium
screenshot), and the monitoring report's rendering rules on a small hand-made result: the
verdict's colour, PSI rows below the threshold counted instead of listed, no pandas index,
won columns dropped (with the reason) before any won outcome matured, one number format,
the capacity table, every table in a scroll box, the summary before the details."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leadscore.modeling.cutoffs import TIERS
from leadscore.modeling.metrics import reliability_table, wilson_interval
from leadscore.monitoring.outcomes import rate_table, score_band
from leadscore.monitoring.report import PSI_SHOWN, render_monitor_report
from leadscore.monitoring.result import (
    NO_ACTION,
    RETRAIN,
    REVIEW_CUTOFFS,
    MonitorConfig,
    MonitorResult,
)
from leadscore.reporting.report import render_training_report

from .test_report import FIGURES, make_inputs

QUIET_FEATURES = 40  # features with PSI < PSI_SHOWN in the hand-made result


def small_png() -> bytes:
    fig = Figure(figsize=(4, 3))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([0, 1, 2], [0, 1, 0.5])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    return buf.getvalue()


PNG = small_png()
MONITOR_FIGURES = {name: PNG for name in ("realized_vs_predicted.png", "psi.png", "calibration.png")}


def make_result(verdict: str = RETRAIN, won_matured: bool = False, capacity: pd.DataFrame | None = None,
                seed: int = 0) -> MonitorResult:
    """A monitoring result built from the monitor's own table functions on 2,400 synthetic rows."""
    rng = np.random.default_rng(seed)
    n = 2400
    p = np.clip(rng.beta(0.6, 12, n), 1e-4, 0.99)
    y = rng.random(n) < p
    tier = np.where(p >= 0.12, "SQL", np.where(p >= 0.03, "MQL", "lead"))
    rows = pd.DataFrame({
        "lead_id": [f"L{i % 900}" for i in range(n)], "p": p, "y": pd.array(y, dtype="boolean"),
        "matured": rng.random(n) < 0.8, "tier": tier, "baseline_tier": rng.choice(list(TIERS), n),
        "score": np.clip(np.round(p * 300), 1, 99), "became_sql": pd.array(y, dtype="boolean"),
        "won_matured": (rng.random(n) < 0.5) if won_matured else np.zeros(n, dtype=bool),
        "won": pd.array(y & (rng.random(n) < 0.3), dtype="boolean"), "p_won": p * 0.3})
    rows["band"] = score_band(rows["score"])
    config = MonitorConfig()
    by_tier = rate_table(rows, "tier", TIERS, config, funnel=True)
    by_baseline = rate_table(rows, "baseline_tier", TIERS, config, with_prediction=False, funnel=True)
    bands = [f"{10 * i + 1}-{min(10 * i + 10, 99)}" for i in range(10)]
    by_band = rate_table(rows, "band", bands, config, funnel=True)
    by_band = by_band[(by_band["band"] == "all") | (by_band["scored"] > 0)].reset_index(drop=True)
    m = rows[rows["matured"]]
    reliability = reliability_table(m["y"].astype(float), m["p"], 10)
    lo, hi = wilson_interval(reliability["observed"] * reliability["rows"], reliability["rows"])
    reliability["observed_low"], reliability["observed_high"] = lo, hi
    loud = [("lead_source", "fit", "categorical", 0.4123, "act", 0.2345), ("n_activities_7d", "engagement",
            "numeric", 0.1234, "watch", math.nan), ("seniority", "fit", "categorical", 0.0456, "stable", 0.0)]
    quiet = [(f"quiet_feature_{i:02d}", "engagement", "numeric", 0.0001 * i, "stable", math.nan)
             for i in range(QUIET_FEATURES)]
    scores = [("p_sql", "score", "score", 0.0042, "stable", math.nan), ("score", "score", "score", 0.0039, "stable",
                                                                              math.nan)]
    psi = pd.DataFrame(loud + quiet + scores, columns=["feature", "group", "kind", "psi", "status", "unseen_share"])
    psi = psi.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)
    psi["reference_rows"], psi["current_rows"] = 5000, 800
    targets = pd.DataFrame([
        {"population": "MQL or better", "target": 0.04, "realized": 0.0512, "low": 0.041, "high": 0.062,
         "matured": 1234, "leads": 800, "status": "on target"},
        {"population": "SQL tier", "target": 0.13, "realized": 0.08, "low": 0.05, "high": 0.1,
         "matured": 210, "leads": 150, "status": "off target"}])
    # a slice of a larger frame: its index (3, 7, ...) is what leaked into the tables before
    persona = pd.DataFrame({
        "feature": ["lead_source", "country", "n_activities_7d", "seniority"], "group": ["fit", "fit", "engagement",
                                                                                       "fit"],
        "value": ["tiktok_ads", "GB", "= 0", "vp"], "disqualified": [611, 104, 638, 100],
        "converted": [72, 10, 37, 13], "disqualified_share": [0.631, 0.107, 0.658, 0.103],
        "converted_share": [0.462, 0.064, 0.237, 0.083], "over_representation": [0.169, 0.043, 0.421, 0.02],
        "lift": [1.37, 1.61, 2.76, 1.2], "disqualified_rate": [0.895, 0.912, 0.945, 0.885]},
        index=[3, 7, 11, 19])
    misleading = pd.DataFrame({"feature": ["n_activities_7d", "lead_source"], "group": ["engagement", "fit"],
                               "mean_positive_disqualified": [0.447, 0.05], "mean_disqualified": [0.212, -0.01],
                               "mean_converted": [1.11, 0.02], "top_push_share": [0.307, 0.04]}, index=[5, 9])
    as_of = pd.to_datetime(["2025-05-05", "2025-06-09", "2025-09-01"], utc=True)
    runs = pd.DataFrame({"as_of": as_of, "scored": [800, 800, 800], "matured": [800, 800, 320],
                         "won_matured": [0, 0, 0], "model_version": ["leadscore/1"] * 3, "immature": [0, 0, 480],
                         "window_closes": as_of + pd.Timedelta(days=42)})
    facts = {
        "model_versions": ["leadscore/1"], "trained_until": "2025-01-12", "observed_until_at_training": "2025-03-01",
        "primary_label": "became_sql", "probability": "p_sql", "horizon": 42, "horizon_days": 42,
        "won_horizon_days": 120, "max_lead_age_days": 365, "observed_until": "2025-09-30T23:50:00+00:00", "runs": 3,
        "first_run": "2025-05-05T00:00:00+00:00", "latest_run": "2025-09-01T00:00:00+00:00", "scored_rows": n,
        "matured_rows": int(rows["matured"].sum()), "immature_rows": int((~rows["matured"]).sum()),
        "won_matured_rows": int(rows["won_matured"].sum()), "scored_leads": 900,
        "reference_dates": ["2024-12-15T00:00:00+00:00"], "reference_rows": 5000, "current_rows": 800,
        "out_of_domain_share": 0.0, "cutoff_policy": "conversion_rate", "mql_cutoff": 0.03, "sql_cutoff": 0.12,
        "target_note": "targets from the cutoff policy conversion_rate", "ece_score_bands": 0.0031,
        "disqualified_leads": 969, "converted_leads": 156, "flat": False}
    result = MonitorResult(
        verdict=verdict, reasons=[f"a reason for {verdict} <with markup & ampersand>"],
        notes=["1,234 scored rows of 1 run(s) are immature"], facts=facts, runs=runs, by_tier=by_tier,
        by_baseline_tier=by_baseline, by_band=by_band, targets=targets, reliability=reliability, ece=0.0035,
        ece_chance=0.001, psi=psi, persona=persona, misleading=misleading, config=config)
    if capacity is not None:
        result.capacity = capacity
    return result


CAPACITY = pd.DataFrame({
    "as_of": pd.to_datetime(["2025-09-24", "2025-10-01"], utc=True), "days_since_previous": [np.nan, 7.0],
    "open_mql_or_better": [4321.4, 4400.0], "open_sql": [512.0, 530.6], "new_mql_or_better": [np.nan, 1234.0],
    "new_sql": [np.nan, 98.4], "new_mql_or_better_per_week": [np.nan, 1234.0], "new_sql_per_week": [np.nan, 98.4]})


class Document(HTMLParser):
    """Tables (rows of cell texts, with the nearest heading above and whether a scroll box
    holds them), headings, the classes of elements, and the order of things."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self.headings: list[str] = []
        self.classes: list[str] = []
        self._stack: list[tuple[str, str]] = []
        self._heading: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        cls = attrs.get("class") or ""
        self.classes += cls.split()
        if tag in ("h1", "h2", "h3"):
            self._heading = ""
        elif tag == "table":
            self.tables.append({"heading": self.headings[-1] if self.headings else None, "rows": [],
                                "scroll": any(t == "div" and "scroll" in c.split() for t, c in self._stack)})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []
        if tag not in ("img", "meta", "br"):
            self._stack.append((tag, cls))

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append(self._heading.strip())
            self._heading = None
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data
        if self._cell is not None:
            self._cell.append(data)

    def table_after(self, heading: str) -> list[list[str]]:
        return next(t["rows"] for t in self.tables if t["heading"] == heading)


@pytest.fixture(scope="module")
def retrain_page() -> str:
    return render_monitor_report(make_result(RETRAIN), MONITOR_FIGURES)


@pytest.fixture(scope="module")
def training_page() -> str:
    inputs = make_inputs()
    return render_training_report(inputs, {name: PNG for name in FIGURES})


# --- the monitoring report's rules -----------------------------------------------------------

@pytest.mark.parametrize(("verdict", "css"), [(NO_ACTION, "verdict-ok"), (REVIEW_CUTOFFS, "verdict-review"),
                                              (RETRAIN, "verdict-alert")])
def test_the_verdict_box_is_coloured_by_what_the_verdict_means(verdict, css):
    text = render_monitor_report(make_result(verdict), MONITOR_FIGURES)
    doc = Document(text)
    verdict_classes = {c for c in doc.classes if c.startswith("verdict-") and c != "verdict-title"}
    assert verdict_classes == {css}
    assert f"Verdict: {verdict.upper()} (exit code" in text
    # the verdict and the headline figures come before any detail
    assert text.index("Verdict:") < text.index("<h2>Summary</h2>") < text.index('class="cards"') \
        < text.index("<h2>Realized vs predicted</h2>")


def test_the_verdict_colours_differ():
    from leadscore.reporting.report import CSS

    rules = {name: CSS.split(f".verdict-{name}{{", 1)[1].split("}", 1)[0] for name in ("ok", "review", "alert")}
    assert len(set(rules.values())) == 3
    assert "#1e8e3e" in rules["ok"] and "#e37400" in rules["review"] and "#c5221f" in rules["alert"]


def test_psi_rows_below_the_threshold_are_counted_not_listed(retrain_page):
    doc = Document(retrain_page)
    table = doc.table_after("Population drift")
    header, body = table[0], table[1:]
    assert header[:4] == ["feature", "group", "kind", "PSI"]
    listed = [r[0] for r in body]
    assert listed == ["lead_source", "n_activities_7d", "seniority", "p_sql", "score"]  # scores always shown
    assert not any(name.startswith("quiet_feature") for name in listed)
    assert f"{QUIET_FEATURES} feature(s) with PSI &lt; {PSI_SHOWN:g} not shown" in retrain_page
    # PSI with 3 decimals, the unseen share as a percentage
    assert body[0][3] == "0.412" and body[0][5] == "23.4%" and body[1][3] == "0.123"


def test_no_pandas_index_leaks_into_a_table(retrain_page):
    doc = Document(retrain_page)
    assert retrain_page.count("<h3>Fit (who they are)</h3>") == 1
    for t in doc.tables:
        first = t["rows"][0][0]
        assert first != "" and not first.isdigit(), (t["heading"], t["rows"][0])
    fit = doc.table_after("Fit (who they are)")
    assert fit[0][0] == "feature" and [r[0] for r in fit[1:]] == ["lead_source", "country", "seniority"]
    assert [r[0] for r in doc.table_after("SHAP contributions that misled for disqualified leads")[1:]] == \
        ["n_activities_7d", "lead_source"]


def test_won_columns_are_dropped_with_the_reason_while_no_won_outcome_has_matured(retrain_page):
    doc = Document(retrain_page)
    for heading in ("By model tier", "By rule-baseline tier", "By score band"):
        header = doc.table_after(heading)[0]
        assert header[:2] in (["tier", "scored"], ["baseline tier", "scored"], ["band", "scored"])
        assert not any("won" in h for h in header), header
    assert "no won outcome has matured yet" in retrain_page
    # once won windows have matured, the columns are there and the note is not
    matured = render_monitor_report(make_result(won_matured=True), MONITOR_FIGURES)
    header = Document(matured).table_after("By model tier")[0]
    assert "realized won rate" in header and "SQL→won (95 %)" in header
    assert "no won outcome has matured yet" not in matured


def test_one_number_format_rates_counts_and_intervals(retrain_page):
    doc = Document(retrain_page)
    table = doc.table_after("By model tier")
    header, rows = table[0], {r[0]: r for r in table[1:]}
    everything = rows["all"]
    assert everything[header.index("scored")] == "2,400"  # counts: whole, thousands separators
    rate = everything[header.index("realized SQL rate (95 %)")]
    assert rate.endswith("%)") and rate.count("%") == 2 and rate.split("%")[0].count(".") == 1  # 4.2% (3.4–5.1%)
    targets = doc.table_after("Conversion targets")
    assert targets[0] == ["population", "target", "realized (95 %, resampling leads)", "matured rows", "leads",
                          "status"]
    assert targets[1] == ["MQL or better", "4.0%", "5.1% (4.1–6.2%)", "1,234", "800", "on target"]
    persona = doc.table_after("Fit (who they are)")
    assert persona[1][persona[0].index("share of disqualified")] == "63.1%"
    assert persona[1][persona[0].index("lift (ratio of shares)")] == "1.37"


def test_the_capacity_table_when_the_result_has_one(retrain_page):
    assert "<h2>Capacity</h2>" not in retrain_page  # no attribute: no section
    assert "<h2>Capacity</h2>" not in render_monitor_report(make_result(capacity=CAPACITY.iloc[:0]), MONITOR_FIGURES)
    text = render_monitor_report(make_result(capacity=CAPACITY), MONITOR_FIGURES)
    table = Document(text).table_after("Capacity")
    assert table[0] == ["as of", "days since the previous run", "open MQL or better", "open SQL", "new MQL or better",
                        "new SQL", "new MQL or better per week", "new SQL per week"]
    assert table[1] == ["2025-09-24", "", "4,321", "512", "", "", "", ""]
    assert table[2] == ["2025-10-01", "7", "4,400", "531", "1,234", "98", "1,234", "98"]
    assert "New SQL per week (latest run)" in text  # a headline figure too


def test_every_table_scrolls_in_its_own_box_and_text_is_escaped(retrain_page, training_page):
    for page in (retrain_page, training_page):
        doc = Document(page)
        assert doc.tables and all(t["scroll"] for t in doc.tables)
        assert ".scroll{overflow-x:auto" in page
    assert "a reason for retrain &lt;with markup &amp; ampersand&gt;" in retrain_page


def test_training_summary_comes_first_with_the_cutoffs_delivery(training_page):
    doc = Document(training_page)
    assert doc.headings[:3] == ["leadscore training run: demo", "Summary", "Run"]
    assert training_page.index('class="cards"') < training_page.index("<h2>Run</h2>")
    summary = training_page[training_page.index("<h2>Summary</h2>"):training_page.index("<h2>Run</h2>")]
    for text in ("AUC", "SQL cutoff: p ≥ 0.12", "25.0% convert", "40.0% of converters at or above",
                 "31 new leads per week cross it", "113 open at or above on an average as-of date"):
        assert text in summary, text


# --- valid HTML5 -------------------------------------------------------------------------------

def _tidy(text: str, tmp_path, name: str) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    # -q: no banner; -e: only errors and warnings; keep empty cells (a missing value is an empty <td>)
    return subprocess.run(["tidy", "-q", "-e", "--drop-empty-elements", "no", str(path)], capture_output=True,
                          text=True, check=False, timeout=60)


@pytest.mark.skipif(shutil.which("tidy") is None, reason="tidy (html-tidy 5) not on PATH: apt-get install tidy")
@pytest.mark.parametrize("which", ["training", "monitor"])
def test_reports_are_valid_html5_for_tidy(which, training_page, tmp_path):
    if which == "training":
        text = training_page
    else:
        text = render_monitor_report(make_result(REVIEW_CUTOFFS, capacity=CAPACITY), MONITOR_FIGURES)
    assert text.startswith("<!DOCTYPE html>\n<html lang=\"en\">")
    assert '<meta charset="utf-8">' in text and "<title>" in text
    done = _tidy(text, tmp_path, f"{which}.html")
    # exit 0: neither errors nor warnings (1: warnings, 2: errors)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr


@pytest.mark.skipif(shutil.which("tidy") is None, reason="tidy (html-tidy 5) not on PATH: apt-get install tidy")
def test_tidy_does_flag_a_broken_report(tmp_path):
    """The check above can fail: the same tidy call reports an image without alt text."""
    done = _tidy('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>x</title></head>'
                 '<body><img src="data:image/png;base64,AAAA"></body></html>\n', tmp_path, "broken.html")
    assert done.returncode != 0 and "alt" in done.stderr


# --- a browser renders it ------------------------------------------------------------------------

@pytest.mark.skipif(not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")),
                    reason="no chromium on PATH: apt-get install chromium")
def test_a_chromium_screenshot_of_the_monitoring_report_shows_it(tmp_path):
    from PIL import Image

    from leadscore.devtools.report_shots import shoot

    page = tmp_path / "monitor.html"
    page.write_text(render_monitor_report(make_result(RETRAIN), MONITOR_FIGURES), encoding="utf-8")
    png = shoot(page, tmp_path / "shot.png", height=2500)
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"))
    height, width, _ = rgb.shape
    assert width == 1280 and 600 < height <= 2500  # cropped to the page, not the window
    ink = (rgb < 200).any(axis=2).mean()
    assert ink > 0.01  # text, tables and figures, not a blank page
    # the CSS applied: the retrain verdict's red background (#fce8e6) is there
    assert (np.abs(rgb.astype(int) - [0xFC, 0xE8, 0xE6]).sum(axis=2) <= 6).sum() > 5000


# --- the SHAP dependence of a categorical feature ---------------------------------------------

def test_a_categorical_shap_dependence_plot_names_its_categories():
    from leadscore.serving.explain import _categorical_dependence

    rng = np.random.default_rng(0)
    values = pd.Series(pd.Categorical.from_codes(rng.integers(-1, 3, 600), categories=["web", "partner", "events"]))
    shap_values = np.select([values == "web", values == "partner", values == "events"], [0.3, -0.2, 0.05], -0.4) \
        + rng.normal(scale=0.01, size=600)
    ax = _categorical_dependence("lead_source", values, shap_values).axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    counts = values.astype("object").fillna("(missing)").value_counts()
    # names (not the model's codes 0.0-3.0) with their row counts, lowest median contribution first
    assert labels == [f"{name} ({counts[name]:,})" for name in ("(missing)", "partner", "events", "web")]
    assert ax.get_ylabel() == "SHAP value of lead_source (log-odds)"
