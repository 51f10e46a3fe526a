"""`python -m bench`: the speed ratios of issue 17, then optional detail tables.

Creates the benchmark tables if missing (the sample schema: id, 8 floats with 5%
NULLs, 4 text columns of ~10…50,000 Zipf tokens with 2% NULLs, a timestamp, a 0/1
label; the wide table: 200 floats and 20 texts), then measures each selected pair
by alternating its two commands A B A B … in fresh processes (whole-process wall
time) and prints the median of the per-pair ratios against its target: the
machine is shared, so only ratios measured side by side mean anything.
Uses `$DATABASE_URL`, or starts an embedded PostgreSQL.

    python -m bench [--rows 1000000] [--pairs 3] [--only fixed,copy,wide,docs]
                    [--baseline CHECKOUT] [--runs 3] [--write]

Pairs (`--only`, comma-separated): `fixed` (the job at 20k rows ÷ importing its
libraries), `copy` (the job at `--rows` ÷ a binary COPY of the table to
/dev/null), `wide` (the 222-column 20k-row table ÷ the 15-column one, and seconds
per extra column; `--baseline CHECKOUT` also runs that pair from another checkout
in every round), `docs` (the job at `--rows` ÷ tf.Transform's documented
instance-dict pipeline), `rss4m` (peak RSS of the job at 4 × `--rows`, an
absolute, one run). Detail sections, medians of `--runs` runs: `e2e`, `source`,
`reader`.
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
    argv: list[str], root: str = ROOT, discard_stdout: bool = False
) -> tuple[float, float, float, str]:
    """Runs a command in checkout `root`; returns (wall s, CPU s (user + system),
    peak RSS MiB, stdout); `discard_stdout` sends stdout to /dev/null."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": root}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sink = subprocess.DEVNULL if discard_stdout else out
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=sink, stderr=err, env=env, cwd=root)
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


HEADLINE = ("fixed", "copy", "wide", "docs", "rss4m")
DETAIL = ("e2e", "source", "reader")
IMPORTS = "import apache_beam, tensorflow, tensorflow_transform.beam, psycopg2, pyarrow"
WIDE_TABLE = "bench_wide_20k"
# Columns: the wide table's id, label, 200 floats, 20 texts; the sample table's 15.
WIDE_COLUMNS, NARROW_COLUMNS = 222, 15
RSS_TARGET_MIB = 1536  # 1.5 GiB


def _rounds(commands: dict, rounds: int, label: str) -> dict:
    """Runs `commands` (name -> i -> (argv, run options)) in order, `rounds` times.

    Returns name -> {"wall": [...], "cpu": [...], "rss": [...]}, one entry per round:
    A B A B … so that both sides of a ratio see the same state of the machine.
    """
    runs = {name: {"wall": [], "cpu": [], "rss": []} for name in commands}
    for i in range(rounds):
        for name, command in commands.items():
            argv, options = command(i)
            wall, cpu, rss, _ = _run_usage(argv, **options)
            runs[name]["wall"].append(wall)
            runs[name]["cpu"].append(cpu)
            runs[name]["rss"].append(rss)
        print(
            f"  {label} round {i + 1}: "
            + ", ".join(f"{n} {r['wall'][-1]:.1f} s" for n, r in runs.items()),
            file=sys.stderr,
        )
    return runs


