"""Incremental spans: each run exports the rows new since the last complete span.

Layout: `OUTPUT/span-0001/`, `span-0002/`, … each a complete output of its own
(splits, `transform_fn/`, metadata, `manifest.json` with a `span` section), built
in staging and swapped in like any output (`pipeline.publish`). A span directory
without its manifest is incomplete and never counts; the next run rebuilds it.

The rule. Span N is read in the job's exported snapshot S_N and holds the rows r
visible in S_N with

    C(r) <= W_N  and  ( C(r) > W_{N-1}  or  r was not visible in S_{N-1} )

where W_N = max(W_{N-1}, max C in S_N) is the new watermark (read in S_N) and
W_0 = -infinity. "Not visible in S_{N-1}" is decided from the row's inserting
transaction id (`xmin`, widened to 64 bits against S_N's xmax): it is at least
S_{N-1}'s xmin and not among the transaction ids of the rows S_{N-1} did see in
[xmin, xmax), which span N-1 recorded (`visible_recent_xids`; a list, not
PostgreSQL's xip list, because `pg_current_snapshot()` omits subtransactions).

Guarantee (insert-only tables): spans 1..N partition exactly the rows visible in
S_N with C <= W_N; every row, whatever its C and however late its transaction
commits (a transaction held open across a run, clock skew, sequence values taken
before commit), lands in exactly one span: the first one whose snapshot sees it.
C need not be monotone: it only bounds the span. An UPDATE writes a new row
version (new xmin): it lands in the next span again, earlier spans keep the old
version; DELETEs are not reflected. See README "Spans" for the limits.
"""

from __future__ import annotations

import dataclasses
import logging
import re

from apache_beam.io.filesystems import FileSystems
from psycopg2 import sql

from pipeline.ownership import inspect_dir, is_local
from pipeline.sink import output
from transforms.features import ConfigError

__all__ = [
    "SpanError",
    "SpanTarget",
    "span_dir",
    "complete_spans",
    "next_span",
    "plan_span",
    "narrow_plan",
    "count_seen_before",
]

_LOGGER = logging.getLogger(__name__)

RAW = "raw"  # a span's raw landing (pipeline.span_analysis.RAW_DIR)
_SPAN = re.compile(r"span-(\d{4,})$")
_WRAP = 1 << 32
# Late rows found by ctid (a TID scan) up to this many; beyond, by their xmin.
MAX_LATE_TIDS = 100_000
# Types whose order grows with new rows and whose text form round-trips exactly.
_TYPES = (
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
)


class SpanError(ConfigError):
    """A span cannot be made; the message names --span_column and the table."""


@dataclasses.dataclass(frozen=True)
class SpanTarget:
    """The span a run builds: its number, directory, and the last complete span."""

    number: int
    path: str
    previous: dict | None  # the `span` section of the last complete span's manifest
    incomplete: bool  # the directory exists without a manifest (a crashed run)


def span_dir(output_dir: str, number: int) -> str:
    """`OUTPUT/span-000N`."""
    return output.join(output_dir, f"span-{number:04d}")


def complete_spans(output_dir: str) -> list[int]:
    """Numbers of the spans under `output_dir` that have their manifest, ascending."""
    pattern = output.join(output_dir, "span-*", output.MANIFEST)
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # noqa: BLE001 - a missing directory matches nothing
        return []
    numbers = []
    for meta in found:
        parent = meta.path.rstrip("/").rsplit("/", 2)[-2]
        match = _SPAN.fullmatch(parent)
        if match:
            numbers.append(int(match.group(1)))
    return sorted(numbers)


def next_span(output_dir: str) -> SpanTarget:
    """The span after the last complete one (span 1 when there is none)."""
    done = complete_spans(output_dir)
    previous = None
    if done:
        manifest = output.read_manifest(span_dir(output_dir, done[-1]))
        previous = manifest.get("span")
        if not previous or previous.get("number") != done[-1]:
            raise SpanError(
                f"--output_dir {output_dir}: span-{done[-1]:04d} has no span "
                "section in its manifest; not a span output"
            )
    number = done[-1] + 1 if done else 1
    path = span_dir(output_dir, number)
    state = inspect_dir(path, "tfrecord")
    return SpanTarget(number, path, previous, state.exists and not state.complete)


def _xid8(now8: int) -> str:
    """SQL of the row's xmin widened to 64 bits (exact for xids within 2^31 of now)."""
    return (
        f"({now8}::bigint - ((({now8}::bigint - src.xmin::text::bigint) "
        f"% {_WRAP}) + {_WRAP}) % {_WRAP})"
    )


