"""The MySQL read plan: describe, check and partition the source; SELECT a partition.

`plan_read` runs in the launcher's session (`session.MySqlSession`): it describes
the `--table` (information_schema) or `--query` (result metadata), refuses
unmapped types naming the column and the cast, and splits the rows into key
ranges of one orderable column: `--partition_column`, else the first primary key
column, else one partition. Bounds are the first key of each of N equal tiles
(`NTILE(N) OVER (ORDER BY key)`), so ranges are balanced by rows; the shared
planner (`partitioning.plan_key_ranges`) makes `key < b1`, `b1 <= key < b2`, …,
`key >= bk` and one `key IS NULL` partition: every row exactly once.

Only integer, DECIMAL, DATE, DATETIME and TIMESTAMP keys split a read: a text
key's ranges would be compared under the column's collation (case-insensitive
and PAD SPACE by default), where `'a' = 'A '` and a bound can fall between two
equal keys; and a float key's comparisons mix DECIMAL and DOUBLE. Such a
`--partition_column` is refused with one line.

`select_sql` is the SELECT of one partition: every column through its read
expression (`read_expression`), which the reader parses into Arrow exactly.
"""

from __future__ import annotations

import decimal
import logging

from pipeline.sources import DatabaseError, partitioning
from pipeline.sources.mysql import catalog
from pipeline.sources.mysql.catalog import MySqlColumn, quote
from pipeline.sources.mysql.query_guard import check_query
from pipeline.sources.partitioning import Partition
from pipeline.sources.read_plan import ReadPlan
from transforms.types import Column

__all__ = [
    "ZERO_DATE",
    "plan_read",
    "select_sql",
    "read_expression",
    "literal",
    "PARTITION_FAMILIES",
]

_LOGGER = logging.getLogger(__name__)

# What a DATE/DATETIME read expression yields for a zero date (`0000-00-00`,
# `2020-00-10`, …): the reader counts it and makes it NULL.
ZERO_DATE = b"Z"
PARTITION_FAMILIES = ("int", "decimal", "date", "datetime")
_EPOCH = "'1970-01-01'"


def read_expression(ref: str, column: Column) -> str:
    """The SELECT expression of a column: text the reader parses exactly.

    Integers, DECIMAL and DOUBLE as the server prints them (a DOUBLE's text
    round-trips); FLOAT widened to DOUBLE first (its own text is rounded to 6
    digits); BIT(1) and YEAR as numbers; DATE as days and DATETIME/TIMESTAMP as
    whole seconds since 1970-01-01 (fractions floored; DATETIME taken as UTC,
    TIMESTAMP as its stored UTC instant), or `Z` for a zero date; text as utf8mb4.
    """
    family = catalog.family(column)
    if family in ("bit", "year"):
        return f"({ref} + 0)"
    if family == "float":
        return f"CAST({ref} AS DOUBLE)"
    if family == "date":
        return f"IF({ref} IS NULL, NULL, IFNULL(DATEDIFF({ref}, {_EPOCH}), 'Z'))"
    if family == "datetime" and column.pg_type == "timestamptz":  # TIMESTAMP
        # Its stored UTC seconds, fraction floored; a zero TIMESTAMP gives 0, which
        # no other TIMESTAMP has (they start at 1970-01-01 00:00:01 UTC). Half the
        # server time of the DATETIME expression (bench/RESULTS.md).
        seconds = f"FLOOR(NULLIF(UNIX_TIMESTAMP({ref}), 0))"
        return f"IF({ref} IS NULL, NULL, IFNULL({seconds}, 'Z'))"
    if family == "datetime":
        seconds = (
            f"DATEDIFF({ref}, {_EPOCH}) * 86400 + HOUR({ref}) * 3600 + "
            f"MINUTE({ref}) * 60 + SECOND({ref})"
        )
        return f"IF({ref} IS NULL, NULL, IFNULL({seconds}, 'Z'))"
    return ref


def literal(value) -> str:
    """A bound as a SQL literal: integers as numbers, anything else quoted."""
    if isinstance(value, (int, decimal.Decimal)):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace("'", "''")
    return f"'{text}'"


def _where(partition: Partition, key: str | None) -> str:
    if partition.kind == "all":
        return "TRUE"
    if partition.kind == "null":
        return f"{key} IS NULL"
    terms = []
    if partition.lower is not None:
        terms.append(f"{key} >= {literal(partition.lower)}")
    if partition.upper is not None:
        terms.append(f"{key} < {literal(partition.upper)}")
    return " AND ".join(terms) or f"{key} IS NOT NULL"


def select_sql(plan: ReadPlan, partition: Partition) -> str:
    """`SELECT <one CSV line per row> FROM <relation> AS src WHERE <partition>`.

    Each row comes as one text: its read expressions (`read_expression`) joined
    by commas, text quoted CSV-style (`"` doubled) so an empty string stays
    apart from NULL (an empty, unquoted field). One value per row instead of
    one per cell is what makes the client fast; pyarrow's CSV reader parses
    the lines with the plan's types (`partition_reader.csv_to_batch`).
    """
    cells = []
    for column in plan.columns:
        value = read_expression("src." + quote(column.name), column)
        if catalog.family(column) == "text":
            text = f"CONVERT({value} USING utf8mb4) COLLATE utf8mb4_bin"
            cells.append(
                f"IF({value} IS NULL, '', CONCAT('\"', REPLACE({text}, '\"', "
                "'\"\"'), '\"'))"
            )
        else:
            cells.append(f"IFNULL({value}, '')")
    row = ", ',', ".join(cells)
    where = _where(partition, plan.partition_key)
    if plan.row_filter:
        where = f"({where}) AND ({plan.row_filter})"
    return f"SELECT CONCAT({row}) FROM {plan.relation} AS src WHERE {where}"


