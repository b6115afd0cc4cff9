"""The funnel summary: how many leads reached each stage, and the stage-to-stage rates."""

from __future__ import annotations

import pandas as pd


def funnel_summary(leads: pd.DataFrame, lifecycle: pd.DataFrame) -> dict[str, float]:
    """Counts of leads per stage and the conversion rates practitioners track.

    ``mql_to_sql``: of the leads that ever became an MQL, the share with an SQL after their
    first MQL. ``sql_to_won``: of the leads that became SQL, the share that closed won.
    ``mql_to_won``: of the MQL leads, the share that closed won after their first MQL (the
    rate to watch when the CRM records no SQL stage). ``direct_sql``: SQLs with no MQL before
    them (hand-raisers). ``recycled``: leads that were disqualified and later qualified (MQL
    or SQL) again. A stage the data never records counts 0 everywhere.
    """
    lc = lifecycle[["lead_id", "stage", "occurred_at"]]
    first = lc.groupby(["lead_id", "stage"], observed=True)["occurred_at"].min().unstack("stage")
    for stage in ("mql", "sql", "disqualified", "opportunity", "won", "lost"):
        if stage not in first.columns:  # never recorded: missing, typed like the recorded ones
            first[stage] = pd.Series(pd.NaT, index=first.index, dtype=lc["occurred_at"].dtype)
    mql, sql = first["mql"], first["sql"]
    n_leads = int(leads["lead_id"].nunique())
    n_mql, n_sql = int(mql.notna().sum()), int(sql.notna().sum())
    n_won = int(first["won"].notna().sum())
    mql_then_sql = int((sql > mql).sum())
    mql_then_won = int((first["won"] > mql).sum())
    direct_sql = int((sql.notna() & ~(mql < sql)).sum())

    dq = lc[lc["stage"] == "disqualified"].groupby("lead_id")["occurred_at"].min()
    requalified = lc[lc["stage"].isin(["mql", "sql"])].merge(dq.rename("dq_at"), left_on="lead_id", right_index=True)
    n_recycled = int(requalified.loc[requalified["occurred_at"] > requalified["dq_at"], "lead_id"].nunique())

    return {
        "leads": n_leads,
        "mql": n_mql,
        "sql": n_sql,
        "opportunity": int(first["opportunity"].notna().sum()),
        "won": n_won,
        "lost": int(first["lost"].notna().sum()),
        "disqualified": int(first["disqualified"].notna().sum()),
        "recycled": n_recycled,
        "direct_sql": direct_sql,
        "mql_rate": n_mql / n_leads if n_leads else float("nan"),
        "sql_rate": n_sql / n_leads if n_leads else float("nan"),
        "mql_to_sql": mql_then_sql / n_mql if n_mql else float("nan"),
        "sql_to_won": n_won / n_sql if n_sql else float("nan"),
        "mql_to_won": mql_then_won / n_mql if n_mql else float("nan"),
        "won_rate": n_won / n_leads if n_leads else float("nan"),
    }


def format_funnel(s: dict[str, float]) -> str:
    def pct(x):
        return f"{100 * x:5.1f} %"

    no_sql = s["sql"] == 0
    rows = [
        ("leads", f"{s['leads']:,}", ""),
        ("MQL (ever)", f"{s['mql']:,}", f"{pct(s['mql_rate'])} of leads"),
        ("SQL (ever)", f"{s['sql']:,}", "no SQL stage recorded: P(SQL) cannot be learned from this data" if no_sql
         else f"{pct(s['sql_rate'])} of leads; {s['direct_sql']:,} without a prior MQL"),
        ("opportunity", f"{s['opportunity']:,}", ""),
        ("won", f"{s['won']:,}", f"{pct(s['won_rate'])} of leads" if s["won"] else "no won deals recorded"),
        ("lost", f"{s['lost']:,}", ""),
        ("disqualified", f"{s['disqualified']:,}", f"{s['recycled']:,} re-qualified later (recycled)"),
    ]
    if not no_sql:
        rows.append(("MQL -> SQL", pct(s["mql_to_sql"]), "of MQL leads, an SQL after their first MQL"))
        rows.append(("SQL -> won", pct(s["sql_to_won"]), "of SQL leads, closed won (recent SQLs may still be open)"))
    if s["mql"] and s["won"]:
        rows.append(("MQL -> won", pct(s["mql_to_won"]), "of MQL leads, closed won after their first MQL"))
    width = max(len(r[1]) for r in rows)
    return "\n".join(f"  {name:<14}{value:>{width}}  {note}".rstrip() for name, value, note in rows)
