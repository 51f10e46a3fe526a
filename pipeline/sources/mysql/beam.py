"""ReadFromMySql: the partitioned, parallel MySQL/MariaDB source for Beam.

Shape: Create(partitions) -> Reshuffle -> ReadPartition, as for PostgreSQL. Each
partition is read by `partition_reader.PartitionReader` (a streamed SELECT in a
consistent, read-only snapshot) and emitted as `pa.RecordBatch`es of at most
`BATCH_ROWS` rows. Counters: `rows_read`, `bytes_read`, `partition:<label>` and
`zero_date:<column>` (zero dates read as NULL; the manifest's `zero_dates`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipeline import METRICS_NAMESPACE, progress
from pipeline.sources.mysql.partition_reader import PartitionReader
from pipeline.sources.parallel_read import read_partitions
from pipeline.sources.partitioning import Partition

__all__ = ["ReadFromMySql", "ZERO_DATE_COUNTER"]

_LOGGER = logging.getLogger(__name__)

ZERO_DATE_COUNTER = "zero_date:"


class _ReadPartitionFn(beam.DoFn):
    """Reads partitions; each partition on a connection of its own."""

    def __init__(self, spec, plan, snapshot_id: str | None, namespace: str):
        self._spec, self._plan, self._snapshot_id = spec, plan, snapshot_id
        self._namespace = namespace
        self._rows = Metrics.counter(namespace, "rows_read")
        self._bytes = Metrics.counter(namespace, "bytes_read")

    def _zero_dates(self, column: str, count: int) -> None:
        Metrics.counter(self._namespace, f"{ZERO_DATE_COUNTER}{column}").inc(count)

    def process(self, partition: Partition) -> Iterator[pa.RecordBatch]:
        reader = PartitionReader(self._spec, self._plan, self._snapshot_id)
        rows = 0
        for batch in reader.read(partition, self._zero_dates):
            rows += batch.num_rows
            self._rows.inc(batch.num_rows)
            self._bytes.inc(batch.nbytes)
            progress.note_rows(self._namespace, batch.num_rows)
            yield batch
        progress.note_partition(self._namespace)
        Metrics.counter(self._namespace, f"partition:{partition.label}").inc(rows)
        _LOGGER.info("Partition %s: %d rows", partition.label, rows)


class ReadFromMySql(beam.PTransform):
    """Reads a table or query from MySQL/MariaDB as Arrow record batches, in parallel.

    Output: PCollection[pa.RecordBatch] with `raw_arrow_schema(plan)`.
    Consistency: per partition, or one instant when `snapshot_id` names the
    launcher's pre-opened snapshots (`session`, in-process runners only).
    """

    def __init__(self, spec, plan, snapshot_id, namespace: str = METRICS_NAMESPACE):
        super().__init__()
        self._spec, self._plan, self._snapshot_id = spec, plan, snapshot_id
        self._namespace = namespace

    def expand(self, pbegin):
        return read_partitions(
            pbegin,
            self._plan,
            _ReadPartitionFn(
                self._spec, self._plan, self._snapshot_id, self._namespace
            ),
        )
