"""Bad input and hostile input: one clear line, a non-zero exit, nothing executed.

Each test here backs a row of the README's "When things go wrong" table.
"""

import os
import subprocess
import sys

import psycopg2
import pytest

from pipeline.__main__ import main
from pipeline.connection import Dsn
from pipeline.postgres_io import PartitionReader
from pipeline.source import SourceSpec, plan_read
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
    import time

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
    time.sleep(2.0)  # well inside the run: reading, analyzing or writing
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
    # `python -m pipeline` ends through exit_now (no interpreter teardown).
    program = (
        "import atexit, sys, threading, time\n"
        "from pipeline.__main__ import exit_now\n"
        "atexit.register(lambda: print('handler ran'))\n"
        f"if {thread}: threading.Thread(target=time.sleep, args=(0.5,)).start()\n"
        "print('buffered', end=''); sys.stderr.write('err-buffered')\n"
        "exit_now(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == "bufferedhandler ran\n" and proc.stderr == "err-buffered"
