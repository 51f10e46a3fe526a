"""What the launcher asks the PostgreSQL catalog: tables, columns, keys, sizes.

Column types always come from the catalog, never from the values: a table's from
`pg_attribute` (no SELECT on it, so a role granted SELECT on some columns only can
be described), a `--query`'s from its result description (`pg_type` oids). NOT NULL
is known for table columns only; a `--query`'s columns are treated as nullable.
"""

from __future__ import annotations

import dataclasses

from psycopg2 import sql

from pipeline.sources.postgres.connection import DatabaseError
from transforms.types import Column

__all__ = [
    "TableRef",
    "resolve_table",
    "describe",
    "describe_table",
    "primary_key",
    "table_size",
    "leaf_partitions",
    "can_select_table",
]


@dataclasses.dataclass(frozen=True)
class TableRef:
    """A resolved table: schema and name exactly as stored in the catalog.

    `kind` is its `pg_class.relkind`: r table, p partitioned table, v view,
    m materialized view, f foreign table.
    """

    schema: str
    name: str
    kind: str = "r"

    @property
    def stored_locally(self) -> bool:
        """Whether its rows are stored here, so one snapshot fixes them.

        A view is computed at every read (it may call `random()` or `now()`), and
        a foreign table's rows live on another server, outside our snapshot.
        """
        return self.kind in ("r", "p", "m")

    @property
    def identifier(self) -> sql.Composable:
        """The quoted, schema-qualified identifier."""
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


def resolve_table(conn, table: str) -> TableRef:
    """Finds `--table` in the catalog.

    The name is tried first verbatim (mixed case, spaces, dots and quotes need no
    quoting), then as an SQL-syntax name such as `schema.table` or `"My Table"`.
    Nothing the user typed is ever spliced into SQL text.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = %s AND c.relkind IN ('r','p','v','m','f') "
            "AND pg_table_is_visible(c.oid)",
            (table,),
        )
        row = cur.fetchone()
        if row is None:
            cur.execute("SAVEPOINT resolve")
            try:
                cur.execute(
                    "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.oid = to_regclass(%s)",
                    (table,),
                )
                row = cur.fetchone()
            except Exception:  # noqa: BLE001 - invalid name syntax means "not found"
                cur.execute("ROLLBACK TO SAVEPOINT resolve")
                row = None
    if row is None:
        raise DatabaseError(
            f"--table: table {table!r} does not exist (or is not visible)"
        )
    if row[2] not in _READABLE_KINDS:
        what = _OTHER_KINDS.get(row[2], f"a relation of kind {row[2]!r}")
        raise DatabaseError(
            f"--table {table!r} is {what}, not a table, partitioned table, view, "
            "materialized view or foreign table"
        )
    return TableRef(schema=row[0], name=row[1], kind=row[2])


_READABLE_KINDS = frozenset("rpvmf")  # pg_class.relkind of what --table reads
_OTHER_KINDS = {
    "S": "a sequence",
    "i": "an index",
    "I": "a partitioned index",
    "c": "a composite type",
    "t": "a TOAST table",
}


_TYPE_QUERY = """
SELECT oid, typname, typtype, typbasetype, typelem, typcategory, format_type(oid, NULL)
FROM pg_type WHERE oid = ANY(%s)
"""


def _type_rows(cur, oids) -> dict[int, tuple]:
    """`pg_type` rows of `oids` and of every type they are built on.

    oid -> (name, typtype, base type, element type, category, shown name); the
    types built on are domains' base types and arrays' element types, at any
    depth (a domain over a domain, an array of a domain, a domain over an array).
    """
    rows: dict[int, tuple] = {}
    wanted, asked = set(oids), set()
    while wanted:
        asked |= wanted
        cur.execute(_TYPE_QUERY, (sorted(wanted),))
        rows.update((row[0], row[1:]) for row in cur)
        wanted = {
            ref
            for _, typtype, base, element, category, _ in rows.values()
            for ref in (
                base if typtype == "d" else 0,
                element if category == "A" else 0,
            )
            if ref
        } - asked
    return rows


def _base_type(rows: dict[int, tuple], oid: int) -> int:
    """The type a (possibly nested) domain is over; any other type itself."""
    seen = set()
    while rows[oid][1] == "d" and oid not in seen:
        seen.add(oid)
        oid = rows[oid][2]
    return oid


def _type_name(rows: dict[int, tuple], oid: int) -> str:
    """The catalog type name our type mapping knows: 'enum' for any enum."""
    return "enum" if rows[oid][1] == "e" else rows[oid][0]


def describe_table(conn, table: TableRef) -> list[Column]:
    """Describes a table's (view's, …) columns from `pg_attribute`, in order.

    Needs no privilege on the table's rows: `SELECT *` would fail for a role granted
    SELECT on some columns only. Types are shown with their modifiers
    (`numeric(10,2)`, `character varying(20)`), so a precision change is visible.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname, a.atttypid, a.attnotnull, a.attndims, "
            "format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY a.attnum",
            (table.identifier.as_string(conn),),
        )
        described = [
            (name, oid, bool(not_null), int(ndims), display)
            for name, oid, not_null, ndims, display in cur
        ]
    return _columns(conn, described)


