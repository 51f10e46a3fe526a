"""The launcher's MySQL session, and the two consistency modes.

MySQL cannot share one snapshot between connections (no exported snapshots), so:

- `per_partition` (the default): the launcher plans in a `START TRANSACTION WITH
  CONSISTENT SNAPSHOT, READ ONLY` of its own; each partition's reader opens its
  own consistent, read-only snapshot. Every partition is
  consistent in itself; partitions may see different instants. The manifest says
  so (`read_plan.consistency`).
- `one_instant` (`--consistency one_instant`): after planning, under a brief
  global commit block (MariaDB: `BACKUP STAGE START` + `BACKUP STAGE
  BLOCK_COMMIT`; MySQL: `FLUSH TABLES WITH READ LOCK`), the launcher opens one
  connection per partition and starts its consistent snapshot, then releases the
  block: no commit can come between the first and the last snapshot, so all
  partitions read one instant (as mydumper does). The connections wait in this
  process's registry (`take_connection`) for the partition readers, which is
  possible only when the readers run in the launcher's process: the in-process
  DirectRunner (`pipeline.options` refuses the mode with any other runner; a
  reader that finds no connection fails naming the flag). The global block
  needs the RELOAD privilege (BACKUP STAGE: RELOAD too).

In both modes the launcher's planning transaction stays open for the whole run
(`holds_for_run`) and holds the shared metadata lock (MDL) of what is read, taken
by `plan`: DDL on it (ALTER, TRUNCATE, DROP, RENAME) waits for the job instead of
changing the table between two partitions' reads (a TRUNCATE would otherwise
empty the later partitions, exit 0). As in PostgreSQL, readers queued behind a
waiting DDL wait at most `--lock_timeout_ms` (`lock_wait_timeout`), then the job
fails in one line; the DDL runs once the job ends.
"""

from __future__ import annotations

import logging
import threading
import uuid

from pipeline.sources import DatabaseError
from pipeline.sources.mysql import catalog
from pipeline.sources.mysql.connection import connect, driver_error

__all__ = [
    "CONSISTENCY_MODES",
    "MySqlSession",
    "start_snapshot",
    "take_connection",
]

_LOGGER = logging.getLogger(__name__)

CONSISTENCY_MODES = ("per_partition", "one_instant")
_TOKEN_PREFIX = "mysql-one-instant:"

# one_instant mode: token -> {partition index: connection in its snapshot}.
_REGISTRY: dict[str, dict[int, object]] = {}
_REGISTRY_LOCK = threading.Lock()


def start_snapshot(conn) -> None:
    """Starts a REPEATABLE READ, read-only transaction with its snapshot taken now."""
    cur = conn.cursor()
    try:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    finally:
        cur.close()


def take_connection(token: str, index: int):
    """The pre-opened connection of partition `index` (one_instant mode), once.

    Raises DatabaseError when this process holds none: the readers run in
    another process than the launcher (not the in-process DirectRunner), or the
    partition was already read (a retried bundle cannot re-enter the instant).
    """
    with _REGISTRY_LOCK:
        conn = _REGISTRY.get(token, {}).pop(index, None)
    if conn is None:
        raise DatabaseError(
            f"--consistency one_instant: partition {index}'s snapshot connection is "
            "not in this process (the readers must run in the launcher's process: "
            "the DirectRunner in_memory or multi_threading mode; a retried "
            "partition cannot re-enter the instant); rerun, or drop the flag"
        )
    return conn