def plan_read(
    session,
    spec,
    *,
    num_partitions: int | None = None,
    partition_column: str | None = None,
) -> tuple[ReadPlan, dict[str, MySqlColumn]]:
    """(plan, described columns by name) of `spec`, made on `session.conn`.

    Raises DatabaseError naming the flag, table or column.
    """
    conn = session.conn
    table = session.table
    if table is not None:
        relation = table.identifier
        where = f"table {table}"
        described = catalog.table_columns(conn, table)
    else:
        relation = check_query(spec.query).subquery
        where = "the --query result"
        try:
            described = catalog.query_columns(conn, relation + " AS src")
        except Exception as err:  # the driver's error: the query itself is wrong
            from pipeline.sources.mysql.connection import driver_error

            raise DatabaseError(driver_error(err, "--query", spec.dsn)) from None
    seen: set[str] = set()
    for column in described:
        if column.column.name in seen:
            raise DatabaseError(
                f"--query returns column {column.column.name!r} more than once; "
                "give each result column its own name (… AS other_name)"
            )
        seen.add(column.column.name)
    refused = [c for c in described if c.refused]
    if refused:
        raise DatabaseError(catalog.unsupported_message(refused[0], where))
    by_name = {c.column.name: c for c in described}
    row_estimate = catalog.row_estimate(conn, table)
    key_name, why = _partition_key(session, table, by_name, partition_column)
    if key_name is None:
        partitions = partitioning.plan_single()
        partition_key = None
        description = f"1 partition: {why}"
    else:
        wanted = num_partitions or partitioning.default_num_partitions(row_estimate)
        partition_key = "src." + quote(key_name)
        bounds = _tile_bounds(conn, relation, partition_key, by_name[key_name], wanted)
        partitions = partitioning.plan_key_ranges(bounds)
        description = (
            f"{len(partitions)} partitions: key ranges on {key_name!r} at "
            f"{len(partitions) - 2} tile bounds ({why}), plus NULL keys"
        )
    description += "; " + session.consistency_description
    _LOGGER.info("Read plan: %s (row estimate %s)", description, row_estimate)
    plan = ReadPlan(
        relation=relation,
        columns=tuple(c.column for c in described),
        partitions=tuple(partitions),
        partition_key=partition_key,
        row_estimate=row_estimate,
        description=description,
        table=table,
        locks=(str(table),) if table is not None else (),  # MDL (see session)
        lock_method=session.lock_method,
        consistency=session.consistency,
    )
    return plan, by_name


def _partition_key(session, table, by_name, partition_column):
    """(column to split on or None, why) for the plan's description."""
    if partition_column is not None:
        column = by_name.get(partition_column)
        if column is None:
            raise DatabaseError(
                f"--partition_column: column {partition_column!r} not found; "
                f"have {sorted(by_name)}"
            )
        if column.source_type not in PARTITION_FAMILIES:
            raise DatabaseError(
                f"--partition_column {partition_column}: type "
                f"{column.column.display_type} cannot split a MySQL read exactly "
                "(only integer, DECIMAL, DATE, DATETIME and TIMESTAMP columns: text "
                "compares under its collation, case- and trailing-space-insensitive)"
            )
        return partition_column, "--partition_column"
    if table is None:
        return None, "a --query is read in one partition unless --partition_column"
    key = session.primary_key(table)
    if not key:
        return None, f"{table} has no primary key (give --partition_column)"
    first = by_name[key[0]]
    if first.source_type not in PARTITION_FAMILIES:
        return None, (
            f"primary key column {key[0]!r} is {first.column.display_type}, which "
            "cannot split a read exactly (give --partition_column)"
        )
    return key[0], f"primary key column {key[0]!r}"


def _tile_bounds(conn, relation: str, key: str, column: MySqlColumn, n: int) -> list:
    """The first key of tiles 2..n of the non-NULL keys in key order."""
    if n <= 1:
        return []
    cur = conn.cursor(raw=True)
    try:
        cur.execute(
            f"SELECT MIN(k) FROM (SELECT {key} AS k, NTILE({int(n)}) OVER "
            f"(ORDER BY {key}) AS tile FROM {relation} AS src WHERE {key} IS NOT "
            "NULL) AS tiles WHERE tile > 1 GROUP BY tile ORDER BY tile"
        )
        rows = cur.fetchall()
    finally:
        cur.close()
    values = [row[0].decode("utf-8") for row in rows if row[0] is not None]
    if column.source_type == "int":
        return [int(v) for v in values]
    if column.source_type == "decimal":  # compared as numbers, not as text
        return [decimal.Decimal(v) for v in values]
    return values  # DATE/DATETIME text: fixed width, sorts as the values do
