"""The sample table in MySQL/MariaDB: the same rows as PostgreSQL's, in MySQL types."""

from __future__ import annotations

import uuid

import pytest

from localdev import sample_table, sample_table_mysql
from localdev.sample_table import CATEGORIES, create_sample_table
from localdev.sample_table_mysql import create_sample_table_mysql
from tests.conftest import execute, mysql_connect, query

FLOATS = [f"f{i}" for i in range(8)]
ROWS = 2_000
BLOCK = 700  # three blocks, the last one partial: the block seams are compared too


def _mysql_rows(url: str, sql: str) -> list[tuple]:
    conn = mysql_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(sample_table, "_BLOCK_ROWS", BLOCK)
    monkeypatch.setattr(sample_table_mysql, "_BLOCK_ROWS", BLOCK)


def test_mysql_sample_equals_the_postgresql_sample(
    database_url, mysql_url, small_blocks
):
    table = f"s_{uuid.uuid4().hex[:8]}"
    assert create_sample_table(database_url, table, ROWS, seed=7) == ROWS
    assert create_sample_table_mysql(mysql_url, table, ROWS, seed=7) == ROWS
    try:
        columns = ", ".join(["id", *FLOATS, *CATEGORIES])
        postgres = query(
            database_url,
            f"SELECT {columns}, extract(epoch FROM created_at)::bigint, label "
            f"FROM {table} ORDER BY id",
        )
        mysql = _mysql_rows(
            mysql_url,
            f"SELECT {columns}, UNIX_TIMESTAMP(created_at), label "
            f"FROM `{table}` ORDER BY id",
        )
        assert len(postgres) == ROWS
        assert [tuple(row) for row in mysql] == postgres
        # Not vacuous: NULLs of both kinds made it through as NULL.
        assert any(row[1] is None for row in mysql)
        assert any(row[9] is None for row in mysql)
    finally:
        execute(database_url, f"DROP TABLE {table}")
        conn = mysql_connect(mysql_url, autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE `{table}`")
        conn.close()


def test_mysql_sample_types_key_and_keep(mysql_url):
    table = f"s_{uuid.uuid4().hex[:8]}"
    assert create_sample_table_mysql(mysql_url, table, 50) == 50
    try:
        types = _mysql_rows(
            mysql_url,
            "SELECT column_name, data_type, is_nullable, column_key "
            "FROM information_schema.columns "
            f"WHERE table_schema = DATABASE() AND table_name = '{table}' "
            "ORDER BY ordinal_position",
        )
        expected = [("id", "bigint", "NO", "PRI")]
        expected += [(f, "double", "YES", "") for f in FLOATS]
        expected += [(c, "varchar", "YES", "") for c in CATEGORIES]
        expected += [("created_at", "timestamp", "NO", ""), ("label", "int", "NO", "")]
        assert [tuple(row) for row in types] == expected
        # Kept when the size matches (a marker row survives), recreated when asked.
        conn = mysql_connect(mysql_url, autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"UPDATE `{table}` SET label = 7 WHERE id = 1")
        conn.close()
        assert create_sample_table_mysql(mysql_url, table, 50) == 50
        assert _mysql_rows(mysql_url, f"SELECT label FROM `{table}` WHERE id = 1") == [
            (7,)
        ]
        assert create_sample_table_mysql(mysql_url, table, 50, replace=True) == 50
        assert _mysql_rows(
            mysql_url, f"SELECT count(*), max(label) FROM `{table}`"
        ) == [(50, 1)]
    finally:
        conn = mysql_connect(mysql_url, autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        conn.close()
