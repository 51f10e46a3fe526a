"""The MySQL fixtures: MYSQL_URL first, else a working, loopback-only server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from localdev import embedded_mariadb
from localdev.embedded_mariadb import EmbeddedMariaDB, NoServerBinaryError
from localdev.sample_table_mysql import mysql_connect_args
from tests.conftest import mysql_connect, mysql_session, mysql_url_from_environment


def test_mysql_url_from_environment_prefers_mysql_url():
    url = "mysql://me:secret@db.example:3307/prod"
    assert mysql_url_from_environment({"MYSQL_URL": url}) == url
    assert mysql_url_from_environment({"MYSQL_URL": ""}) is None
    assert mysql_url_from_environment({"DATABASE_URL": "postgresql://x/y"}) is None


def test_mysql_session_with_mysql_url_starts_no_server(monkeypatch):
    def refuse(self):
        raise AssertionError("started a server although MYSQL_URL is set")

    monkeypatch.setattr(EmbeddedMariaDB, "start", refuse)
    session = mysql_session({"MYSQL_URL": "mysql://u@h:1/d"})
    assert next(session) == ("mysql://u@h:1/d", None)
    with pytest.raises(StopIteration):
        next(session)


def test_mysql_session_without_binary_skips_with_one_line_reason(monkeypatch):
    monkeypatch.setenv("MARIADBD", "/nonexistent/mariadbd")
    not_run = {}
    session = mysql_session({}, not_run)
    with pytest.raises(pytest.skip.Exception) as skipped:
        next(session)
    reason = str(skipped.value)
    assert reason.startswith("MySQL tests not run: ")
    assert "MARIADBD=/nonexistent/mariadbd" in reason
    assert "\n" not in reason
    assert not_run == {reason: 0}


def test_find_server_honours_mariadbd(monkeypatch, tmp_path):
    fake = tmp_path / "my-mariadbd"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MARIADBD", str(fake))
    assert embedded_mariadb.find_server() == fake
    monkeypatch.setenv("MARIADBD", str(tmp_path / "missing"))
    with pytest.raises(NoServerBinaryError, match="MARIADBD="):
        embedded_mariadb.find_server()


def test_find_server_without_any_binary(monkeypatch):
    monkeypatch.delenv("MARIADBD", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(embedded_mariadb, "_SEARCH_DIRS", ())
    with pytest.raises(NoServerBinaryError, match="no mariadbd/mysqld binary found"):
        embedded_mariadb.find_server()


def test_mysql_connect_args_from_url(monkeypatch):
    monkeypatch.setenv("MYSQL_PWD", "from-env")
    assert mysql_connect_args("mysql://root@127.0.0.1:4000/test") == {
        "host": "127.0.0.1",
        "port": 4000,
        "user": "root",
        "password": "from-env",
        "database": "test",
    }
    args = mysql_connect_args("mariadb://u%40x:p%2Fw@db/some%20db")
    assert args == {
        "host": "db",
        "port": 3306,
        "user": "u@x",
        "password": "p/w",
        "database": "some db",
    }
    with pytest.raises(ValueError, match="mysql:// or mariadb://"):
        mysql_connect_args("postgresql://u@h/d")
    with pytest.raises(ValueError, match="no database"):
        mysql_connect_args("mysql://u@h:1/")


def test_mysql_url_round_trips_rows(mysql_url):
    table = f"t_{os.getpid()}_roundtrip"
    rows = [(1, "a", 0.5), (2, "ß€", None), (3, None, -1.25)]
    conn = mysql_connect(mysql_url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
            cur.execute(
                f"CREATE TABLE `{table}` (id BIGINT PRIMARY KEY, "
                "s VARCHAR(8) CHARACTER SET utf8mb4, x DOUBLE) ENGINE=InnoDB"
            )
            cur.executemany(f"INSERT INTO `{table}` VALUES (%s, %s, %s)", rows)
            cur.execute(f"SELECT id, s, x FROM `{table}` ORDER BY id")
            assert cur.fetchall() == tuple(rows)
            cur.execute(f"DROP TABLE `{table}`")
    finally:
        conn.close()


def _listening_ports(pid: int) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets `pid` listens on, from /proc (IPv4, IPv6)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with open(f"/proc/net/{table}", encoding="ascii") as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state != "0A" or inode not in inodes:  # 0A: LISTEN
                    continue
                address_hex, port_hex = local.split(":")
                raw = bytes.fromhex(address_hex)
                if family == socket.AF_INET:
                    raw = raw[::-1]  # little-endian u32
                else:
                    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_embedded_server_listens_on_loopback_only(mysql_session_server):
    url, server = mysql_session_server
    if server is None:
        pytest.skip("MYSQL_URL is set: not our server to inspect")
    assert server.port != 3306
    assert url == f"mysql://root@127.0.0.1:{server.port}/test"
    assert _listening_ports(server.pid) == {("127.0.0.1", server.port)}
    conn = mysql_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@bind_address, @@port, @@skip_networking")
            assert cur.fetchone() == ("127.0.0.1", server.port, 0)
    finally:
        conn.close()


@pytest.mark.mysql
def test_embedded_server_lifecycle_via_cli(tmp_path):
    """`python -m localdev start-mysql/stop-mysql`: URL on stdout, all gone after."""
    try:
        embedded_mariadb.find_server()
    except NoServerBinaryError as err:
        pytest.skip(f"MySQL tests not run: {err}")
    pidfile = tmp_path / "mariadb.json"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "localdev"]
    started = subprocess.run(
        [*command, "start-mysql", "--pidfile", str(pidfile)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=True,
    )
    url = started.stdout.strip()
    state = EmbeddedMariaDB.from_state(json.loads(pidfile.read_text()))
    try:
        assert url == state.url
        conn = mysql_connect(url)
        conn.close()
    finally:
        subprocess.run(
            [*command, "stop-mysql", "--pidfile", str(pidfile)],
            env=env,
            timeout=180,
            check=True,
        )
    assert not pidfile.exists()
    assert not state.directory.exists()
    assert not embedded_mariadb._alive(state.pid, state.directory)


def test_a_failed_start_leaves_nothing_behind(monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    server = bin_dir / "mariadbd"
    server.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && echo "mariadbd Ver 10.11 MariaDB" '
        "&& exit 0\necho refusing >&2\nexit 3\n"
    )
    install_db = bin_dir / "mariadb-install-db"
    install_db.write_text("#!/bin/sh\nexit 0\n")
    for path in (server, install_db):
        path.chmod(0o755)
    monkeypatch.setattr(embedded_mariadb.tempfile, "tempdir", str(tmp_path))
    embedded = EmbeddedMariaDB(server=server)
    with pytest.raises(RuntimeError, match="mariadbd exited with 3"):
        embedded.start()
    assert not embedded.running
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]
