"""Score history: each scoring run's scores, compact, one Parquet file per scored moment.

``leadscore score --history DIR`` adds the run to ``DIR`` as ``scores-<as_of>.parquet`` with
:data:`HISTORY_COLUMNS` - the keys, probabilities, score, tiers, model version and run, without
the reasons (about 10 bytes a lead once compressed). Scoring the same moment again replaces
that moment's file. The directory is what ``leadscore monitor --scores`` reads (every file is
a scoring output with the columns monitoring needs), and ``leadscore explain --history DIR``
shows one lead's trend: its score and tier at every run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from leadscore.io import write_parquet
from leadscore.serving.columns import HISTORY_COLUMNS

__all__ = ["HISTORY_COLUMNS", "history_file", "lead_trend", "record_run", "trend_line"]
BARS = "▁▂▃▄▅▆▇█"


def history_file(directory: Path, as_of: pd.Timestamp) -> Path:
    """Where the run at ``as_of`` goes: ``scores-20250901T000000Z.parquet``."""
    return Path(directory) / f"scores-{as_of.tz_convert('UTC'):%Y%m%dT%H%M%SZ}.parquet"


def record_run(scores: Path, directory: Path, as_of: pd.Timestamp) -> tuple[Path, bool]:
    """Add a scoring output (Parquet, or CSV read as the job wrote it) to the history in
    ``directory``; returns the file and whether it replaced an earlier run at the same moment."""
    from leadscore.serving.batch import read_scores

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"--history {directory}: not a directory")
    scores = Path(scores)
    if scores.suffix == ".parquet":
        table = pq.read_table(scores, columns=list(HISTORY_COLUMNS))
    else:
        table = read_scores(scores)[list(HISTORY_COLUMNS)]
    target = history_file(directory, as_of)
    replaced = target.exists()
    write_parquet(table, target)
    return target, replaced


def lead_trend(directory: Path, lead_id: str) -> pd.DataFrame:
    """One lead's runs in the history: as_of, score, tier, the probabilities and model_version,
    oldest first (empty when the history holds no run that scored it)."""
    import duckdb

    files = sorted(Path(directory).glob("scores-*.parquet"))
    if not files:
        return pd.DataFrame(columns=["as_of", "score", "tier", "p_sql", "p_won", "model_version"])
    with duckdb.connect() as con:
        return con.execute(
            "SELECT as_of, score, tier, p_sql, p_won, model_version FROM read_parquet(?) WHERE lead_id = ? "
            "ORDER BY as_of", [[str(f) for f in files], str(lead_id)]).df()


def trend_line(trend: pd.DataFrame) -> str:
    """'score 41 -> 72 over 4 runs, 2025-08-29 to 2025-09-01: ▂▃▃▇ (lead -> MQL on 2025-09-01)'."""
    if trend.empty:
        return "no earlier run in the history scored this lead"
    scores = trend["score"].astype(int).tolist()
    days = [pd.Timestamp(t).strftime("%Y-%m-%d") for t in trend["as_of"]]
    bars = "".join(BARS[min(len(BARS) - 1, (s - 1) * len(BARS) // 99)] for s in scores)
    line = (f"score {scores[0]} -> {scores[-1]} over {len(scores)} run{'s' * (len(scores) != 1)}, "
            f"{days[0]} to {days[-1]}: {bars}")
    tiers = trend["tier"].astype(str).tolist()
    moves = [f"{a} -> {b} on {day}" for a, b, day in zip(tiers, tiers[1:], days[1:]) if a != b]
    return line + (f" ({'; '.join(moves)})" if moves else f" (always {tiers[0]})")
