"""`python -m localdev start|stop|sample`: what run_local.sh needs from the shell.

    start --pidfile F   start a detached embedded PostgreSQL; print only its URL
    stop --pidfile F    stop it and delete its files (idempotent)
    sample --db_url URL --table T --rows N [--seed S] [--replace]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one sub-command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m localdev", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a detached embedded PostgreSQL")
    start.add_argument("--pidfile", required=True)
    stop = sub.add_parser("stop", help="stop it and delete its data")
    stop.add_argument("--pidfile", required=True)
    sample = sub.add_parser("sample", help="create the sample table")
    sample.add_argument("--db_url", default=os.environ.get("DATABASE_URL"))
    sample.add_argument("--table", default="sample")
    sample.add_argument("--rows", type=int, default=200_000)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--replace", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from localdev.embedded_postgres import EmbeddedPostgres

    try:
        if args.command == "start":
            server = EmbeddedPostgres()
            url = server.start()
            with open(args.pidfile, "w", encoding="utf-8") as f:
                json.dump(server.state(), f)
            server.detach()
            print(url)
        elif args.command == "stop":
            if os.path.exists(args.pidfile):
                with open(args.pidfile, encoding="utf-8") as f:
                    EmbeddedPostgres.from_state(json.load(f)).stop()
                os.remove(args.pidfile)
        else:
            if not args.db_url:
                raise ValueError("--db_url is required (or set DATABASE_URL)")
            from localdev.sample_table import create_sample_table

            started = time.monotonic()
            rows = create_sample_table(
                args.db_url, args.table, args.rows, args.seed, args.replace
            )
            print(
                f"sample table {args.table}: {rows} rows "
                f"({time.monotonic() - started:.1f} s)",
                file=sys.stderr,
            )
    except Exception as err:  # noqa: BLE001 - one line for the shell script
        print(f"localdev: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
