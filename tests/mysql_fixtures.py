"""Helpers of the MySQL tests: connections, throwaway tables, direct reads.

The fixtures (`mysql_url`, `mysql_table`) are in tests/conftest.py.
"""

from __future__ import annotations

import pyarrow as pa
import pymysql

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
