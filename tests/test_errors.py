"""Bad input and hostile input: one clear line, a non-zero exit, nothing executed.

Each test here backs a row of the README's "When things go wrong" table.
"""

import os
import re
import signal
import subprocess
import sys
import time

import psycopg2
import pytest

from pipeline.__main__ import main
from pipeline.sources.postgres.beam import PartitionReader
from pipeline.sources.postgres.connection import Dsn
from pipeline.sources.postgres.plan import SourceSpec, plan_read
from tests.conftest import query, wait_for_staging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, [line for line in err if line.startswith("sql2tfrecord:")]


@pytest.fixture(scope="module")
def small_table(make_table):
    return make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, v double precision, y int)",
        "INSERT INTO {table} SELECT g, g, g % 2 FROM generate_series(1, 50) g",
    )


def _wait_for_copy(database_url, proc, marker, timeout=180):
    """Waits until the job's COPY mentioning `marker` runs on the server."""
    deadline = time.monotonic() + timeout
    while True:
        rows = query(
            database_url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
            "'sql2tfrecord' AND query ILIKE 'COPY%%' AND position(%s in query) > 0",
            (marker,),
        )
        if rows[0][0]:
            return
        assert proc.poll() is None, "the job ended before its COPY was seen"
        assert time.monotonic() < deadline, "no COPY within the deadline"
        time.sleep(0.02)  # a poll on the condition above, not a timed wait


def _checksum(database_url, table):
    return query(database_url, f'SELECT count(*), md5(string_agg(t::text, \',\' ORDER BY id)) FROM "{table}" t')


def test_cli_usage_error_is_one_line_exit_2_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "--table", "t", "--num_partitions", "0",
         "--bogus_flag", "1"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sql2tfrecord: error:")
    for fragment in ("--bogus_flag", "--num_partitions", "--db_url", "--label", "--output_dir"):
        assert fragment in lines[0]
    assert "Traceback" not in proc.stderr


def test_unreachable_host_names_host_and_port(capsys, tmp_path):
    code, lines = _run(capsys, "--db_url", "postgresql://u:hunter2@127.0.0.1:1/db",
                       "--table", "t", "--label", "y", "--output_dir", str(tmp_path / "o"))
    assert code == 1 and len(lines) == 1
    assert "127.0.0.1" in lines[0] and "1" in lines[0] and "hunter2" not in lines[0]
    assert not (tmp_path / "o").exists()


def test_missing_database_is_named(capsys, database_url, tmp_path):
    base = database_url.rsplit("/", 1)[0]
    code, lines = _run(capsys, "--db_url", f"{base}/no_such_db_s2t", "--table", "t",
                       "--label", "y", "--output_dir", str(tmp_path / "o"))
    assert code == 1 and 'database "no_such_db_s2t" does not exist' in lines[0]


def test_missing_table_and_label_are_named(capsys, database_url, small_table, tmp_path):
    code, lines = _run(capsys, "--db_url", database_url, "--table", "nope_s2t",
                       "--label", "y", "--output_dir", str(tmp_path / "o"))
    assert code == 1 and "'nope_s2t' does not exist" in lines[0]
    code, lines = _run(capsys, "--db_url", database_url, "--table", small_table,
                       "--label", "nope", "--output_dir", str(tmp_path / "o"))
    assert code == 1 and "--label: column 'nope' not found" in lines[0]


def test_an_array_split_key_is_refused_before_the_run(
    capsys, database_url, make_table, tmp_path
):
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, tags int[], y int)",
        "INSERT INTO {table} SELECT g, ARRAY[g % 5], g % 2 "
        "FROM generate_series(1, 50) g",
    )
    code, lines = _run(capsys, "--db_url", database_url, "--table", table,
                       "--split_key", "tags", "--label", "y",
                       "--output_dir", str(tmp_path / "o"))
    assert code == 1 and lines == [
        "sql2tfrecord: error: --split_key: column 'tags' has type integer[]; "
        "name a column of scalar values"
    ]
    assert not (tmp_path / "o").exists()


