"""The monitoring report: figures and the HTML page of a :class:`MonitorResult`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from leadscore.labels.examples import label_spec
from leadscore.monitoring.result import (
    NO_ACTION,
    RETRAIN,
    REVIEW_CUTOFFS,
    MonitorResult,
)

PSI_SHOWN = 0.01  # features with a smaller PSI are counted, not listed: nothing moved
VERDICT_STATUS = {NO_ACTION: "ok", REVIEW_CUTOFFS: "review", RETRAIN: "alert"}  # green, amber, red


def _outcome(result: MonitorResult) -> tuple[str, str]:
    """(probability column, outcome word) of the result's primary label: ("p_sql", "SQL")."""
    return result.facts["probability"], "SQL" if result.facts["primary_label"] == "became_sql" else "won"


def _shown_psi(result: MonitorResult) -> tuple[pd.DataFrame, int]:
    """The PSI rows worth a line - the probability and score rows, every feature with PSI >=
    :data:`PSI_SHOWN` or without a PSI - and the number of features left out."""
    psi = result.psi
    quiet = (psi["kind"] != "score") & (psi["psi"] < PSI_SHOWN)
    return psi[~quiet].reset_index(drop=True), int(quiet.sum())


def _realized_figure(result: MonitorResult):
    from leadscore.reporting.report import (
        logit_axis,
        logit_limits,
        new_figure,
        reliability_points,
    )

    prob, outcome = _outcome(result)
    fig = new_figure(12, 4.8)
    ax1, ax2 = fig.subplots(1, 2)
    for ax, table, key, title in ((ax1, result.by_band, "band", "by score band"),
                                  (ax2, result.by_tier, "tier", "by model tier")):
        t = table[(table[key] != "all") & (table["matured"] > 0)].reset_index(drop=True)
        values = t[["predicted_rate", "realized_rate", "realized_low", "realized_high"]].to_numpy(dtype="float64")
        lo, hi = logit_limits(values)
        x = np.arange(len(t))
        ax.plot(x, np.clip(t["predicted_rate"].to_numpy(dtype="float64"), lo, hi), ls="none", marker="D", ms=6,
                color="tab:blue", label=f"predicted (mean {prob})")
        reliability_points(ax, x + 0.12, t["realized_rate"], t["realized_low"], t["realized_high"], t["matured"],
                           label="realized (95 % Wilson)", min_rows=1, limits=(lo, hi), clip_x=False,
                           color="tab:orange", ls="none")
        logit_axis(ax, "y", lo, hi)
        ax.set_xticks(x, t[key].astype(str), rotation=45 if key == "band" else 0)
        ax.set_xlim(-0.5, max(len(t) - 0.5, 0.5))
        ax.set(ylabel=f"{outcome} rate within the horizon (log-odds scale)",
               title=f"Realized vs predicted {title} (matured rows)")
        if len(result.targets) and key == "tier":
            for r in result.targets.itertuples():
                if r.population == "SQL tier" and lo < r.target < hi:
                    ax.axhline(r.target, ls=":", color="tab:red", lw=1.2)
                    ax.text(0.99, r.target, f"SQL target {r.target:.1%} ", color="tab:red", va="bottom", ha="right",
                            fontsize=8, transform=ax.get_yaxis_transform())
        ax.legend(fontsize=8, loc="upper left")
    return fig


def _psi_figure(result: MonitorResult, top: int = 25):
    from matplotlib.ticker import FuncFormatter

    from leadscore.reporting.report import new_figure

    shown, quiet = _shown_psi(result)
    t = pd.concat([shown[shown["kind"] != "score"].head(top), shown[shown["kind"] == "score"]])
    more = int((shown["kind"] != "score").sum()) - int((t["kind"] != "score").sum())
    t = t.sort_values("psi", kind="stable").reset_index(drop=True)
    fig = new_figure(9, max(3.0, 0.3 * len(t) + 1.4))
    ax = fig.subplots()
    colors = {"act": "tab:red", "watch": "tab:orange", "stable": "tab:green", "n/a": "grey"}
    floor = 1e-3
    values = np.maximum(t["psi"].fillna(0).to_numpy(dtype="float64"), floor)
    ax.barh(np.arange(len(t)), values, color=[colors.get(s, "grey") for s in t["status"]])
    ax.set_yticks(np.arange(len(t)), t["feature"], fontsize=8)
    for limit, name, style in ((result.config.psi_watch, "watch", "--"), (result.config.psi_act, "act", "-.")):
        ax.axvline(limit, ls=style, color="dimgrey", lw=1, label=f"{name}: PSI >= {limit:g}")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlim(floor, max(1.0, float(values.max()) * 1.5))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    left_out = [f"{quiet} feature(s) with PSI < {PSI_SHOWN:g} not shown"] if quiet else []
    left_out += [f"{more} more below these"] if more > 0 else []
    ax.set(xlabel="PSI (log scale), latest run vs training window; bars below 0.001 drawn at 0.001",
           title=f"Population stability: features with PSI >= {PSI_SHOWN:g}, {result.facts['probability']} and score"
                 + (f"\n({'; '.join(left_out)})" if left_out else ""))
    return fig


