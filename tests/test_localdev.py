"""The embedded PostgreSQL and the sample table."""

import socket

import numpy as np
import psycopg2
import pytest

from localdev.embedded_postgres import EmbeddedPostgres
from localdev.sample_table import create_sample_table
from tests.conftest import query


def test_embedded_server_serves_loopback_and_leaves_nothing_behind():
    server = EmbeddedPostgres()
    url = server.start()
    try:
        assert url.startswith("postgresql://postgres@127.0.0.1:")
        assert query(url, "SELECT current_setting('listen_addresses')") == [("127.0.0.1",)]
        data_dir, port = server.data_dir, server.port
        assert data_dir.exists()
    finally:
        server.stop()
    assert not data_dir.exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    server.stop()  # idempotent


def test_sample_table_shape_nulls_cardinalities_and_signal(database_url):
    rows = 30_000
    create_sample_table(database_url, "sample_test", rows, seed=3, replace=True)
    ((count, f0_nulls, c10_nulls, c10, c100, positives),) = query(
        database_url,
        "SELECT count(*), avg((f0 IS NULL)::int), avg((c10 IS NULL)::int), "
        "count(DISTINCT c10), count(DISTINCT c100), avg(label) FROM sample_test",
    )
    assert count == rows
    assert 0.04 < f0_nulls < 0.06 and 0.01 < c10_nulls < 0.03
    assert c10 == 10 and c100 == 100
    assert 0.25 < positives < 0.45
    # The label depends on f0 (positively) and on the hour of day.
    ((low, high),) = query(
        database_url,
        "SELECT avg(label) FILTER (WHERE f0 < -1), avg(label) FILTER (WHERE f0 > 1) "
        "FROM sample_test",
    )
    assert high - low > 0.2
    by_hour = np.array(
        [r[1] for r in query(database_url, "SELECT extract(hour FROM created_at AT TIME "
                             "ZONE 'UTC'), avg(label) FROM sample_test GROUP BY 1 ORDER BY 1")],
        dtype=float,
    )
    assert by_hour.max() - by_hour.min() > 0.15


def test_sample_table_is_deterministic_and_reused(database_url):
    digest = "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {} t"
    create_sample_table(database_url, "sample_a", 2_000, seed=5, replace=True)
    create_sample_table(database_url, "sample_b", 2_000, seed=5, replace=True)
    assert query(database_url, digest.format("sample_a")) == query(database_url, digest.format("sample_b"))
    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE sample_a SET label = 1 - label WHERE id = 1")
    conn.close()
    before = query(database_url, digest.format("sample_a"))
    create_sample_table(database_url, "sample_a", 2_000, seed=5)  # same size: kept
    assert query(database_url, digest.format("sample_a")) == before
    with pytest.raises(ValueError, match="--rows"):
        create_sample_table(database_url, "sample_c", -1)