def _ratios(runs: dict, a: str, b: str, key: str = "wall") -> list[float]:
    return [x / y for x, y in zip(runs[a][key], runs[b][key], strict=True)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", allow_abbrev=False)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=3, help="rounds per pair")
    parser.add_argument("--runs", type=int, default=3, help="runs per detail row")
    parser.add_argument("--only", default="fixed,copy,wide,docs")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument(
        "--baseline",
        help="wide: also run this other checkout in every round (before/after)",
    )
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    unknown = sections - set(HEADLINE) - set(DETAIL)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}")
    sys.path.insert(0, ROOT)
    from localdev.sample_table import create_sample_table

    url, server = database()
    work = tempfile.mkdtemp(prefix="sql2tfrecord-bench-")
    small, large = 20_000, 4 * args.rows
    tables = {}
    if sections & {"fixed", "wide", "e2e"}:
        tables[small] = "bench_20k"
    if sections & {"copy", "docs", "e2e", "source", "reader"}:
        tables[args.rows] = f"bench_{args.rows}"
    if sections & {"rss4m", "e2e", "source"}:
        tables[large] = f"bench_{large}"
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
        headline = _headline(sections, url, tables, work, args)
        results = _details(sections, url, tables, work, args)
        lines = _report_headline(headline, args)
        if results:
            lines += ["", *_report(results, args)]
        print("\n".join(lines))
        if args.write:
            _write_results(lines, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if server is not None:
            server.stop()
    return 0


def _job(url: str, table: str, out: str, root: str = ROOT):
    """A round's command: the job on `table` from checkout `root`."""
    return lambda i: (_pipeline(url, table, out), {"root": root})


def _headline(sections: set, url: str, tables: dict, work: str, args) -> dict:
    """Measures the selected headline pairs; name -> its runs and notes.

    A pair whose command fails is reported as failed; the others still run.
    """
    mid, small = tables.get(args.rows), tables.get(20_000)

    def fixed():
        runs = _rounds(
            {
                "job": _job(url, small, os.path.join(work, "fixed")),
                "imports": lambda i: ([sys.executable, "-c", IMPORTS], {}),
            },
            args.pairs,
            "fixed",
        )
        return {"runs": runs, "ratios": _ratios(runs, "job", "imports")}

    def copy():
        psql = shutil.which("psql")
        if psql:
            copy = [psql, url, "-Xqc", f'COPY "{mid}" TO STDOUT (FORMAT binary)']
            note = "psql"
        else:
            copy = _task("copy_binary_null", url, mid)
            note = "psql not on PATH: psycopg2 copy_expert into a null sink"
        runs = _rounds(
            {
                "job": _job(url, mid, os.path.join(work, "copy")),
                "copy": lambda i: (copy, {"discard_stdout": True}),
            },
            args.pairs,
            "copy",
        )
        return {
            "runs": runs,
            "ratios": _ratios(runs, "job", "copy"),
            "note": note,
        }

    def wide():
        commands = {}
        if args.baseline:
            for name, table in (("base_narrow", small), ("base_wide", WIDE_TABLE)):
                commands[name] = _job(
                    url, table, os.path.join(work, name), args.baseline
                )
        commands["narrow"] = _job(url, small, os.path.join(work, "narrow"))
        commands["wide"] = _job(url, WIDE_TABLE, os.path.join(work, "wide"))
        runs = _rounds(commands, args.pairs, "wide")
        extra = WIDE_COLUMNS - NARROW_COLUMNS
        result = {
            "runs": runs,
            "ratios": _ratios(runs, "wide", "narrow"),
            "cpu_ratio": statistics.median(_ratios(runs, "wide", "narrow", "cpu")),
            "per_column": statistics.median(
                (w - n) / extra
                for w, n in zip(
                    runs["wide"]["wall"], runs["narrow"]["wall"], strict=True
                )
            ),
        }
        if args.baseline:
            result["baseline"] = {
                "ratios": _ratios(runs, "base_wide", "base_narrow"),
                "cpu_ratio": statistics.median(
                    _ratios(runs, "base_wide", "base_narrow", "cpu")
                ),
                "after_before": _ratios(runs, "wide", "base_wide"),
            }
        return result

    def docs():
        runs = _rounds(
            {
                "job": _job(url, mid, os.path.join(work, "docs_job")),
                "docs": lambda i: (
                    _task("tft_docs", url, mid, os.path.join(work, f"docs{i}")),
                    {},
                ),
            },
            args.pairs,
            "docs",
        )
        return {"runs": runs, "ratios": _ratios(runs, "job", "docs")}

    def rss4m():
        big = tables[4 * args.rows]
        runs = _rounds({"job": _job(url, big, os.path.join(work, "rss"))}, 1, "rss4m")
        return {"runs": runs}

    measured = {}
    pairs = {"fixed": fixed, "copy": copy, "wide": wide, "docs": docs}
    pairs["rss4m"] = rss4m
    for name in HEADLINE:
        if name not in sections:
            continue
        try:
            measured[name] = pairs[name]()
        except RuntimeError as error:
            print(f"  {name}: failed: {error}", file=sys.stderr)
            measured[name] = {"error": str(error).splitlines()[0][:120]}
    return measured


def _details(sections: set, url: str, tables: dict, work: str, args) -> dict:
    """The detail sections (e2e, source, reader): medians of `--runs` runs."""
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

    large = 4 * args.rows
    mid, big = tables.get(args.rows), tables.get(large)
    if "e2e" in sections or "source" in sections:
        for rows, table in ((args.rows, mid), (large, big)):
            measure(
                f"copy_null_{rows}", lambda i, t=table: _task("copy_null", url, t), rows
            )
    if "source" in sections:
        for rows, table in ((args.rows, mid), (large, big)):
            measure(f"source_{rows}", lambda i, t=table: _task("source", url, t), rows)
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
        for name in ("read_make_dataset", "read_ceiling"):
            measure(name, lambda i, n=name: _task(n, url, mid, out), args.rows)
        for name in ("read_fetchmany", "read_from_postgres"):
            measure(name, lambda i, n=name: _task(n, url, mid), args.rows)
    return results


def _report_headline(headline: dict, args) -> list[str]:
    """The ratio table (pair, median ratio, per pair, target, met?) and notes."""
    if not headline:
        return []
    rows_label = f"{args.rows:,}"
    big_label = f"{4 * args.rows:,}"
    described = {
        "fixed": ('the job at 20k rows ÷ `python -c "' + IMPORTS + '"`', 1.4),
        "copy": (
            f'the job at {rows_label} rows ÷ `psql -c "COPY t TO STDOUT (FORMAT '
            'binary)" > /dev/null`',
            8.0,
        ),
        "wide": (
            f"{WIDE_COLUMNS}-column {WIDE_TABLE} ÷ the {NARROW_COLUMNS}-column "
            "20k-row table",
            2.0,
        ),
        "docs": (
            f"the job at {rows_label} rows ÷ tf.Transform's documented pipeline "
            "(instance dicts, `AnalyzeAndTransformDataset`)",
            0.05,
        ),
    }
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; whole-process wall time; each pair's two "
        f"commands alternated in one run, {args.pairs} rounds; the ratio is the "
        "median of the per-round ratios.",
        "",
        "| pair | ratio (median) | per round | target | met? |",
        "|---|---:|---|---:|---|",
    ]
    for name in HEADLINE:
        if name not in headline:
            continue
        h = headline[name]
        if "error" in h:
            lines.append(f"| {name} | failed: {h['error']} | | | no |")
            continue
        if name == "rss4m":
            rss = max(h["runs"]["job"]["rss"])
            lines.append(
                f"| peak RSS of the job at {big_label} rows (an absolute, one run) "
                f"| {rss:,.0f} MiB | | ≤ {RSS_TARGET_MIB:,} MiB (1.5 GiB) "
                f"| {'yes' if rss <= RSS_TARGET_MIB else 'no'} |"
            )
            continue
        text, target = described[name]
        ratio = statistics.median(h["ratios"])
        lines.append(
            f"| {text} | {ratio:.2f}× | "
            + ", ".join(f"{r:.2f}×" for r in h["ratios"])
            + f" | ≤ {target:g}× | {'yes' if ratio <= target else 'no'} |"
        )
    lines.append("")
    if "note" in headline.get("copy", {}):
        lines.append(f"COPY baseline: {headline['copy']['note']}.")
    if "per_column" in headline.get("wide", {}):
        w = headline["wide"]
        lines.append(
            f"Wide: seconds per extra column ((wide − narrow) ÷ "
            f"{WIDE_COLUMNS - NARROW_COLUMNS}) {w['per_column']:.3f} s; "
            f"CPU-time ratio {w['cpu_ratio']:.2f}×."
        )
        if "baseline" in w:
            b = w["baseline"]
            lines.append(
                f"Baseline {args.baseline}, same rounds: "
                f"{statistics.median(b['ratios']):.2f}× (CPU {b['cpu_ratio']:.2f}×); "
                "wide after ÷ before: "
                f"{statistics.median(b['after_before']):.2f}× ("
                + ", ".join(f"{r:.2f}×" for r in b["after_before"])
                + ")."
            )
    lines.append("")
    lines.append("Seconds, as context only:")
    lines.append("")
    for name, h in headline.items():
        if "error" in h:
            continue
        lines.append(
            f"* {name}: "
            + "; ".join(
                f"{side} " + ", ".join(f"{x:.1f}" for x in r["wall"])
                for side, r in h["runs"].items()
            )
            + (
                "; peak RSS MiB "
                + ", ".join(f"{x:.0f}" for x in h["runs"]["job"]["rss"])
                if name == "rss4m"
                else ""
            )
        )
    return lines


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

    rows_mid, rows_big = args.rows, 4 * args.rows
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
    return lines


def _write_results(lines: list[str], args) -> None:
    path = os.path.join(ROOT, "bench", "RESULTS.md")
    header = (
        "# Benchmark results\n\n"
        f"Command: `python -m bench --rows {args.rows} --pairs {args.pairs} "
        f"--runs {args.runs} --only {args.only}`"
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
