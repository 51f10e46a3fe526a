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

`'infinity'` and `'-infinity'` dates and timestamps are read as the int64 extremes
`POS_INFINITY` (2**63 - 1) and `NEG_INFINITY` (-2**63), which no finite date or
timestamp reaches (the same values PostgreSQL stores for them): the raw data keeps
them apart from NULL, and the built-in transforms treat them as missing, like a
NaN float.

Arrays must be one-dimensional. PostgreSQL does not enforce a column's declared
dimensions and a `--query` column declares none, so two checks keep a
multi-dimensional array from being flattened: a column declared with more than one
dimension has no mapping (`kind_of` raises before the run, naming the cast), and the
read expression of every array raises a database error naming the column when a
value has more than one dimension (`read_error_message` extracts it). The lower
bound of an array (`'[0:2]={…}'`) is not kept. Pure module: no database, no
TensorFlow.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

import pyarrow as pa

__all__ = [
    "Kind",
    "Column",
    "UnsupportedTypeError",
    "kind_of",
    "check_mapped",
    "conversion",
    "read_expression",
    "read_error_message",
    "arrow_type",
    "POS_INFINITY",
    "NEG_INFINITY",
    "TIME_KINDS",
]

POS_INFINITY = 2**63 - 1  # 'infinity' as a date or timestamp (int64 max)
NEG_INFINITY = -(2**63)  # '-infinity' (int64 min)
# Prefix of the read errors raised in SQL (see `read_error_message`).
READ_ERROR_MARKER = "sql2tfrecord read error: "


class Kind(str, enum.Enum):
    """What a column becomes as a raw feature."""

    INT = "int"
    FLOAT = "float"
    BYTES = "bytes"
    DATE = "date"
    TIMESTAMP = "timestamp"


TIME_KINDS = frozenset({Kind.DATE, Kind.TIMESTAMP})

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
        is_array: an array of `pg_type`.
        not_null: the catalog guarantees no NULLs (always False for queries).
        ndims: the array dimensions the table declares (`pg_attribute.attndims`;
            0 when none are declared, as for `--query` columns). Declared or not,
            every value is checked to be one-dimensional as it is read.
        note: how the source converts the values, when it differs from what
            `conversion` says for `pg_type` (a source other than PostgreSQL sets
            it: e.g. MySQL's zero dates); None otherwise.
    """

    name: str
    pg_type: str
    display_type: str
    is_array: bool = False
    not_null: bool = False
    ndims: int = 0
    note: str | None = None

    @property
    def kind(self) -> Kind:
        """The raw feature kind; raises UnsupportedTypeError."""
        return kind_of(self)


def kind_of(column: Column) -> Kind:
    """Returns the raw feature kind of a column, or raises UnsupportedTypeError.

    The error names the column, its type and the cast to use in a `--query`.
    """
    if column.is_array and column.ndims > 1:
        raise UnsupportedTypeError(
            f'column "{column.name}" of type {column.display_type} is declared with '
            f"{column.ndims} dimensions; only one-dimensional arrays have a "
            f"TensorFlow feature mapping: {_array_fix(column.name)}"
        )
    if column.pg_type == "enum":
        return Kind.BYTES
    kind = _KIND_BY_TYPE.get(column.pg_type)
    if kind is None:
        raise UnsupportedTypeError(
            f'column "{column.name}" has type {column.display_type}, which has no '
            f"TensorFlow feature mapping; select it with a cast in --query, e.g. "
            f"{_cast_hint(column)}"
        )
    return kind


# Unmapped scalar types -> the --query expression that reads them best ({} is the
# quoted column); any other type: its text, or a numeric expression.
_CAST_HINTS = {
    "bytea": "encode({}, 'base64')",
    "money": "{}::numeric",
    "interval": "extract(epoch FROM {})",
    "inet": "host({})",
    "cidr": "{}::text",
    "time": "extract(epoch FROM {})",
    "timetz": "extract(epoch FROM {})",
}


def _cast_hint(column: Column) -> str:
    """The `--query` expression suggested for a column of an unmapped type."""
    ref = _quoted(column.name)
    if column.is_array:
        return f"{ref}::text[] or a numeric expression"
    hint = _CAST_HINTS.get(column.pg_type)
    if hint is None:
        return f"{ref}::text or a numeric expression"
    return f"{hint.format(ref)} AS {ref}"


def check_mapped(columns: Iterable[Column]) -> None:
    """Raises UnsupportedTypeError naming every unmapped column in one line."""
    problems = []
    for column in columns:
        try:
            kind_of(column)
        except UnsupportedTypeError as err:
            problems.append(str(err))
    if problems:
        raise UnsupportedTypeError("; ".join(problems))


def _array_fix(name: str) -> str:
    ref = _quoted(name)
    return (
        f"select it in --query flattened, ARRAY(SELECT unnest({ref})) AS {ref}, "
        f"or as JSON text, array_to_json({ref})::text AS {ref}"
    )


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _time_expression(ref: str, finite: str) -> str:
    """`finite` for finite values, the int64 extremes for ±infinity, NULL for NULL."""
    return (
        f"CASE WHEN {ref} = 'infinity' THEN '{POS_INFINITY}'::int8 "
        f"WHEN {ref} = '-infinity' THEN '{NEG_INFINITY}'::int8 ELSE {finite} END"
    )


def _scalar_expression(ref: str, column: Column) -> str:
    kind = kind_of(column)
    if column.pg_type == "bool":
        return f"{ref}::int4"
    if kind is Kind.INT:
        return ref
    if column.pg_type == "numeric":
        return _numeric_expression(ref)
    if kind is Kind.FLOAT:
        return f"{ref}::float8"
    if kind is Kind.BYTES:
        return f"{ref}::text"
    if kind is Kind.DATE:
        return _time_expression(ref, f"({ref} - DATE '1970-01-01')::int8")
    return _time_expression(ref, f"floor(extract(epoch FROM {ref}))::int8")


# float8's largest finite value, and half its smallest subnormal: a numeric beyond
# the first has no float8 (PostgreSQL's cast raises "out of range"), one below the
# second rounds to zero (the cast raises too).
_FLOAT8_MAX = "1.7976931348623157e308"
_FLOAT8_HALF_MIN = "2.4703282292062328e-324"


def _numeric_expression(ref: str) -> str:
    """`numeric` as float8, total: never the cast's "out of range" error mid-read.

    NaN stays NaN, ±Infinity (and magnitudes beyond float8) become ±Infinity — both
    missing for the transforms, counted as non-finite — and magnitudes too small for
    a float8 become ±0; every other value is the nearest float8 (PostgreSQL's cast).
    """
    return (
        f"CASE WHEN {ref} = 'NaN'::numeric THEN 'NaN'::float8 "
        f"WHEN abs({ref}) > {_FLOAT8_MAX} THEN CASE WHEN {ref} > 0 "
        f"THEN 'Infinity'::float8 ELSE '-Infinity'::float8 END "
        f"WHEN abs({ref}) < {_FLOAT8_HALF_MIN} THEN CASE WHEN {ref} < 0 "
        f"THEN '-0'::float8 ELSE 0::float8 END "
        f"ELSE {ref}::float8 END"
    )


_CONVERSIONS = {
    "numeric": "read as the nearest float64 (precision beyond ~16 significant "
    "digits is lost; beyond ±1.8e308 it is ±Infinity, i.e. missing; below 2.5e-324 "
    "it is ±0), then float32 in features",
    "float8": "float32 in features (float64 in the raw Arrow and Parquet)",
    "int8": "float64 where a built-in transform scales it (exact beyond 2**53 only "
    "in passthrough)",
    "bool": "0/1",
    "bpchar": "trailing blanks dropped (char(n) read as text)",
    "timestamp": "seconds since 1970-01-01, floored; read as UTC; ±infinity read as "
    "the int64 extremes (missing in features)",
    "timestamptz": "seconds since 1970-01-01 UTC, floored; ±infinity read as the "
    "int64 extremes (missing in features)",
    "date": "days since 1970-01-01; ±infinity read as the int64 extremes (missing in "
    "features)",
    "uuid": "its text form",
}


def conversion(column: Column) -> str | None:
    """How a column's values are changed on the way to a raw feature, or None.

    Recorded per column in the manifest (`source.columns[].conversion`): every
    value is exact or changed as this says.
    """
    if column.note is not None:
        return column.note
    note = _CONVERSIONS.get(column.pg_type)
    if column.pg_type == "enum":
        note = "its label"
    if column.is_array:
        return "; ".join(filter(None, [note, "NULL elements dropped in features"]))
    return note


def read_expression(quoted_name: str, column: Column) -> str:
    """Returns the SQL select expression that yields the column's raw value as text.

    Args:
        quoted_name: the column reference, already quoted as an identifier.
        column: the catalog description.

    Scalars come out as plain COPY CSV values; arrays as a JSON array text
    (`array_to_json`), NULL arrays as NULL. An array value with more than one
    dimension raises a database error whose message names the column (see
    `read_error_message`); the message is built with `concat` (a stable function),
    so the planner never folds the error branch into a constant and raises it for
    a row that does not take it.
    """
    if not column.is_array:
        return _scalar_expression(quoted_name, column)
    element = _scalar_expression("e", column)
    message = (
        f'{READ_ERROR_MARKER}column "{column.name}" holds a %s-dimensional array '
        f"value; only one-dimensional arrays are read (PostgreSQL does not enforce "
        f"declared dimensions): {_array_fix(column.name)}"
    )
    before, after = message.split("%s")
    error = (
        f"CAST(concat({_literal(before)}, array_ndims({quoted_name}), "
        f"{_literal(after)}) AS int4)::text"
    )
    return (
        f"CASE WHEN {quoted_name} IS NULL THEN NULL "
        f"WHEN array_ndims({quoted_name}) > 1 THEN {error} ELSE "
        f"array_to_json(ARRAY(SELECT {element} FROM unnest({quoted_name}) AS e))::text "
        f"END"
    )


def read_error_message(text: str) -> str | None:
    """The message of a read error raised by a read expression, else None.

    The database reports it as the text of a failed integer cast
    (`invalid input syntax for type integer: "<message>"`).
    """
    start = text.find(READ_ERROR_MARKER)
    if start < 0:
        return None
    message = text[start + len(READ_ERROR_MARKER) :].splitlines()[0]
    return message[:-1] if message.endswith('"') else message


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
