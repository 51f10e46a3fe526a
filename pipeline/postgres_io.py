"""ReadFromPostgres: a partitioned, parallel, consistent PostgreSQL source for Beam.

Shape: Create(partitions) -> Reshuffle -> ReadPartition. Each partition is read by
`COPY (SELECT …) TO STDOUT (FORMAT csv)`, streamed through a pipe into pyarrow's CSV
reader with the catalog's types, and emitted as `pa.RecordBatch`es of bounded size,
so memory stays flat whatever the table size. NULL stays NULL; an empty string stays
an empty string (COPY quotes it, pyarrow keeps quoted empties non-null).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pacsv
from apache_beam.metrics import Metrics

from pipeline.connection import connect
from pipeline.partitioning import Partition
from pipeline.source import ReadPlan, SourceSpec, copy_sql
from transforms.types import arrow_type

__all__ = ["ReadFromPostgres", "PartitionReadError", "raw_arrow_schema", "read_partition"]

_LOGGER = logging.getLogger(__name__)

BLOCK_SIZE = 4 << 20  # bytes of CSV per RecordBatch: ~30-60k rows of a typical table


class PartitionReadError(RuntimeError):
    """Reading one partition failed."""


def raw_arrow_schema(plan: ReadPlan) -> pa.Schema:
    """The Arrow schema of the raw batches (flat typed columns, arrays as lists)."""
    return pa.schema(
        [pa.field(c.name, arrow_type(c), nullable=not c.not_null) for c in plan.columns]
    )


def _csv_types(plan: ReadPlan) -> dict[str, pa.DataType]:
    return {
        c.name: pa.large_string() if c.is_array else arrow_type(c) for c in plan.columns
    }


def _decode_arrays(batch: pa.RecordBatch, plan: ReadPlan) -> pa.RecordBatch:
    if not any(c.is_array for c in plan.columns):
        return batch
    arrays = []
    for column, array in zip(plan.columns, batch.columns):
        if column.is_array:
            values = [None if s is None else json.loads(s) for s in array.to_pylist()]
            array = pa.array(values, type=arrow_type(column))
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=raw_arrow_schema(plan))


def read_partition(
    conn, plan: ReadPlan, partition: Partition, snapshot_id: str | None
) -> Iterator[pa.RecordBatch]:
    """Streams one partition as RecordBatches with the plan's raw schema.

    The COPY runs in a REPEATABLE READ READ ONLY transaction that imports
    `snapshot_id` when given. The transaction is closed when the generator ends.
    """
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    statement = copy_sql(plan, partition).as_string(conn)
    with conn.cursor() as cur:
        if snapshot_id:
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_id,))
        else:
            cur.execute("SELECT 1")  # opens the transaction
        read_fd, write_fd = os.pipe()
        reader = os.fdopen(read_fd, "rb", buffering=1 << 20)
        writer = os.fdopen(write_fd, "wb", buffering=1 << 20)
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                cur.copy_expert(statement, writer, size=1 << 16)
            except BaseException as err:  # noqa: BLE001 - re-raised by the consumer
                failure.append(err)
            finally:
                try:
                    writer.close()
                except OSError:
                    pass

        producer = threading.Thread(target=produce, name="copy-out", daemon=True)
        producer.start()
        finished = False
        try:
            if reader.peek(1):
                csv = pacsv.open_csv(
                    reader,
                    read_options=pacsv.ReadOptions(
                        column_names=[c.name for c in plan.columns],
                        block_size=BLOCK_SIZE,
                        use_threads=True,
                    ),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(
                        column_types=_csv_types(plan),
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=False,
                        null_values=[""],
                    ),
                )
                for batch in csv:
                    yield _decode_arrays(batch, plan)
            finished = True
        finally:
            reader.close()
            if not finished and producer.is_alive():
                conn.cancel()
            producer.join()
            conn.rollback()
        if failure:
            raise failure[0]


class _ReadPartitionFn(beam.DoFn):
    """Reads partitions on one connection per DoFn instance (opened in setup)."""

    def __init__(self, source: SourceSpec, plan: ReadPlan, snapshot_id: str | None):
        self._source = source
        self._plan = plan
        self._snapshot_id = snapshot_id
        self._conn = None
        self._rows = Metrics.counter("sql2tfrecord", "rows_read")
        self._bytes = Metrics.counter("sql2tfrecord", "bytes_read")

    def setup(self):
        self._conn = connect(self._source.dsn)

    def process(self, partition: Partition) -> Iterator[pa.RecordBatch]:
        rows = 0
        try:
            for batch in read_partition(
                self._conn, self._plan, partition, self._snapshot_id
            ):
                rows += batch.num_rows
                self._rows.inc(batch.num_rows)
                self._bytes.inc(batch.nbytes)
                yield batch
        except Exception as err:
            if self._conn is not None and self._conn.closed:
                self._conn = connect(self._source.dsn)  # fresh one for the retry
            raise PartitionReadError(
                f"partition {partition.label} of {self._plan.relation} failed: "
                f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
            ) from err
        Metrics.counter("sql2tfrecord", f"rows_{partition.label}").inc(rows)
        _LOGGER.info("Partition %s: %d rows", partition.label, rows)

    def teardown(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class ReadFromPostgres(beam.PTransform):
    """Reads a table or query from PostgreSQL as Arrow record batches, in parallel.

    Output: PCollection[pa.RecordBatch] with `raw_arrow_schema(plan)`.
    Parallelism: one read per planned partition, spread over workers by a Reshuffle.
    Consistency: every partition imports the same exported snapshot when one is given.
    """

    def __init__(self, source: SourceSpec, plan: ReadPlan, snapshot_id: str | None):
        super().__init__()
        self._source, self._plan, self._snapshot_id = source, plan, snapshot_id

    def expand(self, pbegin):
        return (
            pbegin
            | "CreatePartitions" >> beam.Create(list(self._plan.partitions))
            | "Spread" >> beam.Reshuffle()
            | "ReadPartition"
            >> beam.ParDo(_ReadPartitionFn(self._source, self._plan, self._snapshot_id))
        )
