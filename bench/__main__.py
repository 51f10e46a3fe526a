"""`python -m bench`: end-to-end, source and reader benchmarks, as a markdown table.

Creates the benchmark tables if missing (the sample schema: id, 8 floats with 5%
NULLs, 4 text columns of ~10…50,000 Zipf tokens with 2% NULLs, a timestamp, a 0/1
label), then runs every measurement `--runs` times, each in a fresh process, and
prints medians with peak RSS and ratios against baselines measured in the same run.
Uses `$DATABASE_URL`, or starts an embedded PostgreSQL.

    python -m bench [--rows 1000000] [--runs 3] [--only e2e,source,reader,wide]
                    [--write]

`wide` runs the job on a 222-column table (200 float8 with 5% NULLs, 20 text of
Zipf tokens, 20k rows) and on the 15-column sample table alternately, `--runs`
pairs, and prints the median ratio and the seconds per extra column;
`--baseline CHECKOUT` runs the same pair from another checkout in every round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(argv: list[str]) -> tuple[float, float, str]:
    """Runs a command; returns (wall seconds, its own peak RSS in MiB, stdout)."""
    wall, _, rss, stdout = _run_usage(argv)
    return wall, rss, stdout


def _run_usage(
    argv: list[str], root: str = ROOT
) -> tuple[float, float, float, str]:
    """Runs a command in checkout `root`; returns (wall s, CPU s (user + system),
    peak RSS MiB, stdout)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": root}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=root)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:5])} failed: {stderr[-1500:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, stdout


