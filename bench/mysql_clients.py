"""`python -m bench.mysql_clients`: which Python MySQL client reads a partition fastest.

Measures one partition read as the MySQL source does it (issue 20): one connection,
`SET time_zone='+00:00'`, `SET SESSION TRANSACTION READ ONLY`, `START TRANSACTION
WITH CONSISTENT SNAPSHOT, READ ONLY`, then `SELECT … WHERE id >= a AND id < b`
streamed (unbuffered) into pyarrow RecordBatches of 65,536 rows with the exact
types (int64, float64 incl. DECIMAL as its nearest double, string, DATE as int64
days, TIMESTAMP as int64 seconds UTC). Each approach runs in a fresh process; its
whole-process wall time is divided by the floor `mysql --quick -e "SELECT …" >
/dev/null` run just before it (one pair); medians of `--pairs` pairs, peak RSS at
`--rows` and at twice that. Before timing, every approach's batches are checked
equal (per-column digest) to the reference (pymysql, values converted in Python);
an approach that differs is marked inexact.

    python -m bench.mysql_clients [--rows 1000000] [--pairs 3] [--port 3306]
                                  [--only NAME,…]

Needs a MariaDB/MySQL server at 127.0.0.1 (user root, no password; benchmark only)
with the SEQUENCE engine (MariaDB) to create `bench_mysql.t_<rows>`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BATCH_ROWS = 65_536
DATABASE = "bench_mysql"
SETUP = (
    "SET SESSION time_zone = '+00:00'",
    "SET SESSION TRANSACTION READ ONLY",
    "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
)
FLOATS = [f"f{i}" for i in range(7)]
TEXTS = ["c10", "c100", "c1k", "c50k"]
# Columns as stored; the same converted by the server to ints and doubles.
PLAIN = ["id", *FLOATS, "f7", *TEXTS, "created_at", "day", "label"]
IN_SQL = [
    "id",
    *FLOATS,
    "CAST(f7 AS DOUBLE)",
    *TEXTS,
    "UNIX_TIMESTAMP(created_at)",
    "TO_DAYS(day) - 719528",
    "label",
]
NAMES = ["id", *FLOATS, "f7", *TEXTS, "created_at", "day", "label"]
KINDS = ["int"] + ["float"] * 8 + ["str"] * 4 + ["ts", "date", "int"]

_LOAD = """
CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4;
SET SESSION time_zone = '+00:00';
DROP TABLE IF EXISTS {db}.{table};
CREATE TABLE {db}.{table} (id BIGINT NOT NULL PRIMARY KEY,
 f0 DOUBLE, f1 DOUBLE, f2 DOUBLE, f3 DOUBLE, f4 DOUBLE, f5 DOUBLE, f6 DOUBLE,
 f7 DECIMAL(14,6), c10 VARCHAR(16), c100 VARCHAR(16), c1k VARCHAR(16),
 c50k VARCHAR(16), created_at TIMESTAMP NOT NULL, day DATE NOT NULL,
 label INT NOT NULL) CHARACTER SET utf8mb4;
INSERT INTO {db}.{table} SELECT seq,
 IF(RAND(101)<0.05,NULL,ROUND(SQRT(-2*LN(1-RAND(1)))*COS(2*PI()*RAND(2)),6)),
 IF(RAND(102)<0.05,NULL,ROUND(50+10*SQRT(-2*LN(1-RAND(3)))*COS(2*PI()*RAND(4)),6)),
 IF(RAND(103)<0.05,NULL,ROUND(EXP(0.75*SQRT(-2*LN(1-RAND(5)))*COS(2*PI()*RAND(6))),6)),
 IF(RAND(104)<0.05,NULL,ROUND(2*RAND(7)-1,6)),
 IF(RAND(105)<0.05,NULL,ROUND(1000+250*SQRT(-2*LN(1-RAND(8)))*COS(2*PI()*RAND(9)),6)),
 IF(RAND(106)<0.05,NULL,ROUND(EXP(3+SQRT(-2*LN(1-RAND(10)))*COS(2*PI()*RAND(11))),6)),
 IF(RAND(107)<0.05,NULL,ROUND(100*RAND(12),6)),
 IF(RAND(108)<0.05,NULL,ROUND(-5+0.1*SQRT(-2*LN(1-RAND(13)))*COS(2*PI()*RAND(14)),6)),
 IF(RAND(201)<0.02,NULL,CONCAT('c10_',LPAD(FLOOR(POW(10,RAND(21)))-1,4,'0'))),
 IF(RAND(202)<0.02,NULL,CONCAT('c100_',LPAD(FLOOR(POW(100,RAND(22)))-1,4,'0'))),
 IF(RAND(203)<0.02,NULL,CONCAT('c1k_',LPAD(FLOOR(POW(1000,RAND(23)))-1,4,'0'))),
 IF(RAND(204)<0.02,NULL,CONCAT('c50k_',LPAD(FLOOR(POW(50000,RAND(24)))-1,5,'0'))),
 FROM_UNIXTIME(1704067200 + FLOOR(RAND(31)*31622400)),
 DATE('2000-01-01') + INTERVAL FLOOR(RAND(32)*15000) DAY,
 RAND(41) < 0.37
 FROM seq_1_to_{rows};
