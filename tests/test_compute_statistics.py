"""WriteStatistics on the Beam DirectRunner: hand-made tagged batches -> files."""

import json
import os

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline.assign import SPLIT_COLUMN
from pipeline.compute_statistics import WriteStatistics, read_statistics


def _batch(values, splits=None):
    arrays = [pa.array([[] if v is None else [v] for v in values], pa.list_(pa.float32()))]
    names = ["v"]
    if splits is not None:
        arrays.append(pa.array([[s] for s in splits], pa.list_(pa.int32())))
        names.append(SPLIT_COLUMN)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def test_write_statistics_per_split_and_group(tmp_path):
    out = str(tmp_path)
    with TestPipeline() as p:
        raw = p | "Raw" >> beam.Create(
            [_batch([1, 2, None], [0, 0, 1]), _batch([4], [1]), _batch([8, 16], [0, 0])]
        )
        # tf.Transform hands a whole-batch split as a one-value "unary" passthrough.
        transformed = p | "Transformed" >> beam.Create(
            [(_batch([10, 20], [0, 1]), {}),
             (_batch([30, 50]), {SPLIT_COLUMN: pa.array([[0]], pa.list_(pa.int32()))})]
        )
        _ = (raw, transformed) | WriteStatistics(out, ["train", "eval", "test"])
    stats = read_statistics(out)
    assert sorted(stats) == ["eval", "test", "train"]
    train, evals = stats["train"], stats["eval"]
    assert train["raw"]["rows"] == 4 and train["raw"]["features"]["v"]["mean"] == 6.75
    assert evals["raw"]["features"]["v"]["missing"] == 1
    assert evals["raw"]["features"]["v"]["max"] == 4
    assert train["transformed"]["features"]["v"]["mean"] == pytest.approx(30)
    assert evals["transformed"]["features"]["v"]["mean"] == 20
    assert stats["test"] == {"raw": {"rows": 0, "features": {}},
                             "transformed": {"rows": 0, "features": {}}}
    assert SPLIT_COLUMN not in train["raw"]["features"]
    proto = statistics_pb2.DatasetFeatureStatisticsList()
    with open(os.path.join(out, "statistics", "train.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    names = [("/".join(x.path.step)) for x in proto.datasets[0].features]
    assert names == ["v", "transformed/v"] and proto.datasets[0].num_examples == 4
    assert not [n for n in os.listdir(os.path.join(out, "statistics")) if n.startswith(".")]
    assert json.load(open(os.path.join(out, "statistics", "statistics.json"))) == stats


def test_write_statistics_with_an_empty_input(tmp_path):
    """No transformed (or no) batches: the files are written, that group empty."""
    empty = {"rows": 0, "features": {}}
    for name, raw_batches in (("some", [_batch([1.0, 3.0], [0, 1])]), ("none", [])):
        out = str(tmp_path / name)
        with TestPipeline() as p:
            raw = p | "Raw" >> beam.Create(raw_batches)
            transformed = p | "Transformed" >> beam.Create([])
            _ = (raw, transformed) | WriteStatistics(out, ["train", "eval"])
        stats = read_statistics(out)
        assert sorted(stats) == ["eval", "train"]
        assert stats["train"]["transformed"] == stats["eval"]["transformed"] == empty
        rows = 1 if raw_batches else 0
        assert stats["train"]["raw"]["rows"] == stats["eval"]["raw"]["rows"] == rows
        assert os.path.exists(os.path.join(out, "statistics", "train.pb"))
