"""`python -m bench.mysql_source`: our MySQL source against the `mysql --quick` floor.

Issue 20's target: the source <= 2x the floor `mysql --quick -e "SELECT …" >
/dev/null` at 1M rows, memory flat in the table size. Uses `bench.mysql_clients`'
table, floor, fresh-process runner and exactness digest. Approaches, each a fresh
process:

- `reader`: the real code path: `pipeline.sources.source_spec(url, table=…)`,
  `open_session(spec, export=False)`, `session.plan(spec, num_partitions=1)`, then
  `PartitionReader(spec, plan, None).read(partition, zero_dates=…)` for every
  partition (the key range and the NULL partition), batches counted and dropped;
- `beam`: `ReadRows(spec, plan, …)` with the default partitioning in a DirectRunner
  pipeline (FnApiRunner, `--direct_running_mode multi_threading
  --direct_num_workers 2`), rows counted by a `CombineGlobally(sum)`.

Before timing, the reader's batches are checked equal (per-column digest) to the
reference of `bench.mysql_clients` (PyMySQL, values converted in Python); every
timed run (both approaches) must count exactly `--rows` rows.

    python -m bench.mysql_source [--rows 1000000] [--pairs 3] [--port 3306]
                                 [--only reader,beam]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time

from bench.mysql_clients import (
    DATABASE,
    NAMES,
    _digest,
    _floor_argv,
    _run,
    _task_argv,
    create_table,
)

APPROACHES = ("reader", "beam")


def _url(port: int) -> str:
    return f"mysql://root@127.0.0.1:{port}/{DATABASE}"


def _plan(port: int, table: str, num_partitions: int | None):
    from pipeline import sources

    spec = sources.source_spec(_url(port), table=table)
    session = sources.open_session(spec, export=False)
    try:
        plan = session.plan(spec, num_partitions=num_partitions)
    finally:
        session.close()
    return spec, plan


def _read_reader(port: int, table: str):
    """Yields the table's batches through PartitionReader, partition by partition."""
    from pipeline.sources.mysql.partition_reader import PartitionReader

    spec, plan = _plan(port, table, 1)
    zero = {}
    for partition in plan.partitions:
        reader = PartitionReader(spec, plan, None)
        yield from reader.read(
            partition, zero_dates=lambda c, n: zero.__setitem__(c, zero.get(c, 0) + n)
        )
    if zero:
        raise AssertionError(f"unexpected zero dates {zero}")


def _count_beam(port: int, table: str) -> int:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import sources
    from pipeline.runner import pipeline_runner

    spec, plan = _plan(port, table, None)
    options = PipelineOptions(
        ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]
    )
    with beam.Pipeline(runner=pipeline_runner(options), options=options) as p:
        counts = (
            p
            | sources.read_rows(spec, plan, None, "bench")
            | beam.Map(lambda b: b.num_rows)
            | beam.CombineGlobally(sum)
        )
        total = counts | beam.Map(lambda n: print(json.dumps({"beam_rows": n})))
    del total
    return len(plan.partitions)


def task(name: str, port: int, table: str, verify: bool) -> dict:
    started = time.perf_counter()
    if name == "beam":
        partitions = _count_beam(port, table)
        return {"partitions": partitions, "seconds": time.perf_counter() - started}
    count, batches, states = 0, 0, [hashlib.sha1() for _ in NAMES]
    for batch in _read_reader(port, table):
        if batch.schema.names != NAMES:
            raise AssertionError(f"columns {batch.schema.names}")
        count += batch.num_rows
        batches += 1
        if verify:
            _digest(batch, states)
    result = {"rows": count, "batches": batches}
    result["seconds"] = time.perf_counter() - started
    if verify:
        result["digest"] = [h.hexdigest()[:12] for h in states]
    return result


def _argv(name: str, port: int, table: str, verify: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "bench.mysql_source", "--task", name]
    argv += ["--port", str(port), "--table", table]
    return argv + (["--verify"] if verify else [])


def _rows_of(name: str, out: str) -> int:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if name == "beam":
        return next(d["beam_rows"] for d in lines if "beam_rows" in d)
    return lines[-1]["rows"]


def _seconds_of(out: str) -> float:
    return json.loads(out.splitlines()[-1])["seconds"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--port", type=int, default=3306)
    parser.add_argument("--only", default=",".join(APPROACHES))
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--table", help=argparse.SUPPRESS)
    parser.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.task:
        print(json.dumps(task(args.task, args.port, args.table, args.verify)))
        return 0

    names = [n for n in APPROACHES if n in args.only.split(",")]
    small = create_table(args.port, args.rows)
    large = create_table(args.port, 2 * args.rows)
    reference = json.loads(
        _run(
            _task_argv("pymysql-sscursor", "python", args.port, small, args.rows, True)
        )[2]
    )["digest"]
    out = json.loads(_run(_argv("reader", args.port, small, True))[2])
    wrong = [NAMES[i] for i, d in enumerate(out["digest"]) if d != reference[i]]
    exact = "yes" if not wrong and out["rows"] == args.rows else f"no: {wrong}"
    print(f"reader: {out['rows']} rows, exact vs reference: {exact}", flush=True)
    results = {n: {"pairs": []} for n in names}
    for pair in range(args.pairs):
        for name in names:
            floor, _, _ = _run(_floor_argv(args.port, small, args.rows))
            wall, rss, out = _run(_argv(name, args.port, small))
            if _rows_of(name, out) != args.rows:
                raise AssertionError(f"{name} read {_rows_of(name, out)} rows")
            inner = _seconds_of(out)
            results[name]["pairs"].append((wall, floor, inner, rss))
            print(
                f"pair {pair} {name}: {wall:.2f} s / floor {floor:.2f} s "
                f"= {wall / floor:.2f}, inner {inner:.2f} s, {rss:.0f} MiB",
                flush=True,
            )
    for name in names:
        _, rss, out = _run(_argv(name, args.port, large))
        if _rows_of(name, out) != 2 * args.rows:
            raise AssertionError(f"{name} read {_rows_of(name, out)} rows")
        results[name]["rss_large"] = rss

    print(
        "\n| approach | exact | median ratio to floor (wall) | median wall s "
        f"| median inner s | median floor s | peak RSS MiB {args.rows:,} / "
        f"{2 * args.rows:,} |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        walls, floors, inners, rsss = zip(*r["pairs"], strict=True)
        ratio = statistics.median(w / f for w, f in zip(walls, floors, strict=True))
        checked = exact if name == "reader" else "rows counted (the same reader)"
        print(
            f"| {name} | {checked} | {ratio:.2f} | {statistics.median(walls):.2f} | "
            f"{statistics.median(inners):.2f} | {statistics.median(floors):.2f} | "
            f"{max(rsss):.0f} / {r['rss_large']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
