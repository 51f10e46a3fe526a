"""WriteExamples: transformed record batches -> gzip TFRecord shards of tf.Examples.

Whole batches are encoded as tf.Examples and framed as TFRecords by
`pipeline.sink.records` (vectorised for dense numeric features, tfx-bsl's C++ encoder
otherwise) and gzip-compressed with ISA-L (`isal`, level 1: several times zlib
level 1's speed at the same ratio, bench/RESULTS.md; plain zlib when `isal` is
missing) straight into a shard file: no Beam element per example. Encoding,
framing, compression and the file write run on one writer thread per open shard
(the encoder and the compressor release the GIL), overlapping the main thread's
Beam and TensorFlow work; at most `MAX_PENDING_BATCHES` batches wait per shard, so
memory stays bounded. Shards are written under a temporary name and published by
rename once every shard is complete, as `<dir>/part-SSSSS-of-NNNNN.tfrecord.gz`.
All paths go through Beam's `FileSystems`.

Shard count: with `num_shards=0` each bundle writes its own shard (the runner
decides); with `num_shards=N` batches are spread over exactly N shards (a
GroupByKey, so N writers run in parallel).
"""

from __future__ import annotations

import collections
import random
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from pipeline import METRICS_NAMESPACE
from pipeline.sink.output import join, publish_shards
from pipeline.sink.records import RecordsEncoder

try:
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - isal has wheels for the usual platforms
    import zlib as _deflate

__all__ = ["WriteExamples", "SHARD_SUFFIX", "GZIP_LEVEL"]

SHARD_SUFFIX = ".tfrecord.gz"
GZIP_LEVEL = 1
MAX_PENDING_BATCHES = 2
_TEMP_DIR = ".incomplete"


class _ShardWriter:
    """One gzip TFRecord file written through FileSystems by its own thread.

    `write(batch)` queues a RecordBatch and returns; the writer thread encodes,
    frames, compresses and writes batches in order. `close()` waits for them and
    raises the first error, if any; `abort()` stops without publishing anything.
    """

    def __init__(self, path: str):
        self.path = path
        self.records = 0
        self._encoder = RecordsEncoder()
        self._file = FileSystems.create(
            path,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,
        )
        self._gzip = _deflate.compressobj(GZIP_LEVEL, _deflate.DEFLATED, 31)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="shard-writer")
        self._pending: collections.deque[Future] = collections.deque()

    def _write_now(self, batch: pa.RecordBatch) -> None:
        self._file.write(self._gzip.compress(self._encoder.encode_framed(batch)))

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(self._thread.submit(self._write_now, batch))
        self.records += batch.num_rows
        while len(self._pending) > MAX_PENDING_BATCHES or (
            self._pending and self._pending[0].done()
        ):
            self._pending.popleft().result()  # raises the writer thread's error

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
            self._file.write(self._gzip.flush())
        finally:
            self._thread.shutdown(wait=True)
            self._file.close()

    def abort(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._thread.shutdown(wait=True)
        self._file.close()


class _WriteBundleShardsFn(beam.DoFn):
    """Writes each bundle's batches to one temporary shard; emits its path.

    The open shard lives in thread-local state: a runner may drive one DoFn
    instance from several threads (the DirectRunner's multi_threading mode does),
    each with its own bundle. A shard left open by a failed bundle is aborted
    (never published) when the next bundle starts or the DoFn is torn down.
    """

    def __init__(self, temp_dir: str, split: str):
        self._temp_dir, self._split = temp_dir, split
        self._local = None
        self._count = Metrics.counter(METRICS_NAMESPACE, f"examples_{split}")

    def setup(self):
        self._local = threading.local()

    def start_bundle(self):
        stale = getattr(self._local, "writer", None)
        if stale is not None:
            stale.abort()
        self._local.writer = None

    def process(self, element) -> Iterator[str]:
        batch, _ = element
        if batch.num_rows == 0:
            return
        if getattr(self._local, "writer", None) is None:
            self._local.writer = _ShardWriter(
                join(self._temp_dir, f"{uuid.uuid4().hex}{SHARD_SUFFIX}")
            )
        self._local.writer.write(batch)
        self._count.inc(batch.num_rows)

    def finish_bundle(self):
        writer = getattr(self._local, "writer", None)
        if writer is not None:
            self._local.writer = None
            writer.close()
            yield WindowedValue(
                writer.path, GlobalWindow().max_timestamp(), [GlobalWindow()]
            )

    def teardown(self):
        writer = getattr(self._local, "writer", None) if self._local else None
        if writer is not None:
            writer.abort()


class _WriteKeyedShardFn(beam.DoFn):
    """Writes all batches of one shard key to one temporary shard; emits its path."""

    def __init__(self, temp_dir: str, split: str):
        self._temp_dir, self._split = temp_dir, split
        self._count = Metrics.counter(METRICS_NAMESPACE, f"examples_{split}")

    def process(self, keyed) -> Iterator[str]:
        _, batches = keyed
        writer = _ShardWriter(join(self._temp_dir, f"{uuid.uuid4().hex}{SHARD_SUFFIX}"))
        try:
            for batch in batches:
                if batch.num_rows:
                    writer.write(batch)
                    self._count.inc(batch.num_rows)
        except BaseException:
            writer.abort()
            raise
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
