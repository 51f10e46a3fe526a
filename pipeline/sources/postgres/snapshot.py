"""The launcher's snapshot: pg_dump's locks first, then one exported snapshot.

`ExportedSnapshot` opens the launcher's transaction the way pg_dump does:

1. resolve what will be read (the `--table`, or the relations a `--query` names,
   from PostgreSQL's own parser via `query_guard`);
2. `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY` and `LOCK TABLE … IN ACCESS
   SHARE MODE` (without ONLY: a partitioned or inherited table's children are locked
   too, a view's base relations recursively). LOCK takes no snapshot;
3. only then `pg_export_snapshot()`, the transaction's first snapshot.

TRUNCATE, DROP, ALTER TABLE and REFRESH MATERIALIZED VIEW need ACCESS EXCLUSIVE, so
they wait for the job: no TRUNCATE (which is not MVCC-safe: a snapshot taken before
it sees an empty table after it) can commit between the snapshot and the reads. The
plan is then made in this same transaction (`source.plan_read(..., snapshot=)`).

LOCK TABLE needs table-level privileges and refuses materialized views, foreign
tables and sequences. Then the locks are held by a second session instead: an open
transaction that ran `SELECT FROM <relation> LIMIT 0` (which takes the same ACCESS
SHARE lock, also with column-level grants only), and the snapshot is exported on
the first session only AFTER those locks are granted. The guarantee is the same;
the manifest records which way was used (`read_plan.lock`).

Every wait for a lock ends after `lock_timeout` (`--lock_timeout_ms`) with one line
naming the relation and the blocking sessions' pids. The launcher's sessions set
`idle_in_transaction_session_timeout = 0`: they idle in their transaction for the
whole job by design.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from pipeline.sources.postgres import catalog
from pipeline.sources.postgres.connection import DatabaseError, Dsn, connect

__all__ = [
    "ExportedSnapshot",
    "IDLE_SESSION_OPTIONS",
    "lock_timeout_message",
    "query_relations",
]

_LOGGER = logging.getLogger(__name__)

# The launcher idles in its transaction while the pipeline runs; a server-wide
# idle_in_transaction_session_timeout must not end it (nor a reader between rows).
IDLE_SESSION_OPTIONS = "-c idle_in_transaction_session_timeout=0"

_LOCK_REFUSED = (
    psycopg2.errors.InsufficientPrivilege,
    psycopg2.errors.WrongObjectType,
    psycopg2.errors.FeatureNotSupported,
)


def query_relations(query: str) -> list[sql.Composable]:
    """The relations a `--query` names (CTE names excluded), as SQL identifiers."""
    from pipeline.sources.postgres.query_guard import check_query

    return [
        sql.Identifier(schema, name) if schema else sql.Identifier(name)
        for schema, name in check_query(query).relations
    ]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def lock_timeout_message(conn, relations: Sequence[str], what: str, dsn: Dsn) -> str:
    """One line for a lock wait that ran out: the relation(s) and blocking pids.

    ACCESS SHARE conflicts only with ACCESS EXCLUSIVE, so the blockers are the
    sessions holding or queued for that mode on one of `relations` (qualified,
    quoted names). `conn` must be usable (roll back its failed transaction first).
    """
    blockers: list[tuple[str, int, bool]] = []
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT l.relation::regclass::text, l.pid, l.granted FROM pg_locks l "
                "WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' "
                "AND l.pid <> pg_backend_pid() AND l.relation = ANY("
                "SELECT to_regclass(r)::oid FROM unnest(%s::text[]) AS r) "
                "ORDER BY l.granted DESC, l.pid",
                (list(relations),),
            )
            blockers = list(cur)
        conn.rollback()
    except psycopg2.Error:  # the message is still useful without the pids
        try:
            conn.rollback()
        except psycopg2.Error:
            pass
    names = sorted({rel for rel, _, _ in blockers}) or list(relations) or ["it"]
    pids = ", ".join(
        f"{pid} {'holding' if granted else 'queued for'} ACCESS EXCLUSIVE"
        for _, pid, granted in blockers
    )
    return (
        f"{what}: {', '.join(names)} is locked by another session"
        f"{f' (pid {pids})' if pids else ''}; gave up after --lock_timeout_ms "
        f"{dsn.lock_timeout_ms} (raise it, 0 waits forever, or end that session, "
        "e.g. SELECT pg_cancel_backend(pid))"
    )


def _lost_message(err: BaseException) -> str:
    return (
        "the launcher's session holding the snapshot and its locks was lost during "
        f"the run ({_first_line(err)}): DDL may have changed what later partitions "
        "read; nothing is published, rerun the job"
    )


class ExportedSnapshot:
    """Context manager: locks, then a REPEATABLE READ READ ONLY exported snapshot.

    Attributes (after `__enter__`):
        conn: the transaction holding the snapshot; plan the read on it.
        snapshot_id: the exported id (None with `export=False`).
        table: the resolved `--table` (None for a `--query`).
        locks: qualified names of every relation locked (children included).
        lock_method: how they were locked, for the manifest.

    Args:
        source: a `source.SourceSpec` (table or query), or a bare `Dsn` for a
            snapshot without locks.
        export: export the snapshot (False: a locked planning transaction only).
    """

    def __init__(self, source, *, export: bool = True):
        if isinstance(source, Dsn):
            self._dsn, self._table, self._query = source, None, None
        else:
            self._dsn, self._table, self._query = source.dsn, source.table, source.query
        self._export = export
        self.conn = None
        self._holder = None
        self.snapshot_id: str | None = None
        self.table: catalog.TableRef | None = None
        self.locks: tuple[str, ...] = ()
        self.lock_method = "none"

    @property
    def dsn(self) -> Dsn:
        """Where the snapshot lives."""
        return self._dsn

    def __enter__(self) -> ExportedSnapshot:
        self.conn = connect(self._dsn, session_options=IDLE_SESSION_OPTIONS)
        try:
            relations, what = self._relations()
            self.conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            if relations:
                self._lock(relations, what)
            with self.conn.cursor() as cur:
                if self._export:
                    cur.execute("SELECT pg_export_snapshot()")
                    self.snapshot_id = cur.fetchone()[0]
                else:
                    cur.execute("SELECT 1")  # the transaction's snapshot, after LOCK
            if relations:
                self.locks = self._held_locks()
        except BaseException:
            self.close()
            raise
        if self.snapshot_id:
            _LOGGER.info(
                "Exported snapshot %s after locking %s (%s)",
                self.snapshot_id,
                ", ".join(self.locks) or "nothing",
                self.lock_method,
            )
        return self

    def _relations(self) -> tuple[list[sql.Composable], str]:
        """Resolves what to lock, in a short transaction of its own."""
        if self._table is not None:
            self.table = catalog.resolve_table(self.conn, self._table)
            self.conn.rollback()
            return [self.table.identifier], f"--table {self._table}"
        if self._query is not None:
            return query_relations(self._query), "--query"
        return [], ""

    def _lock(self, relations: list[sql.Composable], what: str) -> None:
        statement = sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
            sql.SQL(", ").join(relations)
        )
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement)
            self.lock_method = "LOCK TABLE … IN ACCESS SHARE MODE in the snapshot's "
            self.lock_method += "transaction, before the snapshot"
            return
        except _LOCK_REFUSED as err:
            refused = _first_line(err)
            self.conn.rollback()
        except psycopg2.errors.LockNotAvailable:
            self.conn.rollback()
            raise DatabaseError(
                lock_timeout_message(self.conn, self._names(relations), what, self._dsn)
            ) from None
        except psycopg2.Error as err:
            raise DatabaseError(f"{what}: {_first_line(err)}") from None
        self._hold_on_second_session(relations, what)
        self.lock_method = (
            "ACCESS SHARE held by a second session's open `SELECT FROM … LIMIT 0`, "
            f"the snapshot exported after it was granted (LOCK TABLE: {refused})"
        )

    def _hold_on_second_session(self, relations, what: str) -> None:
        self._holder = connect(self._dsn, session_options=IDLE_SESSION_OPTIONS)
        try:
            with self._holder.cursor() as cur:
                for relation in relations:
                    cur.execute(sql.SQL("SELECT FROM {} LIMIT 0").format(relation))
        except psycopg2.errors.LockNotAvailable:
            self._holder.rollback()
            raise DatabaseError(
                lock_timeout_message(
                    self._holder, self._names(relations), what, self._dsn
                )
            ) from None
        except psycopg2.Error as err:
            raise DatabaseError(f"{what}: {_first_line(err)}") from None

    def _names(self, relations) -> list[str]:
        return [r.as_string(self.conn) for r in relations]

    def _held_locks(self) -> tuple[str, ...]:
        holder = self._holder or self.conn
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT DISTINCT format('%%I.%%I', n.nspname, c.relname) "
                "FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE l.locktype = 'relation' AND l.pid = %s AND l.granted "
                "AND l.mode = 'AccessShareLock' AND c.relkind IN ('r','p','v','m','f') "
                "AND n.nspname <> 'pg_catalog' ORDER BY 1",  # this query's own
                (holder.get_backend_pid(),),
            )
            return tuple(row[0] for row in cur)

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def holds_for_run(self) -> bool:
        """Kept open for the run when exported: the partitions import it."""
        return bool(self.snapshot_id)

    def check_held(self) -> None:
        """Raises DatabaseError when a session holding the locks was lost.

        A killed session (an idle-transaction killer, a restart) drops its locks:
        DDL may then have changed what later partitions read, so the run is not
        published.
        """
        for conn in (self.conn, self._holder):
            if conn is None:
                continue
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
            except psycopg2.Error as err:
                raise DatabaseError(_lost_message(err)) from None

    def plan(self, spec, *, num_partitions=None, partition_column=None):
        """`plan.plan_read` of `spec` inside this snapshot (the seam's `plan`)."""
        from pipeline.sources.postgres.plan import plan_read

        return plan_read(
            spec,
            None,
            num_partitions=num_partitions,
            partition_column=partition_column,
            snapshot=self,
        )

    def primary_key(self, table) -> list[str]:
        """`table`'s primary key columns, in key order ([] when it has none)."""
        return catalog.primary_key(self.conn, table)

    def close(self) -> None:
        """Ends the transaction(s): the snapshot and the locks are released."""
        for conn in (self.conn, self._holder):
            if conn is None:
                continue
            try:
                if not conn.closed:
                    conn.rollback()
            except psycopg2.Error:
                pass  # the server went away: the snapshot is gone with it
            finally:
                conn.close()
        self.conn = self._holder = None
