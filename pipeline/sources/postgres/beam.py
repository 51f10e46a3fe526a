"""ReadFromPostgres: a partitioned, parallel, consistent PostgreSQL source for Beam.

Shape: Create(partitions) -> Reshuffle -> ReadPartition. Each partition is read by
`partition_reader.PartitionReader` (COPY -> pyarrow, exact resume after a lost
connection) and emitted as `pa.RecordBatch`es of bounded size.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipeline import METRICS_NAMESPACE, progress
from pipeline.sources.parallel_read import read_partitions
from pipeline.sources.partitioning import Partition
from pipeline.sources.postgres.partition_reader import (
    PartitionReader,
    PartitionReadError,
    raw_arrow_schema,
    read_partition,
)
from pipeline.sources.postgres.plan import ReadPlan, SourceSpec

__all__ = [
    "ReadFromPostgres",
    "PartitionReader",
    "PartitionReadError",
    "raw_arrow_schema",
    "read_partition",
]

_LOGGER = logging.getLogger(__name__)


class _ReadPartitionFn(beam.DoFn):
    """Reads partitions; one connection per DoFn instance and thread.

    A runner may drive one DoFn instance from several threads (the DirectRunner's
    multi_threading mode does), so readers are thread-local: a psycopg2 connection
    never serves two COPYs at once.
    """

    def __init__(
        self,
        source: SourceSpec,
        plan: ReadPlan,
        snapshot_id: str | None,
        namespace: str,
    ):
        self._source = source
        self._plan = plan
        self._snapshot_id = snapshot_id
        self._namespace = namespace
        self._local = None
        self._readers: list[PartitionReader] = []
        self._rows = Metrics.counter(namespace, "rows_read")
        self._bytes = Metrics.counter(namespace, "bytes_read")

    def _reader(self) -> PartitionReader:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = PartitionReader(self._source, self._plan, self._snapshot_id)
            reader._connect()  # noqa: SLF001 - fail fast, before the first partition
            self._local.reader = reader
            self._readers.append(reader)
        return reader

    def setup(self):
        self._local = threading.local()
        self._readers = []
        self._reader()

    def process(self, partition: Partition) -> Iterator[pa.RecordBatch]:
        rows = 0
        for batch in self._reader().read(partition):
            rows += batch.num_rows
            self._rows.inc(batch.num_rows)
            self._bytes.inc(batch.nbytes)
            progress.note_rows(self._namespace, batch.num_rows)
            yield batch
        progress.note_partition(self._namespace)
        Metrics.counter(self._namespace, f"partition:{partition.label}").inc(rows)
        _LOGGER.info("Partition %s: %d rows", partition.label, rows)

    def teardown(self):
        for reader in self._readers:
            reader.close()
        self._readers = []


class ReadFromPostgres(beam.PTransform):
    """Reads a table or query from PostgreSQL as Arrow record batches, in parallel.

    Output: PCollection[pa.RecordBatch] with `raw_arrow_schema(plan)`.
    Parallelism: one read per planned partition, spread over workers by a Reshuffle.
    Consistency: every partition imports the same exported snapshot when one is given.
    Counters (`rows_read`, `bytes_read`, `partition:<label>`) go to `namespace`.
    """

    def __init__(
        self,
        source: SourceSpec,
        plan: ReadPlan,
        snapshot_id: str | None,
        namespace: str = METRICS_NAMESPACE,
    ):
        super().__init__()
        self._source, self._plan, self._snapshot_id = source, plan, snapshot_id
        self._namespace = namespace

    def expand(self, pbegin):
        return read_partitions(
            pbegin,
            self._plan,
            _ReadPartitionFn(
                self._source, self._plan, self._snapshot_id, self._namespace
            ),
        )
