"""Helpers of the MySQL tests: connections, throwaway tables, direct reads.

Import the fixtures into a test module (`from tests.mysql_fixtures import
mysql_table`); they use the session's `mysql_url` (tests/conftest.py).
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pymysql
import pytest

from pipeline import sources
from pipeline.sources.mysql.connection import parse_url
from pipeline.sources.mysql.partition_reader import PartitionReader
from pipeline.sources.read_plan import raw_arrow_schema


def connect_args(url: str) -> dict:
    parsed = parse_url(url)
    args = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.user,
        "database": parsed.database,
        "charset": "utf8mb4",
        "autocommit": True,
    }
    if parsed.password is not None:
        args["password"] = parsed.password
    return args


def admin(url: str, sql_mode: str = ""):
    """A pymysql connection (autocommit, permissive `sql_mode` to load edge rows)."""
    conn = pymysql.connect(**connect_args(url))
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = %s, time_zone = '+00:00'", (sql_mode,))
    return conn


@pytest.fixture(scope="session")
def mysql_table(mysql_url):
    """`make(ddl, *statements) -> name`: a fresh table (`{table}` in the SQL),
    dropped at the end of the session."""
    created = []
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


def read_all(url, *, table=None, query=None, consistency=None, **plan_args):
    """(plan, pa.Table of every partition, zero dates by column), without Beam."""
    spec = sources.source_spec(
        url,
        table=table,
        query=query,
        statement_timeout_ms=60_000,
        lock_timeout_ms=5_000,
        consistency=consistency,
    )
    session = sources.open_session(spec, export=True)
    try:
        plan = session.plan(spec, **plan_args)
        zero: dict[str, int] = {}

        def count(column, n):
            zero[column] = zero.get(column, 0) + n

        reader = PartitionReader(spec, plan, session.snapshot_id)
        batches = [b for p in plan.partitions for b in reader.read(p, count)]
    finally:
        session.close()
    schema = raw_arrow_schema(plan)
    return plan, pa.Table.from_batches(batches, schema=schema), zero
