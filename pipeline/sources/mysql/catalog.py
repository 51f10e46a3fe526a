"""The MySQL/MariaDB catalog: tables, columns, primary keys, row estimates.

Columns come from `information_schema.columns` for a `--table` and from the
result metadata of `SELECT * FROM (<query>) AS src LIMIT 0` for a `--query`, and
are mapped onto the shared type vocabulary of `transforms.types.Column`
(`pg_type`, PostgreSQL's spelling) with the MySQL spelling in `display_type`
(README, "MySQL and MariaDB types"):

| MySQL / MariaDB                                   | pg_type     | kind      |
|---------------------------------------------------|-------------|-----------|
| TINYINT, SMALLINT, MEDIUMINT, INT, BIGINT, YEAR   | int2/4/8    | INT       |
| BIGINT UNSIGNED (values above 2**63-1 refused)    | int8        | INT       |
| TINYINT(1) / BOOL, BIT(1)                         | int2        | INT (0/1) |
| DECIMAL                                           | numeric     | FLOAT     |
| FLOAT, DOUBLE                                     | float4/8    | FLOAT     |
| CHAR, VARCHAR, TEXT types (any character set)     | bpchar/text | BYTES     |
| ENUM, SET                                         | enum/text   | BYTES     |
| DATE                                              | date        | DATE      |
| DATETIME (taken as UTC), TIMESTAMP                | timestamp/tz| TIMESTAMP |

Everything else (JSON, BLOB, BINARY, VARBINARY, GEOMETRY, BIT(n>1), TIME) is
refused before the run by `unsupported_message`, naming the column and the cast.
"""

from __future__ import annotations

import dataclasses

from transforms.types import Column

__all__ = [
    "TableRef",
    "MySqlColumn",
    "family",
    "unsigned_bigint",
    "quote",
    "resolve_table",
    "table_columns",
    "query_columns",
    "primary_key",
    "row_estimate",
    "unsupported_message",
]


def quote(name: str) -> str:
    """`name` as a MySQL identifier: in backticks, backticks doubled."""
    return "`" + name.replace("`", "``") + "`"


@dataclasses.dataclass(frozen=True)
class TableRef:
    """A resolved `--table`: its database (schema) and name, as stored."""

    schema: str
    name: str

    @property
    def identifier(self) -> str:
        """The quoted, qualified SQL name."""
        return f"{quote(self.schema)}.{quote(self.name)}"

    @property
    def stored_locally(self) -> bool:
        """False: a MySQL table is never read twice (`pipeline.build.rereads`).

        Partitions cannot re-enter one snapshot in MySQL, so a second read need
        not see the same rows as the first; the runner holds the rows instead.
        """
        return False

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclasses.dataclass(frozen=True)
class MySqlColumn:
    """A described column: the shared `Column`, and why it cannot be read, if so.

    Attributes:
        column: the shared description (pg_type from the table above).
        refused: the cast to suggest when the type has no mapping, else None.
    """

    column: Column
    refused: str | None = None

    @property
    def source_type(self) -> str:
        """`family(column)`."""
        return family(self.column)


def family(column: Column) -> str:
    """How a mapped column is read (its family).

    `int`, `bit`, `year`, `decimal`, `float`, `double`, `date`, `datetime`
    (DATETIME and TIMESTAMP) or `text`. Derived from the shared `Column` alone
    (its MySQL spelling in `display_type`), so a projected `ReadPlan` is all a
    reader needs.
    """
    shown = column.display_type.lower()
    if shown.startswith("bit"):
        return "bit"
    if shown.startswith("year"):
        return "year"
    return _FAMILIES.get(column.pg_type, "text")


_FAMILIES = {
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "numeric": "decimal",
    "float4": "float",
    "float8": "double",
    "date": "date",
    "timestamp": "datetime",
    "timestamptz": "datetime",
}


