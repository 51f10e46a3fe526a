"""`SplitStatistics.add` (numeric columns added together) against the column-by-column
`FeatureStatistics.add`, bit for bit, on seeded hostile batches (no Beam)."""

import json
import pickle

import numpy as np
import pyarrow as pa
import pytest

from pipeline import statistics as st

_SPECIAL = [0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, -5e-324, 1e308, -1e308, 1.0]


def _float_values(rng, size, dtype, hostile):
    scale = 10.0 ** rng.integers(-30, 30)
    values = (rng.normal(rng.normal(0, 5), 3, size) * scale).astype(dtype)
    if hostile and size:
        where = rng.random(size) < 0.05
        values[where] = rng.choice(np.array(_SPECIAL, dtype=dtype), where.sum())
    if rng.random() < 0.2:
        values = np.round(values).astype(dtype)  # many ties and zeros
    return values


def _int_values(rng, size, dtype):
    if dtype == np.bool_:
        return rng.random(size) < 0.3
    info = np.iinfo(dtype)
    if rng.random() < 0.3:
        return rng.integers(info.min, info.max, size, dtype=dtype, endpoint=True)
    return (
        rng.integers(-3, 4, size).astype(dtype)
        if info.min < 0
        else rng.integers(0, 5, size).astype(dtype)
    )


def _column(rng, rows, kind):
    """A column of `rows` rows in one of the layouts a batch may hold."""
    layout = rng.choice(["one", "at_most_one", "many", "null_rows", "flat"])
    if kind == "float":
        dtype = rng.choice([np.float32, np.float64])
        make = lambda size: _float_values(rng, size, dtype, rng.random() < 0.3)  # noqa: E731
    else:
        dtype = rng.choice([np.int64, np.int32, np.int8, np.uint64, np.bool_])
        make = lambda size: _int_values(rng, size, dtype)  # noqa: E731
    if layout == "flat":
        values = pa.array(make(rows))
        if rng.random() < 0.3 and rows:
            mask = rng.random(rows) < 0.2
            values = pa.array(make(rows), mask=mask)
        return values
    if layout == "one":
        lengths = np.ones(rows, dtype=np.int64)
    elif layout == "at_most_one":
        lengths = (rng.random(rows) < rng.random()).astype(np.int64)
    else:
        lengths = rng.integers(0, 4, rows)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    values = pa.array(make(int(offsets[-1])))
    if rng.random() < 0.1 and len(values):  # NULL values inside the lists
        mask = rng.random(len(values)) < 0.2
        values = pa.array(values.to_pylist(), type=values.type, mask=mask)
    mask = None
    if layout == "null_rows":
        mask = pa.array(rng.random(rows) < 0.2)
    large = rng.random() < 0.5
    cls = pa.LargeListArray if large else pa.ListArray
    if large:
        offsets = offsets.astype(np.int64)
    return cls.from_arrays(pa.array(offsets), values, mask=mask)


def _batch(rng, columns):
    rows = int(rng.choice([0, 1, 2, 7, 300, 1500, 5000]))
    extra = int(rng.integers(0, 3))
    arrays = [_column(rng, rows + extra, kind) for _, kind in columns]
    batch = pa.RecordBatch.from_arrays(arrays, names=[n for n, _ in columns])
    if extra:  # a slice, as the split routing makes them
        batch = batch.slice(int(rng.integers(0, extra + 1)), rows)
    return batch


def _one_by_one(kinds, batches):
    stats = st.SplitStatistics(kinds)
    for batch in batches:
        stats.rows += batch.num_rows
        for name, feature in stats.features.items():
            feature.add(batch.column(batch.schema.get_field_index(name)))
    return stats


def _exact(stats):
    """JSON text keeps what matters here: -0.0 apart from 0.0, every float's bits."""
    return json.dumps(stats.to_json(), sort_keys=True)


def _batched_as_one_by_one(kinds, batches):
    """The batches added batch by batch; asserts it equals the one-by-one path."""
    batched = st.SplitStatistics(kinds)
    for batch in batches:
        batched.add(batch)
    assert _exact(batched) == _exact(_one_by_one(kinds, batches))
    return batched


def _flat_batches(kinds, columns_per_batch):
    return [
        pa.RecordBatch.from_arrays([pa.array(c) for c in columns], names=list(kinds))
        for columns in columns_per_batch
    ]


@pytest.mark.parametrize("seed", range(40))
def test_batched_equals_one_by_one(seed):
    rng = np.random.default_rng(seed)
    columns = [(f"c{i}", rng.choice(["int", "float"])) for i in range(12)]
    kinds = dict(columns)
    batches = [_batch(rng, columns) for _ in range(int(rng.integers(1, 6)))]
    _batched_as_one_by_one(kinds, batches)


@pytest.mark.parametrize("seed", range(10))
def test_batched_merges_and_pickles_the_same(seed):
    rng = np.random.default_rng(1000 + seed)
    columns = [(f"c{i}", rng.choice(["int", "float"])) for i in range(6)]
    kinds = dict(columns)
    batches = [_batch(rng, columns) for _ in range(4)]
    left, right = st.SplitStatistics(kinds), st.SplitStatistics(kinds)
    for batch in batches[:2]:
        left.add(batch)
    for batch in batches[2:]:
        right.add(batch)
    merged = pickle.loads(pickle.dumps(left))
    merged.merge(pickle.loads(pickle.dumps(right)))
    reference = _one_by_one(kinds, batches[:2])
    reference.merge(_one_by_one(kinds, batches[2:]))
    assert _exact(merged) == _exact(reference)


def test_dense_columns_of_a_growing_range_and_signed_zeros():
    """Bins widen and extend across batches; a zero minimum keeps its sign."""
    kinds = {"x": "float", "y": "float", "n": "int"}
    columns = []
    for step, scale in enumerate([1.0, 1e3, 1e-3, 1e9, 1.0]):
        x = np.linspace(-scale, scale, 257).astype(np.float32)
        y = np.full(257, -0.0 if step % 2 else 0.0, dtype=np.float32)
        y[::3] = 0.0 if step % 2 else -0.0
        n = np.arange(257, dtype=np.int64) * int(10**step) - 5
        columns.append((x, y, n))
    batched = _batched_as_one_by_one(kinds, _flat_batches(kinds, columns))
    out = batched.to_json()["features"]
    assert out["n"]["min"] == -5 and out["n"]["max"] == 256 * 10**4 - 5
    assert out["x"]["min"] == -1e9 and out["x"]["max"] == 1e9
    assert out["y"]["zeros"] == 5 * 257


@pytest.mark.parametrize("offset", [1e18, -1e18, 2.0**62, 1e300, 3e38])
def test_bins_far_from_zero(offset):
    """Bin indices past 2**53 (a narrow spread far from zero), batch after batch."""
    rng = np.random.default_rng(int(abs(offset)) % 1000)
    kinds = {"a": "float", "b": "float", "c": "float"}
    columns = []
    for _ in range(6):
        a = offset + rng.integers(-4, 5, 300) * np.spacing(offset)
        b = np.full(300, np.float32(min(abs(offset), 3e38)), dtype=np.float32)
        c = offset + rng.normal(0, abs(offset) * 1e-9, 300)
        columns.append((a, b, c))
    batched = _batched_as_one_by_one(kinds, _flat_batches(kinds, columns))
    a = np.concatenate([a for a, _, _ in columns])
    hist = batched.features["a"].hist
    assert hist.counts.sum() == len(a) and len(hist.counts) <= st.FINE_BINS
