"""What the leads sales disqualified have in common, against those that converted."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from leadscore.monitoring.result import MISSING_BIN, MonitorConfig


def resolved_leads(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per lead that was resolved within a matured window: ``outcome`` 'converted' (the
    primary label, ``y``, within the horizon of a run) or 'disqualified' (disqualified within
    the horizon of a run, never converted in one), with its latest scored row before that outcome."""
    m = rows[rows["matured"]].copy()
    m["_sql"] = m["y"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    m["_dq"] = m["disqualified"].astype("boolean").fillna(False).to_numpy(dtype=bool) & ~m["_sql"]
    sql_leads = set(m.loc[m["_sql"], "lead_id"])
    sql = m[m["_sql"]].sort_values("as_of").groupby("lead_id", sort=True).tail(1)
    dq = m[m["_dq"] & ~m["lead_id"].isin(sql_leads)].sort_values("as_of").groupby("lead_id", sort=True).tail(1)
    out = pd.concat([sql.assign(outcome="converted"), dq.assign(outcome="disqualified")], ignore_index=True)
    return out.drop(columns=["_sql", "_dq"]).sort_values(["outcome", "lead_id"], kind="stable").reset_index(drop=True)


def _bands(values: pd.Series, n_bands: int) -> pd.Series:
    """Quantile bands of a numeric column as labels; missing values are their own band."""
    x = pd.to_numeric(values, errors="coerce").astype("float64")
    finite = x.dropna()
    labels = pd.Series(MISSING_BIN, index=x.index, dtype=object)
    if not len(finite):
        return labels
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, n_bands + 1)))
    if len(edges) == 1:
        labels[x.notna()] = f"= {edges[0]:.4g}"
        return labels
    idx = np.clip(np.searchsorted(edges, x[x.notna()], side="right") - 1, 0, len(edges) - 2)
    names = [f"[{lo:.4g}, {hi:.4g}" + ("]" if i == len(edges) - 2 else ")")
             for i, (lo, hi) in enumerate(itertools.pairwise(edges))]
    # a band whose both ends are the same value (a spike, e.g. many zeros) reads "= v"
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        if i < len(edges) - 2 and np.sum(finite == lo) >= np.sum((finite >= lo) & (finite < hi)):
            names[i] = f"= {lo:.4g}"
    labels[x.notna()] = np.asarray(names, dtype=object)[idx]
    return labels


def negative_persona(features: pd.DataFrame, outcome: pd.Series, scorer, config: MonitorConfig) -> pd.DataFrame:
    """Per characteristic (feature = value or band): disqualified and converted leads with it, its
    share among each group, over-representation among the disqualified (share difference,
    the ranking key), lift (ratio of shares, smoothed) and the share disqualified among the
    resolved leads with it. Characteristics held by fewer than ``persona_min_leads``
    disqualified leads are left out."""
    outcome = pd.Series(outcome).to_numpy()
    is_dq = outcome == "disqualified"
    n_dq, n_sql = int(is_dq.sum()), int((~is_dq).sum())
    cols = ["feature", "group", "value", "disqualified", "converted", "disqualified_share", "converted_share",
            "over_representation", "lift", "disqualified_rate"]
    if n_dq == 0 or n_sql == 0:
        return pd.DataFrame(columns=cols)
    levels = scorer.primary_model.levels
    group = scorer.catalogue.set_index("name")["group"]
    parts = []
    for f in scorer.primary_model.features:
        if f in levels:
            v = features[f].astype("object").where(features[f].notna(), MISSING_BIN).astype(str)
        else:
            v = _bands(features[f], config.persona_bands)
        table = pd.crosstab(v.to_numpy(), is_dq).reindex(columns=[False, True], fill_value=0)
        parts.append(pd.DataFrame({"feature": f, "group": group.get(f, "other"), "value": table.index.astype(str),
                                   "disqualified": table[True].to_numpy(), "converted": table[False].to_numpy()}))
    out = pd.concat(parts, ignore_index=True)
    out["disqualified_share"] = out["disqualified"] / n_dq
    out["converted_share"] = out["converted"] / n_sql
    out["over_representation"] = out["disqualified_share"] - out["converted_share"]
    # add-half smoothing: a value no SQL lead had gets a finite lift
    out["lift"] = ((out["disqualified"] + 0.5) / (n_dq + 1)) / ((out["converted"] + 0.5) / (n_sql + 1))
    out["disqualified_rate"] = out["disqualified"] / (out["disqualified"] + out["converted"])
    out = out[(out["disqualified"] >= config.persona_min_leads) & (out["over_representation"] > 0)]
    return out.sort_values(["over_representation", "lift"], ascending=False, kind="stable").reset_index(drop=True)[cols]


def misleading_contributions(scorer, features: pd.DataFrame, outcome: pd.Series) -> pd.DataFrame:
    """Per feature: mean positive SHAP contribution (log-odds) among disqualified leads - what
    pushed their probability up wrongly - with the mean contribution among disqualified and
    among converted leads, and how often it was a disqualified lead's strongest push. Largest first."""
    from leadscore.serving.explain import contributions

    outcome = pd.Series(outcome).to_numpy()
    cols = ["feature", "group", "mean_positive_disqualified", "mean_disqualified", "mean_converted", "top_push_share"]
    if not len(features) or not (outcome == "disqualified").any():
        return pd.DataFrame(columns=cols)
    c = contributions(scorer.primary_model, features.reset_index(drop=True)).values
    dq = c[outcome == "disqualified"]
    sql = c[outcome == "converted"]
    group = scorer.catalogue.set_index("name")["group"]
    top = dq.to_numpy().argmax(axis=1)
    top_share = np.bincount(top[dq.to_numpy().max(axis=1) > 0], minlength=c.shape[1]) / len(dq)
    out = pd.DataFrame({"feature": c.columns, "group": [group.get(f, "other") for f in c.columns],
                        "mean_positive_disqualified": dq.clip(lower=0).mean().to_numpy(),
                        "mean_disqualified": dq.mean().to_numpy(),
                        "mean_converted": sql.mean().to_numpy() if len(sql) else np.nan,
                        "top_push_share": top_share})
    return out.sort_values("mean_positive_disqualified", ascending=False, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------
# The monitor
# ---------------------------------------------------------------------------
