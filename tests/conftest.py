"""Shared fixtures: a real PostgreSQL, and a real MySQL/MariaDB, for the whole session.

With `DATABASE_URL` set, tests use that server (each session works in its own
throwaway schema-less database objects, prefixed `t_`); otherwise the suite starts an
embedded, throwaway PostgreSQL (localdev.embedded_postgres) and stops it at the end.

MySQL tests (marked `mysql`, automatically when they use `mysql_url`): with
`MYSQL_URL` set they use that server; otherwise the suite starts a throwaway
`mariadbd` (localdev.embedded_mariadb) once, at the first such test, and stops it at
the end. Without a server binary they are skipped, and the summary says so in one
line ("MySQL tests not run: ...").
"""

from __future__ import annotations

import os
import uuid

import psycopg2
import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Property tests: "ci" (the default) is derandomized, so a run is reproducible
# and green or red for a reason; HYPOTHESIS_PROFILE=dev explores new random
# examples, more of them, and prints how to reproduce a failure.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    derandomize=False,
    deadline=None,
    print_blob=True,
    max_examples=500,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_MYSQL_MARKER = "mysql"
_MYSQL_NOT_RUN: dict[str, int] = {}  # reason -> tests skipped for it


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        f"{_MYSQL_MARKER}: needs a MySQL/MariaDB server (MYSQL_URL, or a throwaway "
        "mariadbd)",
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if {"mysql_url", "mysql_session_server"} & set(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(_MYSQL_MARKER)


def pytest_runtest_logreport(report):
    if report.skipped and _MYSQL_MARKER in report.keywords and _MYSQL_NOT_RUN:
        reason = next(iter(_MYSQL_NOT_RUN))
        _MYSQL_NOT_RUN[reason] += 1


def pytest_terminal_summary(terminalreporter):
    for reason, count in _MYSQL_NOT_RUN.items():
        terminalreporter.write_line(f"{reason} ({count} tests skipped)", yellow=True)


@pytest.fixture(scope="session")
def database_url():
    """A libpq URL of a PostgreSQL where tests may create and drop tables."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from localdev.embedded_postgres import EmbeddedPostgres

    with EmbeddedPostgres() as server:
        yield server.url


def mysql_url_from_environment(environ) -> str | None:
    """The MySQL server the environment names (`MYSQL_URL`), or None: start one."""
    return environ.get("MYSQL_URL") or None


def mysql_session(environ, not_run: dict[str, int] | None = None):
    """Yields (URL, the embedded server or None); stops a server it started.

    Raises pytest's skip exception, and records the reason in `not_run` (for the
    summary), when `MYSQL_URL` is unset and no server binary exists.
    """
    url = mysql_url_from_environment(environ)
    if url:
        yield url, None
        return
    from localdev.embedded_mariadb import EmbeddedMariaDB, NoServerBinaryError

    server = EmbeddedMariaDB()
    try:
        server.start()
    except NoServerBinaryError as err:
        reason = f"MySQL tests not run: {err}"
        if not_run is not None:
            not_run.setdefault(reason, 0)
        pytest.skip(reason)
    try:
        yield server.url, server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mysql_session_server():
    """(URL, EmbeddedMariaDB or None when `MYSQL_URL` is used), for the session."""
    yield from mysql_session(os.environ, _MYSQL_NOT_RUN)


@pytest.fixture(scope="session")
def mysql_url(mysql_session_server):
    """`mysql://user[:password]@host:port/database` where tests may create tables.

    `MYSQL_URL` when set; else the throwaway server's `mysql://root@127.0.0.1:PORT/test`.
    """
    return mysql_session_server[0]


def mysql_connect(url: str, **kwargs):
    """A pymysql connection to a `mysql://` URL (tests only)."""
    import pymysql

    from localdev.sample_table_mysql import mysql_connect_args

    return pymysql.connect(**mysql_connect_args(url), **kwargs)


@pytest.fixture(scope="session")
def make_table(database_url):
    """Runs DDL/DML and returns a fresh table name; tables are dropped at the end."""
    created = []

    def make(ddl: str, *statements: str, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        conn = psycopg2.connect(database_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(ddl.replace("{table}", f'"{name}"'))
            for statement in statements:
                cur.execute(statement.replace("{table}", f'"{name}"'))
            cur.execute(f'ANALYZE "{name}"')
        conn.close()
        created.append(name)
        return name

    yield make
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        # A job left holding its locks must fail the teardown, not hang it.
        cur.execute("SET lock_timeout = '120s'")
        for name in created:
            cur.execute(f'DROP TABLE IF EXISTS "{name}" CASCADE')
    conn.close()


def execute(url: str, *statements: str) -> None:
    """Runs statements in autocommit mode (tests only)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def query(database_url: str, sql: str, params=()) -> list[tuple]:
    """Fetches all rows of a query (tests only)."""
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def splitmix64_reference(x: int) -> int:
    """Textbook SplitMix64 finaliser in plain Python integers (tests only)."""
    m = (1 << 64) - 1
    z = ((x & m) + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def reference_split(row_id: int) -> str:
    """The default train=80,eval=20 split of an integer key, computed independently."""
    return "train" if splitmix64_reference(row_id) % 100 < 80 else "eval"


def wait_for_staging(output_dir, proc, timeout: float = 120.0):
    """Waits until a run (`proc`, a Popen) building `output_dir` has started.

    Its signal: the raw schema `metadata/schema.pbtxt` in the run's staging directory
    beside the target (written once the plan is made and the snapshot exported,
    before any partition is read). Returns the staging directory; fails if the run
    ends first or the deadline passes.
    """
    import time
    from pathlib import Path

    out = Path(output_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for staging in out.parent.glob(f".{out.name}.sql2tfrecord-staging-*"):
            if (staging / "metadata" / "schema.pbtxt").exists():
                return staging
        if proc.poll() is not None:
            code = proc.returncode
            raise AssertionError(f"the run ended (exit {code}) before starting")
        time.sleep(0.02)
    raise AssertionError(f"no run building {out} started within {timeout} s")



@pytest.fixture(scope="session")
def mysql_table(mysql_url):
    """`make(ddl, *statements) -> name`: a fresh table (`{table}` in the SQL),
    dropped at the end of the session."""
    created = []
    from tests.mysql_fixtures import admin

    conn = admin(mysql_url)

    def make(ddl: str, *statements, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        quoted = "`" + name.replace("`", "``") + "`"
        with conn.cursor() as cur:
            cur.execute(ddl.replace("{table}", quoted))
            for statement in statements:
                if isinstance(statement, tuple):
                    cur.executemany(statement[0].replace("{table}", quoted), statement[1])
                else:
                    cur.execute(statement.replace("{table}", quoted))
            cur.execute(f"ANALYZE TABLE {quoted}")
            cur.fetchall()
        created.append(quoted)
        return name

    yield make
    with conn.cursor() as cur:
        for quoted in created:
            cur.execute(f"DROP TABLE IF EXISTS {quoted}")
    conn.close()
