"""File I/O at the edges: atomic writes so that a killed job never leaves a partial output."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_OPTIONS = {"compression": "zstd"}


@contextlib.contextmanager
def atomic_path(path: Path | str):
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_parquet(data: pd.DataFrame | pa.Table, path: Path | str) -> Path:
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **PARQUET_OPTIONS)
    return Path(path)


def write_table(frame: pd.DataFrame, path: Path | str) -> Path:
    """Write a DataFrame as Parquet or CSV, chosen by the file suffix."""
    path = Path(path)
    if path.suffix == ".csv":
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        return path
    return write_parquet(frame, path)


def write_json(obj, path: Path | str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)
