"""The read plan: what to select, how it is partitioned, and the shared snapshot.

`plan_read` runs in the launcher, once: it describes the source through the catalog,
projects the needed columns, checks their types, and splits the source into
partitions (see `partitioning`). `ExportedSnapshot` holds a REPEATABLE READ READ ONLY
transaction open and exports its snapshot so that every partition read, on any
worker, sees the same instant.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import psycopg2
from psycopg2 import sql

from pipeline import catalog, partitioning
from pipeline.connection import DatabaseError, Dsn, connect
from pipeline.partitioning import Partition
from pipeline.query_guard import check_query
from transforms.types import Column, UnsupportedTypeError, read_expression

__all__ = ["SourceSpec", "ReadPlan", "plan_read", "copy_sql", "ExportedSnapshot"]

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """What to read: exactly one of `table` and `query`, on `dsn` (plain, picklable)."""

    dsn: Dsn
    table: str | None = None
    query: str | None = None


@dataclasses.dataclass(frozen=True)
class ReadPlan:
    """Everything a partition reader needs, decided once by the launcher.

    Attributes:
        relation: SQL text of the FROM item (a quoted table or a parenthesised query).
        columns: the projected columns, in output order.
        partitions: slices whose union is every row exactly once.
        partition_key: quoted SQL of the partition column (key-range plans).
        row_estimate: the catalog's estimate, -1 when unknown.
        description: how the plan was chosen, for the log and the manifest.
    """

    relation: str
    columns: tuple[Column, ...]
    partitions: tuple[Partition, ...]
    partition_key: str | None
    row_estimate: int
    description: str
    table: catalog.TableRef | None = None

    def column(self, name: str) -> Column:
        """The projected column called `name`."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


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
    return sql.SQL(
        "COPY (SELECT {} FROM {} AS src WHERE {}) TO STDOUT (FORMAT csv)"
    ).format(select, sql.SQL(plan.relation), where)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def plan_read(
    source: SourceSpec,
    needed_columns: Sequence[str] | None,
    *,
    num_partitions: int | None = None,
    partition_column: str | None = None,
) -> ReadPlan:
    """Describes, projects and partitions the source. Raises DatabaseError/ValueError.

    Args:
        source: the table or query.
        needed_columns: columns to select, in order, their types checked (None: all
            of them, types unchecked: the caller projects and checks).
        num_partitions: wanted partitions (None: from the row estimate).
        partition_column: split on this column's quantiles instead of blocks.
    """
    conn = connect(source.dsn)
    try:
        conn.set_session(readonly=True)
        table = None
        if source.table is not None:
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
        problems = []
        for column in columns if needed_columns is not None else ():
            try:
                _ = column.kind
            except UnsupportedTypeError as err:
                problems.append(str(err))
        if problems:
            raise DatabaseError("; ".join(problems))

        row_estimate, pages = (-1, 0)
        if table is not None:
            row_estimate, pages = catalog.table_size(conn, table)
        wanted = num_partitions or partitioning.default_num_partitions(row_estimate)
        partition_key = None
        if partition_column is not None:
            if partition_column not in by_name:
                raise DatabaseError(
                    f"--partition_column: column {partition_column!r} not found"
                )
            partition_key = _quoted(partition_column)
            bounds = _quantile_bounds(conn, relation, partition_key, wanted)
            partitions = partitioning.plan_key_ranges(bounds)
            description = (
                f"{len(partitions)} partitions: key ranges on {partition_column!r} "
                f"at {len(partitions) - 2} quantile bounds, plus NULL keys"
            )
        elif table is not None and pages > 0:
            partitions = partitioning.plan_block_ranges(pages, wanted)
            description = (
                f"{len(partitions)} partitions: ctid block ranges of {pages} pages"
            )
        else:
            partitions = partitioning.plan_single()
            description = (
                "1 partition: a --query is read in one partition unless "
                "--partition_column is given"
                if table is None
                else "1 partition: the table is empty or not a plain table"
            )
        conn.rollback()
    finally:
        conn.close()
    _LOGGER.info("Read plan: %s (row estimate %s)", description, row_estimate)
    return ReadPlan(
        relation=relation,
        columns=tuple(columns),
        partitions=tuple(partitions),
        partition_key=partition_key,
        row_estimate=row_estimate,
        description=description,
        table=table,
    )


def _quantile_bounds(conn, relation: str, key: str, n: int) -> list:
    if n <= 1:
        return []
    fractions = [i / n for i in range(1, n)]
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY {k}) "
                "FROM {r} AS src WHERE {k} IS NOT NULL"
            ).format(k=sql.SQL(key), r=sql.SQL(relation)),
            (fractions,),
        )
        row = cur.fetchone()
    return list(row[0] or [])


class ExportedSnapshot:
    """Context manager: a REPEATABLE READ READ ONLY transaction with an exported id.

    The transaction (and so the snapshot) lives until `__exit__`; the launcher keeps
    it open until the pipeline has finished reading.
    """

    def __init__(self, dsn: Dsn):
        self._dsn = dsn
        self._conn = None
        self.snapshot_id: str | None = None

    def __enter__(self) -> ExportedSnapshot:
        self._conn = connect(self._dsn)
        self._conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with self._conn.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot()")
            self.snapshot_id = cur.fetchone()[0]
        _LOGGER.info("Exported snapshot %s for all partition reads", self.snapshot_id)
        return self

    def __exit__(self, *exc) -> None:
        if self._conn is not None:
            try:
                if not self._conn.closed:
                    self._conn.rollback()
            except psycopg2.Error:
                pass  # the server went away: the snapshot is gone with it
            finally:
                self._conn.close()
                self._conn = None