def _columns(conn, described: list[tuple]) -> list[Column]:
    """Columns from (name, type oid, NOT NULL, declared dimensions, shown type).

    The shown type may be None: the type's own name is used.
    """
    with conn.cursor() as cur:
        rows = _type_rows(cur, {d[1] for d in described})
    columns = []
    for name, oid, not_null, ndims, shown in described:
        base = _base_type(rows, oid)
        is_array = rows[base][4] == "A" and rows[base][3] in rows
        element = _base_type(rows, rows[base][3]) if is_array else None
        display = shown or rows[oid][5]
        columns.append(
            Column(
                name=name,
                pg_type=_type_name(rows, element if is_array else base),
                display_type=display,
                is_array=is_array,
                not_null=not_null,
                ndims=ndims,
            )
        )
    return columns


def describe(conn, source: sql.Composable, table: TableRef | None) -> list[Column]:
    """Describes the columns of `SELECT * FROM (source)` using catalog types.

    Args:
        conn: an open connection.
        source: a relation or a parenthesised query, as SQL.
        table: a table is described from the catalog instead (`describe_table`).
    """
    if table is not None:
        return describe_table(conn, table)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM {} AS q LIMIT 0").format(source))
        # A query's columns are nullable and carry no declared dimensions.
        described = [(d.name, d.type_code, False, 0, None) for d in cur.description]
    return _columns(conn, described)


def primary_key(conn, table: TableRef) -> list[str]:
    """The primary key columns of a table, in key order (empty when none)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname FROM pg_index i "
            "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON TRUE "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY k.ord",
            (sql.Identifier(table.schema, table.name).as_string(conn),),
        )
        return [row[0] for row in cur]


def table_size(conn, table: TableRef) -> tuple[int, int]:
    """Returns (row estimate, current number of heap blocks) of a table.

    The row estimate comes from `pg_class.reltuples` scaled to the current size
    (as the planner does). A table never analysed or vacuumed (reltuples -1, or
    no pages recorded) is estimated from its size on disk as the planner does
    then: blocks × rows per block from the columns' type widths (32 bytes per
    variable-length value, plus the tuple header and line pointer).
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.reltuples, c.relpages, "
            "pg_relation_size(c.oid) / current_setting('block_size')::int8, "
            "current_setting('block_size')::int8, "
            "(SELECT coalesce(sum(CASE WHEN t.typlen > 0 THEN t.typlen ELSE 32 END), 0)"
            " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) "
            "FROM pg_class c WHERE c.oid = %s::regclass",
            (sql.Identifier(table.schema, table.name).as_string(conn),),
        )
        reltuples, relpages, pages, block_size, width = cur.fetchone()
    if reltuples >= 0 and relpages > 0:
        return int(reltuples / relpages * pages), int(pages)
    if pages <= 0:
        return (0 if reltuples >= 0 else -1), int(pages)
    # 24-byte page header; 24-byte (aligned) tuple header + 4-byte line pointer.
    per_block = max(1, (int(block_size) - 24) // (int(width) + 28))
    return int(pages) * per_block, int(pages)


def leaf_partitions(conn, table: TableRef) -> list[TableRef]:
    """The leaf partitions of a declaratively partitioned table, in catalog order.

    Sub-partitioned children are walked down to their leaves; a leaf may be a
    foreign table (kind f).
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT n.nspname, c.relname, c.relkind "
            "FROM pg_partition_tree(%s::regclass) t "
            "JOIN pg_class c ON c.oid = t.relid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE t.isleaf ORDER BY n.nspname, c.relname",
            (table.identifier.as_string(conn),),
        )
        return [TableRef(schema=s, name=n, kind=k) for s, n, k in cur]


def can_select_table(conn, table: TableRef) -> bool:
    """Whether the session may SELECT the whole table (not just some columns).

    ctid block ranges and LOCK TABLE need this table-level privilege.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT has_table_privilege(%s::regclass, 'SELECT')",
            (table.identifier.as_string(conn),),
        )
        return bool(cur.fetchone()[0])
