"""Command-line flags -> a frozen, validated JobConfig, plus the Beam flags.

`parse_args` is the only place flags are read. Every problem with our flags is
reported at once in one `UsageError`; anything that is neither our flag nor a known
Beam flag (a misspelling) is an error, never silently ignored. Abbreviations are not
accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.sources import engine
from pipeline.sources.mysql.connection import MySqlUrlError, check_url
from pipeline.sources.mysql.query_guard import QueryRefusedError as MySqlQueryError
from pipeline.sources.mysql.query_guard import check_query as check_mysql_query
from pipeline.sources.postgres.connection import (
    DEFAULT_LOCK_TIMEOUT_MS,
    DsnSyntaxError,
    check_dsn,
)
from pipeline.sources.postgres.query_guard import QueryRefusedError, check_query
from pipeline.split import SplitSpec, parse_splits

__all__ = ["JobConfig", "UsageError", "parse_args"]

DEFAULT_SPLITS = "train=80,eval=20"
DEFAULT_STATEMENT_TIMEOUT_MS = (
    3_600_000  # a partition's COPY; partitions are ~250k rows
)


class UsageError(ValueError):
    """Invalid flags; the message lists every problem."""


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Our flags, validated. The DSN is held in full but never shown (see Dsn)."""

    db_url: str = dataclasses.field(repr=False)
    table: str | None
    query: str | None
    label: str
    output_dir: str
    split_key: str | None = None
    splits: SplitSpec = parse_splits(DEFAULT_SPLITS)
    features: str | None = None
    preprocessing_module: str | None = None
    partition_column: str | None = None
    num_partitions: int | None = None
    num_shards: int = 0
    overwrite: bool = False
    snapshot: bool = True
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
    reader: str = "native"
    read_once: bool = False
    raw_parquet_dir: str | None = None
    input_parquet: str | None = None
    fail_on_empty_split: bool = False
    verbose: bool = False
    statistics: bool = True
    fail_on_anomalies: bool = False
    max_js_divergence: float | None = None  # None: the config's, else 0.1
    max_linf_distance: float | None = None
    baseline_stats: str | None = None
    span_column: str | None = None
    span_lag: str | None = None
    transform_from: str | None = None
    analyze_spans: int | None = None
    consistency: str | None = None  # MySQL only (see pipeline.sources.mysql.session)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Read a PostgreSQL, MySQL or MariaDB table or query, analyze and "
        "transform it with "
        "tf.Transform, and write gzip TFRecords per split plus the transform graph. "
        "Any other flag is passed to Apache Beam (--runner, --temp_location, ...).",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add(
        "--db_url",
        default=None,
        help="libpq URL or key=value DSN, or mysql://user@host:3306/db (or "
        "mariadb://; password from the URL, MYSQL_PWD or ~/.my.cnf) "
        "(default: $DATABASE_URL). A password "
        "typed here is visible to other users of the machine in the process list "
        "(ps); keep it out with PGPASSWORD, ~/.pgpass, $DATABASE_URL or "
        "--db_url_file. In a URL percent-encode special characters of the password "
        "(@ as %%40, / as %%2F); in key=value form quote values with spaces",
    )
    add(
        "--db_url_file",
        default=None,
        help="read the libpq URL or DSN from this file (its first line), which "
        "keeps the password out of the process list; instead of --db_url",
    )
    add("--table", help="table to read (name as stored, or schema.table)")
    add(
        "--query",
        help="one read-only SELECT, VALUES or TABLE statement to read instead of "
        "--table (checked by PostgreSQL's grammar before anything is sent)",
    )
    add("--label", help="label column")
    add("--split_key", help="column hashed to assign splits (default: primary key)")
    add("--splits", default=DEFAULT_SPLITS, help="named splits with weights")
    add("--features", help="YAML/JSON feature config (default: inferred from types)")
    add("--preprocessing_module", help="Python file defining preprocessing_fn(inputs)")
    add("--partition_column", help="partition the read on this column's quantiles")
    add("--num_partitions", type=int, help="number of read partitions (default: auto)")
    add("--num_shards", type=int, default=0, help="TFRecord shards per split (0: auto)")
    add("--output_dir", help="output directory (any Beam filesystem path)")
    add("--overwrite", action="store_true", help="replace an existing output")
    add("--raw_parquet_dir", help="also land the raw extract here as Parquet")
    add(
        "--input_parquet",
        help="read a Parquet snapshot written by --raw_parquet_dir, not the database",
    )
    add(
        "--no_snapshot",
        action="store_true",
        help="do not share one exported snapshot across partition reads",
    )
    add(
        "--read_once",
        action="store_true",
        help="read the database once and hold the rows between analysis and "
        "transform in the runner, instead of reading the snapshot a second time",
    )
    add(
        "--statement_timeout_ms",
        type=int,
        default=DEFAULT_STATEMENT_TIMEOUT_MS,
        help="statement_timeout of every database session (0: none); default 1 hour",
    )
    add(
        "--lock_timeout_ms",
        type=int,
        default=DEFAULT_LOCK_TIMEOUT_MS,
        help="how long any session waits for a lock another session holds before "
        "failing with the blocking pids (0: forever); default 30 s",
    )
    add(
        "--reader",
        choices=("native", "jdbc"),
        default="native",
        help=(
            "native: partitioned COPY reader (default); jdbc: Beam's Java ReadFromJdbc"
        ),
    )
    add(
        "--fail_on_empty_split",
        action="store_true",
        help="fail (exit 1, no manifest) when a split gets no rows, instead of a "
        "warning in the summary and the manifest",
    )
    add(
        "--span_column",
        help="incremental spans: export only the rows new since the last complete "
        "span into OUTPUT/span-000N/ (see README, Spans)",
    )
    add(
        "--span_lag",
        help="with --span_column and --query: hold back the newest rows, C within "
        "this margin of max(C) (a number, or an interval such as '10 minutes'), "
        "for the next span, so rows committed up to that late are not missed",
    )
    add(
        "--transform_from",
        help="apply the transform graph of this complete output (or span) "
        "unchanged instead of fitting the analyzers again",
    )
    add(
        "--analyze_spans",
        type=int,
        help="with --span_column: fit the analyzers on the train rows of the last N "
        "spans (this one included; earlier ones from their raw Parquet)",
    )
    add(
        "--consistency",
        choices=("per_partition", "one_instant"),
        default=None,
        help="MySQL/MariaDB only: per_partition (default): each partition reads "
        "its own consistent snapshot, partitions may see different instants; "
        "one_instant: every partition's snapshot starts under a brief global "
        "commit block (needs RELOAD; in-process DirectRunner only)",
    )
    add("--verbose", action="store_true", help="show tracebacks and debug logs")
    add(
        "--no_statistics",
        action="store_true",
        help="skip feature statistics, drift checks and report.html",
    )
    add(
        "--fail_on_anomalies",
        action="store_true",
        help="exit non-zero without publishing when a drift check fails",
    )
    add(
        "--max_js_divergence",
        type=float,
        help="numeric drift threshold: Jensen-Shannon divergence (base 2, 0..1); "
        "default: the --features config's drift.max_js_divergence, else 0.1",
    )
    add(
        "--max_linf_distance",
        type=float,
        help="categorical drift threshold: L-infinity distance of frequencies; "
        "default: the --features config's drift.max_linf_distance, else 0.1",
    )
    add(
        "--baseline_stats",
        help="an earlier output directory to compare statistics and schema with",
    )
    return parser


