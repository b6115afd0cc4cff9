"""Progress for long runs: a live bar on a terminal, plain lines in logs and CI."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "generating") as p: p.advance(k)``. Writes to stderr."""

    def __init__(self, total: int, description: str, unit: str = "items", enabled: bool = True):
        self.total, self.description, self.unit, self.enabled = total, description, unit, enabled
        self.done = 0
        self._bar = None
        self._next_line = 0.1
        self._start = time.perf_counter()

    def __enter__(self) -> "Progress":
        if self.enabled and sys.stderr.isatty():
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int = 1, total: int | None = None) -> None:
        """``total``: the total when it becomes known only once the work has started."""
        self.done += n
        if total is not None:
            self.total = total
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=n, total=self.total)
        elif self.total and self.done / self.total >= self._next_line - 1e-9:
            elapsed = time.perf_counter() - self._start
            print(f"{self.description}: {self.done:,}/{self.total:,} {self.unit} "
                  f"({100 * self.done / self.total:.0f} %, {elapsed:.1f} s)", file=sys.stderr, flush=True)
            while self._next_line <= self.done / self.total:
                self._next_line += 0.1

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


class Heartbeat:
    """For long runs made of stages that print as they finish (training): every ``every``
    seconds, one stderr line with the elapsed time and the stage now running.

    ``with Heartbeat("training") as beat: ...; beat.stage("fold 2")``. Disabled: silent."""

    def __init__(self, description: str, enabled: bool = True, every: float = 30.0):
        self.description, self.enabled, self.every = description, enabled, every
        self._stage = "starting"
        self._start = time.perf_counter()
        self._done = None
        self._thread = None

    def stage(self, text: str) -> None:
        text = " ".join(str(text).split())
        self._stage = text if len(text) <= 100 else text[:97] + "..."

    def _run(self) -> None:
        while not self._done.wait(self.every):
            elapsed = time.perf_counter() - self._start
            print(f"{self.description}: {elapsed:,.0f} s elapsed; last: {self._stage}", file=sys.stderr, flush=True)

    def __enter__(self) -> "Heartbeat":
        if self.enabled:
            import threading

            self._done = threading.Event()
            self._thread = threading.Thread(target=self._run, name="leadscore-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._done.set()
            self._thread.join()
