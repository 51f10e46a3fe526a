"""WriteExamples: transformed record batches -> gzip TFRecord shards of tf.Examples.

Whole batches are encoded by tfx-bsl's C++ `RecordBatchToExamplesEncoder`, framed as
TFRecords (length, masked CRC-32C) and compressed with gzip level 1 — about 2.5×
faster than level 6 for files ~25% larger — straight into a shard file: no Beam
element per example. Shards are written under a temporary name and published by
rename once every shard is complete, as `<dir>/part-SSSSS-of-NNNNN.tfrecord.gz`.
All paths go through Beam's `FileSystems`.

Shard count: with `num_shards=0` each bundle writes its own shard (the runner
decides); with `num_shards=N` batches are spread over exactly N shards (a
GroupByKey, so N writers run in parallel).
"""

from __future__ import annotations

import random
import struct
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator

import apache_beam as beam
import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

from pipeline.output import join, publish_shards

__all__ = ["WriteExamples", "SHARD_SUFFIX", "frame_records", "GZIP_LEVEL"]

SHARD_SUFFIX = ".tfrecord.gz"
GZIP_LEVEL = 1
_TEMP_DIR = ".incomplete"


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_records(records: Iterable[bytes]) -> bytes:
    """TFRecord framing: <len u64><masked crc32c(len) u32><data><masked crc32c(data) u32>."""
    parts = []
    pack_q, pack_i = struct.Struct("<Q").pack, struct.Struct("<I").pack
    for record in records:
        length = pack_q(len(record))
        parts += (
            length,
            pack_i(_masked_crc(length)),
            record,
            pack_i(_masked_crc(record)),
        )
    return b"".join(parts)


class _ShardWriter:
    """One gzip TFRecord file written through FileSystems."""

    def __init__(self, path: str):
        self.path = path
        self._file = FileSystems.create(
            path,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,
        )
        self._gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        self.records = 0

    def write(self, records: list[bytes]) -> None:
        self._file.write(self._gzip.compress(frame_records(records)))
        self.records += len(records)

    def close(self) -> None:
        self._file.write(self._gzip.flush())
        self._file.close()


class _WriteBundleShardsFn(beam.DoFn):
    """Writes each bundle's batches to one temporary shard; emits its path.

    The open shard lives in thread-local state: a runner may drive one DoFn
    instance from several threads (the DirectRunner's multi_threading mode does),
    each with its own bundle.
    """

    def __init__(self, temp_dir: str, split: str):
        self._temp_dir, self._split = temp_dir, split
        self._encoder = None
        self._local = None
        self._count = Metrics.counter("sql2tfrecord", f"examples_{split}")

    def setup(self):
        self._encoder = RecordBatchToExamplesEncoder()
        self._local = threading.local()

    def start_bundle(self):
        self._local.writer = None

    def process(self, element) -> Iterator[str]:
        batch, _ = element
        if batch.num_rows == 0:
            return
        if getattr(self._local, "writer", None) is None:
            self._local.writer = _ShardWriter(
                join(self._temp_dir, f"{uuid.uuid4().hex}{SHARD_SUFFIX}")
            )
        self._local.writer.write(self._encoder.encode(batch))
        self._count.inc(batch.num_rows)

    def finish_bundle(self):
        writer = getattr(self._local, "writer", None)
        if writer is not None:
            writer.close()
            self._local.writer = None
            yield WindowedValue(
                writer.path, GlobalWindow().max_timestamp(), [GlobalWindow()]
            )


class _WriteKeyedShardFn(beam.DoFn):
    """Writes all batches of one shard key to one temporary shard; emits its path."""

    def __init__(self, temp_dir: str, split: str):
        self._temp_dir, self._split = temp_dir, split
        self._encoder = None
        self._count = Metrics.counter("sql2tfrecord", f"examples_{split}")

    def setup(self):
        self._encoder = RecordBatchToExamplesEncoder()

    def process(self, keyed) -> Iterator[str]:
        _, batches = keyed
        writer = _ShardWriter(join(self._temp_dir, f"{uuid.uuid4().hex}{SHARD_SUFFIX}"))
        for batch in batches:
            if batch.num_rows:
                writer.write(self._encoder.encode(batch))
                self._count.inc(batch.num_rows)
        writer.close()
        yield writer.path


def _publish(
    temp_paths: list[str], directory: str, temp_dir: str, num_shards: int
) -> list[str]:
    """Renames complete temporary shards to part-SSSSS-of-NNNNN; returns final paths.

    With `num_shards`, shard keys that received no batch get an empty (valid) shard,
    so there are always exactly `num_shards` files.
    """
    temp_paths = list(temp_paths)
    while len(temp_paths) < num_shards:
        empty = _ShardWriter(join(temp_dir, f"{uuid.uuid4().hex}{SHARD_SUFFIX}"))
        empty.close()
        temp_paths.append(empty.path)
    return publish_shards(temp_paths, directory, temp_dir, SHARD_SUFFIX)


class WriteExamples(beam.PTransform):
    """Writes one split.

    Input: PCollection[(pa.RecordBatch, passthrough)] from
    `tft_beam.TransformDataset(output_record_batches=True)`.
    Output: PCollection of the final shard paths (one element: the list).
    Parallelism: one writer per bundle, or N writers with `num_shards=N`.
    Publication: shards appear under their final names only after all are written.
    """

    def __init__(self, directory: str, split: str, num_shards: int = 0):
        super().__init__()
        self._directory, self._split, self._num_shards = directory, split, num_shards

    def expand(self, transformed):
        split_dir = join(self._directory, self._split)
        temp_dir = join(split_dir, _TEMP_DIR)
        if self._num_shards:
            n = self._num_shards
            paths = (
                transformed
                | "KeyByShard" >> beam.Map(lambda e: (random.randrange(n), e[0]))
                | "GroupShards" >> beam.GroupByKey()
                | "WriteShards" >> beam.ParDo(_WriteKeyedShardFn(temp_dir, self._split))
            )
        else:
            paths = transformed | "WriteShards" >> beam.ParDo(
                _WriteBundleShardsFn(temp_dir, self._split)
            )
        return (
            paths
            | "CollectShards" >> beam.combiners.ToList()
            | "Publish" >> beam.Map(_publish, split_dir, temp_dir, self._num_shards)
        )
