"""MySQL/MariaDB connection URLs and sessions: parsed once, shown without the secret.

`MySqlUrl` is `mysql://user[:password]@host[:port]/database[?param=value]` (or
`mariadb://`), parsed with `urllib.parse` and percent-decoded. The password comes
from the URL, else `MYSQL_PWD`, else an option file (`?read_default_file=PATH`,
else `~/.my.cnf` when it exists; its `[client]` group, read by the client library).
It never appears in a repr, a log line, an error message or an output: `masked`
shows `***` in its place.

`connect` opens one session the way every read needs it: utf8mb4 (text of any
character set arrives as UTF-8), `time_zone = '+00:00'` (TIMESTAMP values as UTC),
a strict `sql_mode`, the statement timeout (`max_execution_time` in ms on MySQL,
`max_statement_time` in s on MariaDB), the lock wait timeouts, a long
`net_write_timeout` (a streaming reader may pause between rows), multi-statements
off in the client, and `autocommit = 0`. Driver errors become `DatabaseError`
one-liners with the password scrubbed.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse

from pipeline.sources import DatabaseError

__all__ = [
    "MySqlUrl",
    "MySqlUrlError",
    "DatabaseError",
    "check_url",
    "parse_url",
    "connect",
    "driver_error",
    "is_mariadb",
]

SCHEMES = ("mysql", "mariadb")
DEFAULT_PORT = 3306
_MASK = "***"
# URL query parameters understood (anything else is refused, never ignored).
_PARAMS = ("read_default_file", "unix_socket", "ssl_ca", "ssl_disabled")
# How long the server waits for the client to take rows before it gives up on
# the connection: a reader's consumer (a Beam bundle) may pause for a while.
NET_WRITE_TIMEOUT_S = 3600
STRICT_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"


class MySqlUrlError(ValueError):
    """A `--db_url` that is not a usable mysql:// URL; shows none of its text."""


@dataclasses.dataclass(frozen=True)
class MySqlUrl:
    """A parsed MySQL/MariaDB URL plus the session settings (plain, picklable).

    Attributes:
        scheme: `mysql` or `mariadb` (both mean the same server protocol).
        user, host, port, database: from the URL (database may be "").
        password: from the URL or `MYSQL_PWD` (None: the option file's, if any).
        params: the URL's query parameters (see `_PARAMS`).
        statement_timeout_ms, lock_timeout_ms: None or 0 for none.
    """

    scheme: str
    user: str
    host: str
    port: int
    database: str
    password: str | None = dataclasses.field(default=None, repr=False)
    params: tuple[tuple[str, str], ...] = ()
    statement_timeout_ms: int | None = None
    lock_timeout_ms: int | None = None

    engine = "mysql"

    @property
    def value(self) -> str:
        """The URL with its password (for the client only; never show it)."""
        return self._url(self.password)

    @property
    def masked(self) -> str:
        """The URL with the password replaced by `***` (or none shown)."""
        return self._url(_MASK if self.password else None)

    def _url(self, password: str | None) -> str:
        user = urllib.parse.quote(self.user, safe="")
        if password is not None:
            secret = (
                password if password == _MASK else urllib.parse.quote(password, safe="")
            )
            user += ":" + secret
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = urllib.parse.urlencode(self.params)
        database = urllib.parse.quote(self.database, safe="")
        return f"{self.scheme}://{user}@{host}:{self.port}/{database}" + (
            f"?{query}" if query else ""
        )

    def __str__(self) -> str:
        return self.masked

    def param(self, name: str) -> str | None:
        """The URL's query parameter `name`, or None."""
        return dict(self.params).get(name)


def parse_url(
    value: str,
    *,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
    flag: str = "`--db_url`",
    environ=None,
) -> MySqlUrl:
    """Parses `value`; raises MySqlUrlError naming `flag` (never quoting the URL)."""
    environ = os.environ if environ is None else environ
    try:
        parts = urllib.parse.urlsplit(value.strip())
        port = parts.port
    except ValueError:
        raise MySqlUrlError(
            f"{flag}: not a valid mysql:// URL (its text is not shown, as it may "
            "hold a password; percent-encode @ / : % in the password)"
        ) from None
    if parts.scheme.lower() not in SCHEMES:
        raise MySqlUrlError(f"{flag}: a MySQL URL starts with mysql:// or mariadb://")
    if not parts.hostname:
        raise MySqlUrlError(f"{flag}: the mysql:// URL names no host")
    path = urllib.parse.unquote(parts.path.lstrip("/"))
    if "/" in path:
        raise MySqlUrlError(
            f"{flag}: the mysql:// URL's path is one database name (percent-encode "
            "a / in the password as %2F)"
        )
    params = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    unknown = sorted({k for k, _ in params} - set(_PARAMS))
    if unknown:
        raise MySqlUrlError(
            f"{flag}: unknown mysql:// URL parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(_PARAMS)}"
        )
    password = parts.password
    if password is not None:
        password = urllib.parse.unquote(password)
    elif environ.get("MYSQL_PWD"):
        password = environ["MYSQL_PWD"]
    return MySqlUrl(
        scheme=parts.scheme.lower(),
        user=urllib.parse.unquote(parts.username or ""),
        host=parts.hostname,
        port=port or DEFAULT_PORT,
        database=path,
        password=password,
        params=tuple(params),
        statement_timeout_ms=statement_timeout_ms,
        lock_timeout_ms=lock_timeout_ms,
    )


