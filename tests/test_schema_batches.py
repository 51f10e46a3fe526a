"""`TransformBatches`' fast paths against the general pyarrow conversion."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.assign import _count_unusable
from transforms.inputs import FLOAT32_MAX
from transforms.schema import (
    _ARROW_VALUE,
    TransformBatches,
    is_dense,
    to_transform_batch,
    transform_arrow_schema,
)
from transforms.types import Column

ROWS = 203  # not a multiple of 8: bitmaps end mid-byte
ABOVE = float(np.nextafter(FLOAT32_MAX, np.inf))
HOSTILE = [
    np.nan,
    -np.nan,
    np.inf,
    -np.inf,
    ABOVE,
    -ABOVE,
    FLOAT32_MAX,
    -FLOAT32_MAX,
    1e300,
    5e-324,
    -0.0,
    0.0,
    1.5,
]

COLUMNS = (
    Column("f8", "float8", "double precision"),
    Column("f8_dense", "float8", "double precision", not_null=True),
    Column("f4", "float4", "real"),
    Column("all_null", "float8", "double precision"),
    Column("i8", "int8", "bigint"),
    Column("i8_dense", "int8", "bigint", not_null=True),
    Column("i4", "int4", "integer"),
    Column("ts", "timestamp", "timestamp without time zone"),
    Column("txt", "text", "text"),
    Column("txt_dense", "text", "text", not_null=True),
    Column("arr", "float8", "double precision[]", is_array=True),
    Column("txt_arr", "text", "text[]", is_array=True),
)


def _with_garbage_in_nulls(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A nullable array whose NULL slots hold NaN/inf (any reader may leave them)."""
    values = values.copy()
    if values.dtype.kind == "f":
        values[~valid] = np.where(np.arange((~valid).sum()) % 2, np.nan, np.inf)
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(values.dtype),
        len(values),
        [bitmap, pa.py_buffer(values)],
        null_count=int((~valid).sum()),
    )


def _hostile_floats(rng, dtype) -> np.ndarray:
    values = rng.normal(scale=1e3, size=ROWS)
    picks = rng.random(ROWS) < 0.3
    values[picks] = rng.choice(HOSTILE, picks.sum())
    with np.errstate(over="ignore"):
        return values.astype(dtype)


def _raw(seed: int) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    valid = lambda p: rng.random(ROWS) >= p  # noqa: E731
    ints = rng.integers(-(2**62), 2**62, ROWS)
    ints[rng.random(ROWS) < 0.1] = 2**63 - 1
    text = [
        None if rng.random() < 0.2 else "é" * int(rng.integers(0, 4))
        for _ in range(ROWS)
    ]
    arrays = []
    for _ in range(ROWS):
        if rng.random() < 0.15:
            arrays.append(None)
        else:
            arrays.append(
                [
                    None if rng.random() < 0.2 else float(v)
                    for v in rng.choice(HOSTILE, int(rng.integers(0, 4)))
                ]
            )
    return pa.RecordBatch.from_arrays(
        [
            _with_garbage_in_nulls(_hostile_floats(rng, np.float64), valid(0.2)),
            pa.array(_hostile_floats(rng, np.float64)),
            _with_garbage_in_nulls(_hostile_floats(rng, np.float32), valid(0.2)),
            _with_garbage_in_nulls(_hostile_floats(rng, np.float64), valid(1.0)),
            _with_garbage_in_nulls(ints, valid(0.3)),
            pa.array(ints),
            pa.array(ints.astype(np.int32), mask=~valid(0.3)),
            _with_garbage_in_nulls(ints, valid(0.1)),
            pa.array(text, pa.large_string()),
            pa.array([t or "" for t in text], pa.large_string()),
            pa.array(arrays, pa.list_(pa.float64())),
            pa.array(
                [
                    None if a is None else [None if v is None else str(v) for v in a]
                    for a in arrays
                ],
                pa.list_(pa.large_string()),
            ),
        ],
        names=[c.name for c in COLUMNS],
    )


