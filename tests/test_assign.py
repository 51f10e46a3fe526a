"""Split tagging, selection and routing, on batches without a pipeline."""

import numpy as np
import pyarrow as pa
import pytest
from apache_beam.pvalue import TaggedOutput
from tfx_bsl.tfxio import tensor_adapter

from pipeline.assign import (
    SPLIT_COLUMN,
    _AssignSplitFn,
    _RouteSplitsFn,
    _select,
    with_split_column,
)
from pipeline.split import assign_splits, parse_splits
from transforms.schema import tensor_adapter_config
from transforms.types import Column

SPEC = parse_splits("train=70,eval=20,test=10")
COLUMNS = (
    Column("id", "int8", "bigint", not_null=True),
    Column("x", "float8", "double precision"),
    Column("y", "int4", "integer"),
)


def _raw(n: int, start: int = 0) -> pa.RecordBatch:
    ids = np.arange(start, start + n, dtype=np.int64)
    x = pa.array([None if i % 7 == 0 else float(i) / 3 for i in ids], pa.float64())
    return pa.RecordBatch.from_arrays(
        [pa.array(ids), x, pa.array(ids % 2, pa.int32())], names=["id", "x", "y"]
    )


def _tagged(n: int = 1000) -> tuple[pa.RecordBatch, np.ndarray]:
    fn = _AssignSplitFn(COLUMNS, "y", "id", SPEC)
    (batch,) = list(fn.process(_raw(n)))
    expected = assign_splits(pa.array(np.arange(n, dtype=np.int64)), SPEC)
    return batch, expected


def test_assign_tags_every_row_with_its_hashed_split_grouped_by_split():
    batch, expected = _tagged()
    assert batch.schema.names == ["id", "x", "y", SPLIT_COLUMN]
    tags = batch.column(SPLIT_COLUMN)
    assert tags.value_lengths().to_pylist() == [1] * 1000
    ids = batch.column("id").flatten().to_numpy()
    # Each row keeps its own split; rows come grouped by split, each in read order.
    np.testing.assert_array_equal(tags.flatten().to_numpy(), expected[ids])
    grouped = np.concatenate([np.flatnonzero(expected == i) for i in range(3)])
    np.testing.assert_array_equal(ids, grouped)
    x = batch.column("x").flatten().to_numpy()  # float32, NULLs dropped
    expected_x = np.array([i / 3 for i in ids if i % 7], np.float32)
    np.testing.assert_array_equal(x, expected_x)  # values moved with their rows
    assert set(expected.tolist()) == {0, 1, 2}  # all three splits occur


@pytest.mark.parametrize("shuffled", [False, True])
def test_select_keeps_exactly_one_splits_rows_in_order(shuffled):
    batch, expected = _tagged()
    if shuffled:  # not grouped by split: filtered copies instead of slices
        batch = batch.take(pa.array(np.random.default_rng(1).permutation(1000)))
    tags = batch.column(SPLIT_COLUMN).flatten().to_numpy()
    for index in range(3):
        (part,) = list(_select(batch, index))
        ids = part.column("id").flatten().to_pylist()
        all_ids = batch.column("id").flatten().to_numpy()
        assert ids == all_ids[tags == index].tolist()
        assert sorted(ids) == np.flatnonzero(expected == index).tolist()
        assert part.schema == batch.schema
    only_train = batch.filter(pa.array(tags == 0))
    assert list(_select(only_train, 0)) == [only_train]
    assert list(_select(only_train, 1)) == []


def _transformed(ids: np.ndarray, tags: np.ndarray) -> pa.RecordBatch:
    # What TransformDataset emits: the features, then the passthrough column.
    return pa.RecordBatch.from_arrays(
        [
            pa.array(ids * 10.0, pa.float32()),
            pa.ListArray.from_arrays(
                pa.array(np.arange(len(tags) + 1, dtype=np.int32)),
                pa.array(tags, pa.int32()),
            ),
        ],
        names=["x_scaled", SPLIT_COLUMN],
    )


@pytest.mark.parametrize("grouped", [False, True])
def test_route_sends_each_row_to_its_split_without_the_tag(grouped):
    rng = np.random.default_rng(7)
    tags = rng.integers(0, 3, 500)
    if grouped:
        tags = np.sort(tags)
    ids = np.arange(500)
    outputs = list(_RouteSplitsFn(SPEC.names).process((_transformed(ids, tags), {})))
    assert all(isinstance(o, TaggedOutput) for o in outputs)
    got = {o.tag: o.value for o in outputs}
    assert set(got) == {"train", "eval", "test"}
    for index, name in enumerate(SPEC.names):
        part, passthrough = got[name]
        assert passthrough == {} and part.schema.names == ["x_scaled"]
        expected = (ids[tags == index] * 10.0).astype(np.float32)
        np.testing.assert_array_equal(part.column(0).to_numpy(), expected)


