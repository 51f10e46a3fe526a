"""Catalog type mapping (DESIGN.md's type table), without a database."""

import pyarrow as pa
import pytest

from transforms.types import (
    Column,
    Kind,
    UnsupportedTypeError,
    arrow_type,
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
