"""The read plan: what to select, how it is partitioned, and the shared snapshot.

`plan_read` runs in the launcher, once, inside the locked transaction whose snapshot
the partitions import (`snapshot.ExportedSnapshot`): it describes the source through
the catalog, projects the needed columns, checks their types, and splits the source
into partitions (see `partitioning`): a table's block ranges, a partitioned table's
leaves' block ranges, key ranges on `--partition_column`, or one partition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from psycopg2 import sql

from pipeline.sources import SourceSpec, partitioning
from pipeline.sources.partitioning import Partition
from pipeline.sources.postgres import catalog
from pipeline.sources.postgres.connection import DatabaseError
from pipeline.sources.postgres.query_guard import check_query
from pipeline.sources.postgres.snapshot import ExportedSnapshot
from pipeline.sources.read_plan import ReadPlan
from transforms.types import UnsupportedTypeError, check_mapped, read_expression

__all__ = ["SourceSpec", "ReadPlan", "plan_read", "copy_sql", "ExportedSnapshot"]

_LOGGER = logging.getLogger(__name__)


def copy_sql(plan: ReadPlan, partition: Partition) -> sql.Composable:
    """`COPY (SELECT <typed columns> FROM <relation> WHERE <partition>) TO STDOUT`."""
    select = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(
            sql.SQL(read_expression(_quoted(c.name), c)), sql.Identifier(c.name)
        )
        for c in plan.columns
    )
    key = sql.SQL(plan.partition_key) if plan.partition_key else None
    where = partitioning.where_clause(partition, key)
    if plan.row_filter:
        where = sql.SQL("({}) AND ({})").format(where, sql.SQL(plan.row_filter))
    relation = partition.relation or plan.relation
    return sql.SQL(
        "COPY (SELECT {} FROM {} AS src WHERE {}) TO STDOUT (FORMAT csv)"
    ).format(select, sql.SQL(relation), where)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def plan_read(
    source: SourceSpec,
    needed_columns: Sequence[str] | None,
    *,
    num_partitions: int | None = None,
    partition_column: str | None = None,
    snapshot: ExportedSnapshot | None = None,
) -> ReadPlan:
    """Describes, projects and partitions the source. Raises DatabaseError/ValueError.

    The plan is made in the locked transaction of `snapshot` (the one the
    partitions will read), so no DDL can come between the plan and the read.
    Without one, a locked, unexported transaction of its own is used.

    Args:
        source: the table or query.
        needed_columns: columns to select, in order, their types checked (None: all
            of them, types unchecked: the caller projects and checks).
        num_partitions: wanted partitions (None: from the row estimate).
        partition_column: split on this column's quantiles instead of blocks.
        snapshot: an entered `ExportedSnapshot` of `source`.
    """
    if snapshot is None:
        with ExportedSnapshot(source, export=False) as own:
            return plan_read(
                source,
                needed_columns,
                num_partitions=num_partitions,
                partition_column=partition_column,
                snapshot=own,
            )
    conn = snapshot.conn
    table = None
    if source.table is not None:
        # Resolved again inside the locked transaction: what the reads will see.
        table = catalog.resolve_table(conn, source.table)
        relation = table.identifier.as_string(conn)
    else:
        relation = check_query(source.query).subquery
    try:
        columns = catalog.describe(conn, sql.SQL(relation), table)
    except Exception as err:  # psycopg2.Error: the query itself is wrong
        raise DatabaseError(
            f"--query: {str(err).strip().splitlines()[0]}"
            if table is None
            else f"--table {source.table}: {str(err).strip().splitlines()[0]}"
        ) from err
    seen: set[str] = set()
    twice = [c.name for c in columns if c.name in seen or seen.add(c.name)]
    if twice:
        raise DatabaseError(
            f"--query returns column {twice[0]!r} more than once; give each result "
            "column its own name (… AS other_name)"
        )
    by_name = {c.name: c for c in columns}
    if needed_columns is not None:
        missing = [n for n in needed_columns if n not in by_name]
        if missing:
            where = f"table {table}" if table else "--query result"
            raise DatabaseError(
                f"column(s) {', '.join(map(repr, missing))} not found in {where}; "
                f"available: {', '.join(by_name)}"
            )
        columns = [by_name[n] for n in needed_columns]
    try:
        check_mapped(columns if needed_columns is not None else ())
    except UnsupportedTypeError as err:
        raise DatabaseError(str(err)) from None

    if partition_column is not None:
        if partition_column not in by_name:
            raise DatabaseError(
                f"--partition_column: column {partition_column!r} not found"
            )
        _check_partition_column(by_name[partition_column])
        row_estimate = _row_estimate(conn, table)
        wanted = num_partitions or partitioning.default_num_partitions(row_estimate)
        partition_key = _quoted(partition_column)
        bounds = _quantile_bounds(conn, relation, partition_key, wanted)
        partitions = partitioning.plan_key_ranges(bounds)
        description = (
            f"{len(partitions)} partitions: key ranges on {partition_column!r} "
            f"at {len(partitions) - 2} quantile bounds, plus NULL keys"
        )
    else:
        partition_key = None
        row_estimate, partitions, description = _plan_blocks(
            conn, table, num_partitions
        )
    if snapshot.locks:
        shown = ", ".join(snapshot.locks[:5])
        more = len(snapshot.locks) - 5
        description += f"; locked (ACCESS SHARE): {shown}"
        description += f" and {more} more" if more > 0 else ""
    _LOGGER.info("Read plan: %s (row estimate %s)", description, row_estimate)
    return ReadPlan(
        relation=relation,
        columns=tuple(columns),
        partitions=tuple(partitions),
        partition_key=partition_key,
        row_estimate=row_estimate,
        description=description,
        table=table,
        locks=snapshot.locks,
        lock_method=snapshot.lock_method,
    )


def _row_estimate(conn, table: catalog.TableRef | None) -> int:
    if table is None:
        return -1
    if table.kind == "p":
        estimates = [
            catalog.table_size(conn, leaf)[0]
            for leaf in catalog.leaf_partitions(conn, table)
            if leaf.kind != "f"
        ]
        return sum(e for e in estimates if e > 0) if estimates else 0
    return catalog.table_size(conn, table)[0]


def _plan_blocks(conn, table, num_partitions):
    """(row estimate, partitions, description) of a plan without a partition key."""
    if table is None:
        return (
            -1,
            partitioning.plan_single(),
            "1 partition: a --query is read in one partition unless "
            "--partition_column is given",
        )
    if table.kind not in ("r", "m", "p"):
        return (
            -1,
            partitioning.plan_single(),
            f"1 partition: {table} is a {_KIND_NAMES[table.kind]}, not stored here "
            "(no block ranges)",
        )
    if not catalog.can_select_table(conn, table):
        return (
            _row_estimate(conn, table),
            partitioning.plan_single(),
            "1 partition: the role may SELECT only some columns, and block ranges "
            "(ctid) need table-level SELECT; give --partition_column for key ranges",
        )
    if table.kind == "p":
        return _plan_partitioned(conn, table, num_partitions)
    row_estimate, pages = catalog.table_size(conn, table)
    wanted = num_partitions or partitioning.default_num_partitions(row_estimate)
    # Even an empty or one-block table is a block range: resumable.
    partitions = partitioning.plan_block_ranges(max(pages, 1), wanted)
    return (
        row_estimate,
        partitions,
        f"{_count(partitions)}: ctid block ranges of {pages} pages"
        + (
            ""
            if _analysed(conn, table)
            else " (never analysed: rows estimated from the size on disk)"
        ),
    )


def _plan_partitioned(conn, table, num_partitions):
    leaves = catalog.leaf_partitions(conn, table)
    sized, unreadable = [], []
    for leaf in leaves:
        if leaf.kind != "f" and not catalog.can_select_table(conn, leaf):
            unreadable.append(str(leaf))
        rows, pages = catalog.table_size(conn, leaf) if leaf.kind != "f" else (-1, 0)
        sized.append((leaf, rows, pages))
    row_estimate = sum(max(rows, 0) for _, rows, _ in sized)
    if unreadable or not leaves:
        why = (
            f"the role may not SELECT leaf {unreadable[0]} directly"
            if unreadable
            else "it has no partitions"
        )
        return (
            row_estimate,
            partitioning.plan_single(),
            f"1 partition: partitioned table {table}, read through its parent "
            f"because {why}",
        )
    wanted = num_partitions or partitioning.default_num_partitions(row_estimate)
    partitions = partitioning.plan_leaves(
        [
            (
                sql.SQL("ONLY {}").format(leaf.identifier).as_string(conn),
                str(leaf),
                pages,
                leaf.kind != "f",
            )
            for leaf, _, pages in sized
        ],
        wanted,
    )
    empty = sum(1 for leaf, _, pages in sized if leaf.kind != "f" and pages <= 0)
    if not partitions:  # every leaf is empty
        partitions = partitioning.plan_single()
    return (
        row_estimate,
        partitions,
        f"{_count(partitions)}: ctid block ranges of each of the "
        f"{len(leaves)} leaf partitions of {table} ({empty} empty, skipped)",
    )


def _count(partitions) -> str:
    return f"{len(partitions)} partition{'' if len(partitions) == 1 else 's'}"


def _analysed(conn, table) -> bool:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT reltuples >= 0 FROM pg_class WHERE oid = %s::regclass",
            (table.identifier.as_string(conn),),
        )
        return bool(cur.fetchone()[0])


def _check_partition_column(column) -> None:
    """Key ranges need scalar values of a mapped type (numbers, text, times)."""
    try:
        _ = column.kind
    except UnsupportedTypeError:
        supported = False
    else:
        supported = not column.is_array
    if not supported:
        raise DatabaseError(
            f"--partition_column: column {column.name!r} has type "
            f"{column.display_type}; key ranges need a column of scalar numbers, "
            "text, dates or timestamps"
        )


_KIND_NAMES = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
}


def _quantile_bounds(conn, relation: str, key: str, n: int) -> list:
    if n <= 1:
        return []
    fractions = [i / n for i in range(1, n)]
    with conn.cursor() as cur:
        # No query parameters: a `%` in a --query's text must stay a `%`.
        cur.execute(
            sql.SQL(
                "SELECT percentile_disc({f}::float8[]) WITHIN GROUP (ORDER BY {k}) "
                "FROM {r} AS src WHERE {k} IS NOT NULL"
            ).format(f=sql.Literal(fractions), k=sql.SQL(key), r=sql.SQL(relation))
        )
        row = cur.fetchone()
    return list(row[0] or [])