_ZERO_DATES = "zero dates ('0000-00-00', partial zero dates) read as NULL, counted"
_NOTES = {
    "decimal": "read as the nearest float64 (precision beyond ~16 significant "
    "digits is lost), then float32 in features",
    "float": "FLOAT widened to float64 exactly, then float32 in features",
    "double": "float32 in features (float64 in the raw Arrow and Parquet)",
    "bit": "0/1",
    "year": "the year as an integer (the zero year is 0)",
    "date": f"days since 1970-01-01; {_ZERO_DATES} in zero_dates",
}


def conversion_note(column: Column) -> str | None:
    """How the MySQL source changes `column`'s values (the manifest's note)."""
    kind = family(column)
    shown = column.display_type.lower()
    if kind == "datetime":
        zone = "UTC" if column.pg_type == "timestamptz" else "taken as UTC"
        return (
            f"seconds since 1970-01-01, floored ({zone}); {_ZERO_DATES} in zero_dates"
        )
    if unsigned_bigint(column):
        return "int64; a value above 2**63-1 fails the read"
    if kind == "int" and column.pg_type == "int8":
        return "float64 where a built-in transform scales it"
    if kind == "text":
        if shown.startswith(("enum", "set")):
            return "its label(s), as text"
        if shown.startswith("char"):
            return "trailing blanks dropped (MySQL's CHAR retrieval)"
        return "UTF-8 (converted from the column's character set)"
    return _NOTES.get(kind)


def with_note(column: Column) -> Column:
    """`column` with its `conversion_note` (see `transforms.types.Column.note`)."""
    return dataclasses.replace(column, note=conversion_note(column))


def unsigned_bigint(column: Column) -> bool:
    """BIGINT UNSIGNED: values above 2**63-1 are refused as they are read."""
    shown = column.display_type.lower()
    return shown.startswith("bigint") and "unsigned" in shown


def _split_table(text: str) -> tuple[str | None, str]:
    """`db.table`, `` `d.b`.`t` `` or `table` -> (database or None, table).

    Bare parts end at a dot; a part in backticks may hold dots, a doubled
    backtick stands for one.
    """
    parts: list[str] = []
    i, text = 0, text.strip()
    while True:
        if text[i : i + 1] == "`":
            name, i = "", i + 1
            while True:
                end = text.find("`", i)
                if end < 0:
                    raise ValueError("unterminated backtick")
                name += text[i:end]
                if text[end + 1 : end + 2] == "`":
                    name, i = name + "`", end + 2
                    continue
                i = end + 1
                break
        else:
            end = text.find(".", i)
            end = len(text) if end < 0 else end
            name, i = text[i:end], end
            if "`" in name:
                raise ValueError("a backtick inside a bare name")
        parts.append(name)
        if i >= len(text):
            break
        if text[i] != ".":
            raise ValueError("text after a quoted name")
        i += 1
    if len(parts) > 2 or any(p == "" for p in parts):
        raise ValueError("not a table name")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def resolve_table(conn, text: str, default_database: str) -> TableRef:
    """The table `--table` names, as stored; raises DatabaseError when absent.

    `db.table` names a table in another database; a bare name is looked up in
    the URL's database. A name holding a dot is written in backticks
    (`` `my.table` ``).
    """
    from pipeline.sources import DatabaseError

    try:
        schema, name = _split_table(text)
    except ValueError:
        raise DatabaseError(
            f"--table {text}: not a table name (write db.table, or quote a name "
            "holding a dot or backtick in backticks, doubling inner backticks)"
        ) from None
    schema = schema or default_database
    if not schema:
        raise DatabaseError(
            f"--table {text}: no database given; name it in --db_url "
            "(mysql://…/database) or as database.table"
        )
    rows = _rows(
        conn,
        "SELECT table_schema, table_name, table_type FROM information_schema.tables "
        "WHERE table_schema = %s AND table_name = %s",
        (schema, name),
    )
    if not rows:
        raise DatabaseError(
            f"--table {text}: no such table or view in database {schema!r} "
            "(or no privilege on it)"
        )
    return TableRef(_text(rows[0][0]), _text(rows[0][1]))


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else value


def _rows(conn, statement: str, params=()) -> list[tuple]:
    cur = conn.cursor()
    try:
        cur.execute(statement, params)
        return list(cur.fetchall())
    finally:
        cur.close()


