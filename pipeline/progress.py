"""Progress of the read passes while the pipeline runs: one line on a TTY, else logs.

The partition reader calls `note_rows` per batch and `note_partition` per finished
partition; these update counters of the current process. `Reporter`, a context
manager the launcher holds around the run, prints them from a daemon thread:
per read pass, partitions done/total, rows read, rows/s and an ETA (from the
plan's row estimate when it has one, else from the partitions done). On a TTY it
rewrites one line; otherwise it logs a line every `interval` seconds while the
numbers move. Where the reads run in other processes (Dataflow, Flink,
multi-process DirectRunner) the counters never move and it prints nothing.
Advisory only: a retried partition counts again here, never in the manifest.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TextIO

__all__ = ["note_rows", "note_partition", "snapshot", "reset", "Reporter", "line"]

_LOGGER = logging.getLogger(__name__)
_LOCK = threading.Lock()
_ROWS: dict[str, int] = {}
_PARTITIONS: dict[str, int] = {}


def note_rows(read_pass: str, rows: int) -> None:
    """Adds `rows` read by `read_pass` (a metrics namespace)."""
    with _LOCK:
        _ROWS[read_pass] = _ROWS.get(read_pass, 0) + rows


def note_partition(read_pass: str) -> None:
    """Counts one finished partition of `read_pass`."""
    with _LOCK:
        _PARTITIONS[read_pass] = _PARTITIONS.get(read_pass, 0) + 1


def snapshot() -> dict[str, tuple[int, int]]:
    """{read pass: (partitions done, rows read)} of this process."""
    with _LOCK:
        return {
            p: (_PARTITIONS.get(p, 0), _ROWS.get(p, 0))
            for p in set(_ROWS) | set(_PARTITIONS)
        }


def reset() -> None:
    """Forgets all counts (a new run in the same process)."""
    with _LOCK:
        _ROWS.clear()
        _PARTITIONS.clear()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def line(
    label: str,
    done: int,
    total: int,
    rows: int,
    elapsed: float,
    row_estimate: int | None = None,
) -> str:
    """One pass's progress line.

    E.g. `read: 3/8 partitions, 120,000 rows, 40,000 rows/s, ETA 12s`.
    """
    rate = rows / elapsed if elapsed > 0 else 0.0
    text = f"{label}: {done}/{total} partitions, {rows:,} rows, {rate:,.0f} rows/s"
    if total and done >= total:
        return text + ", done"
    eta = None
    if row_estimate and rate > 0 and rows < row_estimate:
        eta = (row_estimate - rows) / rate
    elif total and done and elapsed > 0:
        eta = elapsed * (total - done) / done
    return text + (f", ETA {_duration(eta)}" if eta is not None else "")


class Reporter:
    """Prints the read passes' progress while the `with` block runs.

    Args:
        passes: {read pass (namespace): (label, partitions, row estimate or None)}.
        stream: where to write; a TTY gets one updating line, else `_LOGGER.info`.
        interval: seconds between updates (a TTY gets 4 per interval).
        clock: time source (tests).
    """

    def __init__(
        self,
        passes: Mapping[str, tuple[str, int, int | None]],
        stream: TextIO | None = None,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._passes = dict(passes)
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._interval = interval / 4 if self._tty else interval
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started: dict[str, float] = {}
        self._idle: dict[str, float] = {}  # when each pass was last seen not started
        self._ended: dict[str, float] = {}
        self._last = None
        self._width = 0

    def _text(self) -> str | None:
        counts = snapshot()
        parts = []
        now = self._clock()
        for key, (label, total, estimate) in self._passes.items():
            done, rows = counts.get(key, (0, 0))
            if not (done or rows):
                self._idle[key] = now
                continue
            started = self._started.setdefault(key, self._idle.get(key, now))
            ended = now
            if total and done >= total:  # the pass is over: its rate stays put
                ended = self._ended.setdefault(key, now)
            parts.append(line(label, done, total, rows, ended - started, estimate))
        return " | ".join(parts) if parts else None

    def update(self) -> None:
        """Prints the current progress if it changed (called by the thread)."""
        text = self._text()
        if text is None or text == self._last:
            return
        self._last = text
        if self._tty:
            padded = text.ljust(self._width)
            self._width = len(text)
            self._stream.write("\r" + padded)
            self._stream.flush()
        else:
            _LOGGER.info("Progress: %s", text)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.update()

    def __enter__(self) -> Reporter:
        reset()
        self._idle = dict.fromkeys(self._passes, self._clock())
        self._thread = threading.Thread(
            target=self._run, name="sql2tfrecord-progress", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._tty and self._last is not None:
            self._stream.write("\n")
            self._stream.flush()
