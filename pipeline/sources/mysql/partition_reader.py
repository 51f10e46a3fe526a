"""Reading one MySQL partition: a streamed SELECT -> exact pyarrow RecordBatches.

The partition's SELECT (`plan.select_sql`) runs in a consistent, read-only
snapshot on an unbuffered cursor (the server streams rows; at most
`BATCH_ROWS` are held), and each batch of raw text values is parsed by Arrow
with the plan's types, never guessed: integers must fit int64 (a BIGINT
UNSIGNED value above 2**63-1 is a ColumnValueError naming the column), DECIMAL
and DOUBLE text is parsed to the nearest float64 (a DOUBLE's text round-trips
exactly), text must be UTF-8 (the session's utf8mb4). A zero date (`Z` from the
read expression) becomes NULL and is counted per column (`zero_dates`).

The client is behind `open_stream`, so another driver can replace it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.sources import DatabaseError
from pipeline.sources.mysql import catalog
from pipeline.sources.mysql.connection import connect, driver_error
from pipeline.sources.mysql.plan import ZERO_DATE, select_sql
from pipeline.sources.mysql.session import start_snapshot, take_connection
from pipeline.sources.partitioning import Partition
from pipeline.sources.read_plan import ReadPlan, raw_arrow_schema
from transforms.types import arrow_type

__all__ = [
    "BATCH_ROWS",
    "ColumnValueError",
    "PartitionReadError",
    "open_stream",
    "to_batch",
    "read_partition",
    "PartitionReader",
]

_LOGGER = logging.getLogger(__name__)

BATCH_ROWS = 65_536


class PartitionReadError(DatabaseError):
    """Reading one partition failed (one line, no secret)."""


class ColumnValueError(DatabaseError):
    """A value the read refuses (an unsigned BIGINT above int64); names the column."""


def open_stream(conn, statement: str) -> Iterator[list[tuple]]:
    """Runs `statement` on an unbuffered raw cursor; yields lists of raw rows.

    Values are bytes (the server's text) or None. The one place that knows the
    client library.
    """
    cur = conn.cursor(raw=True, buffered=False)
    try:
        cur.execute(statement)
        while True:
            rows = cur.fetchmany(BATCH_ROWS)
            if not rows:
                return
            yield rows
    finally:
        try:
            cur.close()
        except Exception:  # noqa: BLE001 - a lost connection: reported by the caller
            pass


def to_batch(
    rows: list[tuple], plan: ReadPlan, zero_dates: Callable[[str, int], None]
) -> pa.RecordBatch:
    """Raw text rows -> a RecordBatch with `raw_arrow_schema(plan)`, exactly.

    `zero_dates(column, n)` is told how many zero dates a column held.
    """
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in plan.columns]
    arrays = []
    for column, values in zip(plan.columns, columns, strict=True):
        raw = pa.array(values, type=pa.binary())
        family = catalog.family(column)
        if family in ("date", "datetime"):
            zero = pc.equal(raw, pa.scalar(ZERO_DATE, pa.binary()))
            count = pc.sum(zero).as_py() or 0
            if count:
                zero_dates(column.name, count)
                raw = pc.if_else(zero, pa.scalar(None, pa.binary()), raw)
        try:
            array = raw.cast(arrow_type(column))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ColumnValueError(_value_message(column, raw, err)) from None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=raw_arrow_schema(plan))


def _value_message(column, raw: pa.Array, err: Exception) -> str:
    if catalog.unsigned_bigint(column):
        return (
            f"column {column.name!r} ({column.display_type}) holds a value above "
            "2**63-1, which int64 cannot hold; select it with --query as "
            f"CAST({catalog.quote(column.name)} AS DOUBLE) (nearest float64) or "
            "filter those rows"
        )
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"column {column.name!r} ({column.display_type}): a value cannot be read: "
        f"{first}"
    )


def read_partition(
    conn, plan: ReadPlan, partition: Partition, zero_dates
) -> Iterator[pa.RecordBatch]:
    """Streams one partition on `conn`, already in its snapshot; ends it after."""
    try:
        for rows in open_stream(conn, select_sql(plan, partition)):
            yield to_batch(rows, plan, zero_dates)
    finally:
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001 - a lost connection: the caller reports it
            pass


class PartitionReader:
    """Reads partitions, one connection at a time, in their own snapshots.

    `per_partition` mode (`snapshot_id` None): a fresh connection and snapshot
    per partition. When the connection is lost before the partition's first
    row, the read starts over (bounded attempts); once rows were emitted it
    cannot resume exactly (a new snapshot may hold other rows), so it fails with
    a PartitionReadError: a runner that retries re-reads the bundle whole, the
    DirectRunner fails clearly. `one_instant` mode: the partition's connection
    comes from the launcher (`session.take_connection`); it is never retried.
    """

    def __init__(self, spec, plan: ReadPlan, snapshot_id: str | None, *, max_retries=3):
        self._spec, self._plan, self._snapshot_id = spec, plan, snapshot_id
        self._max_retries = max_retries
        self.reconnects = 0

    def _open(self, partition: Partition):
        if self._snapshot_id is not None:
            return take_connection(self._snapshot_id, partition.index)
        conn = connect(self._spec.dsn, what=f"partition {partition.label}: connecting")
        try:
            start_snapshot(conn)
        except Exception as err:
            conn.close()
            raise PartitionReadError(
                driver_error(err, f"partition {partition.label}", self._spec.dsn)
            ) from None
        return conn

    def read(self, partition: Partition, zero_dates) -> Iterator[pa.RecordBatch]:
        """Yields the partition's rows as RecordBatches; raises PartitionReadError."""
        attempt = 0
        while True:
            emitted = 0
            conn = self._open(partition)
            try:
                for batch in read_partition(conn, self._plan, partition, zero_dates):
                    emitted += batch.num_rows
                    yield batch
                return
            except DatabaseError:
                raise
            except Exception as err:
                if not type(err).__module__.startswith("mysql.connector"):
                    raise
                what = f"partition {partition.label} of {self._plan.source_name}"
                if (
                    emitted
                    or self._snapshot_id is not None
                    or attempt >= self._max_retries
                ):
                    raise PartitionReadError(
                        driver_error(
                            err,
                            f"{what} failed after {emitted} rows (a MySQL partition "
                            "cannot resume in its snapshot; rerun the job)",
                            self._spec.dsn,
                        )
                    ) from None
                attempt += 1
                self.reconnects += 1
                _LOGGER.warning("%s: %s; retry %d", what, err, attempt)
            finally:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - already gone
                    pass