def _general(batch: pa.RecordBatch, columns) -> pa.RecordBatch:
    """The conversion through pyarrow compute only (no fast path)."""
    arrays = []
    for column in columns:
        array = batch.column(column.name)
        value_type = _ARROW_VALUE[column.kind]
        if column.is_array:
            lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(
                zero_copy_only=False
            )
            flat = pc.list_flatten(array)
            parents = pc.list_parent_indices(array).to_numpy()
            valid = pc.is_valid(flat).to_numpy(zero_copy_only=False)
            lengths = np.bincount(parents[valid], minlength=len(array))
            values = flat.filter(pc.is_valid(flat)).cast(value_type)
        else:
            lengths = pc.cast(pc.is_valid(array), pa.int64()).to_numpy(
                zero_copy_only=False
            )
            values = array.drop_null().cast(value_type)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        arrays.append(pa.ListArray.from_arrays(pa.array(offsets), values))
    return pa.RecordBatch.from_arrays(arrays, schema=transform_arrow_schema(columns))


def _assert_same(got: pa.RecordBatch, want: pa.RecordBatch) -> None:
    """Equal schemas (with metadata) and columns, NaNs compared by their bits."""
    assert got.schema.equals(want.schema, check_metadata=True)
    for a, b in zip(got.columns, want.columns, strict=True):
        assert a.type == b.type
        assert a.offsets.equals(b.offsets) or (
            pc.list_value_length(a).equals(pc.list_value_length(b))
        )
        assert a.is_valid().equals(b.is_valid())
        fa, fb = a.flatten(), b.flatten()
        if pa.types.is_floating(fa.type):
            np.testing.assert_array_equal(
                fa.to_numpy().view(np.uint32), fb.to_numpy().view(np.uint32)
            )
        else:
            assert fa.equals(fb)
    if not any(pa.types.is_floating(t.value_type) for t in got.schema.types):
        assert got.equals(want)


DENSE_FREE = tuple(c for c in COLUMNS if not is_dense(c))


@pytest.mark.filterwarnings("error")  # numpy's float32 overflow warning is silenced
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "start,length", [(0, ROWS), (3, 150), (13, 0), (ROWS, 0), (9, 1)]
)
def test_transform_batches_match_the_general_conversion(seed, start, length):
    batch = _raw(seed).slice(start, length)  # sliced: non-zero, unaligned offsets
    convert = TransformBatches(COLUMNS)
    _assert_same(convert(batch), _general(batch, COLUMNS))
    _assert_same(to_transform_batch(batch, COLUMNS), _general(batch, COLUMNS))
    assert convert(batch).schema.equals(
        transform_arrow_schema(COLUMNS), check_metadata=True
    )
    order = np.random.default_rng(seed).permutation(length)
    _assert_same(convert(batch, order), _general(batch.take(order), COLUMNS))
    rng = np.random.default_rng(seed)
    repeated = np.sort(rng.integers(0, length, 2 * length)) if length else order
    _assert_same(convert(batch, repeated), _general(batch.take(repeated), COLUMNS))


def test_transform_batches_name_a_dense_column_holding_nulls():
    batch = pa.RecordBatch.from_arrays([pa.array([1.0, None])], names=["f8_dense"])
    with pytest.raises(ValueError, match='"f8_dense" is NOT NULL'):
        TransformBatches([COLUMNS[1]])(batch)


def _general_unusable(column: pa.Array) -> int:
    usable = pc.fill_null(
        pc.and_(pc.is_finite(column), pc.less_equal(pc.abs(column), FLOAT32_MAX)), False
    )
    return len(column) - column.null_count - (pc.sum(usable).as_py() or 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["f8", "f8_dense", "f4", "all_null"])
@pytest.mark.parametrize("start,length", [(0, ROWS), (5, 101), (ROWS, 0)])
def test_count_unusable_counts_non_finite_and_beyond_float32_but_not_nulls(
    seed, name, start, length
):
    column = _raw(seed).column(name).slice(start, length)
    assert _count_unusable(column) == _general_unusable(column)


def test_count_unusable_on_exact_values():
    values = [
        np.nan,
        np.inf,
        -np.inf,
        ABOVE,
        -ABOVE,
        FLOAT32_MAX,
        -FLOAT32_MAX,
        None,
        0.0,
    ]
    assert _count_unusable(pa.array(values, pa.float64())) == 5
    # pyarrow rounds ±ABOVE to ±FLOAT32_MAX as float32
    assert _count_unusable(pa.array(values, pa.float32())) == 3
