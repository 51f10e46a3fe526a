"""The raw extract as a Parquet snapshot: written beside a run, read instead of the DB.

`WriteRawParquet` lands the raw record batches (catalog-typed Arrow, NULLs kept) as
snappy Parquet shards `part-SSSSS-of-NNNNN.parquet`, published by rename once all are
complete; `write_snapshot_info` then adds `_snapshot.json` (the catalog columns,
split key, masked source, exported snapshot id, row count) — written last, so its
presence means the snapshot is complete. `ReadRawParquet` and `read_snapshot_info`
let `--input_parquet` rerun the transform stage without touching the database.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from pipeline import METRICS_NAMESPACE, arrow_coder
from pipeline.sink.output import join, publish_shards, write_json
from transforms.types import Column, arrow_type

__all__ = [
    "WriteRawParquet",
    "ReadRawParquet",
    "write_snapshot_info",
    "read_snapshot_info",
    "SNAPSHOT_INFO",
    "SnapshotError",
]

SNAPSHOT_INFO = "_snapshot.json"
_TEMP_DIR = ".incomplete"
_SHARD = re.compile(r"part-(\d{5})-of-(\d{5})\.parquet$")


class SnapshotError(ValueError):
    """An `--input_parquet` snapshot that is incomplete or corrupt; names the file."""


class _WriteParquetFn(beam.DoFn):
    """One Parquet file per bundle (thread-local: one instance may serve threads)."""

    def __init__(self, temp_dir: str, schema: pa.Schema):
        self._temp_dir, self._schema = temp_dir, schema
        self._local = None

    def setup(self):
        self._local = threading.local()

    def start_bundle(self):
        self._local.state = None

    def process(self, batch: pa.RecordBatch) -> Iterator[str]:
        if getattr(self._local, "state", None) is None:
            path = join(self._temp_dir, f"{uuid.uuid4().hex}.parquet")
            handle = FileSystems.create(
                path, compression_type=CompressionTypes.UNCOMPRESSED
            )
            writer = pq.ParquetWriter(handle, self._schema, compression="snappy")
            self._local.state = (path, handle, writer)
        self._local.state[2].write_batch(batch.cast(self._schema))

    def finish_bundle(self):
        state = getattr(self._local, "state", None)
        if state is not None:
            path, handle, writer = state
            writer.close()
            handle.close()
            self._local.state = None
            yield WindowedValue(path, GlobalWindow().max_timestamp(), [GlobalWindow()])


class WriteRawParquet(beam.PTransform):
    """Input: PCollection[pa.RecordBatch] (raw). Output: the published file paths."""

    def __init__(self, directory: str, schema: pa.Schema):
        super().__init__()
        self._directory, self._schema = directory, schema

    def expand(self, batches):
        temp_dir = join(self._directory, _TEMP_DIR)
        return (
            batches
            | "WriteParquet" >> beam.ParDo(_WriteParquetFn(temp_dir, self._schema))
            | "CollectFiles" >> beam.combiners.ToList()
            | "Publish"
            >> beam.Map(publish_shards, self._directory, temp_dir, ".parquet")
        )


class ReadRawParquet(beam.PTransform):
    """Output: PCollection[pa.RecordBatch] of a snapshot written by WriteRawParquet."""

    def __init__(self, directory: str, schema: pa.Schema):
        super().__init__()
        self._directory, self._schema = directory, schema

    def expand(self, pbegin):
        schema = self._schema
        return arrow_coder.batches(
            pbegin
            | "ReadParquet"
            >> beam.io.ReadFromParquetBatched(join(self._directory, "part-*.parquet"))
            | "ToBatches" >> beam.ParDo(_ToBatchesFn(schema))
        )


class _ToBatchesFn(beam.DoFn):
    def __init__(self, schema: pa.Schema):
        self._schema = schema
        self._rows = Metrics.counter(METRICS_NAMESPACE, "rows_read")

    def process(self, table: pa.Table) -> Iterator[pa.RecordBatch]:
        table = table.select(self._schema.names).cast(self._schema)
        self._rows.inc(table.num_rows)
        yield from table.to_batches()


def write_snapshot_info(directory: str, info: dict[str, Any]) -> None:
    """Publishes `_snapshot.json` (temp file, then rename): the snapshot is complete."""
    write_json(directory, SNAPSHOT_INFO, info)


def read_snapshot_info(directory: str) -> tuple[dict[str, Any], list[Column]]:
    """The snapshot's info and its catalog columns, after checking every shard.

    Checks, before the pipeline runs: `_snapshot.json` is there and readable; the
    shards `part-SSSSS-of-NNNNN.parquet` are all there; each one's footer reads
    (a truncated file has none) and its schema has the snapshot's columns and types;
    their row counts add up to the snapshot's.

    Raises:
        SnapshotError: naming the file and what is wrong with it.
    """
    flag = "--input_parquet"
    path = join(directory, SNAPSHOT_INFO)
    if not FileSystems.exists(path):
        raise SnapshotError(
            f"{flag}: {directory} has no {SNAPSHOT_INFO}: not a complete "
            "snapshot written with --raw_parquet_dir"
        )
    try:
        with FileSystems.open(path) as f:
            info = json.loads(f.read().decode())
        columns = [Column(**c) for c in info["columns"]]
        _ = info["rows"], info["split_key"]
    except (ValueError, KeyError, TypeError) as err:
        raise SnapshotError(
            f"{flag}: {path} is not a snapshot description written with "
            f"--raw_parquet_dir ({type(err).__name__})"
        ) from err
    _check_shards(directory, columns, int(info["rows"]))
    return info, columns


def _check_shards(directory: str, columns: list[Column], rows: int) -> None:
    flag = "--input_parquet"
    pattern = join(directory, "part-*.parquet")
    paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    totals = {int(m.group(2)) for m in map(_SHARD.search, paths) if m}
    if len(totals) > 1 or any(not _SHARD.search(p) for p in paths):
        raise SnapshotError(f"{flag}: {directory} mixes shards of different writes")
    total = totals.pop() if totals else 0
    for i in range(total):
        name = f"part-{i:05d}-of-{total:05d}.parquet"
        if join(directory, name) not in paths:
            raise SnapshotError(f"{flag}: shard {join(directory, name)} is missing")
    expected = {c.name: arrow_type(c) for c in columns}
    found = 0
    for shard in paths:
        try:
            with FileSystems.open(
                shard, compression_type=CompressionTypes.UNCOMPRESSED
            ) as f:
                metadata = pq.ParquetFile(f).metadata
                schema = metadata.schema.to_arrow_schema()
        except (OSError, pa.ArrowException) as err:
            raise SnapshotError(
                f"{flag}: shard {shard} is unreadable (truncated or corrupt: "
                f"{' '.join(str(err).split())[:200]})"
            ) from err
        for name, kind in expected.items():
            index = schema.get_field_index(name)
            if index < 0:
                raise SnapshotError(
                    f"{flag}: shard {shard} has no column {name!r} of the snapshot"
                )
            if schema.field(index).type != kind:
                raise SnapshotError(
                    f"{flag}: shard {shard}: column {name!r} is "
                    f"{schema.field(index).type}, the snapshot says {kind}"
                )
        found += metadata.num_rows
    if found != rows:
        raise SnapshotError(
            f"{flag}: the shards of {directory} hold {found} rows, "
            f"{SNAPSHOT_INFO} says {rows}"
        )