def test_route_handles_a_unary_tag_for_a_whole_batch():
    # tf.Transform passes a one-row passthrough column separately when the output
    # batch size differs from the input's but all rows share the value.
    batch = pa.RecordBatch.from_arrays([pa.array([1.0, 2.0, 3.0])], names=["v"])
    unary = {SPLIT_COLUMN: pa.array([[1]], pa.list_(pa.int32()))}
    (output,) = list(_RouteSplitsFn(SPEC.names).process((batch, unary)))
    assert output.tag == "eval" and output.value[0].equals(batch)


def test_split_column_is_in_the_schema_but_never_a_tensor():
    base = tensor_adapter_config(COLUMNS)
    config = with_split_column(base)
    assert config.arrow_schema.names == [*base.arrow_schema.names, SPLIT_COLUMN]
    assert config.tensor_representations == base.tensor_representations
    batch, _ = _tagged(50)
    tensors = tensor_adapter.TensorAdapter(config).ToBatchTensors(batch)
    assert set(tensors) == {"id", "x", "y"}


def test_assign_emits_nothing_for_an_empty_batch():
    fn = _AssignSplitFn(COLUMNS, "y", "id", SPEC)
    assert list(fn.process(_raw(0))) == []


FLOAT_LABEL = (
    Column("id", "int8", "bigint", not_null=True),
    Column("lab/el", "float8", "double precision"),
)
LABEL_VALUES = [0.0, 1.0, float("nan"), float("inf"), float("-inf"), 1e300, -1e39,
                None, 3.4e38, 0.5]


def _counters(result) -> dict:
    from apache_beam.metrics.metric import MetricsFilter

    query = result.metrics().query(MetricsFilter())
    return {c.key.metric.name: c.committed for c in query["counters"]}


def test_non_finite_float_labels_are_dropped_and_counted_like_nulls():
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from pipeline.assign import AssignSplit
    from transforms.names import feature_names

    names = feature_names(c.name for c in FLOAT_LABEL)
    raw = pa.RecordBatch.from_arrays(
        [pa.array(np.arange(len(LABEL_VALUES), dtype=np.int64)),
         pa.array(LABEL_VALUES, pa.float64())],
        names=["id", "lab/el"],
    )
    key = names["lab/el"]
    kept = [v for v in LABEL_VALUES if v is not None and np.isfinite(v) and abs(v) <= 3.4028234663852886e38]
    p = beam.Pipeline()
    out = (
        p
        | beam.Create([raw])
        | AssignSplit(FLOAT_LABEL, "lab/el", "id", SPEC, names=names)
        | beam.FlatMap(lambda b: b.column(key).flatten().to_pylist())
    )
    assert_that(out, equal_to([np.float32(v) for v in kept]))
    counters = _counters(p.run())
    assert counters["rows_dropped_null_label"] == 1
    assert counters["rows_dropped_non_finite_label"] == 5  # nan, ±inf, ±beyond f32


def test_route_drops_rows_whose_label_has_no_id_and_counts_them_per_split():
    rng = np.random.default_rng(5)
    tags = np.sort(rng.integers(0, 3, 400))
    labels = rng.integers(-1, 4, 400)  # -1: a class the train split lacks
    batch = _transformed(np.arange(400), tags)
    batch = pa.RecordBatch.from_arrays(
        [batch.column(0),
         pa.ListArray.from_arrays(pa.array(np.arange(401, dtype=np.int32)), pa.array(labels)),
         batch.column(1)],
        names=["x_scaled", "lab", SPLIT_COLUMN],
    )
    outputs = list(_RouteSplitsFn(SPEC.names, "lab").process((batch, {})))
    for index, name in enumerate(SPEC.names):
        (part,) = [o.value[0] for o in outputs if o.tag == name]
        want = labels[(tags == index) & (labels != -1)]
        np.testing.assert_array_equal(part.column("lab").flatten().to_numpy(), want)
    # Counted per split in a pipeline.
    import apache_beam as beam

    from pipeline.assign import RouteSplits

    p = beam.Pipeline()
    _ = p | beam.Create([(batch, {})]) | RouteSplits(SPEC, "lab")
    counters = _counters(p.run())
    for index, name in enumerate(SPEC.names):
        want = int(np.sum((tags == index) & (labels == -1)))
        assert counters.get(f"unseen_label:{name}", 0) == want > 0