_INT_TYPES = {"tinyint": 2, "smallint": 2, "mediumint": 4, "int": 4, "integer": 4}
_TEXT_TYPES = {"varchar", "tinytext", "text", "mediumtext", "longtext"}


_GEOMETRY_TYPES = {
    "geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
    "multipolygon", "geometrycollection",
}  # fmt: skip
_BLOB_TYPES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
_SIMPLE_TYPES = {
    "bigint": "int8",
    "year": "int2",
    "decimal": "numeric",
    "numeric": "numeric",
    "float": "float4",
    "double": "float8",
    "real": "float8",
    "enum": "enum",
    "set": "text",
    "date": "date",
    "datetime": "timestamp",
    "timestamp": "timestamptz",
}


def _map_table_type(
    data_type: str, column_type: str, charset: str | None
) -> tuple[str, str | None]:
    """(pg_type, None) of a mapped column, or ("", the cast to suggest)."""
    unsigned = "unsigned" in column_type
    if data_type in _INT_TYPES:
        if column_type.startswith("tinyint(1)") and not unsigned:
            return "int2", None  # BOOL
        width = _INT_TYPES[data_type] * (2 if unsigned else 1)
        return {2: "int2", 4: "int4", 8: "int8"}[width], None
    if data_type in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[data_type], None
    if data_type == "bit":
        if column_type == "bit(1)":
            return "int2", None
        return "", "CAST(`{c}` AS UNSIGNED) (BIT(64) may exceed int64)"
    if data_type == "char" or data_type in _TEXT_TYPES:
        if charset in (None, "binary"):
            return "", "HEX(`{c}`)"
        return {"char": "bpchar", "varchar": "varchar"}.get(data_type, "text"), None
    if data_type == "time":
        return "", "TIME_TO_SEC(`{c}`) (seconds, may be negative)"
    if data_type == "json":
        return "", "CAST(`{c}` AS CHAR) or JSON_VALUE(`{c}`, '$.field')"
    if data_type in _BLOB_TYPES:
        return "", "HEX(`{c}`) or LENGTH(`{c}`)"
    if data_type in _GEOMETRY_TYPES:
        return "", "ST_AsText(`{c}`)"
    return "", "CAST(`{c}` AS CHAR)"


def table_columns(conn, table: TableRef) -> list[MySqlColumn]:
    """`table`'s columns in order (`information_schema.columns`)."""
    rows = _rows(
        conn,
        "SELECT column_name, data_type, column_type, is_nullable, character_set_name "
        "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
        "ORDER BY ordinal_position",
        (table.schema, table.name),
    )
    columns = []
    for name, data_type, column_type, nullable, charset in rows:
        name, data_type = _text(name), _text(data_type).lower()
        column_type, charset = _text(column_type).lower(), _text(charset)
        pg_type, refused = _map_table_type(data_type, column_type, charset)
        columns.append(
            MySqlColumn(
                with_note(
                    Column(
                        name,
                        pg_type or data_type,
                        column_type,
                        not_null=_text(nullable) == "NO",
                    )
                ),
                refused.replace("`{c}`", quote(name)) if refused else None,
            )
        )
    return columns


# mysql.connector FieldType codes of result metadata (`cursor.description`).
_BINARY_CHARSET = 63
_UNSIGNED_FLAG = 32
_ENUM_FLAG, _SET_FLAG = 256, 2048


