"""MySQL partition plans: every row exactly once, whatever the keys.

Each case reads through the plan and the partition reader (no Beam) and compares
the multiset of ids and the sum of a value with SQL aggregates of the table.
"""

from __future__ import annotations

import collections
import random
import threading

import pytest

from pipeline.sources import DatabaseError
from pipeline.sources.mysql import partition_reader
from pipeline.sources.mysql.partition_reader import PartitionReader, PartitionReadError
from tests.mysql_fixtures import admin, read_all

pytestmark = pytest.mark.mysql

DDL = (
    "CREATE TABLE {table} (id INT PRIMARY KEY, k BIGINT NULL, d DATE NULL, "
    "x DECIMAL(30,10) NULL, v DOUBLE, name VARCHAR(20), KEY (k))"
)


def _load(url, make, rows):
    name = make(DDL)
    conn = admin(url)
    with conn.cursor() as cur:
        if rows:
            cur.executemany(f"INSERT INTO `{name}` VALUES (%s,%s,%s,%s,%s,%s)", rows)
        cur.execute(f"ANALYZE TABLE `{name}`")
        cur.fetchall()
    conn.close()
    return name


def _rows(n, key, seed=7):
    rng = random.Random(seed)
    return [
        (
            i,
            key(i, rng),
            None if i % 11 == 0 else f"20{i % 30:02d}-0{1 + i % 9}-1{i % 9}",
            None if i % 13 == 0 else f"{rng.randint(-10**9, 10**9)}.{i:010d}",
            rng.random(),
            f"n{i % 5}" + (" " if i % 2 else ""),
        )
        for i in range(n)
    ]


KEYS = {
    "nulls_and_duplicates": lambda i, r: None if i % 7 == 0 else i % 10,
    "skewed": lambda i, r: 0 if i % 100 else i,
    "negative_and_huge": lambda i, r: r.choice([-(2**63), 2**63 - 1, -1, 0, 1])
    if i % 3
    else r.randint(-(2**62), 2**62),
    "all_null": lambda i, r: None,
}


def _check(url, name, table):
    conn = admin(url)
    with conn.cursor() as cur:
        cur.execute(f"SELECT id FROM `{name}`")
        expected = collections.Counter(r[0] for r in cur.fetchall())
    conn.close()
    got = collections.Counter(table.column("id").to_pylist())
    assert got == expected


@pytest.mark.parametrize("case", sorted(KEYS))
@pytest.mark.parametrize("n", [0, 1, 500])
def test_key_ranges_on_partition_column_read_every_row_once(
    mysql_url, mysql_table, case, n
):
    name = _load(mysql_url, mysql_table, _rows(n, KEYS[case]))
    for parts in (1, 4, 9):
        plan, table, _ = read_all(
            mysql_url, table=name, num_partitions=parts, partition_column="k"
        )
        assert plan.partitions[-1].kind == "null"
        _check(mysql_url, name, table)


@pytest.mark.parametrize("column", ["id", "d", "x"])
def test_primary_key_date_and_decimal_ranges(mysql_url, mysql_table, column):
    name = _load(mysql_url, mysql_table, _rows(700, KEYS["skewed"]))
    plan, table, _ = read_all(
        mysql_url,
        table=name,
        num_partitions=6,
        partition_column=None if column == "id" else column,
    )
    assert len(plan.partitions) >= 3  # balanced ranges, not one partition
    _check(mysql_url, name, table)


def test_text_partition_column_is_refused(mysql_url, mysql_table):
    name = _load(mysql_url, mysql_table, _rows(10, KEYS["skewed"]))
    with pytest.raises(DatabaseError, match="--partition_column name.*collation"):
        read_all(mysql_url, table=name, partition_column="name")


def test_query_with_partition_column(mysql_url, mysql_table):
    name = _load(mysql_url, mysql_table, _rows(300, KEYS["nulls_and_duplicates"]))
    plan, table, _ = read_all(
        mysql_url,
        query=f"SELECT id, k, v FROM `{name}` WHERE id % 2 = 0",
        num_partitions=4,
        partition_column="k",
    )
    assert len(plan.partitions) > 2
    assert sorted(table.column("id").to_pylist()) == list(range(0, 300, 2))


def test_a_killed_connection_fails_the_partition_never_loses_rows(
    mysql_url, mysql_table, monkeypatch
):
    """KILL from another session mid-stream: an error, or every row; never fewer."""
    monkeypatch.setattr(partition_reader, "BATCH_ROWS", 100)
    name = mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY, pad VARCHAR(200))",
        (
            "INSERT INTO {table} VALUES (%s, %s)",
            [(i, "x" * 200) for i in range(50_000)],
        ),
    )
    from pipeline import sources

    spec = sources.source_spec(
        mysql_url, table=name, statement_timeout_ms=60_000, lock_timeout_ms=5_000
    )
    session = sources.open_session(spec, export=True)
    plan = session.plan(spec, num_partitions=1)
    session.close()
    reader = PartitionReader(spec, plan, None)
    killer = admin(mysql_url)
    seen = 0
    with pytest.raises(PartitionReadError) as info:
        for batch in reader.read(plan.partitions[0], lambda c, n: None):
            seen += batch.num_rows
            if seen == 100:  # the first batch: kill the reading session
                with killer.cursor() as cur:
                    cur.execute(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE info LIKE %s AND id <> CONNECTION_ID()",
                        (f"%FROM `%{name}%",),
                    )
                    (victim,) = cur.fetchone()
                    cur.execute(f"KILL {int(victim)}")
    killer.close()
    assert seen < 50_000
    assert "rerun" in str(info.value) and "\n" not in str(info.value)


def test_a_lost_connection_before_the_first_row_is_retried(mysql_url, mysql_table):
    name = mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY)",
        "INSERT INTO {table} VALUES (1), (2), (3)",
    )
    from pipeline import sources

    spec = sources.source_spec(
        mysql_url, table=name, statement_timeout_ms=60_000, lock_timeout_ms=5_000
    )
    session = sources.open_session(spec, export=True)
    plan = session.plan(spec, num_partitions=1)
    session.close()
    reader = PartitionReader(spec, plan, None)
    calls = threading.local()
    original = partition_reader.open_stream

    def flaky(conn, statement):
        if not getattr(calls, "failed", False):
            calls.failed = True
            conn.close()  # the connection is gone before the SELECT
        return original(conn, statement)

    partition_reader.open_stream = flaky
    try:
        rows = [r for b in reader.read(plan.partitions[0], lambda c, n: None)
                for r in b.column("id").to_pylist()]
    finally:
        partition_reader.open_stream = original
    assert sorted(rows) == [1, 2, 3] and reader.reconnects == 1
