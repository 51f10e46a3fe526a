"""Reading one partition: COPY -> pyarrow RecordBatches, resumable. No Beam here.

`read_partition` streams one partition's `COPY (SELECT …) TO STDOUT (FORMAT csv)`
through `CopyStream` into pyarrow's CSV reader with the catalog's types and yields
`pa.RecordBatch`es of bounded size (memory stays flat). NULL stays NULL; an empty
string stays an empty string (COPY quotes it; pyarrow keeps quoted empties).
`PartitionReader` adds the exact resume after a lost connection. Used by the Beam
source (`postgres_io`) and by `trainer.dataset_from_postgres`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.sources.partitioning import Partition
from pipeline.sources.postgres.connection import connect
from pipeline.sources.postgres.copy_stream import CopyStream
from pipeline.sources.postgres.plan import ReadPlan, SourceSpec, copy_sql
from pipeline.sources.postgres.snapshot import (
    IDLE_SESSION_OPTIONS,
    lock_timeout_message,
)
from pipeline.sources.read_plan import raw_arrow_schema
from transforms.types import Kind, arrow_type, read_error_message

__all__ = [
    "PartitionReader",
    "PartitionReadError",
    "raw_arrow_schema",
    "read_partition",
    "BLOCK_SIZE",
]

_LOGGER = logging.getLogger(__name__)


BLOCK_SIZE = 4 << 20  # bytes of CSV per RecordBatch: ~30-60k rows of a typical table
# Same snapshot + no synchronized scans + no parallel workers = the same row order on
# every execution of a partition's COPY, which makes resuming by row count exact.
READER_SESSION_OPTIONS = (
    "-c synchronize_seqscans=off -c max_parallel_workers_per_gather=0 "
    + IDLE_SESSION_OPTIONS
)


class PartitionReadError(RuntimeError):
    """Reading one partition failed."""


class ColumnValueError(ValueError):
    """A value the read refuses (e.g. a multi-dimensional array); names the column."""


def _csv_types(plan: ReadPlan) -> dict[str, pa.DataType]:
    return {
        c.name: pa.large_string() if c.is_array else arrow_type(c) for c in plan.columns
    }


def _json_float(value):
    return float(value) if isinstance(value, str) else value


def _decode_arrays(batch: pa.RecordBatch, plan: ReadPlan) -> pa.RecordBatch:
    """Parses the JSON text of array columns into large lists.

    The read expression (`transforms.types.read_expression`) has already refused
    any value with more than one dimension, so every value is a flat JSON list;
    a nested one here is a bug, never flattened.
    """
    if not any(c.is_array for c in plan.columns):
        return batch
    arrays = []
    for column, array in zip(plan.columns, batch.columns, strict=True):
        if column.is_array:
            values = [None if s is None else json.loads(s) for s in array.to_pylist()]
            if column.kind is Kind.FLOAT:
                # array_to_json writes NaN and ±Infinity as the strings "NaN", …
                values = [
                    row if row is None else [_json_float(v) for v in row]
                    for row in values
                ]
            if any(isinstance(v, list) for row in values if row for v in row):
                raise ColumnValueError(
                    f'column "{column.name}": a nested array reached the reader'
                )
            array = pa.array(values, type=arrow_type(column))
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=raw_arrow_schema(plan))


_CSV_COLUMN_ERROR = re.compile(r"In CSV column #(\d+): (.*)")


def _csv_error_message(text: str, plan: ReadPlan) -> str | None:
    """The message of pyarrow's error converting a CSV column, naming it; else None.

    The one such error a read expression's output can meet is text that is not
    valid UTF-8: a database with encoding SQL_ASCII stores any bytes unchecked.
    """
    match = _CSV_COLUMN_ERROR.search(text)
    if match is None or int(match.group(1)) >= len(plan.columns):
        return None
    column = plan.columns[int(match.group(1))]
    name = column.name
    if "invalid UTF8" in match.group(2):
        quoted = '"' + name.replace('"', '""') + '"'
        fix = (
            f"ARRAY(SELECT encode(v::bytea, 'escape') FROM unnest({quoted}) v)"
            if column.is_array
            else f"encode({quoted}::bytea, 'escape')"
        )
        return (
            f'column "{name}" holds text that is not valid UTF-8 (a database '
            "with encoding SQL_ASCII stores any bytes); read it through --query "
            f"as valid text, e.g. {fix}"
        )
    return f'column "{name}": {match.group(2).splitlines()[0]}'


def read_partition(
    conn,
    plan: ReadPlan,
    partition: Partition,
    snapshot_id: str | None,
    block_size: int = BLOCK_SIZE,
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
        stream = CopyStream(lambda writer: cur.copy_expert(statement, writer, 1 << 16))
        finished = False
        try:
            if not stream.at_end():
                csv = pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(
                        column_names=[c.name for c in plan.columns],
                        block_size=block_size,
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
        except Exception as err:
            # pyarrow wraps the stream's error; surface the database's own error.
            if stream.error is not None:
                message = read_error_message(str(stream.error))
                if message is not None:
                    raise ColumnValueError(message) from stream.error
                raise stream.error from err
            if isinstance(err, pa.ArrowInvalid):
                message = _csv_error_message(str(err), plan)
                if message is not None:
                    raise ColumnValueError(message) from err
            raise
        finally:
            stream.close()
            if not finished and stream.producing and not conn.closed:
                conn.cancel()
            stream.join()
            if not conn.closed:
                conn.rollback()


def _connection_lost(conn, err: BaseException) -> bool:
    return bool(conn is None or conn.closed) or isinstance(
        err, (psycopg2.InterfaceError, psycopg2.errors.AdminShutdown)
    )


class PartitionReader:
    """Reads partitions on one connection, surviving lost connections exactly.

    When the connection drops mid-partition, the reader reconnects (bounded
    attempts, exponential backoff), re-runs the same COPY in the same exported
    snapshot and skips the rows it already emitted. That is exact only where the
    row order is guaranteed to repeat: a block range of a stored heap (one
    snapshot, `synchronize_seqscans=off`, no parallel workers, and no rewrite of
    the table: the launcher's lock keeps VACUUM FULL/CLUSTER out). A `--query`, a
    view, key ranges (whose plan may change after an ANALYZE) or a foreign table
    may return another order, so once rows were emitted a lost connection is a
    PartitionReadError: a runner that retries re-reads the bundle whole and
    discards its output, the DirectRunner fails clearly. A loss before the first
    row may always be retried; so may any loss without a snapshot only before it.

    A lock that cannot be had within `lock_timeout` (a TRUNCATE/ALTER queued
    behind the launcher's lock, say) is a PartitionReadError naming the relation
    and the blocking pids, never a silent wait.
    """

    def __init__(
        self,
        source: SourceSpec,
        plan: ReadPlan,
        snapshot_id: str | None,
        *,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        block_size: int = BLOCK_SIZE,
    ):
        self._source, self._plan, self._snapshot_id = source, plan, snapshot_id
        self._max_retries, self._backoff_s = max_retries, backoff_s
        self._block_size = block_size
        self.conn = None
        self.reconnects = 0

    def _connect(self):
        self.conn = connect(self._source.dsn, session_options=READER_SESSION_OPTIONS)

    def read(self, partition: Partition) -> Iterator[pa.RecordBatch]:
        """Yields the partition's rows as RecordBatches; raises PartitionReadError."""
        emitted, attempt = 0, 0
        while True:
            try:
                if self.conn is None or self.conn.closed:
                    self._connect()
                skip = emitted
                for batch in read_partition(
                    self.conn,
                    self._plan,
                    partition,
                    self._snapshot_id,
                    self._block_size,
                ):
                    if skip >= batch.num_rows:
                        skip -= batch.num_rows
                        continue
                    if skip:
                        batch, skip = batch.slice(skip), 0
                    emitted += batch.num_rows
                    yield batch
                return
            except psycopg2.errors.LockNotAvailable as err:
                raise PartitionReadError(self._lock_message(partition)) from err
            except Exception as err:
                lost = _connection_lost(self.conn, err)
                same_order = self._snapshot_id is not None and partition.resumable
                if lost and emitted and not same_order:
                    raise PartitionReadError(
                        f"partition {partition.label} of {self._plan.source_name}: the "
                        f"connection was lost after {emitted} rows "
                        f"({_first_line(err)}), and its row order is not guaranteed "
                        "to repeat (a query, view, key range or foreign table), so "
                        "it cannot be resumed exactly; rerun the job"
                    ) from err
                if not lost or attempt >= self._max_retries:
                    raise PartitionReadError(
                        f"partition {partition.label} of {self._plan.source_name} "
                        f"failed after {emitted} rows: {_first_line(err)}"
                    ) from err
                attempt += 1
                self.reconnects += 1
                _LOGGER.warning(
                    "Partition %s: connection lost after %d rows (%s); retry %d/%d",
                    partition.label,
                    emitted,
                    _first_line(err),
                    attempt,
                    self._max_retries,
                )
                self.close()
                time.sleep(self._backoff_s * 2 ** (attempt - 1))

    def _lock_message(self, partition: Partition) -> str:
        what = f"partition {partition.label} of {self._plan.source_name}"
        relations = list(self._plan.locks)
        if self.conn is None or self.conn.closed:
            self._connect()
        else:
            self.conn.rollback()
        return lock_timeout_message(self.conn, relations, what, self._source.dsn)

    def close(self) -> None:
        """Closes the connection (a later read reconnects)."""
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
