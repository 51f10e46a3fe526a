"""`python -m bench.statistics_cost`: what the statistics add to a run, as A/B ratios.

For each size, runs the job on the sample table alternately with and without
`--no_statistics` (A B A B …, each a fresh process) and prints the median wall
times and the median of the per-pair ratios (with / without), which is robust to
the machine's speed drifting during the measurement. Creates uniquely named tables
and drops them afterwards. Uses `$DATABASE_URL`, or starts an embedded PostgreSQL.

    python -m bench.statistics_cost [--rows 20000,200000] [--pairs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid

from bench.__main__ import ROOT, _pipeline, _run, database


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.statistics_cost")
    parser.add_argument("--rows", default="20000,200000")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import psycopg2

    from localdev.sample_table import create_sample_table

    url, server = database()
    work = tempfile.mkdtemp(prefix="sql2tfrecord-statcost-")
    tables = []
    try:
        print(
            "| rows | with statistics s (median) | without s (median) | "
            "ratio with/without (median of pairs) | pairs |"
        )
        print("|---:|---:|---:|---:|---:|")
        for rows in [int(r) for r in args.rows.split(",")]:
            table = f"statcost_{rows}_{uuid.uuid4().hex[:6]}"
            tables.append(table)
            create_sample_table(url, table, rows, seed=0)
            out = os.path.join(work, table)
            with_s, without_s, ratios = [], [], []
            for _ in range(args.pairs):
                a, _, _ = _run(_pipeline(url, table, out))
                b, _, _ = _run([*_pipeline(url, table, out), "--no_statistics"])
                with_s.append(a)
                without_s.append(b)
                ratios.append(a / b)
            each = ", ".join(f"{r:.3f}" for r in ratios)
            print(
                f"| {rows:,} | {statistics.median(with_s):.2f} | "
                f"{statistics.median(without_s):.2f} | "
                f"{statistics.median(ratios):.3f} ({each}) | {args.pairs} |",
                flush=True,
            )
    finally:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            for table in tables:
                cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.close()
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
