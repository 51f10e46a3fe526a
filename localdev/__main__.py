"""`python -m localdev start|stop|sample`: what run_local.sh needs from the shell.

    start --pidfile FILE   start a detached embedded PostgreSQL, write its state
                           (JSON) to FILE and print only its URL on stdout
    stop --pidfile FILE    stop that server and delete its data (idempotent; a
                           missing FILE is fine)
    start-mysql --pidfile FILE, stop-mysql --pidfile FILE
                           the same for a throwaway MariaDB (mysql://root@...)
    sample --db_url URL --table NAME --rows N [--seed S] [--replace]
                           create the sample table (in PostgreSQL, or in
                           MySQL/MariaDB for a mysql:// URL); print one line

Errors: one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m localdev", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start a detached embedded PostgreSQL")
    start.add_argument("--pidfile", required=True, help="where to write its state")
    stop = commands.add_parser("stop", help="stop it and delete its data")
    stop.add_argument("--pidfile", required=True, help="the state file of start")
    start_mysql = commands.add_parser("start-mysql", help="start a detached MariaDB")
    start_mysql.add_argument(
        "--pidfile", required=True, help="where to write its state"
    )
    stop_mysql = commands.add_parser("stop-mysql", help="stop it and delete its data")
    stop_mysql.add_argument("--pidfile", required=True, help="the state file")
    sample = commands.add_parser("sample", help="create the sample table")
    sample.add_argument(
        "--db_url", required=True, help="libpq URL, or mysql://user@host:port/db"
    )
    sample.add_argument("--table", default="sample")
    sample.add_argument("--rows", type=int, default=200_000)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument(
        "--replace", action="store_true", help="recreate even if the size matches"
    )
    return parser


def _server_class(command: str) -> type:
    if command.endswith("-mysql"):
        from localdev.embedded_mariadb import EmbeddedMariaDB

        return EmbeddedMariaDB
    from localdev.embedded_postgres import EmbeddedPostgres

    return EmbeddedPostgres


def _start(pidfile: str, server_class: type) -> None:
    server = server_class()
    url = server.start()
    try:
        temporary = f"{pidfile}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(server.state(), f, indent=2)
        os.replace(temporary, pidfile)
    except BaseException:
        server.stop()
        raise
    server.detach()
    print(url, flush=True)


def _stop(pidfile: str, server_class: type) -> None:
    try:
        with open(pidfile, encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        return
    server_class.from_state(state).stop()
    os.remove(pidfile)


def _sample(args: argparse.Namespace) -> None:
    if args.db_url.startswith(("mysql://", "mariadb://")):
        from localdev.sample_table_mysql import (
            create_sample_table_mysql as create_sample_table,
        )
    else:
        from localdev.sample_table import create_sample_table

    began = time.monotonic()
    rows = create_sample_table(
        args.db_url, args.table, args.rows, seed=args.seed, replace=args.replace
    )
    print(f"{args.table}: {rows} rows in {time.monotonic() - began:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command.

    Args:
        argv: the arguments after `python -m localdev`; default `sys.argv[1:]`.

    Returns:
        The exit code: 0, or 1 after printing one line on stderr.
    """
    logging.basicConfig(level=logging.WARNING, format="localdev: %(message)s")
    try:
        args = _build_parser().parse_args(argv)
        if args.command in ("start", "start-mysql"):
            _start(args.pidfile, _server_class(args.command))
        elif args.command in ("stop", "stop-mysql"):
            _stop(args.pidfile, _server_class(args.command))
        else:
            _sample(args)
    except Exception as err:  # one line for the shell script, whatever it is
        lines = str(err).strip().splitlines() or [type(err).__name__]
        print(f"localdev: error: {lines[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
