"""One snapshot also against DDL, no silent waits, exact resume, least privilege.

The launcher locks every relation read (ACCESS SHARE, as pg_dump does) before it
exports its snapshot and plans inside it; readers give up on a lock after
`lock_timeout` naming the blocking pid; only block ranges resume by count; a role
granted some columns only can run the job. Concurrent sessions are threads whose
progress is observed in pg_locks, never timed with sleeps.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg2
import psycopg2.extensions
import pytest

from pipeline.sources.postgres.connection import DatabaseError, Dsn
from pipeline.sources.postgres.partition_reader import (
    PartitionReader,
    PartitionReadError,
)
from pipeline.sources.postgres.plan import SourceSpec, plan_read
from pipeline.sources.postgres.snapshot import ExportedSnapshot
from tests.conftest import execute as _exec
from tests.conftest import query


def _wait_for(url: str, sql: str, params=(), what: str = "", timeout: float = 60) -> None:
    """Polls a DB-side condition until it holds (a deadline, not a timed race)."""
    deadline = time.monotonic() + timeout
    while not query(url, sql, params):
        assert time.monotonic() < deadline, f"timed out waiting for {what or sql}"
        time.sleep(0.02)


class _Session(threading.Thread):
    """Runs statements in one transaction of its own connection, then commits."""

    def __init__(self, url: str, statements, lock_timeout_ms: int = 0):
        super().__init__(daemon=True)
        self.conn = psycopg2.connect(url, application_name="s2t-test-ddl")
        self.pid = self.conn.get_backend_pid()
        self.statements, self.lock_timeout_ms = statements, lock_timeout_ms
        self.error: BaseException | None = None
        self.committed = False

    def run(self):
        try:
            with self.conn.cursor() as cur:
                cur.execute(f"SET lock_timeout = {int(self.lock_timeout_ms)}")
                for statement in self.statements:
                    cur.execute(statement)
            self.conn.commit()
            self.committed = True
        except psycopg2.Error as err:
            self.error = err
            self.conn.rollback()
        finally:
            self.conn.close()

    def wait_until_blocked(self, url: str) -> None:
        _wait_for(url, "SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted",
                  (self.pid,), what=f"session {self.pid} to wait for a lock")


def _ids(source, plan, snapshot_id, **kwargs):
    reader = PartitionReader(source, plan, snapshot_id, **kwargs)
    ids = []
    try:
        for partition in plan.partitions:
            for batch in reader.read(partition):
                ids.extend(batch.column(0).to_pylist())
    finally:
        reader.close()
    return ids


@pytest.fixture(scope="module")
def plain_table(make_table):
    return make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, v text)",
        "INSERT INTO {table} SELECT g, repeat('x', 50) || g FROM generate_series(1, 60000) g",
    )


@pytest.fixture
def partitioned(database_url):
    """A partitioned table: 3 leaves, one of them empty and one the DEFAULT."""
    name = f"t_part_{uuid.uuid4().hex[:8]}"
    _exec(
        database_url,
        f'CREATE TABLE "{name}" (id int NOT NULL, v text) PARTITION BY RANGE (id)',
        f'CREATE TABLE "{name}_low" PARTITION OF "{name}" FOR VALUES FROM (0) TO (50000)',
        f'CREATE TABLE "{name}_mid" PARTITION OF "{name}" FOR VALUES FROM (50000) TO (60000)',
        f'CREATE TABLE "{name}_rest" PARTITION OF "{name}" DEFAULT',
        f"INSERT INTO \"{name}\" SELECT g, repeat('y', 40) || g FROM generate_series(1, 49999) g",
        f"INSERT INTO \"{name}\" SELECT g, 'r' || g FROM generate_series(60000, 129999) g",
        f'ANALYZE "{name}"',
    )
    yield name
    _exec(database_url, f'DROP TABLE IF EXISTS "{name}" CASCADE')


def _locks_of(url: str, pid: int) -> set[str]:
    return {
        row[0]
        for row in query(
            url,
            "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE l.pid = %s AND l.granted AND l.mode = 'AccessShareLock' "
            "AND c.relkind IN ('r','p','v','m','f') "
            "AND c.relnamespace <> 'pg_catalog'::regnamespace",
            (pid,),
        )
    }


# --- class 2: pg_dump's locks before the snapshot --------------------------------


def test_launcher_locks_a_partitioned_table_and_all_its_leaves(database_url, partitioned):
    source = SourceSpec(Dsn(database_url), table=partitioned)
    with ExportedSnapshot(source) as snapshot:
        held = _locks_of(database_url, snapshot.conn.get_backend_pid())
        leaves = {partitioned, f"{partitioned}_low", f"{partitioned}_mid",
                  f"{partitioned}_rest"}
        assert held == leaves
        assert {name.split(".")[-1].strip('"') for name in snapshot.locks} == leaves
        assert snapshot.snapshot_id and "LOCK TABLE" in snapshot.lock_method


def test_a_query_locks_its_tables_and_a_views_base_tables_not_cte_names(
    database_url, make_table
):
    left = make_table("CREATE TABLE {table} (id int, a text)")
    right = make_table("CREATE TABLE {table} (id int, b text)")
    view = f"v_{uuid.uuid4().hex[:8]}"
    _exec(database_url, f'CREATE VIEW "{view}" AS SELECT id, b FROM "{right}"')
    try:
        text = (f'WITH "{right}" AS (SELECT id FROM "{left}") '  # a CTE named like a table
                f'SELECT l.id, v.b FROM "{right}" l JOIN public."{view}" v USING (id) '
                "-- a trailing comment")
        with ExportedSnapshot(SourceSpec(Dsn(database_url), query=text)) as snapshot:
            held = _locks_of(database_url, snapshot.conn.get_backend_pid())
        # The CTE shadows `right`, but the view reads the real `right`.
        assert held == {left, right, view}
    finally:
        _exec(database_url, f'DROP VIEW "{view}"')


DDL = {
    "truncate_and_reload": ['TRUNCATE "{t}"',
                            "INSERT INTO \"{t}\" SELECT g, 'new' FROM generate_series(1, 5) g"],
    "drop": ['DROP TABLE "{t}"'],
    "add_column": ['ALTER TABLE "{t}" ADD COLUMN extra int DEFAULT 7'],
}


@pytest.mark.parametrize("ddl", sorted(DDL))
def test_ddl_during_the_read_waits_and_readers_fail_in_one_line(database_url, make_table, ddl):
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, v text)",
        "INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, 3000) g",
    )
    source = SourceSpec(Dsn(database_url, lock_timeout_ms=500), table=table)
    with ExportedSnapshot(source) as snapshot:
        plan = plan_read(source, ["id"], num_partitions=2, snapshot=snapshot)
        session = _Session(database_url, [s.format(t=table) for s in DDL[ddl]])
        session.start()
        session.wait_until_blocked(database_url)  # before the fix: it just commits
        with pytest.raises(PartitionReadError) as info:
            _ids(source, plan, snapshot.snapshot_id)
        message = str(info.value)
        assert "\n" not in message and "locked by another session" in message
        assert table in message and str(session.pid) in message
        assert "--lock_timeout_ms 500" in message
        assert session.is_alive() and not session.committed
    session.join(60)
    assert session.committed and session.error is None  # it ran once we let go


def test_a_leafs_truncate_waits_for_the_read(database_url, partitioned):
    source = SourceSpec(Dsn(database_url, lock_timeout_ms=500), table=partitioned)
    expected = sorted(r[0] for r in query(database_url, f'SELECT id FROM "{partitioned}"'))
    with ExportedSnapshot(source) as snapshot:
        plan = plan_read(source, ["id"], snapshot=snapshot)
        session = _Session(database_url, [f'TRUNCATE "{partitioned}_rest"'],
                           lock_timeout_ms=300)
        session.start()
        session.join(60)
        # The DDL gave up on its own lock_timeout: the read is exact.
        assert isinstance(session.error, psycopg2.errors.LockNotAvailable)
        assert sorted(_ids(source, plan, snapshot.snapshot_id)) == expected


def test_launcher_gives_up_on_a_locked_table_naming_the_blocker(database_url, make_table):
    table = make_table("CREATE TABLE {table} (id int, v text)")
    blocker = psycopg2.connect(database_url)
    with blocker.cursor() as cur:
        cur.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
    try:
        for spec in ({"table": table}, {"query": f'SELECT id FROM "{table}"'}):
            # statement_timeout: before the fix this waited silently up to it.
            dsn = Dsn(database_url, lock_timeout_ms=300, statement_timeout_ms=20_000)
            with pytest.raises(DatabaseError) as info:
                plan_read(SourceSpec(dsn, **spec), None)
            message = str(info.value)
            assert "\n" not in message and table in message
            assert (f"locked by another session (pid {blocker.get_backend_pid()} holding "
                    "ACCESS EXCLUSIVE)") in message
            assert "--lock_timeout_ms 300" in message
    finally:
        blocker.close()


def test_the_job_with_a_table_truncated_and_reloaded_meanwhile(
    database_url, make_table, tmp_path, capsys
):
    """Before: exit 0 with 0 rows. Now: the TRUNCATE waits; the job is exact or fails."""
    from pipeline.__main__ import main

    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, x float8, y int NOT NULL)",
        "INSERT INTO {table} SELECT g, g % 17, g % 2 FROM generate_series(1, 4000) g",
    )
    features = tmp_path / "features.json"
    features.write_text(json.dumps({"label": "y", "features": [
        {"column": "id", "transform": "passthrough"}, {"column": "x", "transform": "zscore"}]}))
    session = _Session(database_url, [
        f'TRUNCATE "{table}"',
        f"INSERT INTO \"{table}\" SELECT g, 0, 0 FROM generate_series(100001, 100010) g",
    ])

    def truncate_once_the_launcher_holds_its_lock():
        _wait_for(
            database_url,
            "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.relation = %s::regclass AND l.granted "
            "AND l.mode = 'AccessShareLock' AND a.application_name = 'sql2tfrecord'",
            (f'"{table}"',), what="the launcher's lock", timeout=120,
        )
        session.run()

    ddl = threading.Thread(target=truncate_once_the_launcher_holds_its_lock, daemon=True)
    ddl.start()
    out = tmp_path / "out"
    code = main(["--db_url", database_url, "--table", table, "--label", "y",
                 "--features", str(features), "--output_dir", str(out),
                 "--num_partitions", "2", "--lock_timeout_ms", "2000"])
    err = capsys.readouterr().err
    ddl.join(120)
    assert session.committed  # the TRUNCATE ran, after the job let go
    errors = [line for line in err.splitlines() if line.startswith("sql2tfrecord:")]
    if code == 0:  # the reads finished before the TRUNCATE queued: exact
        import trainer

        ids = []
        for split in ("train", "eval"):
            for features_, _ in trainer.make_dataset(str(out), split, 1000, shuffle=False,
                                                     num_epochs=1):
                ids.extend(features_["id"].numpy().ravel().tolist())
        assert sorted(ids) == list(range(1, 4001))
    else:
        assert code == 1 and len(errors) == 1, err[-3000:]
        assert "locked by another session" in errors[0] and table in errors[0]
        assert str(session.pid) in errors[0]
        assert not (out / "manifest.json").exists()


# --- class 3: resume only where the order repeats --------------------------------


def _kill_after_first_batch(source, plan, snapshot_id):
    killer = psycopg2.connect(source.dsn.value)
    killer.autocommit = True
    reader = PartitionReader(source, plan, snapshot_id, block_size=1 << 16, backoff_s=0.01)
    ids, killed = [], False
    try:
        for partition in plan.partitions:
            for batch in reader.read(partition):
                ids.extend(batch.column(0).to_pylist())
                if not killed:
                    with killer.cursor() as cur:
                        cur.execute("SELECT pg_terminate_backend(%s)",
                                    (reader.conn.get_backend_pid(),))
                    killed = True
    finally:
        reader.close()
        killer.close()
    return ids, reader


@pytest.mark.parametrize("shape", ["order_by_random", "key_ranges", "view"])
def test_a_lost_connection_is_an_error_where_the_order_may_change(
    database_url, plain_table, shape
):
    """Before: reconnect, skip by count: duplicates and losses, exit 0."""
    kwargs = {}
    if shape == "order_by_random":
        source = SourceSpec(Dsn(database_url),
                            query=f'SELECT id, v FROM "{plain_table}" ORDER BY random()')
    elif shape == "key_ranges":
        source = SourceSpec(Dsn(database_url), table=plain_table)
        kwargs = {"partition_column": "id", "num_partitions": 2}
    else:
        view = f"{plain_table}_v"
        _exec(database_url, f'CREATE OR REPLACE VIEW "{view}" AS SELECT id, v FROM "{plain_table}"')
        source = SourceSpec(Dsn(database_url), table=view)
    with ExportedSnapshot(source) as snapshot:
        plan = plan_read(source, ["id", "v"], snapshot=snapshot, **kwargs)
        assert not any(p.resumable for p in plan.partitions)
        with pytest.raises(PartitionReadError, match="cannot be resumed exactly"):
            _kill_after_first_batch(source, plan, snapshot.snapshot_id)


def test_a_small_table_is_one_resumable_block_range(database_url, make_table):
    table = make_table("CREATE TABLE {table} (id int)", "INSERT INTO {table} VALUES (1), (2)")
    plan = plan_read(SourceSpec(Dsn(database_url), table=table), ["id"])
    assert [p.kind for p in plan.partitions] == ["blocks"] and plan.partitions[0].resumable


# --- issue 16 class 5: plans for partitioned and never-analysed tables ------------


def test_a_partitioned_table_is_planned_per_leaf_and_read_exactly(database_url, partitioned):
    source = SourceSpec(Dsn(database_url), table=partitioned)
    expected = sorted(r[0] for r in query(database_url, f'SELECT id FROM "{partitioned}"'))
    with ExportedSnapshot(source) as snapshot:
        plan = plan_read(source, ["id", "v"], snapshot=snapshot)
        assert len(plan.partitions) > 1  # before: 1 (the parent has no pages)
        read_leaves = {p.relation_label.split(".")[-1] for p in plan.partitions}
        assert read_leaves == {f"{partitioned}_low", f"{partitioned}_rest"}  # mid is empty
        assert all(p.resumable and p.relation.startswith("ONLY ") for p in plan.partitions)
        assert plan.row_estimate == pytest.approx(len(expected), rel=0.2)
        ids, reader = _kill_after_first_batch(source, plan, snapshot.snapshot_id)
    assert reader.reconnects == 1
    assert sorted(ids) == expected  # resumed exactly within a leaf


def test_a_never_analysed_table_is_planned_from_its_size(database_url):
    table = f"t_never_{uuid.uuid4().hex[:8]}"
    _exec(
        database_url,
        f'CREATE TABLE "{table}" (id int, v text) WITH (autovacuum_enabled = false)',
        f"INSERT INTO \"{table}\" SELECT g, repeat('z', 50) || g "
        "FROM generate_series(1, 300000) g",
    )
    try:
        assert query(database_url, "SELECT reltuples FROM pg_class WHERE relname = %s",
                     (table,)) == [(-1.0,)]
        source = SourceSpec(Dsn(database_url), table=table)
        with ExportedSnapshot(source) as snapshot:
            plan = plan_read(source, ["id"], snapshot=snapshot)
            assert len(plan.partitions) > 1  # before: row estimate -1, 1 partition
            assert 150_000 < plan.row_estimate < 600_000
            assert "never analysed" in plan.description
            ids = _ids(source, plan, snapshot.snapshot_id)
        count = query(database_url, f'SELECT count(*) FROM "{table}"')[0][0]
        assert len(ids) == count == 300_000 and sorted(ids) == list(range(1, 300_001))
    finally:
        _exec(database_url, f'DROP TABLE "{table}"')


# --- class 8 (+ class 5's idle timeout): a role granted some columns only ---------


@pytest.fixture
def column_role(database_url, make_table):
    """A login role granted SELECT on (id, x, y) of a table, not on `secret`."""
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, x float8, secret text, y int NOT NULL)",
        "INSERT INTO {table} SELECT g, g % 11, 'pw' || g, g % 2 FROM generate_series(1, 3000) g",
    )
    role = f"r_{uuid.uuid4().hex[:10]}"
    _exec(database_url, f"CREATE ROLE {role} LOGIN",
          f'GRANT SELECT (id, x, y) ON "{table}" TO {role}',
          # The launcher idles in its transaction for the whole job.
          f"ALTER ROLE {role} SET idle_in_transaction_session_timeout = '1s'")
    params = psycopg2.extensions.parse_dsn(database_url)
    params["user"] = role
    yield table, role, psycopg2.extensions.make_dsn(**params)
    _exec(database_url, f'REVOKE ALL ON "{table}" FROM {role}', f"DROP ROLE {role}")


def test_column_grants_plan_and_read_under_a_held_lock(database_url, column_role):
    table, _, url = column_role
    source = SourceSpec(Dsn(url, lock_timeout_ms=500), table=table)
    with ExportedSnapshot(source) as snapshot:
        assert "second session" in snapshot.lock_method  # LOCK TABLE was refused
        plan = plan_read(source, ["id", "x"], snapshot=snapshot)
        assert "table-level SELECT" in plan.description  # no ctid ranges for it
        holders = query(database_url, "SELECT pid FROM pg_locks WHERE relation = %s::regclass "
                        "AND granted AND mode = 'AccessShareLock'", (f'"{table}"',))
        assert holders
        # The guarantee holds: a TRUNCATE cannot get in (here it gives up).
        session = _Session(database_url, [f'TRUNCATE "{table}"'], lock_timeout_ms=300)
        session.start()
        session.join(60)
        assert isinstance(session.error, psycopg2.errors.LockNotAvailable)
        ids = _ids(source, plan, snapshot.snapshot_id)
    assert sorted(ids) == list(range(1, 3001))


def test_the_job_runs_as_a_role_with_column_grants_and_an_idle_timeout(
    database_url, column_role, tmp_path
):
    """Before: `SELECT *` was refused; and the idle launcher was cut off after 1 s."""
    from pipeline.__main__ import main

    table, _, url = column_role
    features = tmp_path / "features.json"
    features.write_text(json.dumps({"label": "y", "features": [
        {"column": "x", "transform": "zscore"}]}))
    out = tmp_path / "out"
    assert main(["--db_url", url, "--table", table, "--label", "y", "--features",
                 str(features), "--output_dir", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows_read"] == 3000
    assert sum(s["rows"] for s in manifest["splits"].values()) == 3000
    assert manifest["read_plan"]["snapshot"] is True
    assert "second session" in manifest["read_plan"]["lock"]
    assert any(table in name for name in manifest["read_plan"]["locks"])
    assert {c["name"] for c in manifest["source"]["columns"]} == {"id", "x", "y"}


def test_lock_timeout_flag_reaches_every_session(database_url, make_table):
    from pipeline.options import UsageError, parse_args

    base = ["--db_url", database_url, "--table", "t", "--label", "y", "--output_dir", "/o"]
    assert parse_args(base)[0].lock_timeout_ms == 30_000
    assert parse_args([*base, "--lock_timeout_ms", "0"])[0].lock_timeout_ms == 0
    with pytest.raises(UsageError, match="`--lock_timeout_ms` must be >= 0"):
        parse_args([*base, "--lock_timeout_ms", "-5"])
    table = make_table("CREATE TABLE {table} (id int)")
    source = SourceSpec(Dsn(database_url, lock_timeout_ms=1234), table=table)
    with ExportedSnapshot(source) as snapshot:
        plan = plan_read(source, ["id"], snapshot=snapshot)
        reader = PartitionReader(source, plan, snapshot.snapshot_id)
        reader._connect()  # noqa: SLF001
        for conn in (snapshot.conn, reader.conn):
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('lock_timeout'), "
                            "current_setting('idle_in_transaction_session_timeout')")
                assert cur.fetchone() == ("1234ms", "0")
        reader.close()


def test_a_launcher_session_lost_during_the_run_is_not_published(
    database_url, make_table, tmp_path
):
    """A terminated launcher dropped its snapshot and locks (a TRUNCATE could then
    empty later partitions, as MVCC does not cover it): nothing is published."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.job import prepare_job
    from pipeline.options import parse_args
    from pipeline.run import run_job

    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, x float8, y int)",
        "INSERT INTO {table} SELECT g, g * 0.5, g % 2 FROM generate_series(1, 300) g",
    )
    out = tmp_path / "out"
    config, beam_args = parse_args(
        ["--db_url", database_url, "--table", table, "--label", "y",
         "--output_dir", str(out), "--num_partitions", "2"]
    )
    job = prepare_job(config)
    try:
        assert job.snapshot is not None and job.snapshot.snapshot_id
        pid = int(job.snapshot.conn.get_backend_pid())
        _exec(database_url, f"SELECT pg_terminate_backend({pid})")
        # The partitions cannot import the snapshot of a session that is gone, and
        # the launcher's own check (`check_held`) fails the run in any case.
        with pytest.raises(Exception, match="snapshot|lost during the run"):
            run_job(job, PipelineOptions(beam_args, pipeline_type_check=False))
        assert not (out / "manifest.json").exists()
    finally:
        job.close()