def _column_type(conn, table, column: str) -> str:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT format_type(atttypid, atttypmod), format_type(atttypid, NULL) "
            "FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s "
            "AND attnum > 0 AND NOT attisdropped",
            (table.identifier.as_string(conn), column),
        )
        row = cur.fetchone()
    if row is None:
        raise SpanError(f"--span_column: column {column!r} not found in table {table}")
    if row[1] not in _TYPES:
        raise SpanError(
            f"--span_column: column {column!r} of table {table} is {row[0]}; "
            f"use one of {', '.join(_TYPES)}"
        )
    return row[1]


@dataclasses.dataclass(frozen=True)
class SpanBounds:
    """A planned span: the exact row filter, and what steers the read's scans."""

    row_filter: str  # SQL on `src`: exactly the span's rows
    info: dict  # the manifest's `span` section
    in_range: str  # SQL: C in (lower, upper], index-usable
    late: str | None  # SQL: the late rows' extra scan, None when there are none


def plan_span(
    conn,
    table,
    column: str,
    target: SpanTarget,
    *,
    query: str | None = None,
    lag: str | None = None,
) -> SpanBounds:
    """Bounds the span in the snapshot of `conn` (see the module docstring).

    `conn` is the transaction of the job's exported snapshot (where the plan is
    made). One scan of the table counts the span's rows and late rows and
    records the ids of the recent transactions this snapshot sees (for the next
    span); a second one finds the late rows' ctids when there are any.

    A `--query` (`query`: its parenthesised text) has no xmin to read: its span
    is bounded by `lag` instead (see `_plan_query_span`).

    Raises:
        SpanError: not a plain or partitioned table, an unusable column, or no
            new rows (nothing is written then).
    """
    if table is None and query is not None:
        return _plan_query_span(conn, query, column, target, lag)
    if table is None or table.kind not in ("r", "p"):
        what = "a --query" if table is None else f"{table} (not a table)"
        raise SpanError(
            f"--span_column needs a --table that is a table or partitioned table "
            f"(it reads the rows' xmin); got {what}"
        )
    kind = _column_type(conn, table, column)
    relation = table.identifier.as_string(conn)
    c = sql.SQL("src.{}").format(sql.Identifier(column)).as_string(conn)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_current_snapshot()::text, "
            "pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
            "pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        )
        snapshot, xmin8, xmax8 = cur.fetchone()
        cur.execute(
            "SELECT count(*), min(xact_start)::text FROM pg_stat_activity "
            "WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
        )
        in_progress, oldest = cur.fetchone()
        prev = target.previous
        lower = prev["upper"] if prev else None
        lower_sql = f"{sql.Literal(lower).as_string(conn)}::{kind}"
        cur.execute(
            # JSON text: ISO 8601 whatever the session's DateStyle (the next
            # run may have another), with the UTC offset of a timestamptz.
            f"SELECT to_json(GREATEST(max({c}), {lower_sql})) #>> '{{}}' "
            f"FROM {relation} AS src"
        )
        upper = cur.fetchone()[0]
    if upper is None:
        raise SpanError(
            f"--span_column {column}: table {table} has no rows with a non-NULL "
            f"{column}; no span written"
        )
    x8 = _xid8(xmax8)
    literal = sql.Literal(upper).as_string(conn)
    row_filter = f"{c} <= {literal}::{kind}"
    late = "false"
    if prev and "visible_recent_xids" not in prev:
        raise SpanError(
            f"--span_column: span-{prev['number']:04d} was made from a --query, "
            "whose rows carry no xmin: a --table span cannot follow it exactly; "
            "keep using --query with --span_lag, or start a new --output_dir"
        )
    if prev:
        seen = ",".join(str(int(x)) for x in prev["visible_recent_xids"])
        late = (
            f"({x8} >= {int(prev['snapshot_xmin'])} "
            f"AND {x8} <> ALL('{{{seen}}}'::bigint[]))"
        )
        row_filter += f" AND ({c} > {lower_sql} OR {late})"
        late = f"{c} <= {lower_sql} AND {late}"
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT count(*) FILTER (WHERE {row_filter}), "
            f"count(*) FILTER (WHERE {row_filter} AND {late}), "
            f"count(*) FILTER (WHERE {c} IS NULL), "
            f"coalesce(array_agg(DISTINCT {x8}) FILTER (WHERE {x8} >= {xmin8}), "
            f"'{{}}') FROM {relation} AS src"
        )
        rows, late_rows, null_rows, recent = cur.fetchone()
    if rows == 0:
        raise SpanError(
            f"--span_column {column}: no new rows in table {table} since "
            f"span-{prev['number']:04d} (watermark {lower}); no span written"
        )
    if late_rows:
        _LOGGER.warning(
            "Span %d holds %d rows with %s <= the previous watermark %s, committed "
            "after span %d's snapshot (late commits or updates)",
            target.number,
            late_rows,
            column,
            lower,
            prev["number"],
        )
    if xmax8 >= _WRAP:
        _LOGGER.warning(
            "The cluster is past its first 2^32 transaction ids (epoch %d): a row "
            "frozen more than 2^31 transactions ago could be taken for a late one",
            xmax8 >> 32,
        )
    info = _span_info(
        target,
        column,
        kind,
        (lower, upper),
        (rows, late_rows, null_rows),
        f"Table {table}",
    )
    info |= {
        "snapshot": snapshot,
        "snapshot_xmin": xmin8,
        "snapshot_xmax": xmax8,
        "visible_recent_xids": sorted(int(x) for x in recent),
        "in_progress_transactions": {"count": in_progress, "oldest_start": oldest},
        "filter": row_filter,
    }
    _LOGGER.info(
        "Span %d: %s in (%s, %s], %d rows (%d committed late)",
        target.number,
        column,
        lower,
        upper,
        rows,
        late_rows,
    )
    in_range = f"{c} <= {literal}::{kind}"
    if prev:
        in_range = f"{c} > {lower_sql} AND {in_range}"
    late_scan = None
    if late_rows:
        late_scan = f"{c} <= {lower_sql}"
        if table.kind == "r" and late_rows <= MAX_LATE_TIDS:
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT array_agg(src.ctid::text ORDER BY src.ctid) FROM "
                    f"{relation} AS src WHERE {row_filter} AND {late}"
                )
                tids = ",".join(f'"{t}"' for t in cur.fetchone()[0])
            late_scan = f"src.ctid = ANY('{{{tids}}}'::tid[])"
    info["index_on_span_column"] = _has_index(conn, table, column)
    return SpanBounds(row_filter, info, in_range, late_scan)


