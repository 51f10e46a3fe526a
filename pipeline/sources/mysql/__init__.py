"""The MySQL/MariaDB source: a snapshot per partition (or one instant), streamed.

The seam's entry points (see `pipeline.sources`): `source_spec` (a `SourceSpec`
on a `connection.MySqlUrl`), `open_session` (an entered `session.MySqlSession`)
and `ReadRows` (`beam.ReadFromMySql`). README, "MySQL and MariaDB", documents
the URL, the types and the consistency modes.
"""

from __future__ import annotations

import dataclasses

from pipeline.sources import SourceSpec


@dataclasses.dataclass(frozen=True)
class MySqlSpec(SourceSpec):
    """A `SourceSpec` plus the consistency mode (`session.CONSISTENCY_MODES`)."""

    consistency: str = "per_partition"


def source_spec(
    db_url,
    *,
    table,
    query,
    statement_timeout_ms,
    lock_timeout_ms,
    consistency=None,
):
    """A `SourceSpec` on a parsed `MySqlUrl` (checked, not connected).

    `consistency`: `per_partition` (default) or `one_instant` (see `session`).
    """
    from pipeline.sources.mysql.connection import parse_url
    from pipeline.sources.mysql.session import CONSISTENCY_MODES

    if consistency not in (None, *CONSISTENCY_MODES):
        raise ValueError(f"--consistency: unknown mode {consistency!r}")
    url = parse_url(
        db_url,
        statement_timeout_ms=statement_timeout_ms,
        lock_timeout_ms=lock_timeout_ms,
    )
    if query is not None:
        from pipeline.sources.mysql.query_guard import check_query

        check_query(query)
    return MySqlSpec(
        dsn=url, table=table, query=query, consistency=consistency or "per_partition"
    )


def open_session(spec, *, export: bool):
    """The launcher's session, entered (`export` is PostgreSQL's; unused here)."""
    from pipeline.sources.mysql.session import MySqlSession

    return MySqlSession(spec, consistency=spec.consistency).__enter__()


def ReadRows(spec, plan, snapshot_id, namespace):  # noqa: N802 (a PTransform)
    """`ReadFromMySql` of `plan`."""
    from pipeline.sources.mysql.beam import ReadFromMySql

    return ReadFromMySql(spec, plan, snapshot_id, namespace)