"""


def create_table(port: int, rows: int) -> str:
    """Creates `bench_mysql.t_<rows>` (kept when it has `rows` rows): the sample
    table's shape (id, 7 DOUBLE + 1 DECIMAL(14,6) with 5% NULLs, 4 utf8mb4 VARCHAR
    Zipf-like tokens with 2% NULLs, a TIMESTAMP over 2024, a DATE, a 0/1 label)."""
    table = f"t_{rows}"
    mysql = ["mysql", "-h", "127.0.0.1", "-P", str(port), "-u", "root", "-N", "-e"]
    found = subprocess.run(
        mysql + [f"SELECT COUNT(*) FROM {DATABASE}.{table}"],
        capture_output=True,
        text=True,
    )
    if found.returncode == 0 and found.stdout.strip() == str(rows):
        return table
    script = f"CREATE DATABASE IF NOT EXISTS {DATABASE};\nUSE {DATABASE};\n"
    subprocess.run(
        mysql[:-2],
        input=script + _LOAD.format(db=DATABASE, table=table, rows=rows),
        text=True,
        check=True,
    )
    return table


def _select(columns: list[str], table: str, rows: int) -> str:
    return f"SELECT {', '.join(columns)} FROM {table} WHERE id >= 1 AND id < {rows + 1}"


# --- conversions: one list of values per column -> one Arrow array -------------


def _arrays_from_python(columns) -> list:
    """Client's Python objects (int, float, Decimal, str, datetime, date)."""
    import calendar

    import pyarrow as pa

    arrays = []
    for kind, values in zip(KINDS, columns, strict=True):
        if kind == "int":
            arrays.append(pa.array(values, pa.int64()))
        elif kind == "float":
            arrays.append(
                pa.array(
                    [None if v is None else float(v) for v in values], pa.float64()
                )
            )
        elif kind == "str":
            arrays.append(pa.array(values, pa.string()))
        elif kind == "ts":  # naive datetime in the session zone (UTC)
            arrays.append(
                pa.array(
                    [
                        None if v is None else calendar.timegm(v.timetuple())
                        for v in values
                    ],
                    pa.int64(),
                )
            )
        else:  # date
            arrays.append(
                pa.array(
                    [None if v is None else v.toordinal() - 719163 for v in values],
                    pa.int64(),
                )
            )
    return arrays


def _arrays_from_sql(columns) -> list:
    """Server already converted: ints, floats, str (or bytes for strings)."""
    import pyarrow as pa

    types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    types.update(ts=pa.int64(), date=pa.int64())
    return [pa.array(v, types[k]) for k, v in zip(KINDS, columns, strict=True)]


