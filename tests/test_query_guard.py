"""`--query` is one read-only statement, by PostgreSQL's grammar, before anything runs.

Pure tests of `check_query` with hostile variants, then the real read path (a
query ending in a comment), then the command line as a superuser and as a plain
role against a real server: every attack is refused with exit 2 and one line, and
the attacked tables are unchanged (checksums compared).
"""

import uuid

import psycopg2
import pytest

from pipeline.__main__ import main
from pipeline.sources.postgres.connection import DatabaseError, Dsn
from pipeline.sources.postgres.partition_reader import PartitionReader
from pipeline.sources.postgres.plan import SourceSpec, plan_read
from pipeline.sources.postgres.query_guard import QueryRefusedError, check_query
from tests.conftest import query


@pytest.mark.parametrize(
    ("text", "statement", "relations"),
    [
        ("SELECT 1", "SELECT 1", ()),
        ("SELECT 1;", "SELECT 1", ()),
        ("SELECT 1 ; -- done", "SELECT 1", ()),
        ("SELECT a FROM t -- trailing comment", "SELECT a FROM t -- trailing comment",
         ((None, "t"),)),
        ("-- leading\nSELECT 1 /* c */", "SELECT 1 /* c */", ()),
        ("SELECT ';' AS s, $$;$$ AS d", "SELECT ';' AS s, $$;$$ AS d", ()),
        ("TABLE s.t", "TABLE s.t", (("s", "t"),)),
        ("VALUES (1), (2)", "VALUES (1), (2)", ()),
        ("SELECT lower(nextval) AS set_config, coalesce(x, 0) FROM dblink",
         "SELECT lower(nextval) AS set_config, coalesce(x, 0) FROM dblink",
         ((None, "dblink"),)),
        ('WITH x AS (SELECT * FROM a.b) SELECT * FROM x JOIN "Q r" ON true',
         'WITH x AS (SELECT * FROM a.b) SELECT * FROM x JOIN "Q r" ON true',
         ((None, "Q r"), ("a", "b"))),
        ("SELECT * FROM t WHERE id IN (SELECT id FROM u) UNION SELECT * FROM t",
         "SELECT * FROM t WHERE id IN (SELECT id FROM u) UNION SELECT * FROM t",
         ((None, "t"), (None, "u"))),
    ],
)
def test_check_query_accepts_one_read_only_statement(text, statement, relations):
    checked = check_query(text)
    assert checked.statement == statement
    assert sorted(checked.relations, key=str) == sorted(relations, key=str)
    assert checked.subquery == f"(\n{statement}\n)"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("SELECT 1; DELETE FROM t", "2 statements (SELECT, DELETE)"),
        ("SELECT 1 AS id) q; COMMIT; BEGIN READ WRITE; DELETE FROM t; SELECT (1",
         "not valid SQL"),
        ("SELECT 1; COMMIT; BEGIN READ WRITE; DELETE FROM t; SELECT 1",
         "5 statements"),
        ("SELECT 1; DROP TABLE t", "2 statements (SELECT, DROP)"),
        ("DELETE FROM t", "is DELETE"),
        ("DELETE FROM t RETURNING *", "is DELETE"),
        ("INSERT INTO t VALUES (1)", "is INSERT"),
        ("UPDATE t SET a = 1", "is UPDATE"),
        ("COMMIT", "is transaction control"),
        ("BEGIN READ WRITE", "is transaction control"),
        ("SET default_transaction_read_only = off", "is SET"),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "is SET"),
        ("COPY t TO STDOUT", "is COPY"),
        ("DO $$ BEGIN DELETE FROM t; END $$", "is DO"),
        ("CALL p()", "is CALL"),
        ("EXPLAIN ANALYZE DELETE FROM t", "is EXPLAIN"),
        ("TRUNCATE t", "is TRUNCATE"),
        ("CREATE TABLE x AS SELECT 1", "is CREATE TABLE AS"),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
         "data-modifying WITH (DELETE)"),
        ("SELECT * FROM (WITH d AS (UPDATE t SET a = 1 RETURNING *) "
         "SELECT * FROM d) s", "data-modifying WITH (UPDATE)"),
        ("WITH a AS (SELECT 1), b AS (INSERT INTO t VALUES (1) RETURNING *) "
         "SELECT * FROM a", "data-modifying WITH (INSERT)"),
        ("SELECT * INTO new_t FROM t", "SELECT INTO"),
        ("SELECT * FROM t FOR UPDATE", "row-locking clause"),
        ("SELECT * FROM t WHERE id IN (SELECT id FROM u FOR SHARE)",
         "row-locking clause"),
        ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
         "pg_terminate_backend(), which signals other sessions"),
        ("SELECT * FROM t WHERE id IN (SELECT pg_catalog.PG_CANCEL_BACKEND(1))",
         "pg_cancel_backend(), which signals"),
        ("WITH r AS (SELECT pg_reload_conf()) SELECT * FROM t, r",
         "pg_reload_conf(), which acts on the server"),
        ("SELECT * FROM dblink('dbname=x', 'DELETE FROM t RETURNING 1') AS d(a int)",
         "dblink(), which runs statements over another connection"),
        ("SELECT t.*, dblink_exec('dbname=x', 'DROP TABLE t') FROM t",
         "dblink_exec()"),
        ("SELECT lo_export(1, '/tmp/x') FROM t", "lo_export(), which reads or writes"),
        ("SELECT set_config('statement_timeout', '0', false), * FROM t",
         "set_config(), which changes session settings"),
        ("SELECT nextval('s'), * FROM t", "nextval(), which advances a sequence"),
        ("SELECT * FROM t ORDER BY pg_notify('c', 'x')", "pg_notify()"),
        ("", "no statement"),
        (" ;; -- nothing", "no statement"),
        ("SELECT 1 /* unterminated", "not valid SQL"),
    ],
)
def test_check_query_refuses_everything_else_in_one_line(text, says):
    with pytest.raises(QueryRefusedError) as caught:
        check_query(text)
    message = str(caught.value)
    assert says in message and "\n" not in message
    if "not valid SQL" not in says:
        assert "exactly one read-only SELECT, VALUES or TABLE" in message


