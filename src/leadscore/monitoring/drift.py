"""Population drift: PSI of every feature, the probability and the score against a
training-window reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from leadscore.data.contract import utc_timestamp
from leadscore.labels.examples import LABEL_SPECS
from leadscore.monitoring.result import MISSING_BIN, MonitorConfig


def psi_from_shares(ref, cur, epsilon: float = 1e-4) -> float:
    """sum((cur - ref) x ln(cur / ref)) with empty bins set to ``epsilon``."""
    a = np.maximum(np.asarray(ref, dtype="float64"), epsilon)
    b = np.maximum(np.asarray(cur, dtype="float64"), epsilon)
    return float(np.sum((b - a) * np.log(b / a)))


def numeric_bins(ref, cur, bins: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Shares of reference and current values in bins cut at the reference's quantiles
    (ties merged), with a last bin for missing values."""
    r = pd.to_numeric(pd.Series(ref), errors="coerce").astype("float64").to_numpy()
    c = pd.to_numeric(pd.Series(cur), errors="coerce").astype("float64").to_numpy()
    finite = r[~np.isnan(r)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])) if len(finite) else np.array([])

    def shares(x):
        nan = np.isnan(x)
        counts = np.bincount(np.searchsorted(edges, x[~nan], side="right"), minlength=len(edges) + 1)
        counts = np.append(counts, nan.sum()).astype("float64")
        return counts / max(len(x), 1)

    labels = ([f"< {edges[0]:.4g}"] if len(edges) else ["all"]) + \
        [f"[{lo:.4g}, {hi:.4g})" for lo, hi in itertools.pairwise(edges)] + \
        ([f">= {edges[-1]:.4g}"] if len(edges) else []) + [MISSING_BIN]
    return shares(r), shares(c), labels


def categorical_bins(ref, cur) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Shares by value over the union of both sides' values (missing as its own value)."""
    r = pd.Series(ref).astype("object").where(pd.Series(ref).notna(), MISSING_BIN).astype(str)
    c = pd.Series(cur).astype("object").where(pd.Series(cur).notna(), MISSING_BIN).astype(str)
    values = sorted(set(r.unique()) | set(c.unique()))
    a = r.value_counts(normalize=True).reindex(values, fill_value=0.0).to_numpy() if len(r) else np.zeros(len(values))
    b = c.value_counts(normalize=True).reindex(values, fill_value=0.0).to_numpy() if len(c) else np.zeros(len(values))
    return a, b, values


def psi(ref, cur, categorical: bool, bins: int = 10, epsilon: float = 1e-4) -> float:
    a, b, _ = categorical_bins(ref, cur) if categorical else numeric_bins(ref, cur, bins)
    return psi_from_shares(a, b, epsilon)


def psi_status(value: float, config: MonitorConfig) -> str:
    if not math.isfinite(value):
        return "n/a"
    return "act" if value >= config.psi_act else "watch" if value >= config.psi_watch else "stable"


def reference_population(con, scorer, manifest: dict, config: MonitorConfig,
                         max_age: int | None) -> tuple[pd.DataFrame, list[pd.Timestamp]]:
    """Feature rows of leads open at the last ``reference_dates`` cadence dates of the shipped
    model's training window (up to its newest as-of date, ``train_until``), inside the model's
    domain, sampled deterministically to ``reference_size``."""
    from leadscore.features.builder import features_as_of, open_leads

    params = manifest.get("params", {})
    if params.get("train_until"):  # the newest as-of date the shipped model was fitted on
        end = utc_timestamp(params["train_until"])
    else:  # a bundle from before the walk-forward backtest
        label = LABEL_SPECS[scorer.primary]
        horizon = int(params.get(label.horizon_field, 42 if label.name == "became_sql" else 120))
        end = utc_timestamp(params["calibration_start"]) - pd.Timedelta(days=horizon)
    cadence = pd.Timedelta(days=int(params.get("cadence_days", 7)))
    dates = [end - i * cadence for i in reversed(range(config.reference_dates))]
    pairs = open_leads(con, dates)
    pairs = _within_age(con, pairs, max_age)
    if len(pairs) > config.reference_size:
        pairs = pairs.sample(n=config.reference_size, random_state=config.seed)
    pairs = pairs.sort_values(["as_of", "lead_id"], kind="stable").reset_index(drop=True)
    return features_as_of(con, pairs, config=scorer.feature_config), dates


def _within_age(con, pairs: pd.DataFrame, max_age: int | None) -> pd.DataFrame:
    """The pairs whose lead is at most ``max_age`` days old at as_of (lead_age_days <= max_age)."""
    if max_age is None or not len(pairs):
        return pairs.reset_index(drop=True)
    created = con.execute("SELECT lead_id, created_at FROM leads").df()
    created["created_at"] = pd.to_datetime(created["created_at"], utc=True)
    merged = pairs.merge(created.drop_duplicates("lead_id"), on="lead_id", how="left")
    age = (pd.to_datetime(merged["as_of"], utc=True) - merged["created_at"]) / pd.Timedelta(days=1)
    return pairs[(age <= max_age).to_numpy()].reset_index(drop=True)


def population_drift(scorer, reference: pd.DataFrame, current: pd.DataFrame, current_scores: pd.DataFrame,
                     config: MonitorConfig) -> pd.DataFrame:
    """PSI per feature and for the primary probability and score; for categoricals the share of
    current values the model never saw in training."""
    levels = scorer.primary_model.levels
    group = scorer.catalogue.set_index("name")["group"]
    rows = []
    for f in scorer.primary_model.features:
        categorical = f in levels
        value = psi(reference[f], current[f], categorical, config.psi_bins, config.psi_epsilon)
        unseen = math.nan
        if categorical and len(current):
            unseen = float((~current[f].astype(str).isin(set(levels[f]))).mean())
        rows.append({"feature": f, "group": group.get(f, "other"), "kind": "categorical" if categorical else "numeric",
                     "psi": value, "unseen_share": unseen})
    prob = scorer.probability
    ref_pred = scorer.predict(reference) if len(reference) else pd.DataFrame({prob: [], "score": []})
    for name in (prob, "score"):
        value = psi(ref_pred[name], current_scores[name], False, config.psi_bins, config.psi_epsilon)
        rows.append({"feature": name, "group": "score", "kind": "score", "psi": value, "unseen_share": math.nan})
    out = pd.DataFrame(rows)
    out["status"] = [psi_status(v, config) for v in out["psi"]]
    out["reference_rows"], out["current_rows"] = len(reference), len(current)
    return out.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------
# Disqualified leads: the negative persona
# ---------------------------------------------------------------------------
