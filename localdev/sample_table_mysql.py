"""The generated sample table, loaded into MySQL/MariaDB (the demo's other database).

Contract (`create_sample_table_mysql`): the same rows as
`localdev.sample_table.create_sample_table` for the same seed and size (the same
generator, block by block), in MySQL types: `id BIGINT PRIMARY KEY`, `f0`..`f7
DOUBLE`, `c10`, `c100`, `c1k`, `c50k VARCHAR(32)` (utf8mb4), `created_at TIMESTAMP`
(stored in UTC; loaded with the session time zone `+00:00`), `label INT`, in an InnoDB
table. Loaded with `LOAD DATA LOCAL INFILE` from one temporary CSV file per block of
100,000 rows; empty fields become NULL. An existing table of the same size is kept
unless `replace`.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from urllib.parse import unquote, urlsplit

from localdev.sample_table import (
    _BLOCK_ROWS,
    _FLOATS,
    CATEGORIES,
    COLUMNS,
    _block_csv,
    _Model,
)

__all__ = ["create_sample_table_mysql", "mysql_connect_args"]

_LOGGER = logging.getLogger(__name__)

_SCHEMES = ("mysql", "mariadb")
_NULLABLE = tuple(f"f{i}" for i in range(len(_FLOATS))) + tuple(CATEGORIES)


def mysql_connect_args(db_url: str) -> dict:
    """`pymysql.connect` arguments from `mysql://user[:password]@host[:port]/db`.

    The password, when the URL has none, comes from `$MYSQL_PWD`.

    Raises:
        ValueError: not a mysql:// or mariadb:// URL, or no database in it.
    """
    parts = urlsplit(db_url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"--db_url must start with mysql:// or mariadb://, got {parts.scheme}://"
        )
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ValueError("--db_url names no database (mysql://user@host:port/DATABASE)")
    password = parts.password
    if password is None:
        password = os.environ.get("MYSQL_PWD", "")
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(password),
        "database": database,
    }


def _ddl(table: str) -> str:
    columns = ["`id` BIGINT NOT NULL PRIMARY KEY"]
    columns += [f"`f{i}` DOUBLE NULL" for i in range(len(_FLOATS))]
    columns += [f"`{name}` VARCHAR(32) NULL" for name in CATEGORIES]
    columns += ["`created_at` TIMESTAMP NOT NULL", "`label` INT NOT NULL"]
    return (
        f"CREATE TABLE `{table}` ({', '.join(columns)}) "
        "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    )


def _load_sql(table: str, path: str) -> str:
    targets, sets = [], []
    for name in COLUMNS:
        if name in _NULLABLE:
            targets.append(f"@{name}")
            sets.append(f"`{name}` = NULLIF(@{name}, '')")
        elif name == "created_at":
            targets.append("@created_at")
            sets.append("`created_at` = STR_TO_DATE(@created_at, '%Y-%m-%dT%H:%i:%sZ')")
        else:
            targets.append(f"`{name}`")
    quoted = path.replace("\\", "\\\\").replace("'", "\\'")
    return (
        f"LOAD DATA LOCAL INFILE '{quoted}' INTO TABLE `{table}` "
        "CHARACTER SET ascii FIELDS TERMINATED BY ',' LINES TERMINATED BY '\\n' "
        f"({', '.join(targets)}) SET {', '.join(sets)}"
    )


def create_sample_table_mysql(
    db_url: str,
    table: str = "sample",
    rows: int = 200_000,
    seed: int = 0,
    replace: bool = False,
) -> int:
    """Creates the sample table in MySQL/MariaDB, or keeps one of the same size.

    Args:
        db_url: `mysql://user[:password]@host[:port]/database`.
        table: the table's name (one identifier, without backquotes).
        rows: how many rows.
        seed: the random seed (>= 0); same seed, same data as in PostgreSQL.
        replace: recreate the table even when it already has `rows` rows.

    Returns:
        The table's row count.

    Raises:
        ValueError: negative `rows` or `seed`, a bad `table` or URL.
        pymysql.Error: from the database.
    """
    import pymysql

    if rows < 0 or seed < 0:
        raise ValueError(f"rows and seed must be >= 0, got rows={rows}, seed={seed}")
    if not table or "`" in table:
        raise ValueError(
            f"table must be a non-empty name without backquotes: {table!r}"
        )
    began = time.monotonic()
    conn = pymysql.connect(
        **mysql_connect_args(db_url), local_infile=True, autocommit=True
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                (table,),
            )
            if not replace and cur.fetchone()[0]:
                cur.execute(f"SELECT COUNT(*) FROM `{table}`")
                if cur.fetchone()[0] == rows:
                    _LOGGER.info("Kept table %s: it already has %d rows", table, rows)
                    return rows
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
            cur.execute(_ddl(table))
            model = _Model(seed)
            with tempfile.TemporaryDirectory(prefix="sql2tfrecord-sample-") as tmp:
                path = os.path.join(tmp, "block.csv")
                for block in range(math.ceil(rows / _BLOCK_ROWS)):
                    count = min(_BLOCK_ROWS, rows - block * _BLOCK_ROWS)
                    with open(path, "wb") as f:
                        f.write(_block_csv(model, block, count))
                    cur.execute(_load_sql(table, path))
                    loaded = cur.rowcount
                    # LOCAL implies IGNORE: a bad value is only a warning.
                    cur.execute("SHOW COUNT(*) WARNINGS")
                    warnings = cur.fetchone()[0]
                    if loaded != count or warnings:
                        raise RuntimeError(
                            f"table {table}: block {block} loaded {loaded} of "
                            f"{count} rows with {warnings} warnings"
                        )
            cur.execute(f"ANALYZE TABLE `{table}`")
            cur.fetchall()
    finally:
        conn.close()
    _LOGGER.info(
        "Created table %s: %d rows in %.1f s", table, rows, time.monotonic() - began
    )
    return rows
