"""Opening PostgreSQL connections safely, and showing a DSN without its secret.

Every session is read-only (`default_transaction_read_only`), has a
`statement_timeout`, a `lock_timeout`, a bounded connect timeout and
`application_name=sql2tfrecord`.
A password may come from the URL, `PGPASSWORD` or `~/.pgpass` (libpq reads the last
two itself); it never appears in a repr, a log line, an error message or an output.

A connection string is read with libpq's own parser (`psycopg2.extensions.parse_dsn`),
never with regular expressions, and shown rebuilt from the parsed parameters with
the secret ones (`password`, `sslpassword`, `options`) replaced by `***`. Of a string
libpq cannot parse nothing is shown (libpq's own message quotes fragments of it), and
a URL whose password holds an unencoded `@` or `/` is refused: libpq would read part
of the password as the host, port or database name and show it in its errors.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse

import psycopg2
import psycopg2.extensions

from pipeline.sources import DatabaseError

__all__ = [
    "Dsn",
    "DatabaseError",
    "DsnSyntaxError",
    "check_dsn",
    "connect",
    "mask_dsn",
]

APPLICATION_NAME = "sql2tfrecord"
DEFAULT_LOCK_TIMEOUT_MS = 30_000  # waiting for a lock another session holds

SECRET_KEYS = ("password", "sslpassword", "options")
_MASK = "***"
_URL_SCHEMES = ("postgresql://", "postgres://")
_NOT_SHOWN = "its text is not shown, as it may hold a password"
_FIX_HINT = (
    "in a URL, percent-encode special characters of the user and password "
    "(@ as %40, / as %2F, : as %3A, space as %20, % as %25); in key=value form, "
    "quote a value holding spaces or quotes (password='a b\\'c')"
)
# libpq's parse errors, by their fixed leading words (the rest quotes the input),
# and what we say instead.
_LIBPQ_PROBLEMS = {
    "invalid connection option": "an unknown key (an unquoted space in a value?)",
    'missing "=" after': 'a word without "=" (an unquoted space in a value?)',
    "unterminated quoted string": "an unterminated quoted value",
    "invalid percent-encoded token": "an invalid %-escape",
    "forbidden value %00": "an encoded NUL (%00)",
    "invalid URI query parameter": "an unknown URL query parameter",
    "key/value separator": "a URL query parameter without one '=' (an unencoded &?)",
    "unexpected character": "an unexpected character in the host",
    "end of string reached when looking for matching": "an unclosed '[' in the host",
}


class DsnSyntaxError(ValueError):
    """A connection string libpq cannot parse (or would misread); shows none of it."""


def _is_url(value: str) -> bool:
    return value.lstrip().lower().startswith(_URL_SCHEMES)


def _misread_url(value: str, params: dict[str, str]) -> bool:
    """Whether libpq read part of a URL's user or password as host, port or dbname.

    libpq ends the userinfo at the first `@`, unless a `/` comes first: an
    unencoded `@` in the password leaves the rest of it in the host name, an
    unencoded `/` makes the user the host, the password the port and the rest the
    database name. So after the userinfo no `@` may come before the query string,
    and a port must be a number.
    """
    rest = value.strip().split("://", 1)[1]
    ends = [i for i in (rest.find("@"), rest.find("/")) if i >= 0]
    if ends and rest[min(ends)] == "@":
        rest = rest[min(ends) + 1 :]
    if "@" in rest.split("?", 1)[0]:
        return True
    return not all(p.isdigit() for p in params.get("port", "0").split(",") if p)


def check_dsn(value: str, source: str = "`--db_url`") -> dict[str, str]:
    """Parses a connection string as libpq does; returns its parameters.

    Args:
        value: a libpq URL or key=value string.
        source: how the user gave it (a flag or environment variable), for errors.

    Raises:
        DsnSyntaxError: naming `source` and how to fix it, quoting nothing of `value`.
    """
    try:
        params = psycopg2.extensions.parse_dsn(value)
    except psycopg2.Error as err:
        text = str(err)
        problem = next(
            (said for words, said in _LIBPQ_PROBLEMS.items() if words in text),
            "it does not parse",
        )
        raise DsnSyntaxError(
            f"{source} is not a valid libpq connection string: {problem}; "
            f"{_NOT_SHOWN}; {_FIX_HINT}"
        ) from None
    if _is_url(value) and _misread_url(value, params):
        raise DsnSyntaxError(
            f"{source} is a URL with an unencoded '@' or '/' in the user, password "
            f"or database name, which libpq would misread; {_NOT_SHOWN}; {_FIX_HINT}"
        )
    return params


def mask_dsn(dsn: str) -> str:
    """The DSN rebuilt from libpq's parse with secrets as `***`; of a bad one, nothing.

    The result depends on which parameters are set but never on a secret's value.
    """
    try:
        params = check_dsn(dsn)
    except DsnSyntaxError:
        return "(an unparsable connection string, not shown)"
    shown = {k: (_MASK if k in SECRET_KEYS else v) for k, v in params.items()}
    if not _is_url(dsn):
        return " ".join(f"{k}={_quote(v)}" for k, v in shown.items())
    quote = urllib.parse.quote
    user = shown.pop("user", None)
    password = shown.pop("password", None)
    host, port = shown.pop("host", ""), shown.pop("port", None)
    dbname = shown.pop("dbname", None)
    userinfo = ""
    if user is not None or password is not None:
        userinfo = quote(user or "", safe="")
        userinfo += f":{password}" if password is not None else ""
        userinfo += "@"
    netloc = host if "/" not in host and "," not in host else ""
    if netloc != host:
        shown = {"host": host, **shown}
    if port and "," in port:
        shown, port = {"port": port, **shown}, None
    netloc = quote(netloc, safe=":")
    url = f"postgresql://{userinfo}{f'[{netloc}]' if ':' in netloc else netloc}"
    url += f":{port}" if port else ""
    url += f"/{quote(dbname, safe='')}" if dbname is not None else ""
    if shown:
        url += "?" + "&".join(
            f"{k}={v if v == _MASK else quote(v, safe='')}" for k, v in shown.items()
        )
    return url


def _quote(value: str) -> str:
    if value and not any(c in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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


def _secrets(params: dict[str, str]) -> list[str]:
    values = [params.get(k, "") for k in SECRET_KEYS]
    values += [os.environ.get("PGPASSWORD", ""), os.environ.get("PGOPTIONS", "")]
    found = set()
    for value in values:
        found.add(value)
        for word in value.split():  # the server echoes `-c name=value` values
            found.update((word, word.partition("=")[2]))
    return sorted((v for v in found if len(v) >= 3), key=len, reverse=True)


def scrub(message: str, dsn: Dsn) -> str:
    """The first line of `message` with every secret of `dsn` replaced by `***`."""
    lines = message.strip().splitlines()
    text = lines[0].strip() if lines else ""
    try:
        params = check_dsn(dsn.value)
    except DsnSyntaxError:
        return "(message withheld: the connection string does not parse)"
    for secret in _secrets(params):
        text = text.replace(secret, _MASK)
    return text


def connect(
    dsn: Dsn, *, read_only: bool = True, session_options: str = ""
) -> psycopg2.extensions.connection:
    """Opens a connection, or raises DatabaseError with a one-line, secret-free message.

    Args:
        dsn: where to connect.
        read_only: make every transaction of the session read-only.
        session_options: extra `-c name=value` server options.
    """
    try:
        params = check_dsn(dsn.value)
    except DsnSyntaxError as err:
        raise DatabaseError(str(err)) from None
    options = [params["options"]] if params.get("options") else []
    options += [session_options] if session_options else []
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
            f"cannot connect to {dsn.masked or '(default DSN)'}: {scrub(str(err), dsn)}"
        ) from None