def test_query_ending_in_a_comment_is_read(database_url, make_table):
    """Wrapped as a subquery, a trailing `-- comment` used to swallow the `)`."""
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, v text)",
        "INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, 20) g",
    )
    text = f'SELECT id, v FROM "{table}" WHERE id % 2 = 0;  -- even ids only'
    source = SourceSpec(Dsn(database_url), query=text)
    plan = plan_read(source, ["id", "v"])
    reader = PartitionReader(source, plan, None)
    try:
        rows = sorted(
            (i, v)
            for p in plan.partitions
            for b in reader.read(p)
            for i, v in zip(b.column(0).to_pylist(), b.column(1).to_pylist(),
                            strict=True)
        )
    finally:
        reader.close()
    assert rows == sorted(query(database_url, f'SELECT id, v FROM "{table}" WHERE mod(id, 2) = 0'))


def test_query_with_percent_signs_is_partitioned_and_read(database_url, make_table):
    """`%` in a --query is SQL (modulo, LIKE), never a parameter placeholder."""
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, v text)",
        "INSERT INTO {table} SELECT g, 'v%' || g FROM generate_series(1, 400) g",
    )
    text = f"SELECT id, v FROM \"{table}\" WHERE id % 3 <> 0 AND v LIKE 'v\\%%'"
    source = SourceSpec(Dsn(database_url), query=text)
    plan = plan_read(source, ["id", "v"], num_partitions=4, partition_column="id")
    assert len(plan.partitions) == 5  # 4 key ranges + the NULL partition
    reader = PartitionReader(source, plan, None)
    try:
        ids = sorted(i for p in plan.partitions for b in reader.read(p)
                     for i in b.column(0).to_pylist())
    finally:
        reader.close()
    assert ids == [i for i in range(1, 401) if i % 3 != 0]


def _checksum(url, table):
    return query(url, f'SELECT count(*), md5(string_agg(t::text, \',\' ORDER BY id)) '
                      f'FROM "{table}" t')


ATTACKS = [
    'SELECT 1 AS id, 1 AS y; DELETE FROM "{t}"',
    'SELECT 1 AS id, 1 AS y; COMMIT; BEGIN READ WRITE; DELETE FROM "{t}"; SELECT 1',
    'SELECT 1 AS id, 1 AS y; SET default_transaction_read_only = off; DROP TABLE "{t}"',
    'DELETE FROM "{t}" RETURNING id, 1 AS y',
    'WITH gone AS (DELETE FROM "{t}" RETURNING id) SELECT id, 1 AS y FROM gone',
    'SELECT id, 1 AS y FROM "{t}" FOR UPDATE',
    'SELECT 1 AS id, 1 AS y; DO $$ BEGIN EXECUTE \'DROP TABLE "{t}"\'; END $$',
    "SELECT id, y FROM \"{t}\" WHERE pg_terminate_backend(pg_backend_pid())",
]


@pytest.fixture(scope="module")
def plain_role(database_url):
    """A non-superuser role owning its own table (it may DROP it if let through)."""
    role = f"s2t_role_{uuid.uuid4().hex[:8]}"
    table = f"owned_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN")
        cur.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}")
    user_url = psycopg2.extensions.make_dsn(database_url, user=role)
    conn = psycopg2.connect(user_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE TABLE "{table}" (id int PRIMARY KEY, y int)')
        cur.execute(f'INSERT INTO "{table}" SELECT g, g % 2 FROM generate_series(1, 30) g')
    conn.close()
    yield user_url, table
    with admin.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        cur.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
        cur.execute(f"DROP ROLE {role}")
    admin.close()


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("who", ["superuser", "plain role"])
def test_hostile_query_is_refused_before_running_and_tables_unchanged(
    capsys, database_url, make_table, plain_role, tmp_path, attack, who
):
    if who == "superuser":
        url = database_url
        table = make_table(
            "CREATE TABLE {table} (id int PRIMARY KEY, y int)",
            "INSERT INTO {table} SELECT g, g % 2 FROM generate_series(1, 30) g",
        )
    else:
        url, table = plain_role
    before = _checksum(database_url, table)
    code = main(["--db_url", url, "--query", attack.replace("{t}", table),
                 "--split_key", "id", "--label", "y",
                 "--output_dir", str(tmp_path / "o")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("sql2tfrecord: error: `--query`")
    assert _checksum(database_url, table) == before
    assert not (tmp_path / "o").exists()


def test_refusal_sends_nothing_to_any_server(capsys, tmp_path):
    """The decision is the parser's: a closed port is never even tried."""
    code = main(["--db_url", "postgresql://u@127.0.0.1:1/db", "--query",
                 "SELECT 1 AS id; DELETE FROM t", "--split_key", "id",
                 "--label", "id", "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "2 statements" in err and "connect" not in err


@pytest.mark.parametrize("select", ["id, id", "id, v AS id", 't.*, t.id'])
def test_query_with_a_column_name_twice_is_refused_naming_it(
    database_url, make_table, select
):
    table = make_table("CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    source = SourceSpec(Dsn(database_url), query=f'SELECT {select} FROM "{table}" t')
    with pytest.raises(DatabaseError, match="returns column 'id' more than once"):
        plan_read(source, None)
