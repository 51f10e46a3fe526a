"""mysql:// URLs: parsing, the password never shown, the session's settings, flags."""

from __future__ import annotations

import pickle
import uuid

import pytest

from pipeline.options import UsageError, parse_args
from pipeline.sources import DatabaseError, engine
from pipeline.sources.mysql.connection import (
    MySqlUrlError,
    connect,
    driver_error,
    parse_url,
)

SECRET = "p@ss:w/rd%üñ"
ENCODED = "p%40ss%3Aw%2Frd%25%C3%BC%C3%B1"


def test_scheme_picks_the_engine():
    assert engine("mysql://u@h/db") == "mysql"
    assert engine("MariaDB://u@h/db") == "mysql"
    assert engine("postgresql://u@h/db") == "postgres"
    assert engine("host=h dbname=d") == "postgres"


def test_url_parts_and_the_password_never_shown():
    url = parse_url(f"mariadb://us%20er:{ENCODED}@db.example:3307/my%20db", environ={})
    assert (url.user, url.host, url.port, url.database) == (
        "us er", "db.example", 3307, "my db"
    )
    assert url.password == SECRET
    for shown in (repr(url), str(url), url.masked, repr(pickle.loads(pickle.dumps(url)))):
        assert SECRET not in shown and ENCODED not in shown and "p@ss" not in shown
    assert url.masked == "mariadb://us%20er:***@db.example:3307/my%20db"
    assert parse_url(url.value, environ={}).password == SECRET


def test_password_from_mysql_pwd_and_defaults():
    url = parse_url("mysql://u@h/d", environ={"MYSQL_PWD": "envsecret"})
    assert url.password == "envsecret" and "envsecret" not in repr(url) + url.masked
    assert parse_url("mysql://u@h", environ={}).port == 3306
    assert parse_url("mysql://u@h", environ={}).password is None


@pytest.mark.parametrize(
    "value, words",
    [
        ("mysql://u:pw@/db", "no host"),
        ("mysql://u:pw@h:notaport/db", "not a valid"),
        ("mysql://u:pw@h/db/extra", "one database name"),
        ("mysql://u:pw@h/db?charset=latin1", "unknown mysql:// URL parameter"),
    ],
)
def test_bad_urls_are_one_line_naming_the_flag_without_the_password(value, words):
    with pytest.raises(MySqlUrlError) as info:
        parse_url(value, environ={})
    message = str(info.value)
    assert words in message and message.startswith("`--db_url`")
    assert "pw" not in message.replace("password", "") and "\n" not in message


def test_driver_errors_scrub_the_password():
    url = parse_url(f"mysql://u:{ENCODED}@h/d", environ={})

    class Boom(Exception):
        msg = f"Access denied for 'u' using {SECRET}\nsecond line"

    assert driver_error(Boom(), "connecting", url) == (
        "connecting: Access denied for 'u' using ***"
    )


def _argv(url, *extra):
    return ["--db_url", url, "--table", "t", "--label", "y", "--output_dir", "/tmp/o",
            *extra]


def test_options_check_mysql_urls_and_refuse_postgresql_only_flags():
    with pytest.raises(UsageError) as info:
        parse_args(_argv(f"mysql://u:{ENCODED}@/d"))
    assert "no host" in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(UsageError) as info:
        parse_args(_argv("mysql://u@h/d", "--reader", "jdbc", "--no_snapshot"))
    assert "`--reader jdbc` is PostgreSQL only for now" in str(info.value)
    assert "`--no_snapshot` is PostgreSQL only for now" in str(info.value)
    with pytest.raises(UsageError, match="--span_column` is PostgreSQL only"):
        parse_args(_argv("mysql://u@h/d", "--span_column", "c"))
    with pytest.raises(UsageError, match="needs the in-process DirectRunner"):
        parse_args(
            _argv("mysql://u@h/d", "--consistency", "one_instant",
                  "--runner", "DataflowRunner")
        )
    with pytest.raises(UsageError, match="multi_processing"):
        parse_args(
            _argv("mysql://u@h/d", "--consistency", "one_instant",
                  "--direct_running_mode", "multi_processing")
        )
    with pytest.raises(UsageError, match="--consistency` is for MySQL"):
        parse_args(_argv("postgresql://u@h/d", "--consistency", "one_instant"))
    config, _ = parse_args(_argv("mysql://u@h/d", "--consistency", "one_instant"))
    assert config.consistency == "one_instant"
    with pytest.raises(UsageError, match="INTO"):
        parse_args(["--db_url", "mysql://u@h/d", "--query", "SELECT 1 INTO @x",
                    "--label", "y", "--output_dir", "/tmp/o"])


@pytest.mark.mysql
def test_session_settings(mysql_url):
    url = parse_url(mysql_url)
    url = type(url)(**{**url.__dict__, "statement_timeout_ms": 2500,
                       "lock_timeout_ms": 4200})
    conn = connect(url)
    cur = conn.cursor()
    cur.execute("SELECT @@session.time_zone, @@session.sql_mode, "
                "@@session.innodb_lock_wait_timeout, @@session.lock_wait_timeout, "
                "@@session.character_set_results, @@session.autocommit")
    zone, mode, innodb, meta, charset, autocommit = (
        v.decode() if isinstance(v, bytes) else v for v in cur.fetchone()
    )
    assert zone == "+00:00" and "STRICT_ALL_TABLES" in mode
    assert (int(innodb), int(meta), charset, int(autocommit)) == (5, 5, "utf8mb4", 0)
    variable = "max_statement_time" if conn.mariadb else "max_execution_time"
    cur.execute(f"SELECT @@session.{variable}")
    value = float(cur.fetchone()[0])
    assert value == (2.5 if conn.mariadb else 2500)
    cur.close()
    conn.close()


@pytest.mark.mysql
def test_wrong_password_is_one_line_without_it(mysql_url):
    from tests.mysql_fixtures import admin

    user = f"s2t_{uuid.uuid4().hex[:8]}"
    conn = admin(mysql_url)
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-Pw-1'")
    try:
        base = parse_url(mysql_url)
        bad = parse_url(
            f"mysql://{user}:{ENCODED}@{base.host}:{base.port}/{base.database}"
        )
        with pytest.raises(DatabaseError) as info:
            connect(bad)
        message = str(info.value)
        assert "Access denied" in message and "***" in message
        assert SECRET not in message and ENCODED not in message and "\n" not in message
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")
        conn.close()


@pytest.mark.mysql
def test_password_from_an_option_file(mysql_url, tmp_path):
    from tests.mysql_fixtures import admin

    user = f"s2t_{uuid.uuid4().hex[:8]}"
    conn = admin(mysql_url)
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (SECRET,))
        database = parse_url(mysql_url).database
        cur.execute(f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'")
    try:
        base = parse_url(mysql_url)
        option_file = tmp_path / "my.cnf"
        option_file.write_text(f"[client]\npassword={SECRET}\n", encoding="utf-8")
        url = parse_url(
            f"mysql://{user}@{base.host}:{base.port}/{base.database}"
            f"?read_default_file={option_file}",
            environ={},
        )
        assert url.password is None and SECRET not in url.masked
        session = connect(url)
        session.close()
        missing = parse_url(
            f"mysql://{user}@{base.host}:{base.port}/?read_default_file="
            f"{tmp_path / 'absent.cnf'}",
            environ={},
        )
        with pytest.raises(DatabaseError):
            connect(missing)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")
        conn.close()
