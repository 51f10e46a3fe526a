"""Progress lines: formatting, the TTY line, log lines, silence without reads."""

import io
import logging
import threading
import time

from pipeline import progress


def test_line_rate_and_eta():
    assert progress.line("read", 3, 8, 120_000, 3.0, 480_000) == (
        "read: 3/8 partitions, 120,000 rows, 40,000 rows/s, ETA 9s"
    )
    # No (or an exceeded) row estimate: ETA from the partitions done.
    assert progress.line("read", 2, 8, 500, 10.0, None).endswith("ETA 30s")
    assert progress.line("read", 2, 8, 500, 10.0, 100).endswith("ETA 30s")
    assert progress.line("read", 8, 8, 9, 1.0, 100).endswith(", done")
    assert progress.line("read", 0, 4, 0, 0.0) == "read: 0/4 partitions, 0 rows, 0 rows/s"
    assert progress.line("x", 1, 400, 10, 100.0).endswith("ETA 11h05m")


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_tty_gets_one_rewritten_line():
    stream, now = _Tty(), [100.0]
    reporter = progress.Reporter(
        {"ns": ("read", 4, 1000), "ns2": ("second read", 4, 1000)},
        stream=stream, interval=3600, clock=lambda: now[0],
    )
    with reporter:
        reporter.update()
        assert stream.getvalue() == ""  # nothing read yet: nothing shown
        progress.note_rows("ns", 250)
        now[0] = 105.0
        reporter.update()
        progress.note_partition("ns")
        progress.note_rows("ns", 250)
        now[0] = 110.0
        reporter.update()
        reporter.update()  # unchanged: not written again
        for _ in range(3):
            progress.note_partition("ns")
        now[0] = 120.0
        reporter.update()
        now[0] = 500.0
        reporter.update()  # a finished pass keeps its rate
    out = stream.getvalue()
    assert out == (
        "\rread: 0/4 partitions, 250 rows, 50 rows/s, ETA 15s"
        "\rread: 1/4 partitions, 500 rows, 50 rows/s, ETA 10s"
        "\rread: 4/4 partitions, 500 rows, 25 rows/s, done   \n"
    )


def test_log_lines_when_not_a_tty_and_from_reader_threads(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    with progress.Reporter({"ns": ("read", 2, None)}, stream=io.StringIO(), interval=0.02):
        workers = [threading.Thread(target=progress.note_rows, args=("ns", 1000))
                   for _ in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        progress.note_partition("ns")
        _wait_for(lambda: any("8,000 rows" in r.getMessage() for r in caplog.records))
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Progress: read: 1/2 partitions, 8,000 rows") for m in messages)


def test_silent_when_reads_happen_elsewhere(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    stream = _Tty()
    reporter = progress.Reporter({"ns": ("read", 2, None)}, stream=stream, interval=3600)
    with reporter:
        reporter.update()
    assert stream.getvalue() == "" and not caplog.records