def _calibration_figure(result: MonitorResult):
    from matplotlib.ticker import PercentFormatter

    from leadscore.reporting.report import (
        logit_axis,
        logit_limits,
        new_figure,
        reliability_points,
    )

    prob, outcome = _outcome(result)
    min_rows = result.config.min_rows
    fig = new_figure(12, 4.8)
    ax1, ax2 = fig.subplots(1, 2)
    t = result.reliability
    top = 0.01
    if len(t):
        hidden, rows = reliability_points(ax1, t["predicted"], t["observed"], t["observed_low"], t["observed_high"],
                                          t["rows"], label="matured scores", min_rows=min_rows)
        shown = t[t["rows"] >= min_rows]
        top = max(top, float(np.nanmax(np.r_[shown["predicted"], shown["observed_high"], 0.0])))
        if hidden:
            ax1.text(0.98, 0.02, f"not drawn: {hidden} bin(s) with < {min_rows} rows ({rows:,} rows)",
                     transform=ax1.transAxes, ha="right", va="bottom", fontsize=8, color="dimgrey")
    top = min(1.0, math.ceil(top * 1.08 * 50) / 50)
    ax1.plot([0, top], [0, top], ls="-.", color="grey", lw=1, label="perfectly calibrated")
    ax1.set(xlim=(0, top), ylim=(0, top), xlabel=f"mean predicted {prob}", ylabel=f"realized {outcome} rate",
            title=f"Reliability (10 equal-width bins, 95 % Wilson): ECE {result.ece:.4f}")
    ax1.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax1.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    ax1.legend(fontsize=8, loc="upper left")
    b = result.by_band[(result.by_band["band"] != "all") & (result.by_band["matured"] > 0)]
    if len(b):
        lo, hi = logit_limits(b[["predicted_rate", "realized_rate", "realized_low", "realized_high"]].to_numpy())
        reliability_points(ax2, b["predicted_rate"], b["realized_rate"], b["realized_low"], b["realized_high"],
                           b["matured"], label="score bands", min_rows=1, limits=(lo, hi))
        ax2.plot([lo, hi], [lo, hi], ls="-.", color="grey", lw=1, label="perfectly calibrated")
        logit_axis(ax2, "x", lo, hi)
        logit_axis(ax2, "y", lo, hi)
        ax2.legend(fontsize=8, loc="upper left")
        ax2.text(0.98, 0.02, f"a band without a realized {outcome} sits on the lower edge", transform=ax2.transAxes,
                 ha="right", va="bottom", fontsize=8, color="dimgrey")
    ax2.set(xlabel=f"mean predicted {prob} (log-odds scale)", ylabel=f"realized {outcome} rate (log-odds scale)",
            title="Calibration by score band (95 % Wilson)")
    return fig


def monitor_figures(result: MonitorResult) -> dict[str, bytes]:
    """name -> PNG: realized_vs_predicted, psi, calibration."""
    from leadscore.reporting.report import figure_png

    return {"realized_vs_predicted.png": figure_png(_realized_figure(result)),
            "psi.png": figure_png(_psi_figure(result)),
            "calibration.png": figure_png(_calibration_figure(result))}


def _formatted(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """The display table: ``columns`` is (header, source) pairs, a source being a column name
    formatted by its kind, ``(column, kind)``, or ``(point, low, high, kind)`` for a value with
    its interval; sources the frame lacks are skipped."""
    from leadscore.reporting.report import fmt, fmt_interval

    out = {}
    for header, source in columns:
        if isinstance(source, str):
            source = (source, None)
        if not all(c in frame.columns for c in source[:-1]):
            continue
        if len(source) == 4:
            point, low, high, kind = source
            out[header] = [fmt_interval(p, lo, hi, kind) for p, lo, hi in zip(frame[point], frame[low], frame[high])]
        else:
            out[header] = [fmt(v, source[1]) for v in frame[source[0]]]
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))


