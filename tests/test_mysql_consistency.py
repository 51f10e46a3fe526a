"""`--consistency one_instant`: every partition reads the same instant under writers.

Writer threads move money between accounts (each transfer one transaction), so
the sum of balances is constant at every instant. The partitions' snapshots are
started by the launcher; the test then waits (on an event, not a timer) until
the writers have committed more transfers, and only then reads: the exported
rows' sum must be the invariant, and the writers must have committed during the
read.
"""

from __future__ import annotations

import random
import threading

import pymysql
import pytest

from pipeline import sources
from pipeline.sources import DatabaseError
from pipeline.sources.mysql.partition_reader import PartitionReader
from pipeline.sources.mysql.session import take_connection
from tests.mysql_fixtures import connect_args

pytestmark = pytest.mark.mysql

ACCOUNTS, START = 400, 1000


class Writers:
    """Threads committing transfers until stopped; counts commits."""

    def __init__(self, url, table, threads=3):
        self._url, self._table = url, table
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.commits = 0
        self._waiters: list[tuple[int, threading.Event]] = []
        self._threads = [
            threading.Thread(target=self._run, args=(seed,), daemon=True)
            for seed in range(threads)
        ]
        self.errors: list[BaseException] = []

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()
        assert not self.errors, self.errors

    def wait_for(self, more: int) -> None:
        """Blocks until `more` further transfers have committed."""
        event = threading.Event()
        with self._lock:
            self._waiters.append((self.commits + more, event))
        assert event.wait(120), "the writers stalled"

    def _run(self, seed):
        rng = random.Random(seed)
        conn = pymysql.connect(**{**connect_args(self._url), "autocommit": False})
        try:
            while not self._stop.is_set():
                a, b = sorted(rng.sample(range(ACCOUNTS), 2))
                amount = rng.randint(1, 50)
                try:
                    with conn.cursor() as cur:
                        cur.execute(
                            f"UPDATE `{self._table}` SET balance = balance - %s "
                            "WHERE id = %s",
                            (amount, a),
                        )
                        cur.execute(
                            f"UPDATE `{self._table}` SET balance = balance + %s "
                            "WHERE id = %s",
                            (amount, b),
                        )
                    conn.commit()
                except pymysql.err.OperationalError as err:  # deadlock: retry
                    conn.rollback()
                    if err.args[0] not in (1213, 1205):
                        raise
                    continue
                with self._lock:
                    self.commits += 1
                    for target, event in list(self._waiters):
                        if self.commits >= target:
                            event.set()
                            self._waiters.remove((target, event))
        except BaseException as err:  # noqa: BLE001 - reported in __exit__
            self.errors.append(err)
        finally:
            conn.close()


@pytest.fixture()
def accounts(mysql_table):
    return mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY, balance BIGINT NOT NULL) "
        "ENGINE=InnoDB",
        (
            "INSERT INTO {table} VALUES (%s, %s)",
            [(i, START) for i in range(ACCOUNTS)],
        ),
    )


def _job_args(mysql_url, table, output_dir, partitions: int) -> list[str]:
    """The command line of a job reading `table` with label `y`."""
    return [
        "--db_url",
        mysql_url,
        "--table",
        table,
        "--label",
        "y",
        "--output_dir",
        str(output_dir),
        "--num_partitions",
        str(partitions),
    ]


def test_one_instant_partitions_keep_the_invariant(mysql_url, accounts):
    spec = sources.source_spec(
        mysql_url,
        table=accounts,
        statement_timeout_ms=60_000,
        lock_timeout_ms=10_000,
        consistency="one_instant",
    )
    with Writers(mysql_url, accounts) as writers:
        writers.wait_for(20)
        session = sources.open_session(spec, export=True)
        try:
            plan = session.plan(spec, num_partitions=8)
            assert session.snapshot_id is not None
            assert plan.consistency == "one_instant"
            before = writers.commits
            reader = PartitionReader(spec, plan, session.snapshot_id)
            total, rows = 0, 0
            for partition in plan.partitions:
                writers.wait_for(10)  # commits between every partition's read
                for batch in reader.read(partition, lambda c, n: None):
                    rows += batch.num_rows
                    total += sum(batch.column("balance").to_pylist())
            during = writers.commits - before
            # A partition's connection is taken once: a retry cannot re-enter.
            with pytest.raises(DatabaseError, match="--consistency one_instant"):
                take_connection(session.snapshot_id, 0)
        finally:
            session.close()
    assert rows == ACCOUNTS
    assert total == ACCOUNTS * START
    assert during >= 10 * len(plan.partitions)


