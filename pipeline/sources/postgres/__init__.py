"""The PostgreSQL source: one exported snapshot, COPY per partition, Arrow batches.

The seam's entry points (see `pipeline.sources`): `source_spec`, `open_session`
(an entered `snapshot.ExportedSnapshot`) and `ReadRows` (`beam.ReadFromPostgres`).
"""

from __future__ import annotations


def source_spec(db_url, *, table, query, statement_timeout_ms, lock_timeout_ms):
    """A `SourceSpec` on a `connection.Dsn` (checked, not connected)."""
    from pipeline.sources import SourceSpec
    from pipeline.sources.postgres.connection import Dsn

    dsn = Dsn(
        db_url,
        statement_timeout_ms=statement_timeout_ms,
        lock_timeout_ms=lock_timeout_ms,
    )
    return SourceSpec(dsn=dsn, table=table, query=query)


def open_session(spec, *, export: bool):
    """Locks and the snapshot (exported when `export`), entered."""
    from pipeline.sources.postgres.snapshot import ExportedSnapshot

    return ExportedSnapshot(spec, export=export).__enter__()


def ReadRows(spec, plan, snapshot_id, namespace):  # noqa: N802 (a PTransform)
    """`ReadFromPostgres` of `plan`."""
    from pipeline.sources.postgres.beam import ReadFromPostgres

    return ReadFromPostgres(spec, plan, snapshot_id, namespace)