def _arrays_from_text(columns) -> list:
    """The protocol's text (bytes or str) of every value, parsed by Arrow's casts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = []
    for kind, values in zip(KINDS, columns, strict=True):
        text = pa.array(values, pa.string())
        if kind == "int":
            arrays.append(pc.cast(text, pa.int64()))
        elif kind == "float":
            arrays.append(pc.cast(text, pa.float64()))
        elif kind == "str":
            arrays.append(text)
        elif kind == "ts":
            arrays.append(pc.cast(pc.cast(text, pa.timestamp("s")), pa.int64()))
        else:
            arrays.append(
                pc.cast(pc.cast(pc.cast(text, pa.date32()), pa.int32()), pa.int64())
            )
    return arrays


CONVERT = {
    "python": _arrays_from_python,
    "sql": _arrays_from_sql,
    "arrow": _arrays_from_text,
}
COLUMNS = {"python": PLAIN, "sql": IN_SQL, "arrow": PLAIN}


def _batches(chunks, convert):
    """Lists of row tuples (<= BATCH_ROWS each) -> RecordBatches."""
    import pyarrow as pa

    for rows in chunks:
        if rows:
            yield pa.RecordBatch.from_arrays(
                convert(list(zip(*rows, strict=True))), NAMES
            )


# --- clients: each yields lists of row tuples, streamed ---------------------------


def _cext(port, query, raw):
    import _mysql_connector  # before `ssl`: its wheel vendors a newer OpenSSL

    cnx = _mysql_connector.MySQL(buffered=False, raw=raw)
    cnx.connect(host="127.0.0.1", port=port, user="root", database=DATABASE)
    cnx.set_character_set("utf8mb4")
    for statement in SETUP:
        cnx.query(statement)
        cnx.consume_result()
    cnx.query(query)
    fetch = cnx.fetch_row
    while True:
        rows = []
        append = rows.append
        for _ in range(BATCH_ROWS):
            row = fetch()
            if row is None:
                break
            append(row)
        yield rows
        if len(rows) < BATCH_ROWS:
            break
    cnx.free_result()
    cnx.query("COMMIT")
    cnx.close()


def _connector_cursor(port, query, raw):
    import _mysql_connector  # noqa: F401  (load its OpenSSL first)
    import mysql.connector

    cnx = mysql.connector.connect(
        host="127.0.0.1",
        port=port,
        user="root",
        database=DATABASE,
        use_pure=False,
        charset="utf8mb4",
    )
    cur = cnx.cursor(raw=raw)
    for statement in SETUP:
        cur.execute(statement)
    cur.execute(query)
    while rows := cur.fetchmany(BATCH_ROWS):
        yield rows
    cnx.commit()
    cnx.close()


def _pymysql(port, query, raw):
    import pymysql
    import pymysql.cursors
    from pymysql.converters import conversions

    # raw: the encoders only, no decoders, so every value arrives as str.
    encoders = {k: v for k, v in conversions.items() if isinstance(k, type)}
    kwargs = {"conv": encoders} if raw else {}
    cnx = pymysql.connect(
        host="127.0.0.1",
        port=port,
        user="root",
        database=DATABASE,
        charset="utf8mb4",
        cursorclass=pymysql.cursors.SSCursor,
        **kwargs,
    )
    with cnx.cursor() as cur:
        for statement in SETUP:
            cur.execute(statement)
        cur.execute(query)
        while rows := cur.fetchmany(BATCH_ROWS):
            yield rows
    cnx.commit()
    cnx.close()


def _mariadb(port, query, raw):
    import mariadb

    cnx = mariadb.connect(host="127.0.0.1", port=port, user="root", database=DATABASE)
    cur = cnx.cursor(buffered=False)
    for statement in SETUP:
        cur.execute(statement)
    cur.execute(query)
    while rows := cur.fetchmany(BATCH_ROWS):
        yield rows
    cnx.commit()
    cnx.close()


CLIENTS = {
    "cext": _cext,
    "connector-cursor": _connector_cursor,
    "pymysql-sscursor": _pymysql,
    "mariadb-2.0rc2": _mariadb,
}
# (name, client, conversion); conversion "arrow" reads every value as raw text.
APPROACHES = [
    ("cext", "arrow"),
    ("cext", "sql"),
    ("cext", "python"),
    ("connector-cursor", "arrow"),
    ("connector-cursor", "sql"),
    ("pymysql-sscursor", "arrow"),
    ("pymysql-sscursor", "sql"),
    ("pymysql-sscursor", "python"),
    ("mariadb-2.0rc2", "sql"),
    ("connectorx", "arrow_stream"),
]


def _connectorx(port, table, rows):
    """connectorx: its own connections and types; pre_execution_query runs our
    transaction statements first. Types cast to ours afterwards."""
    import connectorx as cx
    import pyarrow as pa
    import pyarrow.compute as pc

    reader = cx.read_sql(
        f"mysql://root@127.0.0.1:{port}/{DATABASE}",
        _select(IN_SQL, table, rows),
        return_type="arrow_stream",
        pre_execution_query=list(SETUP),
        batch_size=BATCH_ROWS,
    )
    types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    types.update(ts=pa.int64(), date=pa.int64())
    for batch in reader:
        arrays = [pc.cast(batch.column(i), types[k]) for i, k in enumerate(KINDS)]
        yield pa.RecordBatch.from_arrays(arrays, NAMES)


def read(name: str, conversion: str, port: int, table: str, rows: int):
    """Yields the partition's RecordBatches by one approach."""
    if name == "connectorx":
        yield from _connectorx(port, table, rows)
        return
    query = _select(COLUMNS[conversion], table, rows)
    chunks = CLIENTS[name](port, query, raw=conversion == "arrow")
    yield from _batches(chunks, CONVERT[conversion])