_PG_TYPE_NAMES = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "numeric": "numeric",
    "date": "date",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
}


def _plan_query_span(
    conn, query: str, column: str, target: SpanTarget, lag: str | None
) -> SpanBounds:
    """A `--query` span: C in (W_{N-1}, W_N] with W_N = max(C) - lag.

    Without xmin, rows committed late cannot be recognised; the newest rows, C
    within `lag` of max(C) in this snapshot, are held back for the next span.
    Guarantee: a row lands in exactly one span if it has committed by the time
    rows whose C is `lag` above its own are visible; one committing later than
    that with C <= the watermark is never exported (the README says so).
    """
    if lag is None:
        raise SpanError("--span_column with --query needs --span_lag")
    c = sql.SQL("src.{}").format(sql.Identifier(column)).as_string(conn)
    with conn.cursor() as cur:
        cur.execute(f"SELECT {c} FROM {query} AS src LIMIT 0")
        type_oid = cur.description[0].type_code
        cur.execute("SELECT typname FROM pg_type WHERE oid = %s", (type_oid,))
        typname = cur.fetchone()[0]
    kind = _PG_TYPE_NAMES.get(typname)
    if kind is None:
        raise SpanError(
            f"--span_column: column {column!r} of the --query result is {typname}; "
            f"use one of {', '.join(_TYPES)}"
        )
    lag_type = (
        "numeric" if typname in ("int2", "int4", "int8", "numeric") else "interval"
    )
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT span_lag")
        try:
            cur.execute(
                f"SELECT {sql.Literal(lag).as_string(conn)}::{lag_type} < "
                f"'0'::{lag_type}"
            )
            negative = cur.fetchone()[0]
        except Exception as err:  # noqa: BLE001 - psycopg2's DataError: bad text
            cur.execute("ROLLBACK TO SAVEPOINT span_lag")
            what = "number" if lag_type == "numeric" else "PostgreSQL interval"
            raise SpanError(
                f"--span_lag {lag!r} is not a {what} "
                f"for --span_column {column} ({kind})"
            ) from err
        cur.execute("RELEASE SAVEPOINT span_lag")
    if negative:
        raise SpanError(f"--span_lag must be >= 0, got {lag!r}")
    prev = target.previous
    lower = prev["upper"] if prev else None
    lower_sql = f"{sql.Literal(lower).as_string(conn)}::{kind}"
    lag_sql = f"{sql.Literal(lag).as_string(conn)}::{lag_type}"
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT to_json(GREATEST((max({c}) - {lag_sql})::{kind}, {lower_sql})) "
            f"#>> '{{}}', max({c})::text FROM {query} AS src"
        )
        upper, newest = cur.fetchone()
    if upper is None:
        raise SpanError(
            f"--span_column {column}: the --query has no rows with a non-NULL "
            f"{column}; no span written"
        )
    literal = sql.Literal(upper).as_string(conn)
    row_filter = f"{c} <= {literal}::{kind}"
    if prev:
        row_filter = f"{c} > {lower_sql} AND {row_filter}"
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT count(*) FILTER (WHERE {row_filter}), "
            f"count(*) FILTER (WHERE {c} IS NULL) FROM {query} AS src"
        )
        rows, null_rows = cur.fetchone()
    if rows == 0:
        raise SpanError(
            f"--span_column {column}: no new rows in the --query up to max({column}) "
            f"- --span_lag ({newest} - {lag}) since "
            + (
                f"span-{prev['number']:04d} (watermark {lower})"
                if prev
                else "the start"
            )
            + "; no span written"
        )
    info = _span_info(
        target, column, kind, (lower, upper), (rows, 0, null_rows), "The --query"
    )
    info |= {
        "lag": lag,
        "newest": newest,
        "guarantee": "lag: rows committed later than rows --span_lag above them "
        "and below the watermark are not exported",
        "filter": row_filter,
        "index_on_span_column": None,
    }
    _LOGGER.info(
        "Span %d: %s in (%s, %s] (newest %s, lag %s), %d rows",
        target.number,
        column,
        lower,
        upper,
        newest,
        lag,
        rows,
    )
    return SpanBounds(row_filter, info, row_filter, None)