def query_columns(conn, relation: str) -> list[MySqlColumn]:
    """The columns of `SELECT * FROM <relation> LIMIT 0` from its result metadata.

    A query's columns are nullable for all we know (`not_null` False).
    """
    from mysql.connector import FieldType

    cur = conn.cursor(raw=True)
    try:
        cur.execute(f"SELECT * FROM {relation} LIMIT 0")
        description = list(cur.description)
        cur.fetchall()
    finally:
        cur.close()
    ints = {
        FieldType.TINY: ("int2", "int2", "tinyint"),
        FieldType.SHORT: ("int2", "int4", "smallint"),
        FieldType.INT24: ("int4", "int4", "mediumint"),
        FieldType.LONG: ("int4", "int8", "int"),
        FieldType.LONGLONG: ("int8", "int8", "bigint"),
    }
    scalars = {  # result type -> (shared type, MySQL spelling)
        FieldType.YEAR: ("int2", "year"),
        FieldType.DECIMAL: ("numeric", "decimal"),
        FieldType.NEWDECIMAL: ("numeric", "decimal"),
        FieldType.FLOAT: ("float4", "float"),
        FieldType.DOUBLE: ("float8", "double"),
        FieldType.DATE: ("date", "date"),
        FieldType.NEWDATE: ("date", "date"),
        FieldType.DATETIME: ("timestamp", "datetime"),
        FieldType.TIMESTAMP: ("timestamptz", "timestamp"),
    }
    texts = {
        FieldType.VARCHAR,
        FieldType.VAR_STRING,
        FieldType.STRING,
        FieldType.TINY_BLOB,
        FieldType.MEDIUM_BLOB,
        FieldType.LONG_BLOB,
        FieldType.BLOB,
        FieldType.ENUM,
        FieldType.SET,
    }
    columns = []
    for entry in description:
        name, code, flags = _text(entry[0]), entry[1], entry[7]
        charset = entry[8] if len(entry) > 8 else None
        unsigned = bool(flags & _UNSIGNED_FLAG)
        refused = None
        if code in ints:
            signed_type, unsigned_type, shown = ints[code]
            pg_type = unsigned_type if unsigned else signed_type
            display = shown + (" unsigned" if unsigned else "")
        elif code in scalars:
            pg_type, display = scalars[code]
        elif code in texts and charset != _BINARY_CHARSET:
            if flags & _ENUM_FLAG:
                pg_type, display = "enum", "enum"
            elif flags & _SET_FLAG:
                pg_type, display = "text", "set"
            else:
                pg_type, display = "text", "text"
        else:
            pg_type = display = _FIELD_NAMES.get(code, f"type {code}")
            if code in texts:
                pg_type = display = "binary/blob"
            refused = {
                FieldType.TIME: "TIME_TO_SEC(…) (seconds, may be negative)",
                FieldType.BIT: "CAST(… AS UNSIGNED)",
                FieldType.JSON: "CAST(… AS CHAR)",
                FieldType.NULL: "CAST(NULL AS SIGNED) (a typed NULL)",
            }.get(code, "HEX(…) or CAST(… AS CHAR CHARACTER SET utf8mb4)")
        columns.append(MySqlColumn(with_note(Column(name, pg_type, display)), refused))
    return columns


_FIELD_NAMES = {
    11: "time",
    16: "bit",
    245: "json",
    255: "geometry",
    6: "null",
}


def unsupported_message(column: MySqlColumn, where: str) -> str:
    """One line: `column` of `where` has no mapping, and the cast to use instead."""
    return (
        f"column {column.column.name!r} of {where} has type "
        f"{column.column.display_type}, which has no TensorFlow feature mapping; "
        f"read it with --query and a cast, e.g. {column.refused}"
    )


def primary_key(conn, table: TableRef) -> list[str]:
    """`table`'s primary key columns in key order ([] when it has none)."""
    rows = _rows(
        conn,
        "SELECT column_name FROM information_schema.key_column_usage "
        "WHERE table_schema = %s AND table_name = %s AND constraint_name = 'PRIMARY' "
        "ORDER BY ordinal_position",
        (table.schema, table.name),
    )
    return [_text(r[0]) for r in rows]


def row_estimate(conn, table: TableRef | None) -> int:
    """`information_schema.tables.table_rows` (an estimate for InnoDB), else -1."""
    if table is None:
        return -1
    rows = _rows(
        conn,
        "SELECT table_rows FROM information_schema.tables "
        "WHERE table_schema = %s AND table_name = %s",
        (table.schema, table.name),
    )
    if not rows or rows[0][0] is None:
        return -1
    return int(rows[0][0])