def _digest(batch, state: list) -> None:
    import numpy as np

    for i, column in enumerate(batch.columns):
        h = state[i]
        h.update(np.packbits(column.is_null().to_numpy(zero_copy_only=False)).tobytes())
        if KINDS[i] == "str":
            h.update("\x00".join(column.fill_null("").to_pylist()).encode())
        else:
            h.update(column.fill_null(0).to_numpy().tobytes())


def task(name, conversion, port, table, rows, verify) -> dict:
    started = time.perf_counter()
    count, batches, states = 0, 0, [hashlib.sha1() for _ in NAMES]
    for batch in read(name, conversion, port, table, rows):
        count += batch.num_rows
        batches += 1
        if verify:
            _digest(batch, states)
    result = {
        "rows": count,
        "batches": batches,
        "seconds": time.perf_counter() - started,
    }
    if verify:
        result["digest"] = [h.hexdigest()[:12] for h in states]
    return result


def _run(argv: list[str]) -> tuple[float, float, str]:
    """(wall s, peak RSS MiB, stdout) of one command in a fresh process."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(argv[:6])} failed: {err.read()[-1500:]!r}")
        out.seek(0)
        return wall, usage.ru_maxrss / 1024, out.read().decode()


def _floor_argv(port: int, table: str, rows: int) -> list[str]:
    query = _select(PLAIN, f"{DATABASE}.{table}", rows)
    return [
        "sh",
        "-c",
        f'mysql --quick -h 127.0.0.1 -P {port} -u root -e "{query}" > /dev/null',
    ]


def _task_argv(name, conversion, port, table, rows, verify=False) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "bench.mysql_clients",
        "--task",
        f"{name}:{conversion}",
    ]
    argv += ["--port", str(port), "--table", table, "--rows", str(rows)]
    return argv + (["--verify"] if verify else [])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--port", type=int, default=3306)
    parser.add_argument("--only", default="", help="client names, comma-separated")
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--table", help=argparse.SUPPRESS)
    parser.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.task:
        name, conversion = args.task.split(":")
        print(
            json.dumps(
                task(name, conversion, args.port, args.table, args.rows, args.verify)
            )
        )
        return 0

    approaches = [
        a for a in APPROACHES if not args.only or a[0] in args.only.split(",")
    ]
    small, large = (
        create_table(args.port, args.rows),
        create_table(args.port, 2 * args.rows),
    )
    reference = json.loads(
        _run(
            _task_argv("pymysql-sscursor", "python", args.port, small, args.rows, True)
        )[2]
    )["digest"]
    results = {}
    for name, conversion in approaches:
        out = json.loads(
            _run(_task_argv(name, conversion, args.port, small, args.rows, True))[2]
        )
        wrong = [NAMES[i] for i, d in enumerate(out["digest"]) if d != reference[i]]
        results[name, conversion] = {"wrong": wrong, "pairs": []}
        print(
            f"{name}:{conversion} exact"
            if not wrong
            else f"{name}:{conversion} differs in {wrong}",
            flush=True,
        )
    for pair in range(args.pairs):
        for key in results:
            floor, _, _ = _run(_floor_argv(args.port, small, args.rows))
            wall, rss, out = _run(_task_argv(*key, args.port, small, args.rows))
            inner = json.loads(out)["seconds"]
            results[key]["pairs"].append((wall, floor, inner, rss))
            print(
                f"pair {pair} {key}: {wall:.2f} s / floor {floor:.2f} s, "
                f"inner {inner:.2f} s, {rss:.0f} MiB",
                flush=True,
            )
    for key in results:
        _, rss, _ = _run(_task_argv(*key, args.port, large, 2 * args.rows))
        results[key]["rss_large"] = rss

    print(
        "\n| client | conversion | exact | median ratio to floor (wall) "
        "| median wall s | median inner s | median floor s "
        f"| peak RSS MiB {args.rows:,} / {2 * args.rows:,} |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for (name, conversion), r in results.items():
        walls, floors, inners, rsss = zip(*r["pairs"], strict=True)
        ratio = statistics.median(w / f for w, f in zip(walls, floors, strict=True))
        exact = "yes" if not r["wrong"] else "no: " + ", ".join(r["wrong"])
        print(
            f"| {name} | {conversion} | {exact} | {ratio:.2f} | "
            f"{statistics.median(walls):.2f} | "
            f"{statistics.median(inners):.2f} | {statistics.median(floors):.2f} | "
            f"{max(rsss):.0f} / {r['rss_large']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
