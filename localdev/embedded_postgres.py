"""A throwaway PostgreSQL server for run_local.sh and the tests, from pip alone.

Contract:
    * Binaries: those bundled in the `pgserver` wheel (PostgreSQL 16), else
      `initdb`/`pg_ctl`/`postgres` from `pg_config --bindir`, else from PATH.
    * The server listens on 127.0.0.1 only, on a free port chosen by the OS, with
      trust authentication, `fsync`/`synchronous_commit`/`full_page_writes` off
      (the data is throwaway), and a database `sql2tfrecord` owned by `postgres`.
    * Everything lives in one fresh data directory that `stop()` deletes; `stop()`
      is idempotent and also runs at interpreter exit (of the starting process,
      not of forked children). A failed `start()` leaves no server and no
      directories behind. The server log is `server.log` in the data directory.
    * PostgreSQL refuses to run as root: as root, the server runs as the
      unprivileged user `nobody` (override with `$SQL2TFRECORD_PG_USER`). When that
      user cannot execute the pgserver binaries (a virtualenv under a private home),
      the installation is copied to a world-readable temporary directory that
      `stop()` deletes.
    * Importing this module has no side effects; `pgserver` and `psycopg2` are
      only needed once a server is started.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["DATABASE", "SUPERUSER", "EmbeddedPostgres", "find_bin_dir"]

_LOGGER = logging.getLogger(__name__)

DATABASE = "sql2tfrecord"
SUPERUSER = "postgres"

_HOST = "127.0.0.1"
_ROOT_RUN_USER = "nobody"
_SERVER_SETTINGS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=100"
)
_INITDB_FLAGS = (
    "-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync",
    "--no-instructions",
)  # fmt: skip
_LOG_NAME = "server.log"
_PORT_ATTEMPTS = 5
_START_TIMEOUT_S = 60
_REQUIRED = ("initdb", "pg_ctl", "postgres")
_NO_BINARIES = (
    "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found: install the "
    "test extra: pip install pgserver, or PostgreSQL server binaries"
)


def _has_server_binaries(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in _REQUIRED)


def _pgserver_bin_dir() -> Path | None:
    # pgserver._commands.POSTGRES_BIN_PATH is <package>/pginstall/bin. We locate the
    # package without importing it: its __init__ imports psutil, fasteners and
    # platformdirs and warns when $XDG_RUNTIME_DIR is unset.
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if _has_server_binaries(candidate):
            return candidate
    return None


def find_bin_dir() -> Path:
    """Finds the directory holding initdb, pg_ctl and postgres.

    Order: the `pgserver` wheel, `pg_config --bindir`, `initdb` on PATH.

    Returns:
        The directory.

    Raises:
        RuntimeError: none of them has the server binaries.
    """
    bundled = _pgserver_bin_dir()
    if bundled is not None:
        return bundled
    try:
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=30
        )
        candidate = Path(out.stdout.strip())
        if out.returncode == 0 and _has_server_binaries(candidate):
            return candidate
    except (OSError, subprocess.SubprocessError):
        pass
    initdb = shutil.which("initdb")
    if initdb:
        candidate = Path(os.path.realpath(initdb)).parent
        if _has_server_binaries(candidate):
            return candidate
    raise RuntimeError(_NO_BINARIES)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        return probe.getsockname()[1]


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _ids(user: str) -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise RuntimeError(
            f"running as root, but the user {user!r} to run PostgreSQL as does not "
            "exist; set SQL2TFRECORD_PG_USER to an unprivileged user"
        ) from None
    if entry.pw_uid == 0:
        raise RuntimeError(f"PostgreSQL cannot run as {user!r}: it is uid 0")
    return entry.pw_uid, entry.pw_gid


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class EmbeddedPostgres:
    """A private PostgreSQL on 127.0.0.1; `start()`/`stop()` or a `with` block.

    Example:
        with EmbeddedPostgres() as server:
            psycopg2.connect(server.url)

    Attributes:
        data_dir: the cluster directory (deleted by `stop()`), set by `start()`
            unless given.
        bin_dir: the directory of the binaries in use, set by `start()` unless
            given.
        port: the TCP port, once started.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        bin_dir: str | os.PathLike | None = None,
        settings: dict[str, str] | None = None,
    ):
        """Prepares, without starting, a server.

        Args:
            data_dir: where to create the cluster; must not exist or be empty, and is
                deleted by `stop()`. Default: a fresh temporary directory.
            bin_dir: the PostgreSQL binaries. Default: `find_bin_dir()`.
            settings: extra server settings (`-c name=value`), e.g. for tests of
                `max_connections`.
        """
        self._settings = dict(settings or {})
        self._requested_data_dir = Path(data_dir).absolute() if data_dir else None
        self._requested_bin_dir = Path(bin_dir).absolute() if bin_dir else None
        self.data_dir: Path | None = None
        self.bin_dir: Path | None = None
        self.port: int | None = None
        self._user: str | None = None
        self._bin_copy: Path | None = None
        self._url: str | None = None
        self._owner_pid = os.getpid()

    @property
    def url(self) -> str:
        """The libpq URL `postgresql://postgres@127.0.0.1:PORT/sql2tfrecord`."""
        if self._url is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        return self._url

    @property
    def running(self) -> bool:
        """Whether `start()` succeeded and `stop()` has not run since."""
        return self._url is not None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- start ---------------------------------------------------------------------

    def start(self) -> str:
        """Initialises and starts the server, and creates the database.

        Returns:
            The server's URL (also `self.url`).

        Raises:
            RuntimeError: no binaries, or the server did not start; nothing is left
                running and the temporary directories are gone.
            ValueError: `data_dir` exists and is not empty.
        """
        if self._url is not None:
            return self._url
        began = time.monotonic()
        self._check_data_dir()
        self._owner_pid = os.getpid()
        atexit.register(self._stop_at_exit)
        try:
            self._prepare_binaries()
            self._make_data_dir()
            self._pg("initdb", "-D", str(self.data_dir), *_INITDB_FLAGS)
            self._start_server()
            self._create_database()
        except BaseException as err:
            log = self._log_tail()
            self.stop()
            if isinstance(err, Exception):
                detail = " | ".join(str(err).strip().splitlines()) or repr(err)
                message = f"embedded PostgreSQL did not start: {detail}"
                if log:
                    message += f"\n--- server log (tail) ---\n{log}"
                raise RuntimeError(message) from err
            raise
        self._url = f"postgresql://{SUPERUSER}@{_HOST}:{self.port}/{DATABASE}"
        _LOGGER.info(
            "Embedded PostgreSQL on %s:%d (data %s, binaries %s%s) in %.2f s",
            _HOST,
            self.port,
            self.data_dir,
            self.bin_dir,
            f", as {self._user}" if self._user else "",
            time.monotonic() - began,
        )
        return self._url

    def _check_data_dir(self) -> None:
        path = self._requested_data_dir
        if path is not None and path.exists() and any(path.iterdir()):
            raise ValueError(f"data_dir {path} exists and is not empty")

    def _prepare_binaries(self) -> None:
        bin_dir = self._requested_bin_dir or find_bin_dir()
        if not _has_server_binaries(bin_dir):
            raise RuntimeError(f"{bin_dir} lacks initdb, pg_ctl or postgres")
        self.bin_dir = bin_dir
        if not _is_root():
            return
        self._user = os.environ.get("SQL2TFRECORD_PG_USER") or _ROOT_RUN_USER
        _ids(self._user)
        if self._user_can_run(bin_dir):
            return
        self.bin_dir = self._copy_installation(bin_dir)
        if not self._user_can_run(self.bin_dir):
            raise RuntimeError(
                f"user {self._user!r} cannot run the PostgreSQL binaries, even copied "
                f"to {self._bin_copy}"
            )

    def _user_can_run(self, bin_dir: Path) -> bool:
        # initdb loads libpq through its RPATH, postgres is the server itself.
        for name in ("initdb", "postgres"):
            try:
                probe = self._run([str(bin_dir / name), "--version"], timeout=30)
            except OSError:
                return False
            if probe.returncode != 0:
                return False
        return True

    def _copy_installation(self, bin_dir: Path) -> Path:
        """Copies a pgserver installation where the unprivileged user can read it."""
        install = bin_dir.parent
        # The wheel's initdb finds libpq through its RPATH
        # $ORIGIN/../../../pgserver.libs, so the copy keeps the layout:
        # <tmp>/pgserver/pginstall/{bin,lib,share} and <tmp>/pgserver.libs.
        wheel_libs = install.parent.parent / "pgserver.libs"
        if install.name != "pginstall":
            raise RuntimeError(
                f"user {self._user!r} cannot run the PostgreSQL binaries in {bin_dir}; "
                "make them readable or set SQL2TFRECORD_PG_USER"
            )
        began = time.monotonic()
        self._bin_copy = Path(tempfile.mkdtemp(prefix="sql2tfrecord-pgbin-"))
        target = self._bin_copy / "pgserver" / "pginstall"
        for part in ("bin", "lib", "share"):
            if (install / part).is_dir():
                shutil.copytree(install / part, target / part, symlinks=True)
        if wheel_libs.is_dir():
            shutil.copytree(wheel_libs, self._bin_copy / "pgserver.libs", symlinks=True)
        for root, _dirs, files in os.walk(self._bin_copy):
            os.chmod(root, 0o755)
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    mode = os.stat(path).st_mode
                    os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))
        _LOGGER.info(
            "Copied the PostgreSQL binaries to %s for user %s (%.2f s)",
            self._bin_copy,
            self._user,
            time.monotonic() - began,
        )
        return target / "bin"

    def _make_data_dir(self) -> None:
        if self._requested_data_dir is not None:
            self._requested_data_dir.mkdir(parents=True, exist_ok=True)
            self.data_dir = self._requested_data_dir
        else:
            self.data_dir = Path(tempfile.mkdtemp(prefix="sql2tfrecord-pg-"))
        if self._user is not None:
            uid, gid = _ids(self._user)
            os.chown(self.data_dir, uid, gid)
            probe = self._run(["/bin/sh", "-c", 'test -w "$0"', str(self.data_dir)], 30)
            if probe.returncode != 0:
                raise RuntimeError(
                    f"user {self._user!r} cannot reach {self.data_dir}: as root, the "
                    "data directory's parents must be searchable by that user"
                )

    def _start_server(self) -> None:
        log = self.data_dir / _LOG_NAME
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self.port = _free_port()
            offset = log.stat().st_size if log.exists() else 0
            options = self._options()
            start = ("start", "-w", "-t", str(_START_TIMEOUT_S), "-l", str(log))
            try:
                self._pg_ctl(*start, "-o", options, timeout=_START_TIMEOUT_S + 30)
                return
            except RuntimeError:
                new_log = ""
                if log.exists():
                    with open(log, encoding="utf-8", errors="replace") as f:
                        f.seek(offset)
                        new_log = f.read()
                if "already in use" not in new_log or attempt == _PORT_ATTEMPTS:
                    raise
                _LOGGER.info("Port %d was taken meanwhile; retrying", self.port)

    def _options(self) -> str:
        extra = " ".join(
            f"-c {shlex.quote(f'{k}={v}')}" for k, v in self._settings.items()
        )
        return (
            f"-h {_HOST} -p {self.port} -k {shlex.quote(str(self.data_dir))} "
            f"{_SERVER_SETTINGS} {extra}"
        ).strip()

    def restart(self) -> None:
        """Restarts the running server on the same port, keeping its data."""
        self._pg_ctl(
            "restart",
            "-m",
            "fast",
            "-w",
            "-t",
            str(_START_TIMEOUT_S),
            "-l",
            str(self.data_dir / _LOG_NAME),
            "-o",
            self._options(),
            timeout=_START_TIMEOUT_S + 30,
        )

    def _create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(
            host=_HOST,
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            connect_timeout=10,
            application_name="sql2tfrecord-localdev",
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            conn.close()

    # -- stop ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stops the server and deletes its data (and any binary copy); idempotent."""
        atexit.unregister(self._stop_at_exit)
        was_running = self._url is not None
        self._url = None
        if self.data_dir is not None and (self.data_dir / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                try:
                    self._pg_ctl("stop", "-m", mode, "-w", "-t", "60", timeout=90)
                    break
                except (RuntimeError, OSError, subprocess.SubprocessError) as err:
                    _LOGGER.warning("pg_ctl stop -m %s failed: %s", mode, err)
        for path in (self.data_dir, self._bin_copy):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
        if self._bin_copy is not None:
            self.bin_dir = None
        self._bin_copy = None
        if was_running:
            _LOGGER.info("Embedded PostgreSQL on %s:%s stopped", _HOST, self.port)

    def _stop_at_exit(self) -> None:
        if os.getpid() == self._owner_pid:  # not in a forked child
            self.stop()

    # -- another process -----------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What `from_state()` needs to stop this server from another process.

        Returns:
            JSON-serialisable: url, data_dir, bin_dir, bin_copy and the user that
            runs the server (None: the current user).
        """
        return {
            "url": self.url,
            "data_dir": str(self.data_dir),
            "bin_dir": str(self.bin_dir),
            "bin_copy": str(self._bin_copy) if self._bin_copy else None,
            "user": self._user,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EmbeddedPostgres:
        """A handle on a server started by another process (see `state()`).

        Args:
            state: the dict from `state()`.

        Returns:
            A running-server handle whose `stop()` stops it and deletes its data.
        """
        server = cls()
        server._url = state["url"]
        server.data_dir = Path(state["data_dir"])
        server.bin_dir = Path(state["bin_dir"])
        server._bin_copy = Path(state["bin_copy"]) if state.get("bin_copy") else None
        server._user = state.get("user")
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
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            uid, gid = _ids(self._user)
            kwargs = {"user": uid, "group": gid, "extra_groups": []}
        return subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd="/",
            **kwargs,
        )

    def _pg(self, name: str, *args: str, timeout: float = 120) -> str:
        proc = self._run([str(self.bin_dir / name), *args], timeout=timeout)
        if proc.returncode != 0:
            output = _tail(proc.stderr or proc.stdout, 5).replace("\n", " | ")
            raise RuntimeError(f"{name} exited with {proc.returncode}: {output}")
        _LOGGER.debug("%s %s: %s", name, " ".join(args), proc.stdout.strip())
        return proc.stdout

    def _pg_ctl(self, *args: str, timeout: float) -> str:
        return self._pg("pg_ctl", *args, "-D", str(self.data_dir), timeout=timeout)

    def _log_tail(self) -> str:
        if self.data_dir is None:
            return ""
        try:
            text = (self.data_dir / _LOG_NAME).read_text(errors="replace")
        except OSError:
            return ""
        return _tail(text)
