"""RecordBatchCoder: exact round trips, sizes without encoding, and used by our steps."""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.arrow_coder import RecordBatchCoder
from pipeline.assign import AssignSplit, RouteSplits, SelectSplit, _AssignSplitFn
from pipeline.split import parse_splits
from transforms.types import Column

SPEC = parse_splits("train=80,eval=20")
COLUMNS = (
    Column("id", "int8", "bigint", not_null=True),
    Column("x", "float8", "double precision"),
    Column("t", "text", "text"),
)


def _raw(n: int) -> pa.RecordBatch:
    ids = np.arange(n, dtype=np.int64)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(ids),
            pa.array([None if i % 5 == 0 else i / 7 for i in ids.tolist()]),
            pa.array([None if i % 3 == 0 else f"t{i}\n,\"" for i in ids.tolist()]),
        ],
        names=["id", "x", "t"],
    )


def _batches():
    full = _raw(1000)
    lists = pa.RecordBatch.from_arrays(
        [pa.array([[1, None], None, [], [4]], pa.list_(pa.int64()))], names=["l"]
    )
    return [full, full.slice(333, 100), full.slice(0, 0), lists]


@pytest.mark.parametrize("index", range(4))
def test_round_trip_is_exact(index):
    batch = _batches()[index]
    decoded = RecordBatchCoder().decode(RecordBatchCoder().encode(batch))
    assert decoded.schema == batch.schema
    assert decoded.equals(batch)
    assert decoded.to_pydict() == batch.to_pydict()


def test_size_is_estimated_without_encoding(monkeypatch):
    batch = _raw(10_000)
    encoded = len(RecordBatchCoder().encode(batch))

    def no_encode(self, value):
        raise AssertionError("estimate_size encoded the batch")

    monkeypatch.setattr(RecordBatchCoder, "encode", no_encode)
    estimate = RecordBatchCoder().estimate_size(batch)
    assert batch.nbytes <= estimate <= batch.nbytes + 64 * batch.num_columns
    assert 0.8 * encoded <= estimate <= 1.2 * encoded


@pytest.mark.parametrize("index", range(4))
def test_size_estimate_bounds_the_batch_bytes(index):
    batch = _batches()[index]
    assert RecordBatchCoder().estimate_size(batch) >= batch.nbytes


def test_batch_typed_pcollections_get_the_coder():
    assert isinstance(beam.coders.registry.get_coder(pa.RecordBatch), RecordBatchCoder)
    p = beam.Pipeline(options=PipelineOptions(pipeline_type_check=False))
    tagged = p | beam.Create([_raw(10)]) | AssignSplit(COLUMNS, None, "id", SPEC)
    train = tagged | SelectSplit(SPEC, "train")
    routed = tagged | beam.Map(lambda b: (b, {})) | RouteSplits(SPEC)
    for pcoll in (tagged, train):
        coder = beam.coders.registry.get_coder(pcoll.element_type)
        assert isinstance(coder, RecordBatchCoder)
    for pcoll in routed.values():
        coder = beam.coders.registry.get_coder(pcoll.element_type)
        assert isinstance(coder.get_impl().encode((_raw(3), {})), bytes)
        assert any(isinstance(c, RecordBatchCoder) for c in coder.coders())


def test_batches_materialized_between_stages_go_through_the_coder(monkeypatch):
    """A side input is stored encoded: the batches come back intact via the coder."""
    decoded = []
    original = RecordBatchCoder.decode

    def counting_decode(self, encoded):
        decoded.append(len(encoded))
        return original(self, encoded)

    monkeypatch.setattr(RecordBatchCoder, "decode", counting_decode)
    batches = [_raw(500), _raw(300)]
    expected = [
        row
        for batch in batches
        for tagged in _AssignSplitFn(COLUMNS, None, "id", SPEC).process(batch)
        for row in zip(*(tagged.column(i).to_pylist() for i in range(4)), strict=True)
    ]
    options = PipelineOptions(pipeline_type_check=False, runner="FnApiRunner")
    with BeamTestPipeline(options=options) as p:
        tagged = (
            p
            | "Sizes" >> beam.Create([500, 300])
            | beam.Map(_raw)  # untyped: only AssignSplit's output is typed
            | AssignSplit(COLUMNS, None, "id", SPEC)
        )
        rows = (
            p
            | "Once" >> beam.Create([None])
            | beam.FlatMap(
                lambda _, side: [
                    row
                    for b in side
                    for row in zip(*(c.to_pylist() for c in b.columns), strict=True)
                ],
                beam.pvalue.AsList(tagged),
            )
        )
        assert_that(rows, equal_to(expected))
    assert decoded  # the side input really was encoded and decoded by our coder
