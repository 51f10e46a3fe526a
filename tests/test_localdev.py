"""localdev: the embedded PostgreSQL, its CLI and the sample table.

Uses its own embedded server (module fixture), never DATABASE_URL or conftest's.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import psycopg2
import pytest

from localdev import embedded_postgres
from localdev.embedded_postgres import EmbeddedPostgres, find_bin_dir
from localdev.sample_table import CATEGORIES, create_sample_table

REPO = Path(__file__).resolve().parents[1]
ROWS = 20_000
FLOATS = [f"f{i}" for i in range(8)]


@pytest.fixture(scope="module")
def server():
    with EmbeddedPostgres() as pg:
        yield pg


@pytest.fixture(scope="module")
def sample(server):
    create_sample_table(server.url, "sample_20k", ROWS, seed=0, replace=True)
    return "sample_20k"


def fetch(url: str, query: str, params=()) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        conn.close()


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "localdev", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,  # also fails if the detached server kept our stdout pipe open
    )


def digest(url: str, table: str, where: str = "true") -> str:
    query = f"SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM \"{table}\" t"
    return fetch(url, f"{query} WHERE {where}")[0][0]


# -- the server ---------------------------------------------------------------------


def test_server_serves_the_database_on_loopback_only(server):
    assert server.url == f"postgresql://postgres@127.0.0.1:{server.port}/sql2tfrecord"
    ((db, user, addr, listen, fsync, major),) = fetch(
        server.url,
        "SELECT current_database(), current_user, host(inet_server_addr()), "
        "current_setting('listen_addresses'), current_setting('fsync'), "
        "current_setting('server_version_num')::int / 10000",
    )
    assert (db, user, addr, listen, fsync) == (
        "sql2tfrecord",
        "postgres",
        "127.0.0.1",
        "127.0.0.1",
        "off",
    )
    assert major >= 15
    assert server.data_dir.is_dir() and server.bin_dir.is_dir()


def test_stop_removes_the_data_and_closes_the_port():
    parent = Path(tempfile.mkdtemp())
    try:
        parent.chmod(0o755)  # as root, the server's user must reach a given data_dir
        pg = EmbeddedPostgres(data_dir=parent / "cluster")
        pg.start()
        data_dir, port = pg.data_dir, pg.port
        assert data_dir == parent / "cluster"
        assert fetch(pg.url, "SHOW data_directory") == [(str(data_dir),)]
        assert (data_dir / "postmaster.pid").exists() and accepts(port)
        pg.stop()
        assert not data_dir.exists()
        assert not accepts(port)
        assert not pg.running
        pg.stop()  # idempotent
        with pytest.raises(RuntimeError, match="not running"):
            pg.url  # noqa: B018
    finally:
        shutil.rmtree(parent)


def test_a_forgotten_server_is_stopped_at_exit():
    script = (
        "from localdev.embedded_postgres import EmbeddedPostgres\n"
        "pg = EmbeddedPostgres()\n"
        "pg.start()\n"
        "print(pg.data_dir, pg.port)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data_dir, port = result.stdout.split()
    assert not Path(data_dir).exists()
    assert not accepts(int(port))


def test_a_failed_start_leaves_nothing_behind(monkeypatch):
    settings = embedded_postgres._SERVER_SETTINGS + " -c no_such_setting=1"
    monkeypatch.setattr(embedded_postgres, "_SERVER_SETTINGS", settings)
    pg = EmbeddedPostgres()
    with pytest.raises(RuntimeError) as failure:
        pg.start()
    assert "did not start" in str(failure.value).splitlines()[0]
    assert "no_such_setting" in str(failure.value)  # from the server log's tail
    assert pg.data_dir is not None and not pg.data_dir.exists()
    assert not pg.running and not accepts(pg.port)


def test_a_non_empty_data_dir_is_refused_and_kept(tmp_path):
    (tmp_path / "precious").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        EmbeddedPostgres(data_dir=tmp_path).start()
    assert (tmp_path / "precious").read_text() == "x"


def test_missing_binaries_give_one_clear_line(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match="lacks initdb"):
        EmbeddedPostgres(bin_dir=tmp_path).start()
    monkeypatch.setattr(embedded_postgres, "_pgserver_bin_dir", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="pip install pgserver") as failure:
        find_bin_dir()
    assert "\n" not in str(failure.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="root only")
def test_as_root_unreachable_binaries_are_copied_for_nobody(tmp_path):
    wheel = find_bin_dir().parent.parent  # .../site-packages/pgserver
    if wheel.name != "pgserver":
        pytest.skip("the binaries are not pgserver's")
    private = tmp_path / "private"  # like a venv under /root (mode 700)
    private.mkdir(mode=0o700)
    shutil.copytree(wheel / "pginstall" / "bin", private / "pgserver/pginstall/bin")
    for part in ("lib", "share"):
        shutil.copytree(
            wheel / "pginstall" / part, private / "pgserver/pginstall" / part
        )
    shutil.copytree(wheel.parent / "pgserver.libs", private / "pgserver.libs")
    with EmbeddedPostgres(bin_dir=private / "pgserver/pginstall/bin") as pg:
        copy = pg.state()["bin_copy"]
        assert copy and pg.bin_dir == Path(copy) / "pgserver/pginstall/bin"
        assert fetch(pg.url, "SELECT current_setting('data_directory')") == [
            (str(pg.data_dir),)
        ]
        assert pg.state()["user"] == "nobody"
    assert not Path(copy).exists()


# -- the CLI ------------------------------------------------------------------------


def test_cli_start_prints_only_the_url_and_stop_cleans_up(tmp_path):
    pidfile = tmp_path / "pg.json"
    started = run_cli("start", "--pidfile", str(pidfile))
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    assert started.stdout == url + "\n"
    assert url.startswith("postgresql://postgres@127.0.0.1:")
    state = json.loads(pidfile.read_text())
    assert state["url"] == url
    assert {"data_dir", "bin_dir", "user"} <= state.keys()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert fetch(url, "SELECT current_database()") == [("sql2tfrecord",)]

    sampled = run_cli("sample", "--db_url", url, "--table", "s", "--rows", "1234")
    assert sampled.returncode == 0, sampled.stderr
    assert len(sampled.stdout.splitlines()) == 1 and "1234 rows" in sampled.stdout
    assert fetch(url, "SELECT count(*) FROM s") == [(1234,)]

    stopped = run_cli("stop", "--pidfile", str(pidfile))
    assert stopped.returncode == 0, stopped.stderr
    assert not pidfile.exists()
    assert not Path(state["data_dir"]).exists()
    assert not accepts(port)
    assert run_cli("stop", "--pidfile", str(pidfile)).returncode == 0  # idempotent


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "--db_url", "postgresql://postgres@127.0.0.1:1/x", "--rows", "5"],
        ["sample", "--rows", "5"],
        ["sample", "--db_url", "postgresql://x@127.0.0.1:1/x", "--rows", "many"],
        ["start"],
        ["nonsense"],
    ],
)
def test_cli_errors_are_one_line_and_exit_1(args):
    result = run_cli(*args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("localdev: error:")


# -- the sample table ---------------------------------------------------------------


def test_sample_has_the_rows_nulls_and_types(server, sample):
    nulls = ", ".join(f"avg(({c} IS NULL)::int)" for c in FLOATS + list(CATEGORIES))
    ((count, ids, *fractions),) = fetch(
        server.url, f"SELECT count(*), count(DISTINCT id), {nulls} FROM {sample}"
    )
    assert count == ids == ROWS
    float_nulls, text_nulls = fractions[:8], fractions[8:]
    assert all(0.04 < f < 0.06 for f in float_nulls), float_nulls
    assert all(0.013 < f < 0.027 for f in text_nulls), text_nulls
    ((bad_ts, bad_labels, year_days, pk),) = fetch(
        server.url,
        "SELECT count(*) FILTER (WHERE created_at IS NULL "
        "  OR created_at < '2024-01-01Z' OR created_at >= '2025-01-01Z'), "
        "count(*) FILTER (WHERE label IS NULL OR label NOT IN (0, 1)), "
        "count(DISTINCT (created_at AT TIME ZONE 'UTC')::date), "
        f"(SELECT count(*) FROM pg_index WHERE indrelid = '{sample}'::regclass "
        "AND indisprimary) FROM " + sample,
    )
    assert (bad_ts, bad_labels, pk) == (0, 0, 1)
    assert year_days > 350
    ((f0_mean, f0_sd, f1_mean, f2_min, f3_min, f3_max),) = fetch(
        server.url,
        f"SELECT avg(f0), stddev(f0), avg(f1), min(f2), min(f3), max(f3) FROM {sample}",
    )
    assert abs(f0_mean) < 0.05 and 0.95 < f0_sd < 1.05 and 49 < f1_mean < 51
    assert f2_min > 0 and -1 <= f3_min < -0.99 and 0.99 < f3_max <= 1


def test_sample_categories_are_skewed_with_the_expected_cardinalities(server, sample):
    ((c10, c100, c1k, c50k, malformed),) = fetch(
        server.url,
        "SELECT count(DISTINCT c10), count(DISTINCT c100), count(DISTINCT c1k), "
        "count(DISTINCT c50k), count(*) FILTER (WHERE c10 !~ '^c10_[0-9]{4}$' "
        "OR c100 !~ '^c100_[0-9]{4}$' OR c1k !~ '^c1k_[0-9]{4}$' "
        "OR c50k !~ '^c50k_[0-9]{5}$') FROM " + sample,
    )
    assert (c10, c100, malformed) == (10, 100, 0)
    assert 900 < c1k <= 1_000
    assert 5_000 < c50k <= 50_000  # 20k rows show only part of the Zipf tail
    ((top_share, median_share),) = fetch(
        server.url,
        "SELECT max(n)::float / sum(n), percentile_cont(0.5) WITHIN GROUP "
        f"(ORDER BY n) / sum(n) FROM (SELECT count(*) AS n FROM {sample} "
        "WHERE c100 IS NOT NULL GROUP BY c100) g",
    )
    assert top_share > 0.15 and top_share > 10 * median_share


def test_sample_label_depends_on_the_features(server, sample):
    ((rate,),) = fetch(server.url, f"SELECT avg(label)::float FROM {sample}")
    assert 0.30 < rate < 0.42
    by_c10 = [r[0] for r in fetch(
        server.url,
        f"SELECT avg(label)::float FROM {sample} WHERE c10 IS NOT NULL GROUP BY c10",
    )]  # fmt: skip
    assert max(by_c10) - min(by_c10) > 0.1
    ((evening, morning),) = fetch(
        server.url,
        "SELECT avg(label) FILTER (WHERE h BETWEEN 18 AND 22)::float, "
        "avg(label) FILTER (WHERE h BETWEEN 6 AND 10)::float FROM "
        f"(SELECT label, extract(hour FROM created_at AT TIME ZONE 'UTC') AS h "
        f"FROM {sample}) t",
    )
    assert evening - morning > 0.1

    # A small logistic model on f0..f3, c10, c100 and the hour beats chance clearly.
    rows = fetch(
        server.url,
        "SELECT f0, f1, ln(f2), f3, coalesce(substr(c10, 5)::int, 10), "
        "coalesce(substr(c100, 6)::int, 100), "
        "extract(hour FROM created_at AT TIME ZONE 'UTC'), label "
        f"FROM {sample} ORDER BY id",
    )
    data = np.array(rows, dtype=float)
    numeric = data[:, :4]
    numeric = (numeric - np.nanmean(numeric, 0)) / np.nanstd(numeric, 0)
    numeric = np.nan_to_num(numeric, nan=0.0)
    hour = 2 * np.pi * data[:, 6] / 24
    x = np.hstack([
        np.ones((len(data), 1)),
        numeric,
        np.eye(11)[data[:, 4].astype(int)][:, 1:],
        np.eye(101)[data[:, 5].astype(int)][:, 1:],
        np.column_stack([np.cos(hour), np.sin(hour)]),
    ])  # fmt: skip
    y = data[:, 7]
    train, test = slice(0, ROWS // 2), slice(ROWS // 2, None)
    w = np.zeros(x.shape[1])
    for _ in range(15):  # Newton's method with a little ridge
        p = 1 / (1 + np.exp(-x[train] @ w))
        grad = x[train].T @ (p - y[train]) + 1e-2 * w
        hess = (x[train] * (p * (1 - p))[:, None]).T @ x[train] + 1e-2 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    assert auc(y[test], x[test] @ w) > 0.72
    assert w[1] > 0.3 and w[4] > 0.2  # f0 and f3 push towards 1


def auc(y: np.ndarray, score: np.ndarray) -> float:
    ranks = np.empty(len(score))
    ranks[np.argsort(score)] = np.arange(1, len(score) + 1)
    positives = y.sum()
    return (ranks[y == 1].sum() - positives * (positives + 1) / 2) / (
        positives * (len(y) - positives)
    )


def test_sample_is_deterministic_and_a_prefix_of_larger_tables(server):
    url = server.url
    create_sample_table(url, "det_a", 3_000, seed=7, replace=True)
    create_sample_table(url, "det_b", 3_000, seed=7, replace=True)
    create_sample_table(url, "det_c", 3_000, seed=8, replace=True)
    create_sample_table(url, "det_small", 2_000, seed=7, replace=True)
    assert digest(url, "det_a") == digest(url, "det_b") != digest(url, "det_c")
    assert digest(url, "det_small") == digest(url, "det_a", "id <= 2000")


def test_sample_is_kept_when_the_size_matches_unless_replaced(server):
    url = server.url
    assert create_sample_table(url, "reuse", 1_500, seed=1, replace=True) == 1_500
    original = digest(url, "reuse")
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE reuse SET label = 1 - label WHERE id = 1")
    conn.close()
    edited = digest(url, "reuse")
    assert create_sample_table(url, "reuse", 1_500, seed=1) == 1_500
    assert digest(url, "reuse") == edited != original  # kept as it was
    assert create_sample_table(url, "reuse", 1_500, seed=1, replace=True) == 1_500
    assert digest(url, "reuse") == original
    assert create_sample_table(url, "reuse", 1_000, seed=1) == 1_000  # other size
    assert fetch(url, "SELECT count(*) FROM reuse") == [(1_000,)]


def test_sample_quotes_the_table_name_and_validates_arguments(server):
    name = 'Odd "name"; DROP TABLE x'
    assert create_sample_table(server.url, name, 10, replace=True) == 10
    assert fetch(server.url, 'SELECT count(*) FROM "Odd ""name""; DROP TABLE x"') == [
        (10,)
    ]
    assert create_sample_table(server.url, "empty", 0, replace=True) == 0
    with pytest.raises(ValueError, match="rows"):
        create_sample_table(server.url, "bad", -1)
    with pytest.raises(ValueError, match="seed"):
        create_sample_table(server.url, "bad", 10, seed=-1)
