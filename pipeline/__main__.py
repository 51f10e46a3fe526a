"""`python -m pipeline`: the command line (see README and DESIGN.md for the flags).

Exit codes: 0 success, 2 bad flags, 1 any other failure. A user-facing failure is
one line on stderr (`sql2tfrecord: error: …`); tracebacks only with --verbose.

The command exits through `exit_now`: the atexit handlers run as usual, then the
process ends without Python's interpreter teardown, which with TensorFlow, Beam and
tf.Transform loaded takes ~1.3 s here and does nothing a finished job needs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

_LOGGER = logging.getLogger("pipeline")


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _user_error(err: BaseException) -> str | None:
    """The message of an expected (user-facing) failure, else None."""
    from pipeline.connection import DatabaseError
    from pipeline.drift import AnomaliesError
    from pipeline.jdbc_io import JdbcUnavailableError
    from pipeline.output import OutputError
    from pipeline.postgres_io import PartitionReadError
    from pipeline.query_guard import QueryRefusedError
    from transforms.features import ConfigError
    from transforms.types import UnsupportedTypeError

    expected = (
        AnomaliesError,
        DatabaseError,
        JdbcUnavailableError,
        OutputError,
        ConfigError,
        UnsupportedTypeError,
        PartitionReadError,
        QueryRefusedError,
    )
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, expected):
            return _one_line(err)
        # Beam wraps worker exceptions; look for ours in the chain and the message.
        for cls in (PartitionReadError, DatabaseError):
            marker = f"{cls.__name__}: "
            text = str(err)
            if marker in text:
                return text.split(marker, 1)[1].strip().splitlines()[0]
        err = err.__cause__ or err.__context__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the job; returns the process exit code."""
    from pipeline.options import UsageError, parse_args

    argv = sys.argv[1:] if argv is None else list(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    verbose = "--verbose" in argv
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        for noisy in ("apache_beam", "tensorflow", "absl", "tensorflow_transform"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config, beam_args = parse_args(argv)
    except UsageError as err:
        print(f"sql2tfrecord: error: {err}", file=sys.stderr)
        return 2
    try:
        from apache_beam.options.pipeline_options import (
            GoogleCloudOptions,
            PipelineOptions,
        )

        from pipeline.job import prepare_job, run_job

        # Construction-time type checking of our fixed graph costs ~1 s per run
        # and finds nothing the test suite does not; Beam has no flag to turn it
        # back on, `--no_pipeline_type_check` being its only form.
        beam_options = PipelineOptions(
            beam_args, save_main_session=False, pipeline_type_check=False
        )
        cloud = beam_options.view_as(GoogleCloudOptions)
        if config.snapshot and cloud.template_location:
            print(
                "sql2tfrecord: error: --template_location: a template runs after this "
                "launcher exits, so no launcher can hold the shared snapshot; pass "
                "--no_snapshot",
                file=sys.stderr,
            )
            return 2
        temp_location = cloud.temp_location
        job = prepare_job(config, temp_location)
        manifest = run_job(job, beam_options)
    except KeyboardInterrupt:
        print("sql2tfrecord: interrupted; the output has no manifest", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one place errors become exit codes
        message = _user_error(err)
        if verbose or message is None:
            _LOGGER.exception("sql2tfrecord failed")
        print(f"sql2tfrecord: error: {message or _one_line(err)}", file=sys.stderr)
        return 1
    rows = {name: split["rows"] for name, split in manifest["splits"].items()}
    print(
        f"sql2tfrecord: wrote {config.output_dir}: rows {rows}, "
        f"{manifest['elapsed_seconds']:.1f} s"
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

    Falls back to a normal exit while a non-daemon thread still runs.
    """
    import atexit
    import threading

    if any(
        t is not threading.main_thread() and not t.daemon for t in threading.enumerate()
    ):
        sys.exit(code)
    atexit._run_exitfuncs()  # logging.shutdown, child-process cleanup, ...
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