def check_url(value: str, source: str = "`--db_url`") -> None:
    """Raises MySqlUrlError when `value` is not a usable URL (the options' check)."""
    parse_url(value, flag=source)


def _option_file(url: MySqlUrl) -> str | None:
    path = url.param("read_default_file")
    if path:
        return os.path.expanduser(path)
    if url.password is None:
        default = os.path.expanduser("~/.my.cnf")
        return default if os.path.isfile(default) else None
    return None


def driver_error(err: BaseException, what: str, url: MySqlUrl | None = None) -> str:
    """One line for a driver error: `what: <server message>`, password scrubbed."""
    text = getattr(err, "msg", None) or str(err).strip() or type(err).__name__
    text = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    if url is not None and url.password:
        text = text.replace(url.password, _MASK)
    return f"{what}: {text}"


def is_mariadb(conn) -> bool:
    """Whether the server is MariaDB (its version string says so)."""
    return "mariadb" in server_version(conn).lower()


def server_version(conn) -> str:
    """The server's `VERSION()`."""
    cur = conn.cursor()
    try:
        cur.execute("SELECT VERSION()")
        value = cur.fetchone()[0]
    finally:
        cur.close()
    return value.decode() if isinstance(value, bytes) else str(value)


def connect(url: MySqlUrl, *, what: str = "connecting"):
    """An open session with the settings of the module docstring.

    Raises DatabaseError (one line, no secret) when the server refuses.
    """
    import mysql.connector
    from mysql.connector.constants import ClientFlag

    kwargs = {
        "host": url.host,
        "port": url.port,
        "user": url.user,
        "database": url.database or None,
        "charset": "utf8mb4",
        "use_unicode": False,
        "autocommit": False,
        "connection_timeout": 30,
        "client_flags": [-ClientFlag.MULTI_STATEMENTS, -ClientFlag.LOCAL_FILES],
        "allow_local_infile": False,
    }
    if url.password is not None:
        kwargs["password"] = url.password
    option_file = _option_file(url)
    if option_file:
        kwargs["option_files"] = option_file
        kwargs["option_groups"] = ["client"]
    if url.param("unix_socket"):
        kwargs["unix_socket"] = url.param("unix_socket")
    if url.param("ssl_ca"):
        kwargs["ssl_ca"] = url.param("ssl_ca")
    if url.param("ssl_disabled"):
        kwargs["ssl_disabled"] = url.param("ssl_disabled").lower() in ("1", "true")
    try:
        conn = mysql.connector.connect(**kwargs)
    except (mysql.connector.Error, ValueError, OSError) as err:  # + option files
        raise DatabaseError(driver_error(err, f"{what} to {url.masked}", url)) from None
    try:
        _configure(conn, url)
    except mysql.connector.Error as err:
        conn.close()
        raise DatabaseError(
            driver_error(err, f"setting up {url.masked}", url)
        ) from None
    return conn


def _configure(conn, url: MySqlUrl) -> None:
    mariadb = is_mariadb(conn)
    statement_ms = url.statement_timeout_ms or 0
    lock_s = (
        max(1, -(-(url.lock_timeout_ms or 0) // 1000))
        if url.lock_timeout_ms
        else 31536000
    )
    if mariadb:
        timeout = f"max_statement_time = {statement_ms / 1000:.3f}"
    else:
        timeout = f"max_execution_time = {int(statement_ms)}"
    cur = conn.cursor()
    try:
        cur.execute(
            "SET SESSION time_zone = '+00:00', "
            f"sql_mode = '{STRICT_SQL_MODE}', {timeout}, "
            f"innodb_lock_wait_timeout = {lock_s}, lock_wait_timeout = {lock_s}, "
            f"net_write_timeout = {NET_WRITE_TIMEOUT_S}, "
            "character_set_results = 'utf8mb4'"
        )
    finally:
        cur.close()
    conn.mariadb = mariadb
