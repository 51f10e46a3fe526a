"""ReadWithJdbc: Beam's cross-language `ReadFromJdbc`, opt-in via `--reader jdbc`.

It needs Java on PATH and Beam's Java expansion service, whose jar Beam downloads
from Maven Central on first use — neither a snapshot shared across partitions nor
our lost-connection resume applies; it reads the same projected, typed SELECT as the
native reader and emits RecordBatches of the same raw schema. It was NOT run in
this project's tests (no Maven access there); the native reader is the default
everywhere. `check_jdbc_available` fails fast with a clear message.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
from psycopg2.extensions import parse_dsn

from pipeline import arrow_coder
from pipeline.sources.postgres.beam import raw_arrow_schema
from pipeline.sources.postgres.plan import ReadPlan, SourceSpec, _quoted
from transforms.types import read_expression

__all__ = ["ReadWithJdbc", "JdbcUnavailableError", "check_jdbc_available", "jdbc_url"]

BATCH_ROWS = 10_000


class JdbcUnavailableError(RuntimeError):
    """The Java side of ReadFromJdbc cannot run here."""


def check_jdbc_available() -> None:
    """Raises JdbcUnavailableError unless `java` is on PATH."""
    if shutil.which("java") is None:
        raise JdbcUnavailableError(
            "--reader jdbc needs Java on PATH and Beam's Java expansion service "
            "(downloaded from Maven Central on first use); use the default "
            "--reader native"
        )


def jdbc_url(dsn: str) -> tuple[str, str | None, str | None]:
    """Converts a libpq URL/DSN to (jdbc:postgresql://host:port/db, user, password)."""
    params = parse_dsn(dsn)
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    database = params.get("dbname", params.get("user", "postgres"))
    url = f"jdbc:postgresql://{host}:{port}/{database}"
    if "sslmode" in params:
        url += f"?sslmode={params['sslmode']}"
    return url, params.get("user"), params.get("password")


def _select(plan: ReadPlan) -> str:
    columns = ", ".join(
        f"{read_expression(_quoted(c.name), c)} AS {_quoted(c.name)}"
        for c in plan.columns
    )
    return f"SELECT {columns} FROM {plan.relation} AS src"


class _RowsToBatchesFn(beam.DoFn):
    def __init__(self, plan: ReadPlan):
        self._plan = plan

    def process(self, rows) -> Iterator[pa.RecordBatch]:
        schema = raw_arrow_schema(self._plan)
        columns = {c.name: [] for c in self._plan.columns}
        for row in rows:
            values = row._asdict() if hasattr(row, "_asdict") else dict(row)
            for name in columns:
                columns[name].append(values.get(name))
        yield pa.RecordBatch.from_pydict(columns, schema=schema)


class ReadWithJdbc(beam.PTransform):
    """Reads the plan's projected SELECT through Beam's Java JdbcIO.

    Output: PCollection[pa.RecordBatch] with `raw_arrow_schema(plan)`.
    Parallelism: JdbcIO's own (`partition_column`, when given). Consistency: none
    across JdbcIO's partitions.
    """

    def __init__(
        self, source: SourceSpec, plan: ReadPlan, partition_column: str | None
    ):
        super().__init__()
        self._source, self._plan = source, plan
        self._partition_column = partition_column

    def expand(self, pbegin):
        from apache_beam.io.jdbc import ReadFromJdbc

        url, user, password = jdbc_url(self._source.dsn.value)
        extra = {}
        if self._partition_column:
            extra = {
                "partition_column": self._partition_column,
                "partitions": len(self._plan.partitions),
            }
        return arrow_coder.batches(
            pbegin
            | "ReadFromJdbc"
            >> ReadFromJdbc(
                table_name=self._plan.table.name if self._plan.table else None,
                driver_class_name="org.postgresql.Driver",
                jdbc_url=url,
                username=user or "",
                password=password or "",
                query=_select(self._plan),
                connection_init_sqls=["SET default_transaction_read_only = on"],
                **extra,
            )
            | "Batch"
            >> beam.BatchElements(min_batch_size=BATCH_ROWS, max_batch_size=BATCH_ROWS)
            | "ToRecordBatches" >> beam.ParDo(_RowsToBatchesFn(self._plan))
        )