class MySqlSession:
    """The launcher's session (the seam's `open_session`), entered by the caller.

    Attributes (after `__enter__`):
        conn: the planning transaction (a consistent, read-only snapshot).
        table: the resolved `--table` (None for a `--query`).
        snapshot_id: None in `per_partition` mode; in `one_instant` mode, after
            `plan`, the registry token of the partitions' connections.
        consistency: `per_partition` or `one_instant`.
    """

    def __init__(self, spec, *, consistency: str = "per_partition"):
        if consistency not in CONSISTENCY_MODES:
            raise ValueError(f"unknown consistency {consistency!r}")
        self._spec = spec
        self.consistency = consistency
        self.conn = None
        self.table: catalog.TableRef | None = None
        self.snapshot_id: str | None = None
        self.mysql_columns: dict = {}
        self._pk_cache: dict = {}

    # The planning transaction guards the read for the run (module docstring).
    holds_for_run = True

    @property
    def lock_method(self) -> str:
        """How the read is protected from DDL, for the manifest."""
        return (
            "shared metadata lock held by the launcher's transaction for the run: "
            "DDL on what is read waits for the job"
        )

    @property
    def consistency_description(self) -> str:
        """One clause for the plan's description."""
        if self.consistency == "one_instant":
            return (
                "one instant: every partition's snapshot started under a brief "
                "global commit block"
            )
        return "per partition: each partition reads its own consistent snapshot"

    def __enter__(self) -> MySqlSession:
        self.conn = connect(self._spec.dsn, what="connecting")
        try:
            start_snapshot(self.conn)
            if self._spec.table is not None:
                self.table = catalog.resolve_table(
                    self.conn, self._spec.table, self._spec.dsn.database
                )
        except BaseException as err:
            self.close()
            if isinstance(err, Exception) and not isinstance(err, DatabaseError):
                raise DatabaseError(
                    driver_error(err, "starting the read", self._spec.dsn)
                ) from None
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def plan(self, spec, *, num_partitions=None, partition_column=None):
        """`plan.plan_read` in this session (the seam's `plan`).

        In one_instant mode it then opens the partitions' snapshots.
        """
        from pipeline.sources.mysql.plan import plan_read

        try:
            plan, columns = plan_read(
                self,
                spec,
                num_partitions=num_partitions,
                partition_column=partition_column,
            )
        except DatabaseError:
            raise
        except Exception as err:
            if type(err).__module__.startswith("mysql.connector"):
                raise DatabaseError(
                    driver_error(
                        err, f"planning the read of {spec.table or '--query'}", spec.dsn
                    )
                ) from None
            raise
        self.mysql_columns = columns
        self._hold_metadata_lock(plan)
        if self.consistency == "one_instant":
            self.snapshot_id = self._open_one_instant(len(plan.partitions))
        return plan

    def check_held(self) -> None:
        """Raises DatabaseError when the launcher's transaction was lost.

        A killed session (an idle-transaction killer, a restart) drops its
        metadata lock: DDL may then have changed what later partitions read, so
        the run is not published.
        """
        try:
            cur = self.conn.cursor()
            try:
                cur.execute("SELECT 1")
                cur.fetchall()
            finally:
                cur.close()
        except Exception as err:
            raise DatabaseError(
                driver_error(
                    err,
                    "the launcher's transaction holding the metadata lock was lost "
                    "during the run (DDL may have changed what later partitions "
                    "read; nothing is published, rerun the job)",
                    self._spec.dsn,
                )
            ) from None

    def _hold_metadata_lock(self, plan) -> None:
        """Opens what is read in this transaction: its MDL is held until close."""
        cur = self.conn.cursor()
        try:
            cur.execute(f"SELECT 1 FROM {plan.relation} AS src LIMIT 0")
            cur.fetchall()
        finally:
            cur.close()

    def _open_one_instant(self, count: int) -> str:
        token = _TOKEN_PREFIX + uuid.uuid4().hex
        opened: dict[int, object] = {}
        blocker = connect(self._spec.dsn, what="connecting")
        try:
            try:
                cur = blocker.cursor()
                if blocker.mariadb:
                    cur.execute("BACKUP STAGE START")
                    cur.execute("BACKUP STAGE BLOCK_COMMIT")
                    release = "BACKUP STAGE END"
                else:
                    cur.execute("FLUSH TABLES WITH READ LOCK")
                    release = "UNLOCK TABLES"
            except Exception as err:
                raise DatabaseError(
                    driver_error(
                        err,
                        "--consistency one_instant: taking the global commit block "
                        "(needs the RELOAD privilege)",
                        self._spec.dsn,
                    )
                ) from None
            try:
                for index in range(count):
                    conn = connect(self._spec.dsn, what="connecting")
                    opened[index] = conn
                    start_snapshot(conn)
            finally:
                cur.execute(release)
                cur.close()
        except BaseException:
            for conn in opened.values():
                conn.close()
            raise
        finally:
            blocker.close()
        with _REGISTRY_LOCK:
            _REGISTRY[token] = opened
        _LOGGER.info("Started %d partition snapshots at one instant", count)
        return token

    def primary_key(self, table) -> list[str]:
        """`table`'s primary key columns, in key order ([] when it has none)."""
        if table not in self._pk_cache:
            self._pk_cache[table] = catalog.primary_key(self.conn, table)
        return self._pk_cache[table]

    def close(self) -> None:
        """Ends the planning transaction and closes unread partition connections."""
        if self.snapshot_id is not None:
            with _REGISTRY_LOCK:
                left = _REGISTRY.pop(self.snapshot_id, {})
            for conn in left.values():
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - already gone
                    pass
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - the server went away
                pass
            self.conn = None