def test_permission_denied_on_table(capsys, database_url, small_table, tmp_path):
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS s2t_nobody")
        cur.execute("CREATE ROLE s2t_nobody LOGIN")
    conn.close()
    url = database_url.replace("://postgres@", "://s2t_nobody@")
    if url == database_url:
        pytest.skip("needs a URL with the postgres user to swap roles")
    code, lines = _run(capsys, "--db_url", url, "--table", small_table, "--label", "y",
                       "--output_dir", str(tmp_path / "o"))
    assert code == 1 and "permission denied" in lines[0] and small_table in lines[0]


@pytest.mark.parametrize(
    "statement",
    [
        'DELETE FROM "{t}" RETURNING *',
        'SELECT 1 AS id; DROP TABLE "{t}"',
        'SELECT s2t_evil() AS id, 1 AS y',
        'WITH gone AS (DELETE FROM "{t}" RETURNING id) SELECT id, 1 AS y FROM gone',
    ],
)
def test_non_read_only_query_is_refused_and_database_unchanged(
    capsys, database_url, small_table, tmp_path, statement
):
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            f'CREATE OR REPLACE FUNCTION s2t_evil() RETURNS int LANGUAGE sql AS '
            f'$$ DELETE FROM "{small_table}"; SELECT 1 $$'
        )
    conn.close()
    before = _checksum(database_url, small_table)
    code, lines = _run(capsys, "--db_url", database_url, "--query",
                       statement.replace("{t}", small_table), "--split_key", "id",
                       "--label", "y", "--output_dir", str(tmp_path / "o"))
    # Refused by the grammar before anything runs (2), or stopped by the
    # read-only transaction when a function call hides the write (1).
    assert code == (1 if "s2t_evil" in statement else 2) and len(lines) == 1
    assert _checksum(database_url, small_table) == before
    assert not (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.parametrize(
    "table_name, column_name",
    [
        ('We"ird Tåble', 'Col "A"'),
        ("MixedCase", "CamelColumn"),
        ("x; DROP TABLE victim_s2t; --", "y'); DROP TABLE victim_s2t; --"),
        ("dotted.name", "naïve column"),
    ],
)
def test_hostile_identifiers_are_read_correctly_never_executed(database_url, table_name, column_name):
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    quoted_t = '"' + table_name.replace('"', '""') + '"'
    quoted_c = '"' + column_name.replace('"', '""') + '"'
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS victim_s2t (id int)")
        cur.execute(f"DROP TABLE IF EXISTS {quoted_t}")
        cur.execute(f"CREATE TABLE {quoted_t} (id int PRIMARY KEY, {quoted_c} text)")
        cur.execute(f"INSERT INTO {quoted_t} SELECT g, 'v' || g FROM generate_series(1, 10) g")
    try:
        source = SourceSpec(Dsn(database_url), table=table_name)
        plan = plan_read(source, ["id", column_name], num_partitions=2)
        reader = PartitionReader(source, plan, None)
        rows = [
            (i, v)
            for p in plan.partitions
            for b in reader.read(p)
            for i, v in zip(b.column(0).to_pylist(), b.column(1).to_pylist())
        ]
        reader.close()
        assert sorted(rows) == [(g, f"v{g}") for g in range(1, 11)]
        assert query(database_url, "SELECT to_regclass('victim_s2t') IS NOT NULL") == [(True,)]
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {quoted_t}")
        conn.close()


def test_unsupported_column_type_fails_before_the_pipeline(capsys, database_url, make_table, tmp_path):
    table = make_table("CREATE TABLE {table} (id int PRIMARY KEY, doc jsonb, y int)")
    code, lines = _run(capsys, "--db_url", database_url, "--table", table, "--label", "y",
                       "--output_dir", str(tmp_path / "o"))
    assert code == 1 and '"doc" has type jsonb' in lines[0] and '"doc"::text' in lines[0]
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")


def test_unwritable_output_dir_is_one_line(capsys, database_url, small_table, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code, lines = _run(capsys, "--db_url", database_url, "--table", small_table,
                       "--label", "y", "--output_dir", str(blocker / "out"))
    assert code == 1 and len(lines) == 1
    assert "--output_dir" in lines[0] and "not writable" in lines[0]


def test_killed_mid_run_leaves_no_manifest_and_a_rerun_is_exact(database_url, make_table, tmp_path):
    import signal

    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, x float8, c text, y int NOT NULL)",
        "INSERT INTO {table} SELECT g, g % 1000, 'c' || (g % 50), g % 2 "
        "FROM generate_series(1, 200000) g",
    )
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "pipeline", "--db_url", database_url, "--table", table,
            "--label", "y", "--output_dir", str(out)]
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    staging = wait_for_staging(out, proc)
    # Well inside the run: once the job's COPY of this table is on the server.
    _wait_for_copy(database_url, proc, table)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # Nothing was published: the run built beside the target, which never appeared.
    assert not out.exists() and staging.exists()
    # A rerun needs no --overwrite, removes the killed run's staging dir, is exact.
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(s["rows"] for s in manifest["splits"].values()) == 200000
    assert [n for n in os.listdir(out) if n.startswith(".")] == [".sql2tfrecord"]
    assert os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("thread", [False, True])
