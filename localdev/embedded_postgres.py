"""A throwaway PostgreSQL server for run_local.sh and the tests, from pip alone.

Binaries: `$SQL2TFRECORD_PG_BIN`, else those bundled in the `pgserver` wheel
(PostgreSQL 16, no system packages), else `initdb`/`pg_ctl` from `pg_config --bindir`
or PATH. The server listens on
127.0.0.1 only, on a free port, with trust authentication, fsync off (it is
throwaway), in a fresh temporary directory that `stop()` deletes.

PostgreSQL refuses to run as root: as root, the server runs as the unprivileged
user `nobody` (override with `SQL2TFRECORD_PG_USER`); when that user cannot reach
the binaries (a venv under a private home), they are copied to a world-readable
temporary directory first.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["EmbeddedPostgres", "find_bin_dir"]

_LOGGER = logging.getLogger(__name__)

DATABASE = "sql2tfrecord"
SUPERUSER = "postgres"


def find_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl and postgres; RuntimeError if none.

    Order: `$SQL2TFRECORD_PG_BIN`, the pgserver wheel, `pg_config --bindir`, PATH.
    """
    override = os.environ.get("SQL2TFRECORD_PG_BIN")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("pgserver")  # located, not imported (no side effects)
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "pginstall" / "bin"
        if (bundled / "initdb").exists():
            return bundled
    try:
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        )
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    except (OSError, subprocess.CalledProcessError):
        pass
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    raise RuntimeError(
        "no PostgreSQL server binaries: install the local extra "
        "(pip install -e '.[local]', which brings pgserver) or PostgreSQL's initdb"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as(user: str | None) -> dict:
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _can_execute(user: str, path: Path) -> bool:
    try:
        probe = subprocess.run(
            [str(path / "pg_ctl"), "--version"], capture_output=True, **_run_as(user)
        )
    except PermissionError:
        return False
    return probe.returncode == 0


class EmbeddedPostgres:
    """Context manager: start()/stop() a private PostgreSQL on 127.0.0.1.

    Attributes:
        url: `postgresql://postgres@127.0.0.1:PORT/sql2tfrecord` once started.
        data_dir: the cluster directory (deleted by stop()).
        bin_dir: the binaries in use.
    """

    def __init__(self, base_dir: str | None = None):
        self._base_dir = base_dir
        self._work_dir: Path | None = None
        self._copied_bin: Path | None = None
        self._user: str | None = None
        self.bin_dir: Path | None = None
        self.data_dir: Path | None = None
        self.port: int | None = None
        self.url: str | None = None
        self._running = False

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _pg(self, name: str, *args: str, timeout: float = 120) -> None:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        proc = subprocess.run(
            [str(self.bin_dir / name), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=str(self._work_dir),
            **_run_as(self._user),
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{name} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
            )

    def _prepare_user_and_binaries(self) -> None:
        bin_dir = find_bin_dir()
        if os.geteuid() != 0:
            self.bin_dir = bin_dir
            return
        self._user = os.environ.get("SQL2TFRECORD_PG_USER", "nobody")
        if _can_execute(self._user, bin_dir):
            self.bin_dir = bin_dir
            return
        # Copy the installation (bin, lib, share, and the wheel's pgserver.libs that
        # the binaries find through RPATH $ORIGIN/../../../pgserver.libs) where the
        # user can read it, keeping the relative layout.
        install = bin_dir.parent
        self._copied_bin = Path(tempfile.mkdtemp(prefix="sql2tfrecord-pgbin-"))
        os.chmod(self._copied_bin, 0o755)
        target = self._copied_bin / "pgserver" / "pginstall"
        for part in ("bin", "lib", "share"):
            if (install / part).exists():
                shutil.copytree(install / part, target / part, symlinks=True)
        wheel_libs = install.parent.parent / "pgserver.libs"
        if wheel_libs.exists():
            shutil.copytree(wheel_libs, self._copied_bin / "pgserver.libs", symlinks=True)
        for root, dirs, _ in os.walk(self._copied_bin):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        self.bin_dir = target / "bin"

    def start(self) -> str:
        """Initialises and starts the server; returns its URL."""
        if self._running:
            return self.url
        started = time.monotonic()
        try:
            self._prepare_user_and_binaries()
            self._work_dir = Path(
                tempfile.mkdtemp(prefix="sql2tfrecord-pg-", dir=self._base_dir)
            )
            self.data_dir = self._work_dir / "data"
            if self._user is not None:
                entry = pwd.getpwnam(self._user)
                os.chmod(self._work_dir, 0o755)
                os.chown(self._work_dir, entry.pw_uid, entry.pw_gid)
            self._pg(
                "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", SUPERUSER,
                "-E", "UTF8", "--no-sync", "--no-instructions",
            )
            for attempt in range(5):
                self.port = _free_port()
                try:
                    self._pg(
                        "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir),
                        "-l", str(self._work_dir / "server.log"), "-o",
                        f"-h 127.0.0.1 -p {self.port} -k {self._work_dir} "
                        "-c fsync=off -c synchronous_commit=off "
                        "-c full_page_writes=off -c max_connections=100",
                    )
                    break
                except RuntimeError:
                    if attempt == 4:
                        raise
            self._running = True
            atexit.register(self.stop)
            self._create_database()
        except Exception as err:
            log = self._log_tail()
            self.stop()
            raise RuntimeError(f"embedded PostgreSQL did not start: {err}{log}") from err
        self.url = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"
        _LOGGER.info(
            "Embedded PostgreSQL on 127.0.0.1:%s in %.1f s", self.port,
            time.monotonic() - started,
        )
        return self.url

    def _create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DATABASE}")
        conn.close()

    def _log_tail(self) -> str:
        if self._work_dir is None:
            return ""
        log = self._work_dir / "server.log"
        if not log.exists():
            return ""
        return "\n--- server log ---\n" + log.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        """Stops the server and deletes its files (idempotent)."""
        if self._running:
            try:
                self._pg("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.data_dir))
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                _LOGGER.warning("pg_ctl stop failed: %s", err)
            self._running = False
        for path in (self._work_dir, self._copied_bin):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
        self._work_dir = self._copied_bin = None

    def state(self) -> dict:
        """Plain state for `python -m localdev stop` in another process."""
        return {
            "url": self.url,
            "work_dir": str(self._work_dir),
            "data_dir": str(self.data_dir),
            "bin_dir": str(self.bin_dir),
            "copied_bin": str(self._copied_bin) if self._copied_bin else None,
            "user": self._user,
        }

    @classmethod
    def from_state(cls, state: dict) -> EmbeddedPostgres:
        """Rebuilds a handle on a running server from `state()`."""
        server = cls()
        server.url = state["url"]
        server._work_dir = Path(state["work_dir"])
        server.data_dir = Path(state["data_dir"])
        server.bin_dir = Path(state["bin_dir"])
        server._copied_bin = Path(state["copied_bin"]) if state["copied_bin"] else None
        server._user = state["user"]
        server._running = True
        return server

    def detach(self) -> None:
        """Leaves the server running when this process exits (see `from_state`)."""
        atexit.unregister(self.stop)