def _beam_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    seen = set()
    stack = list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        try:
            cls._add_argparse_args(parser)  # noqa: SLF001 - Beam's own registry
        except argparse.ArgumentError:
            pass  # an option registered by two classes
    return parser


def _db_url(args: argparse.Namespace, problems: list[str]) -> tuple[str, str]:
    """The connection string and how it was given (for errors; never its text)."""
    if args.db_url is not None and args.db_url_file is not None:
        problems.append("give at most one of `--db_url` and `--db_url_file`")
        return "", ""
    if args.db_url_file is not None:
        path = args.db_url_file
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as err:
            problems.append(f"`--db_url_file` {path}: cannot read it: {err.strerror}")
            return "", ""
        except UnicodeDecodeError:
            problems.append(f"`--db_url_file` {path}: not UTF-8 text")
            return "", ""
        value = lines[0].strip() if lines else ""
        if not value:
            problems.append(f"`--db_url_file` {path}: the first line is empty")
            return "", ""
        return value, f"the first line of `--db_url_file` {path}"
    if args.db_url is not None:
        return args.db_url, "`--db_url`"
    return os.environ.get("DATABASE_URL", ""), "$DATABASE_URL"


def parse_args(argv: Sequence[str]) -> tuple[JobConfig, list[str]]:
    """Splits argv into our validated JobConfig and the Beam flags.

    Raises:
        UsageError: listing every problem found.
    """
    parser = _parser()
    args, beam_args = parser.parse_known_args(list(argv))
    problems = []
    _, unknown = _beam_parser().parse_known_args(beam_args)
    unknown_flags = [a for a in unknown if a.startswith("-")]
    if unknown_flags:
        problems.append(f"unknown flag(s): {' '.join(unknown_flags)}")
    db_url, db_url_source = _db_url(args, problems)
    if args.input_parquet:
        if args.table is not None or args.query is not None:
            problems.append("`--input_parquet` replaces `--table`/`--query`; give one")
        if args.raw_parquet_dir:
            problems.append(
                "give at most one of `--input_parquet` and `--raw_parquet_dir`"
            )
    else:
        if not db_url and db_url_source:
            problems.append("`--db_url` is required (or set DATABASE_URL)")
        elif db_url and engine(db_url) == "mysql":
            try:
                check_url(db_url, db_url_source)
            except MySqlUrlError as err:
                problems.append(str(err))
            _check_mysql_flags(args, beam_args, problems)
        elif db_url:
            try:
                check_dsn(db_url, db_url_source)
            except DsnSyntaxError as err:
                problems.append(str(err))
        if (args.table is None) == (args.query is None):
            problems.append("give exactly one of `--table` and `--query`")
    if not args.label:
        problems.append("`--label` is required")
    if not args.output_dir:
        problems.append("`--output_dir` is required")
    if args.features and args.preprocessing_module:
        problems.append("give at most one of `--features` and `--preprocessing_module`")
    if args.num_partitions is not None and args.num_partitions < 1:
        problems.append(f"`--num_partitions` must be >= 1, got {args.num_partitions}")
    if args.num_shards < 0:
        problems.append(f"`--num_shards` must be >= 0, got {args.num_shards}")
    if args.statement_timeout_ms < 0:
        problems.append(
            f"`--statement_timeout_ms` must be >= 0, got {args.statement_timeout_ms}"
        )
    if args.lock_timeout_ms < 0:
        problems.append(f"`--lock_timeout_ms` must be >= 0, got {args.lock_timeout_ms}")
    for flag in ("max_js_divergence", "max_linf_distance"):
        value = getattr(args, flag)
        if value is not None and not 0 <= value <= 1:  # also refuses NaN
            problems.append(f"`--{flag}` must be between 0 and 1, got {value}")
    if args.no_statistics and (args.fail_on_anomalies or args.baseline_stats):
        problems.append(
            "`--fail_on_anomalies` and `--baseline_stats` need statistics; "
            "drop `--no_statistics`"
        )
    baseline = args.baseline_stats
    if baseline and "://" not in baseline:
        found = os.path.join(baseline, "statistics", "statistics.json")
        if not os.path.isfile(found):
            problems.append(
                f"`--baseline_stats` {baseline} has no statistics/statistics.json "
                "(give an output directory written with statistics)"
            )
    mysql = bool(db_url) and engine(db_url) == "mysql" and not args.input_parquet
    if args.consistency is not None and not mysql:
        problems.append("`--consistency` is for MySQL/MariaDB sources (mysql:// URLs)")
    if args.query is not None and mysql:
        try:
            check_mysql_query(args.query)
        except MySqlQueryError as err:
            problems.append(str(err))
    elif args.query is not None:
        try:
            check_query(args.query)
        except QueryRefusedError as err:
            problems.append(str(err))
    splits = None
    try:
        splits = parse_splits(args.splits)
    except ValueError as err:
        problems.append(str(err))
    for flag in ("features", "preprocessing_module"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            problems.append(f"`--{flag}` file not found: {path}")
    if args.span_column is not None:
        _check_span_flags(args, problems)
    elif args.span_lag is not None:
        problems.append("`--span_lag` needs `--span_column`")
    if args.analyze_spans is not None:
        if args.span_column is None:
            problems.append("`--analyze_spans` needs `--span_column`")
        if args.analyze_spans < 1:
            problems.append(f"`--analyze_spans` must be >= 1, got {args.analyze_spans}")
        if args.transform_from:
            problems.append(
                "give at most one of `--analyze_spans` and `--transform_from`"
            )
    if args.transform_from and args.preprocessing_module:
        problems.append(
            "give at most one of `--transform_from` and `--preprocessing_module`"
        )
    if problems:
        raise UsageError("; ".join(problems))
    config = JobConfig(
        db_url=db_url or "",
        table=args.table,
        query=args.query,
        label=args.label,
        output_dir=args.output_dir.rstrip("/") or "/",
        split_key=args.split_key,
        splits=splits,
        features=args.features,
        preprocessing_module=args.preprocessing_module,
        partition_column=args.partition_column,
        num_partitions=args.num_partitions,
        num_shards=args.num_shards,
        overwrite=args.overwrite,
        snapshot=not args.no_snapshot,
        statement_timeout_ms=args.statement_timeout_ms,
        lock_timeout_ms=args.lock_timeout_ms,
        reader=args.reader,
        read_once=args.read_once,
        raw_parquet_dir=args.raw_parquet_dir,
        input_parquet=args.input_parquet,
        fail_on_empty_split=args.fail_on_empty_split,
        verbose=args.verbose,
        statistics=not args.no_statistics,
        fail_on_anomalies=args.fail_on_anomalies,
        max_js_divergence=args.max_js_divergence,
        max_linf_distance=args.max_linf_distance,
        baseline_stats=args.baseline_stats.rstrip("/") if args.baseline_stats else None,
        span_lag=args.span_lag,
        span_column=args.span_column,
        transform_from=args.transform_from,
        analyze_spans=args.analyze_spans,
        consistency=args.consistency,
    )
    return config, beam_args


# Flags of the PostgreSQL source the MySQL source does not support (yet).
_POSTGRES_ONLY = (
    ("--span_column", lambda a: a.span_column is not None),
    ("--span_lag", lambda a: a.span_lag is not None),
    ("--analyze_spans", lambda a: a.analyze_spans is not None),
    ("--reader jdbc", lambda a: a.reader == "jdbc"),
    ("--no_snapshot", lambda a: a.no_snapshot),
)


def _check_mysql_flags(args, beam_args, problems: list[str]) -> None:
    """What a mysql:// source refuses (see pipeline.sources.mysql.session).

    PostgreSQL-only flags, and one_instant reads outside the in-process
    DirectRunner.
    """
    for flag, given in _POSTGRES_ONLY:
        if given(args):
            problems.append(
                f"`{flag}` is PostgreSQL only for now (the --db_url is MySQL/MariaDB)"
            )
    if args.consistency == "one_instant":
        from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

        options = PipelineOptions(list(beam_args))
        runner = options.view_as(StandardOptions).runner
        mode = options.view_as(DirectOptions).direct_running_mode
        if runner not in (None, "DirectRunner", "SwitchingDirectRunner") or (
            mode == "multi_processing"
        ):
            problems.append(
                "`--consistency one_instant` needs the in-process DirectRunner (the "
                "partitions' snapshots are opened by the launcher); got "
                f"--runner {runner or 'DirectRunner'}"
                + (
                    " --direct_running_mode multi_processing"
                    if mode == "multi_processing"
                    else ""
                )
            )


def _check_span_flags(args: argparse.Namespace, problems: list[str]) -> None:
    """What `--span_column` cannot be combined with (see pipeline.spans)."""
    if not args.span_column:
        problems.append("`--span_column` needs a column name")
    if args.table is None and args.query is None:
        problems.append("`--span_column` needs `--table` or `--query`")
    if args.query is not None and args.span_lag is None:
        problems.append(
            "`--span_column` with `--query` needs `--span_lag`: a query's rows carry "
            "no xmin, so rows committed late are caught only by a safety margin "
            "(`--table` spans are exact without one)"
        )
    if args.table is not None and args.span_lag is not None:
        problems.append(
            "`--span_lag` is for `--query` spans; a `--table` span is exact without it"
        )
    for flag, given in (
        ("--overwrite", args.overwrite),
        ("--no_snapshot", args.no_snapshot),
        ("--raw_parquet_dir", args.raw_parquet_dir),
        ("--reader jdbc", args.reader == "jdbc"),
    ):
        if given:
            problems.append(f"`--span_column` cannot be combined with `{flag}`")