def _span_info(target, column, kind, bounds, counts, source: str) -> dict:
    """The keys of the manifest's `span` section every span has; warns of NULL C."""
    (lower, upper), (rows, late_rows, null_rows) = bounds, counts
    if null_rows:
        _LOGGER.warning(
            "%s has %d rows with NULL %s: no span ever holds them",
            source,
            null_rows,
            column,
        )
    previous = target.previous
    return {
        "number": target.number,
        "column": column,
        "type": kind,
        "lower": lower,
        "upper": upper,
        "previous_span": previous["number"] if previous else None,
        "rows": rows,
        "rows_late": late_rows,
        "rows_null_span_column": null_rows,
    }


def _has_index(conn, table, column: str) -> bool:
    """Whether an index (of the table, or a partitioned index) leads with `column`."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = %s::regclass AND a.attname = %s)",
            (table.identifier.as_string(conn), column),
        )
        return bool(cur.fetchone()[0])


def narrow_plan(plan, bounds: SpanBounds, *, may_merge: bool):
    """The read plan of the span: its filter in every partition, or one narrow read.

    A span of at most one partition's rows (`partitioning.ROWS_PER_PARTITION`) is
    read as one partition when `may_merge` (no --num_partitions or
    --partition_column): `C in (lower, upper]`, which an index on C serves, plus
    the late rows by ctid (a TID scan) or, beyond `MAX_LATE_TIDS` or on a
    partitioned table, by scanning `C <= lower`. Both branches keep the exact
    filter. A larger span keeps the plan's partitions (block ranges: each
    partition scans its blocks on the server, only the span's rows are sent).
    """
    from pipeline.sources import partitioning

    rows = bounds.info["rows"]
    if not may_merge or rows > partitioning.ROWS_PER_PARTITION:
        description = f"{plan.description}; span filter in every partition"
        return dataclasses.replace(
            plan, row_filter=bounds.row_filter, description=description
        )
    relation = plan.relation
    branches = [
        f"SELECT * FROM {relation} AS src WHERE {bounds.in_range} "
        f"AND {bounds.row_filter}"
    ]
    if bounds.late:
        branches.append(
            f"SELECT * FROM {relation} AS src WHERE {bounds.late} "
            f"AND {bounds.row_filter}"
        )
    how = (
        "an index range scan"
        if bounds.info["index_on_span_column"]
        else ("a scan (no index on the span column)")
    )
    late = bounds.info["rows_late"]
    description = (
        f"1 partition: span {bounds.info['number']} ({rows} rows) by {how}"
        + (f", plus {late} late rows" if late else "")
    )
    return dataclasses.replace(
        plan,
        relation="(" + " UNION ALL ".join(branches) + ")",
        partitions=tuple(partitioning.plan_single()),
        partition_key=None,
        row_filter=None,
        description=description,
    )


def count_seen_before(
    output_dir: str, number: int, raw_dir: str, key: str
) -> int | None:
    """Rows of this span whose `key` an earlier span already holds (updated rows).

    `raw_dir` is this span's raw landing; the earlier spans' are read (the key
    column only). None where that cannot be read (object stores: not counted).
    """
    import glob
    import os

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not is_local(output_dir):
        return None

    def keys(*directories: str) -> pa.Array:
        files = sorted(
            f for d in directories for f in glob.glob(os.path.join(d, "part-*.parquet"))
        )
        columns = [pq.read_table(f, columns=[key]).column(0) for f in files]
        return pa.chunked_array(columns).combine_chunks() if columns else None

    earlier = [
        os.path.join(span_dir(output_dir, k), RAW)
        for k in complete_spans(output_dir)
        if k < number
    ]
    current, prior = keys(raw_dir), keys(*earlier)  # each read once
    if current is None or prior is None:
        return 0
    return pc.sum(pc.is_in(current, value_set=prior)).as_py() or 0
