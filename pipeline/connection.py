"""Opening PostgreSQL connections safely, and showing a DSN without its secret.

Every session is read-only (`default_transaction_read_only`), has a
`statement_timeout`, a `lock_timeout`, a bounded connect timeout and
`application_name=sql2tfrecord`.
A password may come from the URL, `PGPASSWORD` or `~/.pgpass` (libpq reads the last
two itself); it never appears in a repr, a log line, an error message or an output.
"""

from __future__ import annotations

import dataclasses
import re

import psycopg2
import psycopg2.extensions

__all__ = ["Dsn", "DatabaseError", "connect", "mask_dsn"]

APPLICATION_NAME = "sql2tfrecord"
DEFAULT_LOCK_TIMEOUT_MS = 30_000  # waiting for a lock another session holds

_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z0-9+.-]+://[^:/@?#]*:)(?P<secret>[^@/?#]*)@", re.I
)
_KV_PASSWORD = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\S+)", re.I
)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<secret>[^&#]*)", re.I)


def mask_dsn(dsn: str) -> str:
    """Returns the DSN with any password replaced by `***` (URL or key=value form)."""
    masked = _URL_PASSWORD.sub(r"\g<head>***@", dsn)
    masked = _QUERY_PASSWORD.sub(r"\g<head>***", masked)
    return _KV_PASSWORD.sub(r"\g<head>***", masked)


class DatabaseError(RuntimeError):
    """A database problem reported to the user in one line, without secrets."""


@dataclasses.dataclass(frozen=True)
class Dsn:
    """A libpq connection string that never shows its password.

    Plain and picklable, so DoFns can carry it to remote workers.
    """

    value: str = dataclasses.field(repr=False)
    statement_timeout_ms: int = 0
    connect_timeout_s: int = 10
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS

    def __repr__(self) -> str:
        return f"Dsn({self.masked!r})"

    __str__ = __repr__

    @property
    def masked(self) -> str:
        """The DSN with its password masked."""
        return mask_dsn(self.value)


def _scrub(message: str, dsn: Dsn) -> str:
    message = mask_dsn(message.strip().splitlines()[0] if message.strip() else "")
    password = _password_of(dsn.value)
    if password:
        message = message.replace(password, "***")
    return message


def _password_of(value: str) -> str | None:
    for pattern in (_URL_PASSWORD, _QUERY_PASSWORD, _KV_PASSWORD):
        match = pattern.search(value)
        if match and match.group("secret"):
            return match.group("secret").strip("'")
    return None


def connect(
    dsn: Dsn, *, read_only: bool = True, session_options: str = ""
) -> psycopg2.extensions.connection:
    """Opens a connection, or raises DatabaseError with a one-line, secret-free message.

    Args:
        dsn: where to connect.
        read_only: make every transaction of the session read-only.
        session_options: extra `-c name=value` server options.
    """
    options = [session_options] if session_options else []
    if read_only:
        options.append("-c default_transaction_read_only=on")
    if dsn.statement_timeout_ms:
        options.append(f"-c statement_timeout={int(dsn.statement_timeout_ms)}")
    options.append(f"-c lock_timeout={int(dsn.lock_timeout_ms)}")
    try:
        return psycopg2.connect(
            dsn.value,
            application_name=APPLICATION_NAME,
            connect_timeout=dsn.connect_timeout_s,
            options=" ".join(options),
        )
    except psycopg2.Error as err:
        raise DatabaseError(
            f"cannot connect to {dsn.masked or '(default DSN)'}: "
            f"{_scrub(str(err), dsn)}"
        ) from None
