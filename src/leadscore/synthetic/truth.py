"""The oracle as a library function: true conversion probabilities for any as-of and horizon.

Reads the generator's hidden tables (``latent_leads``, ``latent_stages``) and the leads'
``created_at``; models are later compared against these probabilities (the best any model
could do from the observable data).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from leadscore.data.contract import utc_timestamp
from leadscore.synthetic import journey as J
from leadscore.synthetic import world as W


def find_latent(data_dir: Path | str | None) -> dict[str, pd.DataFrame] | None:
    """The generator's hidden tables when ``data_dir`` holds synthetic data, else None."""
    if data_dir is None or not (Path(data_dir) / "latent_leads.parquet").exists():
        return None
    return load_latent(data_dir)


def load_latent(data_dir: Path | str) -> dict[str, pd.DataFrame]:
    d = Path(data_dir)
    latent = pd.read_parquet(d / "latent_leads.parquet")
    # the sparse profile's export is not a contract table: its latent table carries created_at
    leads = (latent[["lead_id", "created_at"]] if "created_at" in latent
             else pd.read_parquet(d / "leads.parquet", columns=["lead_id", "created_at"]))
    return {
        "leads": leads,
        "latent_leads": latent.drop(columns=[c for c in ("created_at",) if c in latent]),
        "latent_stages": pd.read_parquet(d / "latent_stages.parquet"),
    }


def true_probabilities(latent: dict[str, pd.DataFrame], as_of, horizon_days: float = 42,
                       won_horizon_days: float = 120) -> pd.DataFrame:
    """For every lead created before ``as_of`` and still open (not yet SQL) at ``as_of``:
    its hidden stage and the true P(SQL in (as_of, as_of + horizon_days]) and
    P(won in (as_of, as_of + won_horizon_days]).

    ``latent`` is what :func:`load_latent` returns. For the sparse profile (a CRM that records
    neither SQL nor lost) a lead is open until it is won, and ``p_sql`` is empty.
    """
    as_of = utc_timestamp(as_of)
    params = latent["latent_leads"].merge(latent["leads"], on="lead_id", how="inner", validate="1:1")
    index = pd.Index(params["lead_id"])
    stages = latent["latent_stages"]
    lead = index.get_indexer(stages["lead_id"])
    if (lead < 0).any():
        raise ValueError("latent_stages names leads missing from latent_leads")
    state = pd.Categorical(stages["latent_stage"], categories=W.STATE_NAMES).codes.astype(np.int8)
    entered_s = _seconds(stages["entered_at"])
    order = np.lexsort((entered_s, lead))

    persona = pd.Categorical(params["persona"], categories=W.PERSONAS).codes.astype(np.int8)
    Q = J.generator_matrices(params["fit"].to_numpy(), params["intent"].to_numpy(), persona,
                             params["hand_raiser"].to_numpy(dtype=bool))
    sparse = "profile" in params and (params["profile"] == "sparse").all()
    if sparse:
        from leadscore.synthetic.sparse import OPEN_STATES

        p_won = J.won_probabilities(Q, won_horizon_days)
        p_sql, open_states = np.full_like(p_won, np.nan), OPEN_STATES
    else:
        p_sql, p_won = J.conversion_probabilities(Q, horizon_days, won_horizon_days)
        open_states = W.OPEN_STATES
    t_lead, _, t_state, t_psql, t_pwon = J.truth_rows(
        lead[order], state[order], entered_s[order], _seconds(params["created_at"]),
        np.array([_seconds(pd.Series([as_of]))[0]]), p_sql, p_won, open_states=open_states)
    return pd.DataFrame({
        "lead_id": index[t_lead].astype("str"),
        "as_of": pd.Series(as_of, index=range(len(t_lead))).astype("datetime64[us, UTC]"),
        "latent_stage": np.array(W.STATE_NAMES)[t_state],
        "p_sql": t_psql,
        "p_won": t_pwon,
    })


def _seconds(ts: pd.Series) -> np.ndarray:
    return ts.astype("datetime64[us, UTC]").astype("int64").to_numpy() // 1_000_000
