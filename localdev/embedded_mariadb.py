"""A throwaway MariaDB (or MySQL) server for run_local.sh and the tests.

Contract:
    * Binaries: the server named by `$MARIADBD`, else the first of `mariadbd`,
      `mysqld` on PATH, in /usr/sbin, /usr/local/mysql/bin, /usr/local/mariadb/bin,
      /opt/mysql/bin; `NoServerBinaryError` when there is none. A MariaDB server is
      initialised with `mariadb-install-db` (or `mysql_install_db`) found beside it,
      in `../bin` or `../scripts`, or on PATH; an Oracle MySQL server with its own
      `--initialize-insecure` (that path is not exercised on the development
      machines, which have MariaDB 10.11).
    * The server listens on 127.0.0.1 only, on a free port chosen by the OS (never
      3306), plus a Unix socket in its directory; `root` has no password (also as
      `root@127.0.0.1`), binary logging and name resolution are off, memory is small
      and durability is off (the data is throwaway). A database `test` exists.
    * As root, the server runs as root (`--user=root`); otherwise as the current
      user. No option file is read (`--no-defaults`).
    * Everything lives in one fresh temporary directory (data, socket, pid file,
      `error.log`) that `stop()` deletes; `stop()` is idempotent, shuts the server
      down with SIGTERM and waits for it (SIGKILL after a deadline), and also runs
      at interpreter exit of the starting process. A failed `start()` leaves no
      server and no directory behind.
    * Importing this module has no side effects; `pymysql` is only needed once a
      server is started.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["DATABASE", "EmbeddedMariaDB", "NoServerBinaryError", "find_server"]

_LOGGER = logging.getLogger(__name__)

DATABASE = "test"
USER = "root"

_HOST = "127.0.0.1"
_RESERVED_PORTS = frozenset({3306})  # the machine's own server, if any
_PORT_ATTEMPTS = 5
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 60.0
_POLL_S = 0.05
_SERVER_NAMES = ("mariadbd", "mysqld")
_INSTALL_NAMES = ("mariadb-install-db", "mysql_install_db")
_SEARCH_DIRS = (
    "/usr/sbin",
    "/usr/local/mysql/bin",
    "/usr/local/mariadb/bin",
    "/opt/mysql/bin",
)
# Small, fast, throwaway: no binary log, no DNS, no durability, little memory.
_SERVER_SETTINGS = (
    "--skip-log-bin",
    "--skip-name-resolve",
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--performance-schema=OFF",
    "--max-connections=200",
    "--local-infile=1",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_bin",
)
_LOG_NAME = "error.log"
_NO_BINARY = (
    "no mariadbd/mysqld binary found (set MYSQL_URL, or MARIADBD to the server "
    "binary, or install mariadb-server)"
)


class NoServerBinaryError(RuntimeError):
    """No MariaDB/MySQL server binary on this machine; callers may skip."""


def find_server() -> Path:
    """Finds the server binary: `$MARIADBD`, else `mariadbd`/`mysqld` (see module).

    Returns:
        The binary's path.

    Raises:
        NoServerBinaryError: `$MARIADBD` is not an executable file, or none found.
    """
    named = os.environ.get("MARIADBD")
    if named:
        path = Path(shutil.which(named) or named)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise NoServerBinaryError(f"MARIADBD={named} is not an executable file")
        return path.absolute()
    for name in _SERVER_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
        for directory in _SEARCH_DIRS:
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    raise NoServerBinaryError(_NO_BINARY)


def _find_install_db(server: Path) -> Path | None:
    here = server.parent
    for directory in (here, here.parent / "bin", here.parent / "scripts"):
        for name in _INSTALL_NAMES:
            candidate = directory / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    for name in _INSTALL_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((_HOST, 0))
            port = probe.getsockname()[1]
        if port not in _RESERVED_PORTS:
            return port


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _alive(pid: int, directory: Path) -> bool:
    """Whether `pid` is still our server (a recycled pid is not)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: trust the pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    if not cmdline:  # a zombie: exited, not yet reaped
        return False
    return str(directory).encode() in cmdline