def test_cli_exit_runs_atexit_handlers_flushes_and_keeps_the_code(thread):
    # `python -m pipeline` ends through exit_now (no interpreter teardown). A
    # running non-daemon thread is waited for: it is released only by the
    # `finally` that a normal exit runs and os._exit would skip.
    program = (
        "import atexit, sys, threading\n"
        "from pipeline.__main__ import exit_now\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "started, release = threading.Event(), threading.Event()\n"
        "def work():\n"
        "    started.set(); release.wait(); print('thread finished', end=' ')\n"
        f"if {thread}: threading.Thread(target=work).start(); started.wait()\n"
        "print('buffered', end=' '); sys.stderr.write('err-buffered')\n"
        "try:\n"
        "    exit_now(3)\n"
        "finally:\n"
        "    release.set()\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 3
    expected = "buffered thread finished handler ran\n" if thread else (
        "buffered handler ran\n"
    )
    assert proc.stdout == expected and proc.stderr == "err-buffered"


# --- One line per failure: inside the job, on signals, bad modules, bad snapshots.


def _job_env():
    return {**os.environ, "PYTHONPATH": ROOT}


def _with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1) if "@" in rest else ("postgres", rest)
    return f"{scheme}://{user.split(':')[0]}:{password}@{host}"


def test_failure_inside_the_job_is_one_line_without_tracebacks(database_url, small_table, tmp_path):
    # A cast error the database raises mid-COPY, in a partition DoFn of the job:
    # before, 66 lines (Beam's ERROR log with three chained tracebacks, the
    # message again with " [while running 'Read/ReadPartition']").
    url = _with_password(database_url, "Pw7Secret9x")  # trust auth: any password
    marker = "oops_" + os.urandom(4).hex()
    query_text = (
        f"SELECT id, v,\n  (CASE WHEN id = 40 THEN '{marker}' ELSE '1' END)::int AS bad,"
        f"\n  y FROM \"{small_table}\""
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "--db_url", url, "--query", query_text,
         "--split_key", "id", "--label", "y", "--output_dir", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=ROOT, env=_job_env(), timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("sql2tfrecord:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    (line,) = lines
    assert line.startswith("sql2tfrecord: error: partition ")
    assert f'invalid input syntax for type integer: "{marker}"' in line
    assert small_table in line  # the relation read (here the query text, one line)
    assert proc.stderr.count("invalid input syntax") == 1, proc.stderr[-3000:]  # once
    for noise in ("Traceback", "while running", "Pw7Secret9x"):
        assert noise not in proc.stderr, noise
    assert not re.search(r"^\S+ \S+ ERROR ", proc.stderr, re.M)  # no ERROR log records
    assert not (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_ctrl_c_while_reading_exits_130_with_one_line(database_url, tmp_path, mode):
    # Ctrl-C signals the whole process group: the launcher and, with
    # multi_processing, its worker processes (which then printed tracebacks).
    marker = "s2t_sigint_" + os.urandom(4).hex()
    extra = [] if mode == "in_memory" else [
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    # The COPY sleeps on the server: the job is reading when the signal lands,
    # its main thread waiting on the COPY's producer thread.
    query_text = f"SELECT 1 AS id, 1 AS y, '{marker}' AS m FROM pg_sleep(60)"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--db_url", database_url, "--query",
         query_text, "--split_key", "id", "--label", "y", "--output_dir",
         str(tmp_path / "o"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=_job_env(), start_new_session=True,
    )
    try:
        _wait_for_copy(database_url, proc, marker)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        query(database_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
              "WHERE position(%s in query) > 0 AND pid <> pg_backend_pid()", (marker,))
    assert proc.returncode == 130, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("sql2tfrecord:")]
    assert lines == ["sql2tfrecord: interrupted (SIGINT); nothing was published (a previous output is unchanged)"]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert not (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_tensorflow_import_exits_with_one_line(tmp_path, signum, code):
    # A thread sends the signal once TensorFlow's import has begun (the module is
    # in sys.modules from the start of its import, which takes seconds).
    program = (
        "import os, sys, threading, time\n"
        "import pipeline.job\n"
        "def prepare(*args, **kwargs):\n"
        "    def send():\n"
        "        while 'tensorflow' not in sys.modules:\n"
        "            time.sleep(0.001)\n"
        f"        os.kill(os.getpid(), {int(signum)})\n"
        "    threading.Thread(target=send, daemon=True).start()\n"
        "    import tensorflow_transform\n"
        "    import tensorflow\n"
        "    tensorflow.function(lambda x: x + 1)(tensorflow.constant(1))\n"
        "    threading.Event().wait(60)\n"
        "    raise SystemExit('the signal never came')\n"
        "pipeline.job.prepare_job = prepare\n"
        "from pipeline.__main__ import main, exit_now\n"
        f"exit_now(main(['--input_parquet', {str(tmp_path)!r}, '--label', 'y',"
        f" '--output_dir', {str(tmp_path / 'o')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True,
                          text=True, cwd=ROOT, env=_job_env(), timeout=180)
    assert proc.returncode == code, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("sql2tfrecord:")]
    name = signal.Signals(signum).name
    assert lines == [f"sql2tfrecord: interrupted ({name}); nothing was published (a previous output is unchanged)"]
    assert "Traceback" not in proc.stderr


BAD_MODULES = [
    ("syntax", "def preprocessing_fn(inputs)\n    return inputs\n",
     "importing {path} failed (line 1): SyntaxError"),
    ("no_fn", "PREPROCESSING = 1\n", "{path} defines no preprocessing_fn"),
    ("import_raises", "x = 1\nimport no_such_module_s2t\n",
     "importing {path} failed (line 2): ModuleNotFoundError"),
    ("fn_raises", "def preprocessing_fn(inputs):\n    return {'y': inputs['nope_s2t']}\n",
     "preprocessing_fn in {path} raised (line 2): KeyError: 'nope_s2t'"),
    ("not_a_dict", "def preprocessing_fn(inputs):\n    return [inputs['v']]\n",
     "preprocessing_fn in {path} must return a dict of tensors, returned list"),
    ("drops_label", "def preprocessing_fn(inputs):\n    return {'v2': inputs['v']}\n",
     "preprocessing_fn in {path} returns no 'y' (the --label); it returns ['v2']"),
]


@pytest.mark.parametrize("name, source, expected", BAD_MODULES, ids=[m[0] for m in BAD_MODULES])
def test_bad_preprocessing_module_is_one_line_naming_the_file(
    capsys, database_url, small_table, tmp_path, name, source, expected
):
    path = tmp_path / f"module_{name}.py"
    path.write_text(source)
    code, lines = _run(capsys, "--db_url", database_url, "--table", small_table,
                       "--label", "y", "--preprocessing_module", str(path),
                       "--output_dir", str(tmp_path / "o"))
    assert code == 1 and len(lines) == 1
    prefix = "sql2tfrecord: error: --preprocessing_module: "
    assert lines[0].startswith(prefix + expected.format(path=path)), lines[0]
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_bad_preprocessing_module_from_the_command_line_has_no_traceback(
    database_url, small_table, tmp_path
):
    path = tmp_path / "raises.py"
    path.write_text("def preprocessing_fn(inputs):\n    raise ValueError('no_s2t')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "--db_url", database_url, "--table",
         small_table, "--label", "y", "--preprocessing_module", str(path),
         "--output_dir", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=ROOT, env=_job_env(), timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.count("no_s2t") == 1
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("sql2tfrecord:")]
    assert str(path) in line and "ValueError: no_s2t" in line


def _snapshot(directory, rows=(30, 20)):
    """A --raw_parquet_dir snapshot made by hand: two shards and _snapshot.json."""
    import dataclasses
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.types import Column, arrow_type

    columns = [Column("id", "int4", "integer", not_null=True),
               Column("v", "float8", "double precision"), Column("y", "int4", "integer")]
    schema = pa.schema([pa.field(c.name, arrow_type(c)) for c in columns])
    directory.mkdir()
    start = 0
    for i, n in enumerate(rows):
        ids = list(range(start, start + n))
        start += n
        table = pa.table({"id": ids, "v": [float(x) for x in ids], "y": [x % 2 for x in ids]},
                         schema=schema)
        pq.write_table(table, directory / f"part-{i:05d}-of-{len(rows):05d}.parquet")
    info = {"columns": [dataclasses.asdict(c) for c in columns], "split_key": "id",
            "primary_key": ["id"], "source": {}, "snapshot_id": None, "rows": sum(rows),
            "created_at": "2026-01-01T00:00:00Z"}
    (directory / "_snapshot.json").write_text(json.dumps(info))
    return directory


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _retype(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    table = table.set_column(1, "v", pa.array([str(x) for x in table["v"].to_pylist()]))
    pq.write_table(table, path)


def _set_rows(path):
    import json

    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "rows": info["rows"] + 1}))


BAD_SNAPSHOTS = [
    ("no_info", "_snapshot.json", lambda p: p.unlink(), "has no _snapshot.json"),
    ("bad_info", "_snapshot.json", lambda p: p.write_text("{not json"),
     "is not a snapshot description"),
    ("truncated", "part-00001-of-00002.parquet", _truncate, "is unreadable (truncated"),
    ("missing_shard", "part-00001-of-00002.parquet", lambda p: p.unlink(), "is missing"),
    ("retyped", "part-00000-of-00002.parquet", _retype,
     "column 'v' is string, the snapshot says double"),
    ("row_count", "_snapshot.json", _set_rows, "hold 50 rows, _snapshot.json says 51"),
]


@pytest.mark.parametrize("name, target, damage, expected", BAD_SNAPSHOTS,
                         ids=[s[0] for s in BAD_SNAPSHOTS])
def test_incomplete_input_parquet_is_one_line_naming_the_file(
    capsys, tmp_path, name, target, damage, expected
):
    from pipeline.sources.parquet import read_snapshot_info

    good = _snapshot(tmp_path / "good")
    info, columns = read_snapshot_info(str(good))  # the undamaged one passes
    assert info["rows"] == 50 and [c.name for c in columns] == ["id", "v", "y"]
    snapshot = _snapshot(tmp_path / "snap")
    damage(snapshot / target)
    code, lines = _run(capsys, "--input_parquet", str(snapshot), "--label", "y",
                       "--output_dir", str(tmp_path / "o"))
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("sql2tfrecord: error: --input_parquet: ")
    assert expected in lines[0] and str(snapshot) in lines[0]
    if name not in ("no_info", "row_count"):
        assert target in lines[0]
    assert "Traceback" not in capsys.readouterr().err


def test_console_drops_foreign_tracebacks_keeps_warnings_and_our_records():
    import logging

    from pipeline.console import _NoForeignTracebacks, one_line

    def record(name, level, exc=False, msg="m"):
        exc_info = None
        if exc:
            try:
                raise ValueError("x")
            except ValueError:
                exc_info = sys.exc_info()
        return logging.LogRecord(name, level, __file__, 1, msg, None, exc_info)

    keep = _NoForeignTracebacks().filter
    assert not keep(record("apache_beam.runners.common", logging.ERROR, exc=True))
    assert not keep(record("apache_beam.runners.worker.sdk_worker", logging.ERROR,
                           msg="Error processing instruction 7. Original traceback is\n"
                               "Traceback (most recent call last):\n  ..."))
    assert keep(record("apache_beam.io", logging.WARNING, exc=True))  # warnings stay
    assert keep(record("tensorflow", logging.ERROR))  # an error without traceback
    assert keep(record("pipeline.job", logging.ERROR, exc=True))  # ours
    assert one_line("partition p0 of (SELECT a,\n  b\tFROM t) failed [while running "
                    "'Read/ReadPartition']") == "partition p0 of (SELECT a, b FROM t) failed"


def test_quiet_worker_plugin_mutes_the_sdk_harness_traceback_print():
    program = (
        "import sys\n"
        "import pipeline.quiet_worker\n"
        "from apache_beam.runners.worker import sdk_worker\n"
        "sdk_worker.print('Traceback (most recent call last): ...', file=sys.stderr)\n"
        "sdk_worker.print('to stdout')\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True,
                          text=True, cwd=ROOT, env=_job_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "to stdout\n" and "Traceback" not in proc.stderr


def test_console_hides_tensorflows_known_harmless_warnings_only():
    import logging

    from pipeline.console import _NoKnownNoise

    def record(name, message, level=logging.WARNING):
        return logging.LogRecord(name, level, __file__, 1, message, None, None)

    quiet = _NoKnownNoise()
    for name, message in [
        ("absl", "Tensorflow Transform is running in tf.compat.v1 mode. This could"),
        ("tensorflow", "Issue encountered when serializing tft_mapper_use.\nType is"),
        ("tensorflow", 'Expected binary or unicode string, got type_url: "type.goo'),
        ("tensorflow", "From x.py:225: build_tensor_info ...\nInstructions for updating:"),
    ]:
        assert not quiet.filter(record(name, message)), message
    # Anything else stays, and nothing of ours or Beam's is touched.
    assert quiet.filter(record("tensorflow", "Out of memory: tried to allocate 8 GB"))
    assert quiet.filter(record("pipeline.job", "Issue encountered when serializing x"))
    assert quiet.filter(record("apache_beam", "Instructions for updating: x"))


def test_a_missing_table_is_the_only_line_on_stderr(database_url, tmp_path):
    """TensorFlow's C++ start-up notices (absl, oneDNN) do not precede the error."""
    missing = "no_such_table_" + os.urandom(3).hex()
    argv = [sys.executable, "-m", "pipeline", "--db_url", database_url, "--table",
            missing, "--label", "y", "--output_dir", str(tmp_path / "o")]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT,
                          env=_job_env(), timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"sql2tfrecord: error: --table: table '{missing}' does not exist "
        "(or is not visible)"
    ], proc.stderr[-3000:]
    verbose = subprocess.run([*argv, "--verbose"], capture_output=True, text=True,
                             cwd=ROOT, env=_job_env(), timeout=300)
    assert verbose.returncode == 1
    assert "absl::InitializeLog" in verbose.stderr  # --verbose still shows them
