"""File I/O at the edges: atomic writes so that a killed job never leaves a partial output."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_OPTIONS = {"compression": "zstd"}


def _umask() -> int:
    """The process's umask (Linux reads it without changing it; elsewhere set and restored)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path | str):
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success, with the
    permissions a plain ``open`` would give (0666 less the umask: 0644 under umask 0022) - not the
    owner-only 0600 of the temporary file - so a service account can read a nightly output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
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


def jsonable(value):
    """A JSON-safe scalar: timestamps as ISO 8601, NaN/NaT/NA/inf as None, numpy scalars unboxed."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, (pd.Timedelta, dt.timedelta)):
        return None if pd.isna(value) else pd.Timedelta(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(obj, path: Path | str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


@contextlib.contextmanager
def directory_lock(directory: Path | str):
    """Hold an exclusive lock on ``directory`` for the block: processes that overlap on it - two
    scheduled retrains replacing the same bundle, two jobs creating the same MLflow store - take
    turns. It leaves no file behind and goes with the process, so a killed holder never blocks
    the next one."""
    import fcntl

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # releases the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's live process
        return True
    return True


def remove_debris(path: Path | str) -> list[Path]:
    """Remove what a killed job writing ``path`` left beside it - its staging directory
    (``.NAME.stage-PID-*``) and unfinished files (``.NAME.PID-*.tmp``) - when the process that
    made them is gone; returns what was removed. A live job's files are left alone."""
    import re
    import shutil

    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:stage-)?(\d+)-")
    for p in path.parent.iterdir():
        m = pattern.match(p.name)
        if m and not _alive(int(m[1])):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed
