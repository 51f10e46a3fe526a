"""Catalog type mapping (DESIGN.md's type table), without a database."""

import pyarrow as pa
import pytest

from transforms.types import (
    NEG_INFINITY,
    POS_INFINITY,
    Column,
    Kind,
    UnsupportedTypeError,
    arrow_type,
    read_error_message,
    read_expression,
)


@pytest.mark.parametrize(
    "pg_type, kind",
    [
        ("int2", Kind.INT), ("int4", Kind.INT), ("int8", Kind.INT), ("bool", Kind.INT),
        ("float4", Kind.FLOAT), ("float8", Kind.FLOAT), ("numeric", Kind.FLOAT),
        ("text", Kind.BYTES), ("varchar", Kind.BYTES), ("bpchar", Kind.BYTES),
        ("uuid", Kind.BYTES), ("enum", Kind.BYTES),
        ("date", Kind.DATE), ("timestamp", Kind.TIMESTAMP), ("timestamptz", Kind.TIMESTAMP),
    ],
)
def test_kind_of_supported_types(pg_type, kind):
    assert Column("c", pg_type, pg_type).kind is kind


def test_unsupported_type_names_column_type_and_cast():
    with pytest.raises(UnsupportedTypeError) as info:
        _ = Column("payload", "jsonb", "jsonb").kind
    message = str(info.value)
    assert '"payload"' in message and "jsonb" in message and '"payload"::text' in message


def test_arrays_are_large_lists_of_the_element_type():
    column = Column("xs", "float8", "double precision[]", is_array=True)
    assert arrow_type(column) == pa.large_list(pa.float64())
    assert "array_to_json" in read_expression('"xs"', column)


def test_read_expressions_convert_in_sql():
    assert read_expression('"b"', Column("b", "bool", "boolean")) == '"b"::int4'
    assert "DATE '1970-01-01'" in read_expression('"d"', Column("d", "date", "date"))
    assert "extract(epoch" in read_expression('"t"', Column("t", "timestamptz", "ts"))


def test_declared_multidimensional_array_is_refused_naming_column_and_cast():
    column = Column("m x", "int4", "integer[]", is_array=True, ndims=2)
    with pytest.raises(UnsupportedTypeError) as info:
        _ = column.kind
    message = str(info.value)
    assert '"m x"' in message and "2 dimensions" in message
    assert 'ARRAY(SELECT unnest("m x")) AS "m x"' in message
    assert 'array_to_json("m x")::text' in message and "\n" not in message
    # Declared one-dimensional, or undeclared (a --query column): mapped.
    assert Column("m", "int4", "integer[]", is_array=True, ndims=1).kind is Kind.INT
    assert Column("m", "int4", "integer[]", is_array=True).kind is Kind.INT


def test_array_read_expression_refuses_multidimensional_values_per_row():
    column = Column("a'b", "int4", "int[]", is_array=True)
    expression = read_expression('"a\'b"', column)
    # Row-dependent (array_ndims of the value, concat is stable): never folded
    # into a plan-time error; the quote in the name is escaped in the literal.
    assert 'array_ndims("a\'b") > 1' in expression
    assert "concat('sql2tfrecord read error: column \"a''b\" holds a '" in expression


def test_read_error_message_extracts_the_column_message():
    text = (
        'invalid input syntax for type integer: "sql2tfrecord read error: column "m" '
        'holds a 3-dimensional array value; only one-dimensional ..."\n'
        "CONTEXT:  COPY ..."
    )
    assert read_error_message(text) == (
        'column "m" holds a 3-dimensional array value; only one-dimensional ...'
    )
    assert read_error_message("permission denied for table t") is None


@pytest.mark.parametrize("pg_type", ["date", "timestamp", "timestamptz"])
def test_infinite_times_read_as_int64_extremes(pg_type):
    expression = read_expression('"v"', Column("v", pg_type, pg_type))
    assert f"'{POS_INFINITY}'::int8" in expression and POS_INFINITY == 2**63 - 1
    assert f"'{NEG_INFINITY}'::int8" in expression and NEG_INFINITY == -(2**63)