def test_per_partition_mode_says_so(mysql_url, accounts):
    spec = sources.source_spec(
        mysql_url, table=accounts, statement_timeout_ms=60_000, lock_timeout_ms=10_000
    )
    session = sources.open_session(spec, export=True)
    try:
        plan = session.plan(spec, num_partitions=4)
        assert session.snapshot_id is None
        assert plan.consistency == "per_partition"
        assert "per partition" in plan.description
        assert plan.table.stored_locally is False  # never read twice (job.rereads)
    finally:
        session.close()


@pytest.mark.parametrize("consistency", ["per_partition", "one_instant"])
def test_ddl_waits_for_the_job_instead_of_changing_what_it_reads(
    mysql_url, mysql_table, tmp_path, consistency
):
    """From planning to the run's end the launcher holds the table's metadata lock.

    A TRUNCATE (or ALTER) in between would otherwise empty (or change) the
    partitions read after it, with exit 0. Checked on the job as prepared by the
    command line: the DDL times out while the job holds the table, and runs once
    the job is closed.
    """
    from pipeline.job import prepare_job
    from pipeline.options import parse_args

    name = mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY, y INT)",
        ("INSERT INTO {table} VALUES (%s, %s)", [(i, i % 2) for i in range(200)]),
    )
    config, _ = parse_args(
        _job_args(mysql_url, name, tmp_path / "out", 3)
        + ["--consistency", consistency]
    )
    job = prepare_job(config)
    ddl = pymysql.connect(**connect_args(mysql_url))
    try:
        with ddl.cursor() as cur:
            cur.execute("SET SESSION lock_wait_timeout = 1")
            assert job.snapshot is not None and job.plan.locks == (
                job.plan.source_name,
            )
            for statement in (
                f"TRUNCATE TABLE `{name}`",
                f"ALTER TABLE `{name}` ADD z INT",
            ):
                with pytest.raises(pymysql.err.OperationalError) as info:
                    cur.execute(statement)
                assert info.value.args[0] == 1205  # lock wait timeout: it waited
            cur.execute(f"SELECT COUNT(*) FROM `{name}`")
            assert cur.fetchone()[0] == 200
            job.close()
            cur.execute(f"TRUNCATE TABLE `{name}`")  # the job let go
            cur.execute(f"SELECT COUNT(*) FROM `{name}`")
            assert cur.fetchone()[0] == 0
    finally:
        job.close()
        ddl.close()


def test_a_launcher_session_lost_during_the_run_is_not_published(
    mysql_url, mysql_table, tmp_path
):
    """A killed launcher transaction dropped its metadata lock: the run fails.

    (An idle-transaction killer would do this on a busy server; DDL could then
    have changed what later partitions read.)
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.job import prepare_job
    from pipeline.options import parse_args
    from pipeline.run import run_job

    name = mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY, x DOUBLE, y INT)",
        (
            "INSERT INTO {table} VALUES (%s, %s, %s)",
            [(i, i * 0.5, i % 2) for i in range(300)],
        ),
    )
    out = tmp_path / "out"
    config, beam_args = parse_args(_job_args(mysql_url, name, out, 2))
    job = prepare_job(config)
    killer = pymysql.connect(**connect_args(mysql_url))
    try:
        with killer.cursor() as cur:
            cur.execute(f"KILL {int(job.snapshot.conn.connection_id)}")
        with pytest.raises(DatabaseError, match="lost during the run") as info:
            run_job(job, PipelineOptions(beam_args, pipeline_type_check=False))
        assert "\n" not in str(info.value) and "rerun" in str(info.value)
        assert not out.exists() or not (out / "manifest.json").exists()
    finally:
        job.close()
        killer.close()
