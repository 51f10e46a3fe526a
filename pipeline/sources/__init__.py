"""Sources: each database behind one seam (DESIGN.md, "The source seam").

A source is a catalog reader, a partition planner and a partition reader whose
batches have `read_plan.raw_arrow_schema(plan)`; everything after the read (split,
tf.Transform, write, statistics, trainer) is database-agnostic. Each database's
package (`postgres`, `mysql`) provides the same three entry points, which the
functions below pick by the URL's scheme:

- `source_spec(db_url, table=, query=, ...)`: what to read, where (picklable);
- `open_session(spec, export=)`: the launcher's session, entered; it holds the
  locks and the snapshot the partitions read, plans the read inside them
  (`session.plan(...) -> ReadPlan`), knows the table's primary key
  (`session.primary_key(table)`), and exposes `snapshot_id` (None when the
  partitions do not share one instant), `holds_for_run` (True: keep it open
  until the run ends, its locks guard the read), `check_held()` (raises
  DatabaseError when its connection was lost, so its guard may have lapsed) and
  `close()`;
- `ReadRows(spec, plan, snapshot_id, namespace)`: the parallel read, a PTransform
  producing `pa.RecordBatch`es.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

__all__ = [
    "DatabaseError",
    "SourceSpec",
    "engine",
    "source_spec",
    "open_session",
    "read_rows",
]

# URL schemes of the MySQL source; every other --db_url is PostgreSQL's (a URL or a
# libpq key=value string).
MYSQL_SCHEMES = ("mysql", "mariadb")


class DatabaseError(RuntimeError):
    """A database problem reported to the user in one line, without secrets."""


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """What to read: exactly one of `table` and `query`, on `dsn` (plain, picklable).

    `dsn` is the engine's connection object (`postgres.connection.Dsn` or
    `mysql.connection.MySqlUrl`); it has `value` and `masked` (no secret).
    """

    dsn: Any
    table: str | None = None
    query: str | None = None

    @property
    def engine(self) -> str:
        """`postgres` or `mysql`."""
        return getattr(self.dsn, "engine", "postgres")


def engine(db_url: str) -> str:
    """`mysql` for mysql:// and mariadb:// URLs, else `postgres`."""
    scheme = db_url.partition("://")[0].lower() if "://" in db_url else ""
    return "mysql" if scheme in MYSQL_SCHEMES else "postgres"


def _package(name: str):
    return importlib.import_module(f"pipeline.sources.{name}")


def source_spec(
    db_url: str,
    *,
    table: str | None = None,
    query: str | None = None,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
    consistency: str | None = None,
) -> SourceSpec:
    """The spec for `db_url`'s database (its connection object built, not opened).

    `consistency` (`--consistency`) is passed only when given: a MySQL option
    (`pipeline.options` refuses it for PostgreSQL, which always shares one
    exported snapshot unless `--no_snapshot`).
    """
    extra = {} if consistency is None else {"consistency": consistency}
    return _package(engine(db_url)).source_spec(
        db_url,
        table=table,
        query=query,
        statement_timeout_ms=statement_timeout_ms,
        lock_timeout_ms=lock_timeout_ms,
        **extra,
    )


def open_session(spec: SourceSpec, *, export: bool):
    """The launcher's session on `spec`, entered (see the module docstring)."""
    return _package(spec.engine).open_session(spec, export=export)


def read_rows(spec: SourceSpec, plan, snapshot_id: str | None, namespace: str):
    """The engine's parallel read of `plan`: a PTransform of `pa.RecordBatch`es."""
    return _package(spec.engine).ReadRows(spec, plan, snapshot_id, namespace)
