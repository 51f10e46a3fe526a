"""What `python -m pipeline` shows on the console: one line per failure.

A failure inside the Beam job is reported several times over by the libraries on
its way out: Beam logs it at ERROR with its traceback where the DoFn failed
(`runners/common.py`), its SDK harness prints the traceback to stderr
(`sdk_worker.py`, runners with a gRPC worker), the exception's own message grows a
` [while running '<step>']` suffix, and threads that die print through
`threading.excepthook`. Without `--verbose` this module keeps the console to our
one `sql2tfrecord: error: …` line: tracebacks logged by other libraries at ERROR
are dropped (their warnings stay), Beam's traceback print is muted, and a dying
thread's exception becomes one log line. With `--verbose` nothing is dropped.

SIGINT and SIGTERM raise `Interrupted` in the main thread (where Python runs signal
handlers, also while Beam's worker threads or TensorFlow's import are busy), so
`finally` blocks release the snapshot; the command then exits 130 or 143 with one
line. Everything after the first signal is silent unless `--verbose`; a second
signal, or unwinding that takes longer than `UNWIND_SECONDS`, ends the process at
once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading

__all__ = [
    "Interrupted",
    "interrupted_signal",
    "mute_beam_worker_prints",
    "one_line",
    "report_interrupt",
    "session",
]

PREFIX = "sql2tfrecord: error:"
UNWIND_SECONDS = 10.0
_OWN_LOGGERS = ("pipeline", "transforms", "trainer")
_STEP_SUFFIX = re.compile(r" \[while running '[^']*'\]")
_state = {"signal": None, "reported": False}
_report_lock = threading.Lock()


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread on SIGINT or SIGTERM."""


def interrupted_signal() -> int | None:
    """The number of the first SIGINT/SIGTERM received, else None."""
    return _state["signal"]


def one_line(text: str) -> str:
    """`text` on one line: whitespace runs collapsed, Beam's step suffixes removed."""
    return " ".join(_STEP_SUFFIX.sub("", text).split())


class _NoForeignTracebacks(logging.Filter):
    """Drops other libraries' ERROR records that carry a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if record.name.split(".", 1)[0] in _OWN_LOGGERS:
            return True
        if record.exc_info:
            return False
        return "Traceback (most recent call last)" not in record.getMessage()


# Warnings TensorFlow and tf.Transform print on every run that say nothing about it
# (ours is a TF1-mode graph by design; tf.Transform's own collections do not
# serialize): hidden unless --verbose.
_KNOWN_NOISE = (
    "Tensorflow Transform is running in tf.compat.v1 mode",
    "Issue encountered when serializing",
    "Expected binary or unicode string, got type_url",
    "Instructions for updating",
)


class _NoKnownNoise(logging.Filter):
    """Drops TensorFlow's and absl's known-harmless warnings (`_KNOWN_NOISE`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] not in ("tensorflow", "absl"):
            return True
        message = record.getMessage()
        return not any(noise in message for noise in _KNOWN_NOISE)


def _print_except_to_stderr(*args, file=None, **kwargs) -> None:
    if file is None or file is sys.stdout:
        print(*args, **kwargs)


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    if _state["signal"] is None and not issubclass(args.exc_type, SystemExit):
        name = args.thread.name if args.thread else "?"
        text = one_line(f"{args.exc_type.__name__}: {args.exc_value}")
        logging.getLogger("pipeline").warning("thread %s stopped: %s", name, text)


@contextlib.contextmanager
def session(verbose: bool):
    """Console set-up of one command run; undone on exit (for in-process callers).

    Logging: DEBUG with every traceback if `verbose`, else INFO for our loggers,
    WARNING for the libraries', their tracebacks and TensorFlow's known-harmless
    warnings dropped. SIGINT and SIGTERM
    raise `Interrupted` (main thread only).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _state.update(signal=None, reported=False)
    undo = contextlib.ExitStack()
    if not verbose:
        for noisy in ("apache_beam", "tensorflow", "absl", "tensorflow_transform"):
            logger = logging.getLogger(noisy)
            undo.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.WARNING)
        for quiet in (_NoForeignTracebacks(), _NoKnownNoise()):
            for handler in logging.getLogger().handlers:
                handler.addFilter(quiet)
                undo.callback(handler.removeFilter, quiet)
        undo.callback(setattr, threading, "excepthook", threading.excepthook)
        threading.excepthook = _thread_exception
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            undo.callback(signal.signal, signum, signal.getsignal(signum))
            signal.signal(signum, _handler(verbose))
    with undo:
        yield  # after an interrupt the watchdog stays armed until the process ends


@contextlib.contextmanager
def native_stderr_muted(active: bool = True):
    """File descriptor 2 goes to /dev/null inside, when `active`.

    For importing TensorFlow without --verbose: its C++ start-up notices (absl's
    "All log messages before absl::InitializeLog()…", oneDNN, CUDA) are written
    to the descriptor directly, whatever TF_CPP_MIN_LOG_LEVEL says, and would
    precede a failed run's one-line error. An import error still raises (and is
    reported after); `--verbose` shows everything.
    """
    try:
        saved = os.dup(2) if active else None
    except OSError:  # no descriptor 2 (closed): nothing to mute
        saved = None
    if saved is None:
        yield
        return
    _flush_stderr()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        _flush_stderr()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _flush_stderr() -> None:
    if sys.stderr is not None:  # None when the process started without one
        sys.stderr.flush()


def mute_beam_worker_prints() -> None:
    """Beam's SDK harness prints each failed bundle's traceback to stderr: mute it.

    Only without --verbose; for the rest of the process.
    """
    from apache_beam.runners.worker import sdk_worker

    sdk_worker.print = _print_except_to_stderr


def _handler(verbose: bool):
    def handle(signum, frame):
        if _state["signal"] is not None:
            os._exit(128 + _state["signal"])  # a second signal: at once
        _state["signal"] = signum
        if not verbose:
            logging.disable(logging.CRITICAL)
            threading.excepthook = lambda args: None
        watchdog = threading.Timer(UNWIND_SECONDS, _exit_interrupted)
        watchdog.daemon = True
        watchdog.start()
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}")

    return handle


def report_interrupt() -> int:
    """Prints the interrupt's one line (once); returns its exit code (128 + signal)."""
    signum = _state["signal"] or signal.SIGINT
    with _report_lock:
        if not _state["reported"]:
            _state["reported"] = True
            name = signal.Signals(signum).name
            sys.stderr.write(
                f"sql2tfrecord: interrupted ({name}); nothing was published "
                "(a previous output is unchanged)\n"
            )
            sys.stderr.flush()
    return 128 + signum


def _exit_interrupted() -> None:
    code = report_interrupt()
    os._exit(code)
