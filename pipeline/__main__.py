"""`python -m pipeline`: the command line (see README and DESIGN.md for the flags).

Exit codes: 0 success, 2 bad flags, 130 on SIGINT, 143 on SIGTERM, 1 any other
failure. Every failure is one line on stderr (`sql2tfrecord: error: …`, see
`pipeline.console`); tracebacks only with --verbose.

The command exits through `exit_now`: the atexit handlers run as usual, then the
process ends without Python's interpreter teardown, which with TensorFlow, Beam and
tf.Transform loaded takes over a second (bench/RESULTS.md) and does nothing a
finished job needs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

_LOGGER = logging.getLogger("pipeline")


def _user_error(err: BaseException) -> str | None:
    """The one-line message of an expected (user-facing) failure, else None."""
    from pipeline.console import one_line
    from pipeline.degenerate import EmptySplitError
    from pipeline.drift import AnomaliesError
    from pipeline.sink.output import OutputError
    from pipeline.sources.jdbc import JdbcUnavailableError
    from pipeline.sources.mysql.connection import MySqlUrlError
    from pipeline.sources.mysql.partition_reader import ColumnValueError
    from pipeline.sources.mysql.query_guard import QueryRefusedError as MySqlQueryError
    from pipeline.sources.parquet import SnapshotError
    from pipeline.sources.postgres.beam import PartitionReadError
    from pipeline.sources.postgres.connection import DatabaseError, DsnSyntaxError
    from pipeline.sources.postgres.query_guard import QueryRefusedError
    from transforms.features import ConfigError
    from transforms.types import UnsupportedTypeError
    from transforms.user_module import UserModuleError

    expected = (
        AnomaliesError,
        DatabaseError,
        DsnSyntaxError,
        MySqlUrlError,
        MySqlQueryError,
        ColumnValueError,
        JdbcUnavailableError,
        OutputError,
        ConfigError,
        UnsupportedTypeError,
        PartitionReadError,
        QueryRefusedError,
        EmptySplitError,
        SnapshotError,
        UserModuleError,
    )
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, expected):
            return one_line(str(err)) or type(err).__name__
        # Runners with a gRPC worker return the worker's traceback as text: find
        # ours in it (the message is the rest of that line).
        text = str(err)
        for cls in expected:
            marker = f"{cls.__name__}: "
            if marker in text:
                return one_line(text.split(marker, 1)[1].strip().splitlines()[0])
        err = err.__cause__ or err.__context__
    return None


def _failure_line(err: BaseException, verbose: bool) -> str:
    from pipeline.console import one_line

    message = _user_error(err)
    if message is not None:
        return message
    first = one_line(str(err).strip().splitlines()[0]) if str(err).strip() else ""
    text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return text if verbose else f"{text} (rerun with --verbose for the traceback)"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the job; returns the process exit code."""
    from pipeline import console

    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "--verbose" in argv
    with console.session(verbose):
        try:
            return _run(argv, verbose)
        except KeyboardInterrupt:
            return console.report_interrupt()
        except Exception as err:  # noqa: BLE001 - where errors become exit codes
            if console.interrupted_signal() is not None:
                return console.report_interrupt()  # Beam re-raised it as another type
            if verbose:
                _LOGGER.exception("sql2tfrecord failed")
            print(f"{console.PREFIX} {_failure_line(err, verbose)}", file=sys.stderr)
            return 1


def _run(argv: list[str], verbose: bool) -> int:
    from pipeline import heap

    try:
        return _run_job(argv, verbose)
    finally:
        heap.thaw()


def _run_job(argv: list[str], verbose: bool) -> int:
    from pipeline import heap

    # The imports allocate ~470,000 objects that live as long as the process and
    # almost no garbage: no collection while they run, then out of its reach.
    with heap.long_lived():
        from pipeline import console
        from pipeline.options import UsageError, parse_args

    try:
        config, beam_args = parse_args(argv)
    except UsageError as err:
        print(f"{console.PREFIX} {err}", file=sys.stderr)
        return 2
    with heap.long_lived(), console.native_stderr_muted(not verbose):
        import tensorflow_transform.beam  # noqa: F401 - the job's, loaded here
        from apache_beam.options.pipeline_options import (
            GoogleCloudOptions,
            PipelineOptions,
        )

        from pipeline.job import prepare_job
        from pipeline.run import run_job

    if not verbose:
        console.mute_beam_worker_prints()
        beam_args = [*beam_args, "--beam_plugin=pipeline.quiet_worker"]
    # Construction-time type checking of our fixed graph costs ~1 s per run
    # and finds nothing the test suite does not; Beam has no flag to turn it
    # back on, `--no_pipeline_type_check` being its only form.
    beam_options = PipelineOptions(
        beam_args, save_main_session=False, pipeline_type_check=False
    )
    cloud = beam_options.view_as(GoogleCloudOptions)
    if config.snapshot and cloud.template_location:
        print(
            f"{console.PREFIX} --template_location: a template runs after this "
            "launcher exits, so no launcher can hold the shared snapshot; pass "
            "--no_snapshot",
            file=sys.stderr,
        )
        return 2
    temp_location = cloud.temp_location
    job = prepare_job(config, temp_location)
    manifest = run_job(job, beam_options)
    rows = {name: split["rows"] for name, split in manifest["splits"].items()}
    warnings = "".join(f"; warning: {w}" for w in manifest.get("warnings") or ())
    print(
        f"sql2tfrecord: wrote {config.output_dir}: rows {rows}, "
        f"{manifest['elapsed_seconds']:.1f} s{warnings}"
    )
    if manifest.get("report"):
        anomalies = len(manifest["statistics"]["anomalies"])
        print(
            f"sql2tfrecord: report {config.output_dir}/{manifest['report']} "
            f"({anomalies} anomalies)"
        )
    return 0


def exit_now(code: int) -> None:
    """Ends the process with `code` after the atexit handlers, skipping teardown.

    Falls back to a normal exit while a non-daemon thread still runs, unless the
    run was interrupted: an abandoned job's threads must not hold the process.
    """
    import atexit
    import threading

    from pipeline.console import interrupted_signal

    if interrupted_signal() is None and any(
        t is not threading.main_thread() and not t.daemon for t in threading.enumerate()
    ):
        sys.exit(code)
    atexit._run_exitfuncs()  # logging.shutdown, child-process cleanup, ...
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
