"""PostgreSQL catalog types -> raw feature kinds, SQL read expressions and Arrow types.

The contract is the type table of DESIGN.md:

| PostgreSQL                                  | kind      | raw feature             |
|---------------------------------------------|-----------|-------------------------|
| smallint, integer, bigint, boolean          | INT       | int64                   |
| real, double precision, numeric             | FLOAT     | float32 (float64 Arrow) |
| text, varchar, char, name, enum, uuid       | BYTES     | bytes (UTF-8)           |
| date                                        | DATE      | int64 days since epoch  |
| timestamp, timestamptz                      | TIMESTAMP | int64 seconds, UTC      |
| one-dimensional arrays of the above         | same kind | variable-length list    |

Conversions happen in SQL (so the database does them once, exactly) and the COPY
text is parsed by pyarrow with the Arrow types below, never guessed from values.
`numeric` loses precision in float64 (and again in float32); `char(n)` loses its
trailing blanks (`::text` semantics); timestamps are floored to whole seconds.
Pure module: no database, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import enum

import pyarrow as pa

__all__ = [
    "Kind",
    "Column",
    "UnsupportedTypeError",
    "kind_of",
    "read_expression",
    "arrow_type",
]


class Kind(str, enum.Enum):
    """What a column becomes as a raw feature."""

    INT = "int"
    FLOAT = "float"
    BYTES = "bytes"
    DATE = "date"
    TIMESTAMP = "timestamp"


_INT_TYPES = {"int2", "int4", "int8", "bool"}
_FLOAT_TYPES = {"float4", "float8", "numeric"}
_BYTES_TYPES = {"text", "varchar", "bpchar", "name", "uuid", "citext"}
_KIND_BY_TYPE = {
    **{t: Kind.INT for t in _INT_TYPES},
    **{t: Kind.FLOAT for t in _FLOAT_TYPES},
    **{t: Kind.BYTES for t in _BYTES_TYPES},
    "date": Kind.DATE,
    "timestamp": Kind.TIMESTAMP,
    "timestamptz": Kind.TIMESTAMP,
}


class UnsupportedTypeError(ValueError):
    """A column's type has no raw feature mapping."""


@dataclasses.dataclass(frozen=True)
class Column:
    """One column as the catalog describes it (plain, picklable).

    Attributes:
        name: column name as in the database (unquoted).
        pg_type: base type name (`pg_type.typname` of the element for arrays;
            `enum` for enum types).
        display_type: the type as `format_type()` shows it, for messages.
        is_array: a one-dimensional array of `pg_type`.
        not_null: the catalog guarantees no NULLs (always False for queries).
    """

    name: str
    pg_type: str
    display_type: str
    is_array: bool = False
    not_null: bool = False

    @property
    def kind(self) -> Kind:
        """The raw feature kind; raises UnsupportedTypeError."""
        return kind_of(self)


def kind_of(column: Column) -> Kind:
    """Returns the raw feature kind of a column, or raises UnsupportedTypeError.

    The error names the column, its type and the cast to use in a `--query`.
    """
    if column.pg_type == "enum":
        return Kind.BYTES
    kind = _KIND_BY_TYPE.get(column.pg_type)
    if kind is None:
        cast = "::text[]" if column.is_array else "::text"
        raise UnsupportedTypeError(
            f'column "{column.name}" has type {column.display_type}, which has no '
            f"TensorFlow feature mapping; select it with a cast in --query, e.g. "
            f'"{column.name}"{cast} or a numeric expression'
        )
    return kind


def _scalar_expression(ref: str, column: Column) -> str:
    kind = kind_of(column)
    if column.pg_type == "bool":
        return f"{ref}::int4"
    if kind is Kind.INT:
        return ref
    if kind is Kind.FLOAT:
        return f"{ref}::float8"
    if kind is Kind.BYTES:
        return f"{ref}::text"
    if kind is Kind.DATE:
        return f"({ref} - DATE '1970-01-01')::int8"
    return f"floor(extract(epoch FROM {ref}))::int8"


def read_expression(quoted_name: str, column: Column) -> str:
    """Returns the SQL select expression that yields the column's raw value as text.

    Args:
        quoted_name: the column reference, already quoted as an identifier.
        column: the catalog description.

    Scalars come out as plain COPY CSV values; arrays as a JSON array text
    (`array_to_json`), NULL arrays as NULL.
    """
    if not column.is_array:
        return _scalar_expression(quoted_name, column)
    element = _scalar_expression("e", column)
    return (
        f"CASE WHEN {quoted_name} IS NULL THEN NULL ELSE "
        f"array_to_json(ARRAY(SELECT {element} FROM unnest({quoted_name}) AS e))::text "
        f"END"
    )


_ARROW_BY_KIND = {
    Kind.INT: pa.int64(),
    Kind.FLOAT: pa.float64(),
    Kind.BYTES: pa.large_string(),
    Kind.DATE: pa.int64(),
    Kind.TIMESTAMP: pa.int64(),
}


def arrow_type(column: Column) -> pa.DataType:
    """The Arrow type of the raw column (NULLs stay NULL; arrays are large lists)."""
    value_type = _ARROW_BY_KIND[kind_of(column)]
    return pa.large_list(value_type) if column.is_array else value_type