def _drop_empty(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Without the columns that have no value in any row; (table, the columns left out)."""
    empty = [c for c in frame.columns if len(frame) and (frame[c] == "").all()]
    return frame.drop(columns=empty), empty


WON_COLUMNS = ("won windows matured", "realized won rate", "predicted won rate", "SQL with a matured won window",
               "SQL→won (95 %)")


def _rate_view(table: pd.DataFrame, key: str, outcome: str) -> tuple[pd.DataFrame, list[str]]:
    """A realized-vs-predicted table for display and the columns left out for having no value."""
    view = _formatted(table, [
        (key.replace("_", " "), (key, "text")), ("scored", ("scored", "count")), ("matured", ("matured", "count")),
        ("immature", ("immature", "count")), (f"{outcome} (count)", ("positives", "count")),
        (f"realized {outcome} rate (95 %)", ("realized_rate", "realized_low", "realized_high", "pct")),
        (f"predicted {outcome} rate", ("predicted_rate", "pct")),
        ("won windows matured", ("won_matured", "count")), ("realized won rate", ("realized_won_rate", "pct")),
        ("predicted won rate", ("predicted_won_rate", "pct")),
        ("SQL with a matured won window", ("sql_with_won_window", "count")),
        ("SQL→won (95 %)", ("realized_sql_to_won", "sql_to_won_low", "sql_to_won_high", "pct")),
    ])
    if "realized_won_rate" in table and not table["realized_won_rate"].notna().any():
        # no won window has closed: the won columns would be zeros and blanks
        dropped = [c for c in WON_COLUMNS if c in view.columns]
        view = view.drop(columns=dropped)
        view, empty = _drop_empty(view)
        return view, dropped + empty
    return _drop_empty(view)


def _summary_cards(result: MonitorResult) -> list[dict]:
    from leadscore.reporting.report import card, fmt

    prob, outcome = _outcome(result)
    f, cfg = result.facts, result.config
    cards = []
    total = result.by_tier[result.by_tier["tier"] == "all"]
    if len(total) and total["matured"].iloc[0] > 0:
        r = total.iloc[0]
        cards.append(card(f"Realized {outcome} rate, matured rows", fmt(r["realized_rate"], "pct"),
                          f"predicted {fmt(r['predicted_rate'], 'pct')}; {fmt(r['matured'], 'count')} matured rows"))
    status_of = {"off target": "review", "on target": "ok", "on target (below, not significant)": "ok",
                 "below target (within tolerance)": "ok"}
    for r in result.targets.itertuples():
        cards.append(card(f"{r.population} vs target", fmt(r.realized, "pct"),
                          f"target {fmt(r.target, 'pct')}: {r.status}", status_of.get(r.status, "")))
    if math.isfinite(result.ece):
        cards.append(card("Calibration error (ECE)", f"{result.ece:.4f}",
                          f"limit {cfg.ece_limit:g}; chance level {result.ece_chance:.4f}",
                          "alert" if result.ece_flag else "ok"))
    feats = result.psi[result.psi["kind"] != "score"]
    if len(feats):
        top = feats.sort_values("psi", ascending=False, kind="stable").iloc[0]
        n_act, n_watch = int((feats["status"] == "act").sum()), int((feats["status"] == "watch").sum())
        cards.append(card("Largest feature drift (PSI)", fmt(top["psi"], "psi"),
                          f"{top['feature']}; {n_act} feature(s) act, {n_watch} watch; {prob} PSI "
                          f"{fmt(result.psi_of(prob), 'psi')}",
                          "alert" if n_act else "review" if n_watch else "ok"))
    cards.append(card("Scored rows", fmt(f["scored_rows"], "count"),
                      f"{f['runs']} run(s), latest {f['latest_run'][:10]}; {fmt(f['matured_rows'], 'count')} matured"))
    capacity = getattr(result, "capacity", None)
    if capacity is not None and len(capacity) and "new_sql_per_week" in capacity:
        known = capacity.dropna(subset=["new_sql_per_week"])  # the first run has no run before it
        if len(known):
            last = known.iloc[-1]
            cards.append(card("New SQL per week (latest run)", fmt(last["new_sql_per_week"], "count"),
                              f"as of {fmt(last.get('as_of'), 'date')}: {fmt(last.get('open_sql'), 'count')} open "
                              f"SQL; {fmt(last.get('new_mql_or_better_per_week'), 'count')} new MQL or better "
                              "per week"))
    return cards


CAPACITY_COLUMNS = (("as of", ("as_of", "date")), ("days since the previous run", ("days_since_previous", "count")),
                    ("open MQL or better", ("open_mql_or_better", "count")), ("open SQL", ("open_sql", "count")),
                    ("new MQL or better", ("new_mql_or_better", "count")), ("new SQL", ("new_sql", "count")),
                    ("new MQL or better per week", ("new_mql_or_better_per_week", "count")),
                    ("new SQL per week", ("new_sql_per_week", "count")))


def render_monitor_report(result: MonitorResult, figures: dict[str, bytes] | None = None) -> str:
    """The monitoring report as one self-contained HTML page: the verdict and the headline
    figures first, the details after."""
    from leadscore.reporting.report import figure_item, html_table, render_template

    figures = monitor_figures(result) if figures is None else figures
    prob, outcome = _outcome(result)
    f, cfg = result.facts, result.config
    facts = pd.DataFrame({"fact": [
        "model", "fitted on as-of dates until", "scoring runs", "rows", "data observed until", "outcomes", "cutoffs"],
        "value": [
        ", ".join(f["model_versions"]) or "-",
        f"{f['trained_until']} (outcomes observed until {str(f.get('observed_until_at_training') or '-')[:10]})",
        f"{f['runs']} runs, {f['first_run'][:10]} .. {f['latest_run'][:10]}",
        (f"{f['scored_rows']:,} rows of {f['scored_leads']:,} leads; {f['matured_rows']:,} matured, "
         f"{f['immature_rows']:,} immature (left out)"), f["observed_until"][:16],
        (f"{f['primary_label']} (the export's outcome column"
         + (f", within {f['horizon']} days of the lead's date)" if f["horizon"] else ")") if f.get("flat") else
         f"SQL within {f['horizon_days']} days, won within {f['won_horizon_days']} days"
         if f["primary_label"] == "became_sql" else f"won within {f['won_horizon_days']} days (no SQL model)"),
        f"{f['cutoff_policy']}: MQL {prob} >= {f['mql_cutoff']:.4g}, SQL {prob} >= {f['sql_cutoff']:.4g}"]})

    rate_tables, won_note = [], None
    for title, table, key in (("By model tier", result.by_tier, "tier"),
                              ("By rule-baseline tier", result.by_baseline_tier, "baseline_tier"),
                              ("By score band", result.by_band, "band")):
        view, dropped = _rate_view(table, key, outcome)
        won = [c for c in dropped if c in WON_COLUMNS]
        if won:
            won_note = (f"Won columns left out: no won outcome has matured yet (no scored row's {f['won_horizon_days']}"
                        f"-day won window has closed by {f['observed_until'][:10]}).")
        other = [c for c in dropped if c not in WON_COLUMNS]
        note = f"Left out for having no value in any row: {', '.join(other)}." if other else None
        rate_tables.append({"title": title, "table": html_table(view, index=False), "note": note})

    targets = None
    if len(result.targets):
        targets = html_table(_formatted(result.targets, [
            ("population", ("population", "text")), ("target", ("target", "pct")),
            ("realized (95 %, resampling leads)", ("realized", "low", "high", "pct")),
            ("matured rows", ("matured", "count")), ("leads", ("leads", "count")), ("status", ("status", "text"))]),
            index=False)

    capacity = getattr(result, "capacity", None)
    capacity_html = None
    if capacity is not None and len(capacity):
        capacity_html = html_table(_formatted(capacity, CAPACITY_COLUMNS), index=False)

    reliability = result.reliability.copy()
    if len(reliability):
        reliability["range"] = [f"{lo:.0%}–{lo + 1 / cfg.ece_bins:.0%}" for lo in reliability["bin_low"]]
    reliability_table_html = html_table(_formatted(reliability, [
        (f"predicted {prob} range", ("range", "text")), ("matured rows", ("rows", "count")),
        (f"mean predicted {prob}", ("predicted", "pct")),
        (f"realized {outcome} rate (95 %)", ("observed", "observed_low", "observed_high", "pct"))]), index=False)

    shown, quiet = _shown_psi(result)
    psi_table = html_table(_formatted(shown, [
        ("feature", ("feature", "text")), ("group", ("group", "text")), ("kind", ("kind", "text")),
        ("PSI", ("psi", "psi")), ("status", ("status", "text")),
        ("values unseen in training", ("unseen_share", "pct"))]), index=False)
    psi_quiet = (f"{quiet} feature(s) with PSI < {PSI_SHOWN:g} not shown (their distribution did not move)."
                 if quiet else None)

    persona_tables = []
    share_columns = [("feature", ("feature", "text")), ("value", ("value", "text")),
                     ("disqualified leads", ("disqualified", "count")), ("converted leads", ("converted", "count")),
                     ("share of disqualified", ("disqualified_share", "pct")),
                     ("share of converted", ("converted_share", "pct")),
                     ("over-representation (share difference)", ("over_representation", "pct")),
                     ("lift (ratio of shares)", ("lift", "ratio")),
                     ("disqualified among leads with it", ("disqualified_rate", "pct"))]
    persona = result.persona
    for grp, title in (("fit", "Fit (who they are)"), ("engagement", "Engagement (what they did)")):
        g = persona[persona["group"] == grp].head(cfg.persona_top) if len(persona) else persona
        if len(g):
            persona_tables.append({"title": title, "table": html_table(_formatted(g, share_columns), index=False)})
    misleading = None
    if len(result.misleading):
        misleading = html_table(_formatted(result.misleading.head(15), [
            ("feature", ("feature", "text")), ("group", ("group", "text")),
            ("mean positive contribution, disqualified", ("mean_positive_disqualified", "logodds")),
            ("mean contribution, disqualified", ("mean_disqualified", "logodds")),
            ("mean contribution, converted", ("mean_converted", "logodds")),
            ("strongest push for (share of disqualified)", ("top_push_share", "pct"))]), index=False)

    runs = html_table(_formatted(result.runs, [
        ("as of", ("as_of", "datetime")), ("model version", ("model_version", "text")), ("scored", ("scored", "count")),
        ("matured", ("matured", "count")), ("immature", ("immature", "count")),
        ("won windows matured", ("won_matured", "count")), ("outcome window closes", ("window_closes", "date"))]),
        index=False)

    reference = (f"Reference: {f['reference_rows']:,} feature rows of leads open at "
                 + (", ".join(d[:10] for d in f["reference_dates"]) or "the training export's rows")
                 + f" (end of the training window); current: {f['current_rows']:,} leads of the run of "
                   f"{f['latest_run'][:10]}" + (f", both at most {f['max_lead_age_days']} days old"
                                                if f["max_lead_age_days"] else "") + ".")
    calibration_text = (
        f"ECE {result.ece:.4f} (limit {cfg.ece_limit:g}; a perfectly calibrated model shows up to "
        f"{result.ece_chance:.4f} by chance on these rows): " + ("FLAGGED" if result.ece_flag else "within limits")
        + ". Over the score bands (equal-share bins, more telling where most probabilities are small), the mean "
          f"|predicted - realized| is {f['ece_score_bands']:.4f} (informational).")
    return render_template(
        "monitor.html.j2", title="leadscore monitoring", verdict=result.verdict.upper(),
        verdict_status=VERDICT_STATUS[result.verdict], exit_code=result.exit_code,
        reasons_label="Triggered by" if result.verdict != NO_ACTION else "Checked", reasons=result.reasons,
        cards=_summary_cards(result), notes=result.notes, facts=html_table(facts, index=False, css_class="text"),
        outcome=outcome,
        realized_figure=figure_item(figures, "realized_vs_predicted.png", f"realized vs predicted {outcome} rate",
                                    "Diamonds: mean predicted probability; dots: realized rate with its 95 % Wilson "
                                    "interval, on matured rows only."),
        target_note=f["target_note"], targets=targets, rate_tables=rate_tables, won_note=won_note,
        capacity=capacity_html,
        calibration_figure=figure_item(figures, "calibration.png", "calibration curves",
                                       f"Bins with fewer than {cfg.min_rows} matured rows are not drawn on the left."),
        calibration_text=calibration_text, reliability=reliability_table_html,
        psi_figure=figure_item(figures, "psi.png", "PSI by feature"), reference=reference, psi=psi_table,
        psi_quiet=psi_quiet, psi_shown=PSI_SHOWN,
        persona_intro=(f"{f['disqualified_leads']:,} disqualified leads vs {f['converted_leads']:,} leads that "
                       f"{label_spec(f['primary_label']).noun} (each on its latest scored row before the outcome; "
                       "matured windows only)."),
        persona_tables=persona_tables,
        misleading_intro=(f"Mean SHAP contribution (log-odds of the uncalibrated {prob} model) among disqualified "
                          "leads: the largest positive means are what pushed them up wrongly."),
        misleading=misleading, runs=runs)
