"""The vectorised tf.Example encoder against tfx-bsl's, message by message."""

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

from pipeline.sink import records

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOAT32 = st.floats(width=32, allow_nan=False)  # NaN != NaN: compared separately


def _one_per_row(values: pa.Array, large: bool = True) -> pa.Array:
    offsets = pa.array(np.arange(len(values) + 1), pa.int64() if large else pa.int32())
    cls = pa.LargeListArray if large else pa.ListArray
    return cls.from_arrays(offsets, values)


def _examples(framed: bytes) -> list[tf.train.Example]:
    out, at = [], 0
    while at < len(framed):
        length = int.from_bytes(framed[at : at + 8], "little")
        out.append(tf.train.Example.FromString(framed[at + 12 : at + 12 + length]))
        at += length + 16
    return out


def _reference(batch: pa.RecordBatch) -> list[tf.train.Example]:
    return [
        tf.train.Example.FromString(b)
        for b in RecordBatchToExamplesEncoder().encode(batch)
    ]


# Column names as a database can hold them: valid UTF-8 (no lone surrogates, which
# no encoding can store) and no NUL (PostgreSQL names cannot hold one, and tfx-bsl
# cuts names there).
COLUMN_NAME = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=25
)


@settings(max_examples=60)
@given(
    rows=st.integers(min_value=1, max_value=40),
    names=st.lists(
        COLUMN_NAME,
        min_size=1,
        max_size=6,
        unique=True,
    ),
    data=st.data(),
)
def test_dense_encoding_equals_tfx_bsl(rows, names, data):
    columns = []
    for i, _ in enumerate(names):
        if i % 2:
            values = data.draw(st.lists(FLOAT32, min_size=rows, max_size=rows))
            columns.append(
                _one_per_row(pa.array(values, pa.float32()), large=i % 4 != 1)
            )
        else:
            values = data.draw(st.lists(INT64, min_size=rows, max_size=rows))
            columns.append(_one_per_row(pa.array(values, pa.int64())))
    batch = pa.RecordBatch.from_arrays(columns, names=names)
    assert records.dense_layout_supported(batch)
    assert _examples(records.encode_framed(batch)) == _reference(batch)


@given(COLUMN_NAME)
def test_generated_column_names_are_storable_utf8(name):
    assert name.encode("utf-8").decode("utf-8") == name and "\x00" not in name


def test_dense_encoding_of_extreme_and_special_values():
    ints = [0, 1, 127, 128, 16383, 16384, 2**31, 2**62, 2**63 - 1, -1, -(2**63)]
    floats = [0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, 1e-45, -1.5, 7.0, 1.0, 2.0]
    batch = pa.RecordBatch.from_arrays(
        [
            _one_per_row(pa.array(ints, pa.int64())),
            _one_per_row(pa.array(np.array(floats, np.float32))),
            _one_per_row(pa.array(np.zeros(len(ints), np.int64))),
        ],
        names=["i", "ü_f", "k" * 100],
    )
    mine, reference = _examples(records.encode_framed(batch)), _reference(batch)
    for a, b in zip(mine, reference, strict=True):
        fa, fb = a.features.feature, b.features.feature
        assert list(fa["i"].int64_list.value) == list(fb["i"].int64_list.value)
        assert list(fa["k" * 100].int64_list.value) == [0]
        np.testing.assert_array_equal(
            np.array(fa["ü_f"].float_list.value, np.float32),
            np.array(fb["ü_f"].float_list.value, np.float32),
        )  # NaN == NaN here
    assert [list(e.features.feature["i"].int64_list.value) for e in mine] == [
        [v] for v in ints
    ]


def test_a_sliced_batch_encodes_only_its_rows():
    batch = pa.RecordBatch.from_arrays(
        [_one_per_row(pa.array(np.arange(10, dtype=np.int64)))], names=["x"]
    ).slice(3, 4)
    assert records.dense_layout_supported(batch)
    got = [
        e.features.feature["x"].int64_list.value[0]
        for e in _examples(records.encode_framed(batch))
    ]
    assert got == [3, 4, 5, 6]


@pytest.mark.parametrize(
    "column",
    [
        pa.array([[b"a"], [b"b"]], pa.large_list(pa.large_binary())),  # strings
        pa.array([[1, 2], [3]], pa.large_list(pa.int64())),  # multi-valued
        pa.array([[1.0], []], pa.large_list(pa.float32())),  # a missing value
        pa.array([[1], None], pa.large_list(pa.int64())),  # a NULL list
    ],
)
def test_other_layouts_fall_back_to_tfx_bsl_with_the_same_examples(column):
    batch = pa.RecordBatch.from_arrays([column], names=["x"])
    assert not records.dense_layout_supported(batch)
    with pytest.raises(ValueError, match="not dense"):
        records.encode_dense(batch)
    assert _examples(records.encode_framed(batch)) == _reference(batch)


def test_long_feature_names_fall_back():
    batch = pa.RecordBatch.from_arrays(
        [_one_per_row(pa.array([1, 2], pa.int64()))], names=["n" * 101]
    )
    assert not records.dense_layout_supported(batch)
    assert _examples(records.encode_framed(batch)) == _reference(batch)