class EmbeddedMariaDB:
    """A private MariaDB on 127.0.0.1; `start()`/`stop()` or a `with` block.

    Example:
        with EmbeddedMariaDB() as server:
            pymysql.connect(host="127.0.0.1", port=server.port, user="root")

    Attributes:
        directory: the temporary directory (deleted by `stop()`), once started.
        server: the server binary in use, once started.
        port: the TCP port, once started.
        pid: the server's process id, once started.
    """

    def __init__(self, server: str | os.PathLike | None = None):
        """Prepares, without starting, a server.

        Args:
            server: the server binary. Default: `find_server()`.
        """
        self._requested_server = Path(server).absolute() if server else None
        self.directory: Path | None = None
        self.server: Path | None = None
        self.port: int | None = None
        self.pid: int | None = None
        self._process: subprocess.Popen | None = None
        self._url: str | None = None
        self._owner_pid = os.getpid()

    @property
    def url(self) -> str:
        """The URL `mysql://root@127.0.0.1:PORT/test`."""
        if self._url is None:
            raise RuntimeError("the embedded MariaDB is not running")
        return self._url

    @property
    def socket_path(self) -> Path:
        """The server's Unix socket (for the `mariadb` client: `-S`)."""
        if self.directory is None:
            raise RuntimeError("the embedded MariaDB is not running")
        return self.directory / "mysqld.sock"

    @property
    def running(self) -> bool:
        """Whether `start()` succeeded and `stop()` has not run since."""
        return self._url is not None

    def __enter__(self) -> EmbeddedMariaDB:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- start ---------------------------------------------------------------------

    def start(self) -> str:
        """Initialises and starts the server, and creates the database `test`.

        Returns:
            The server's URL (also `self.url`).

        Raises:
            NoServerBinaryError: no server binary (nothing was created).
            RuntimeError: the server did not start; nothing is left running and the
                temporary directory is gone.
        """
        if self._url is not None:
            return self._url
        began = time.monotonic()
        self.server = self._requested_server or find_server()
        self._owner_pid = os.getpid()
        atexit.register(self._stop_at_exit)
        try:
            self.directory = Path(tempfile.mkdtemp(prefix="sql2tfrecord-mariadb-"))
            mariadb = self._initialise()
            self._start_server()
            self._create_database(grant_tcp_root=not mariadb)
        except BaseException as err:
            log = self._log_tail()
            self.stop()
            if isinstance(err, Exception):
                detail = " | ".join(str(err).strip().splitlines()) or repr(err)
                message = f"embedded MariaDB did not start: {detail}"
                if log:
                    message += f"\n--- server log (tail) ---\n{log}"
                raise RuntimeError(message) from err
            raise
        self._url = f"mysql://{USER}@{_HOST}:{self.port}/{DATABASE}"
        _LOGGER.info(
            "Embedded MariaDB on %s:%d (%s, in %s) in %.2f s",
            _HOST,
            self.port,
            self.server,
            self.directory,
            time.monotonic() - began,
        )
        return self._url

    def _user_flags(self) -> list[str]:
        # mariadbd refuses to run as root unless told so; files stay ours.
        return ["--user=root"] if _is_root() else []

    def _initialise(self) -> bool:
        """Creates the data directory; returns whether the server is MariaDB."""
        data = self.directory / "data"
        version = self._run([str(self.server), "--version"], timeout=30)
        if version.returncode != 0:
            raise RuntimeError(f"{self.server} --version exited {version.returncode}")
        if "mariadb" in version.stdout.lower():
            install_db = _find_install_db(self.server)
            if install_db is None:
                raise NoServerBinaryError(
                    f"{self.server} found, but no mariadb-install-db/mysql_install_db"
                )
            command = [
                str(install_db),
                "--no-defaults",
                f"--basedir={self.server.parent.parent}",
                f"--datadir={data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                *self._user_flags(),
                "--innodb-log-file-size=16M",
            ]
            mariadb = True
        else:  # Oracle MySQL 5.7/8: the server initialises itself
            command = [
                str(self.server),
                "--no-defaults",
                "--initialize-insecure",
                f"--datadir={data}",
                *self._user_flags(),
                f"--log-error={self.directory / _LOG_NAME}",
            ]
            mariadb = False
        proc = self._run(command, timeout=300)
        if proc.returncode != 0:
            output = _tail(proc.stderr or proc.stdout, 5).replace("\n", " | ")
            raise RuntimeError(
                f"{Path(command[0]).name} exited {proc.returncode}: {output}"
            )
        return mariadb

    def _server_command(self) -> list[str]:
        d = self.directory
        return [
            str(self.server),
            "--no-defaults",
            *self._user_flags(),
            f"--datadir={d / 'data'}",
            f"--tmpdir={d}",
            f"--bind-address={_HOST}",
            f"--port={self.port}",
            f"--socket={self.socket_path}",
            f"--pid-file={d / 'mysqld.pid'}",
            f"--log-error={d / _LOG_NAME}",
            *_SERVER_SETTINGS,
        ]

    def _start_server(self) -> None:
        log = self.directory / _LOG_NAME
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self.port = _free_port()
            offset = log.stat().st_size if log.exists() else 0
            # Its own session: a Ctrl-C in run_local.sh's terminal reaches the
            # script, whose trap stops the server cleanly.
            self._process = subprocess.Popen(
                self._server_command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.directory,
                start_new_session=True,
                env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            )
            self.pid = self._process.pid
            try:
                self._wait_ready()
                return
            except RuntimeError:
                self._process.kill()
                self._process.wait()
                new_log = ""
                if log.exists():
                    with open(log, encoding="utf-8", errors="replace") as f:
                        f.seek(offset)
                        new_log = f.read()
                if "already in use" not in new_log or attempt == _PORT_ATTEMPTS:
                    raise
                _LOGGER.info("Port %d was taken meanwhile; retrying", self.port)

    def _wait_ready(self) -> None:
        """Polls the socket until the server answers, within `_START_TIMEOUT_S`."""
        import pymysql

        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            code = self._process.poll()
            if code is not None:
                raise RuntimeError(f"{self.server.name} exited with {code}")
            if self.socket_path.exists():
                try:
                    pymysql.connect(
                        unix_socket=str(self.socket_path), user=USER, connect_timeout=5
                    ).close()
                    return
                except pymysql.err.OperationalError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.server.name} did not accept connections within "
                    f"{_START_TIMEOUT_S:.0f} s"
                )
            time.sleep(_POLL_S)

    def _create_database(self, grant_tcp_root: bool) -> None:
        import pymysql

        conn = pymysql.connect(
            unix_socket=str(self.socket_path), user=USER, autocommit=True
        )
        try:
            with conn.cursor() as cur:
                if grant_tcp_root:  # MySQL's initialise makes root@localhost only
                    cur.execute(f"CREATE USER IF NOT EXISTS '{USER}'@'{_HOST}'")
                    cur.execute(
                        f"GRANT ALL ON *.* TO '{USER}'@'{_HOST}' WITH GRANT OPTION"
                    )
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`")
        finally:
            conn.close()

    # -- stop ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL) and deletes its directory."""
        atexit.unregister(self._stop_at_exit)
        was_running = self._url is not None
        self._url = None
        if self.pid is not None and self.directory is not None:
            self._terminate(self.pid, self.directory)
        self.pid = None
        self._process = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        if was_running:
            _LOGGER.info("Embedded MariaDB on %s:%s stopped", _HOST, self.port)

    def _terminate(self, pid: int, directory: Path) -> None:
        if not _alive(pid, directory):
            return
        for sig, timeout in ((signal.SIGTERM, _STOP_TIMEOUT_S), (signal.SIGKILL, 10)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    return  # our child, now reaped
                if self._process is None and not _alive(pid, directory):
                    return
                time.sleep(_POLL_S)
            _LOGGER.warning("%s (pid %d) ignored %s", self.server, pid, sig.name)

    def _stop_at_exit(self) -> None:
        if os.getpid() == self._owner_pid:  # not in a forked child
            self.stop()

    # -- another process -----------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What `from_state()` needs to stop this server from another process.

        Returns:
            JSON-serialisable: url, directory, server binary, pid.
        """
        return {
            "url": self.url,
            "directory": str(self.directory),
            "server": str(self.server),
            "pid": self.pid,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EmbeddedMariaDB:
        """A handle on a server started by another process (see `state()`).

        Args:
            state: the dict from `state()`.

        Returns:
            A running-server handle whose `stop()` stops it and deletes its data.
        """
        server = cls(server=state["server"])
        server._url = state["url"]
        server.directory = Path(state["directory"])
        server.server = Path(state["server"])
        server.pid = int(state["pid"])
        server.port = int(server._url.rsplit(":", 1)[1].split("/", 1)[0])
        return server

    def detach(self) -> dict[str, Any]:
        """Leaves the server running after this process exits.

        Returns:
            `state()`, for a later `from_state(...).stop()`.
        """
        atexit.unregister(self._stop_at_exit)
        return self.state()

    # -- helpers -------------------------------------------------------------------

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            cwd=self.directory or "/",
        )

    def _log_tail(self) -> str:
        if self.directory is None:
            return ""
        try:
            text = (self.directory / _LOG_NAME).read_text(errors="replace")
        except OSError:
            return ""
        return _tail(text)