def database():
    """(URL, server): `$DATABASE_URL`, or a started embedded PostgreSQL to stop."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url, None
    from localdev.embedded_postgres import EmbeddedPostgres

    server = EmbeddedPostgres()
    return server.start(), server


def _median_runs(argv_fn, runs: int) -> dict:
    walls, rsss, inner, extra = [], [], [], {}
    for i in range(runs):
        wall, rss, out = _run(argv_fn(i))
        walls.append(wall)
        rsss.append(rss)
        line = out.strip().splitlines()[-1] if out.strip() else "{}"
        try:
            data = json.loads(line)
        except ValueError:
            data = {}
        if "seconds" in data:
            inner.append(data["seconds"])
        for k, v in data.items():
            extra.setdefault(k, []).append(v)
    result = {
        "wall": statistics.median(walls),
        "walls": walls,
        "rss": max(rsss),
        "inner": statistics.median(inner) if inner else None,
    }
    for k, v in extra.items():
        if all(isinstance(x, (int, float)) for x in v):
            result[k] = statistics.median(v)
    return result


def _task(task: str, url: str, table: str, out: str | None = None):
    argv = [
        sys.executable,
        "-m",
        "bench.tasks",
        task,
        "--db_url",
        url,
        "--table",
        table,
    ]
    return argv + (["--out", out] if out else [])


def _pipeline(url: str, table: str, out: str):
    return [
        sys.executable,
        "-m",
        "pipeline",
        "--db_url",
        url,
        "--table",
        table,
        "--label",
        "label",
        "--output_dir",
        out,
        "--overwrite",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", allow_abbrev=False)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="e2e,source,reader")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument(
        "--baseline",
        help="wide: also run this other checkout in every round (before/after)",
    )
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    sys.path.insert(0, ROOT)
    from localdev.sample_table import create_sample_table

    url, server = database()
    work = tempfile.mkdtemp(prefix="sql2tfrecord-bench-")
    small, large = 20_000, 4 * args.rows
    tables = {small: "bench_20k"}
    if sections & {"e2e", "source", "reader"}:
        tables.update({args.rows: f"bench_{args.rows}", large: f"bench_{large}"})
    lines = []
    try:
        if "wide" in sections:
            from bench.tasks import create_wide_table

            create_wide_table(url, WIDE_TABLE, small)
        for rows, table in tables.items():
            started = time.perf_counter()
            create_sample_table(url, table, rows, seed=0)
            print(
                f"table {table}: {rows} rows ready "
                f"({time.perf_counter() - started:.1f} s)",
                file=sys.stderr,
            )
        results = {}

        def measure(name, argv_fn, rows):
            print(f"running {name} ...", file=sys.stderr)
            r = _median_runs(argv_fn, args.runs)
            r.setdefault("rows", rows)
            results[name] = r
            print(
                f"  {name}: median {r['wall']:.1f} s, RSS {r['rss']:.0f} MiB",
                file=sys.stderr,
            )
            return r

        mid, big = tables.get(args.rows), tables.get(large)
        if "wide" in sections:
            print("running wide (alternating with the 15-column table) ...",
                  file=sys.stderr)
            results["wide"] = _wide_pairs(
                url, tables[small], work, args.runs, args.baseline
            )
        if "e2e" in sections or "source" in sections:
            for rows, table in ((args.rows, mid), (large, big)):
                measure(
                    f"copy_null_{rows}",
                    lambda i, t=table: _task("copy_null", url, t),
                    rows,
                )
        if "source" in sections:
            for rows, table in ((args.rows, mid), (large, big)):
                measure(
                    f"source_{rows}", lambda i, t=table: _task("source", url, t), rows
                )
        if "e2e" in sections:
            measure(
                f"handwritten_{args.rows}",
                lambda i: _task("handwritten", url, mid, os.path.join(work, f"hw{i}")),
                args.rows,
            )
            for rows, table in tables.items():
                measure(
                    f"e2e_{rows}",
                    lambda i, t=table, r=rows: _pipeline(
                        url, t, os.path.join(work, f"e2e_{r}")
                    ),
                    rows,
                )
        if "reader" in sections:
            out = os.path.join(work, "reader_out")
            _run(_pipeline(url, mid, out))
            measure(
                "read_make_dataset",
                lambda i: _task("read_make_dataset", url, mid, out),
                args.rows,
            )
            measure(
                "read_ceiling",
                lambda i: _task("read_ceiling", url, mid, out),
                args.rows,
            )
            measure(
                "read_fetchmany", lambda i: _task("read_fetchmany", url, mid), args.rows
            )
            measure(
                "read_from_postgres",
                lambda i: _task("read_from_postgres", url, mid),
                args.rows,
            )
        lines = _report(results, args)
        print("\n".join(lines))
        if args.write:
            _write_results(lines, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if server is not None:
            server.stop()
    return 0


WIDE_TABLE = "bench_wide_20k"
# Columns: the wide table's id, label, 200 floats, 20 texts; the sample table's 15.
WIDE_COLUMNS, NARROW_COLUMNS = 222, 15


def _wide_pairs(
    url: str, narrow: str, work: str, runs: int, baseline: str | None = None
) -> dict:
    """Runs the job on the 15-column and the wide table alternately, `runs` pairs.

    Returns the per-pair seconds and ratios; their medians are the headline (the
    machine is shared, so only ratios measured side by side mean anything). With
    `baseline` (another checkout), each round first runs the same pair there, and
    the result has the baseline's numbers under "baseline".
    """
    if baseline:
        base = {"narrow": [], "wide": [], "narrow_cpu": [], "wide_cpu": []}
    narrow_s, wide_s, narrow_cpu, wide_cpu = [], [], [], []
    for i in range(runs):
        if baseline:
            for kind, table in (("narrow", narrow), ("wide", WIDE_TABLE)):
                out = os.path.join(work, f"baseline_{table}")
                wall, cpu, _, _ = _run_usage(_pipeline(url, table, out), baseline)
                base[kind].append(wall)
                base[f"{kind}_cpu"].append(cpu)
            print(
                f"  baseline {i + 1}: {base['wide'][-1] / base['narrow'][-1]:.2f}×"
                f" (CPU {base['wide_cpu'][-1] / base['narrow_cpu'][-1]:.2f}×)",
                file=sys.stderr,
            )
        for table, walls, cpus in (
            (narrow, narrow_s, narrow_cpu),
            (WIDE_TABLE, wide_s, wide_cpu),
        ):
            out = os.path.join(work, f"wide_{table}")
            wall, cpu, _, _ = _run_usage(_pipeline(url, table, out))
            walls.append(wall)
            cpus.append(cpu)
        print(
            f"  pair {i + 1}: 15 columns {narrow_s[-1]:.1f} s, wide {wide_s[-1]:.1f} s"
            f" ({wide_s[-1] / narrow_s[-1]:.2f}×; CPU {narrow_cpu[-1]:.1f} s, "
            f"{wide_cpu[-1]:.1f} s)",
            file=sys.stderr,
        )
    extra = WIDE_COLUMNS - NARROW_COLUMNS
    result = {
        "narrow": narrow_s,
        "wide": wide_s,
        "ratio": statistics.median(w / n for w, n in zip(wide_s, narrow_s)),
        "cpu_ratio": statistics.median(w / n for w, n in zip(wide_cpu, narrow_cpu)),
        "per_column": statistics.median(
            (w - n) / extra for w, n in zip(wide_s, narrow_s)
        ),
    }
    if baseline:
        result["baseline"] = {
            "ratio": statistics.median(
                w / n for w, n in zip(base["wide"], base["narrow"])
            ),
            "cpu_ratio": statistics.median(
                w / n for w, n in zip(base["wide_cpu"], base["narrow_cpu"])
            ),
            "wide_after_before": statistics.median(
                a / b for a, b in zip(wide_s, base["wide"])
            ),
        }
    return result


def _fmt_rate(rows, seconds):
    return f"{rows / seconds:,.0f}" if seconds else "-"


def _report(results: dict, args) -> list[str]:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; medians of {args.runs} runs; "
        "wall time of the whole process (imports included) unless noted.",
        "",
        "| measurement | rows | median wall s | inner s | rows/s (wall) "
        "| peak RSS MiB | ratio |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]

    def row(name, ratio=""):
        r = results.get(name)
        if r is None:
            return
        inner = f"{r['inner']:.2f}" if r.get("inner") is not None else "-"
        lines.append(
            f"| {name} | {r['rows']:,} | {r['wall']:.2f} | {inner} | "
            f"{_fmt_rate(r['rows'], r['wall'])} | {r['rss']:.0f} | {ratio} |"
        )

    def ratio(a, b, key="wall"):
        if a in results and b in results and results[b].get(key):
            return f"{results[a][key] / results[b][key]:.2f}× {b} ({key})"
        return ""

    wide = results.get("wide")
    if wide:
        lines[2:2] = [
            f"| pair (alternated in one run, {args.runs} pairs) | median ratio "
            "| per pair | CPU-time ratio | seconds per extra column |",
            "|---|---:|---|---:|---:|",
            f"| {WIDE_COLUMNS}-column {WIDE_TABLE} ÷ the {NARROW_COLUMNS}-column "
            f"20k-row table | {wide['ratio']:.2f}× | "
            + ", ".join(f"{w / n:.2f}×" for w, n in zip(wide["wide"], wide["narrow"]))
            + f" | {wide['cpu_ratio']:.2f}× | {wide['per_column']:.3f} s |",
            "",
            *(
                [
                    f"Baseline {args.baseline}, same rounds: "
                    f"{wide['baseline']['ratio']:.2f}× (CPU "
                    f"{wide['baseline']['cpu_ratio']:.2f}×); wide after ÷ before: "
                    f"{wide['baseline']['wide_after_before']:.2f}×.",
                    "",
                ]
                if "baseline" in wide
                else []
            ),
            "Seconds (context only): 15 columns "
            + ", ".join(f"{x:.1f}" for x in wide["narrow"])
            + "; wide "
            + ", ".join(f"{x:.1f}" for x in wide["wide"])
            + ".",
            "",
        ]
    rows_mid, rows_big = args.rows, 4 * args.rows
    table_end = len(lines)
    for n in (rows_mid, rows_big):
        row(f"copy_null_{n}")
        row(f"source_{n}", ratio(f"source_{n}", f"copy_null_{n}", "inner"))
    row(f"handwritten_{rows_mid}")
    for n in (20_000, rows_mid, rows_big):
        row(
            f"e2e_{n}",
            ratio(f"e2e_{n}", f"handwritten_{rows_mid}") if n == rows_mid else "",
        )
    if f"e2e_{rows_mid}" in results and f"e2e_{rows_big}" in results:
        a, b = results[f"e2e_{rows_mid}"]["wall"], results[f"e2e_{rows_big}"]["wall"]
        lines.append("")
        lines.append(
            f"Fixed cost (20k rows end to end): {results['e2e_20000']['wall']:.1f} s. "
            f"Marginal throughput {rows_mid:,} -> {rows_big:,}: "
            f"{(rows_big - rows_mid) / (b - a):,.0f} rows/s; {rows_big:,} rows take "
            f"{b / a:.2f}× the {rows_mid:,}-row time."
        )
    if "read_make_dataset" in results:
        lines.append("")
        lines.append(
            "| reader (train split, one epoch) | examples | seconds | examples/s "
            "| ratio |"
        )
        lines.append("|---|---:|---:|---:|---|")
        md, ce, fm, dp = (
            results.get(k)
            for k in (
                "read_make_dataset",
                "read_ceiling",
                "read_fetchmany",
                "read_from_postgres",
            )
        )
        for name, r in (
            ("make_dataset", md),
            ("hand-written ceiling", ce),
            ("fetchmany+from_generator (8 floats + label)", fm),
            ("dataset_from_postgres (8 floats + label)", dp),
        ):
            if r:
                rate = r["rows"] / r["inner"]
                rel = f"{rate / (ce['rows'] / ce['inner']):.2f}× ceiling" if ce else ""
                lines.append(
                    f"| {name} | {r['rows']:,} | {r['inner']:.2f} | "
                    f"{rate:,.0f} | {rel} |"
                )
        if md and md.get("cached_epoch_seconds"):
            lines.append(
                f"| make_dataset, cached 2nd epoch | {md['rows']:,} | "
                f"{md['cached_epoch_seconds']:.2f} | "
                f"{md['rows'] / md['cached_epoch_seconds']:,.0f} | |"
            )
    if set(results) <= {"wide"}:
        del lines[table_end - 2 : table_end]  # --only wide: no empty table
    return lines


def _write_results(lines: list[str], args) -> None:
    path = os.path.join(ROOT, "bench", "RESULTS.md")
    header = (
        "# Benchmark results\n\n"
        f"Command: `python -m bench --rows {args.rows} --runs {args.runs} "
        f"--only {args.only}`"
        f" ({time.strftime('%Y-%m-%d')}, DirectRunner, gzip output).\n\n"
    )
    previous = ""
    if os.path.exists(path):
        text = open(path, encoding="utf-8").read()
        marker = "\n## "  # keep the notes below the generated table
        if marker in text:
            previous = text[text.index(marker) :]
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + "\n".join(lines) + "\n" + previous)


if __name__ == "__main__":
    sys.exit(main())
