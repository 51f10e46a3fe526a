"""WriteExamples: transformed record batches -> gzip TFRecord shards of tf.Examples.

Batches are encoded whole by tfx-bsl's C++ `RecordBatchToExamplesEncoder` and written
by Beam's TFRecord sink, which publishes shards through temp files and a rename.
Shards are named `<dir>/part-SSSSS-of-NNNNN.tfrecord.gz`.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

from pipeline.output import join

__all__ = ["WriteExamples", "SHARD_SUFFIX"]

SHARD_SUFFIX = ".tfrecord.gz"


class _EncodeFn(beam.DoFn):
    def __init__(self, split: str):
        self._split = split
        self._encoder = None
        self._count = Metrics.counter("sql2tfrecord", f"examples_{split}")

    def setup(self):
        self._encoder = RecordBatchToExamplesEncoder()

    def process(self, element) -> Iterator[bytes]:
        batch, _ = element
        examples = self._encoder.encode(batch)
        self._count.inc(len(examples))
        yield from examples


class WriteExamples(beam.PTransform):
    """Writes one split.

    Input: PCollection[(pa.RecordBatch, passthrough)] from
    `tft_beam.TransformDataset(output_record_batches=True)`.
    Output: the written file names. Parallelism: one writer per shard.
    """

    def __init__(self, directory: str, split: str, num_shards: int = 0):
        super().__init__()
        self._directory, self._split, self._num_shards = directory, split, num_shards

    def expand(self, transformed):
        return (
            transformed
            | "Encode" >> beam.ParDo(_EncodeFn(self._split))
            | "WriteTFRecord"
            >> beam.io.WriteToTFRecord(
                join(self._directory, self._split, "part"),
                file_name_suffix=SHARD_SUFFIX,
                num_shards=self._num_shards,
                shard_name_template="-SSSSS-of-NNNNN",
                compression_type=CompressionTypes.GZIP,
            )
        )
