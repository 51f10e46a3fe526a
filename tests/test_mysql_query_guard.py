"""The MySQL `--query` rule: one plain read-only SELECT (pure, then on the server)."""

from __future__ import annotations

import pytest

from pipeline.sources import DatabaseError
from pipeline.sources.mysql.query_guard import QueryRefusedError, check_query

ACCEPTED = {
    "SELECT 1": "SELECT 1",
    "select 'a;b' as x;": "select 'a;b' as x",
    "SELECT `x;y` FROM t; -- trailing; comment": "SELECT `x;y` FROM t",
    'SELECT "it\\"s; DROP TABLE t" AS s': 'SELECT "it\\"s; DROP TABLE t" AS s',
    "SELECT 'it''s; into outfile' AS s  ;  ": "SELECT 'it''s; into outfile' AS s",
    "WITH a AS (SELECT 1 AS x) SELECT x FROM a": "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
    "(SELECT 1)": "(SELECT 1)",
    "SELECT 1 # a comment ; DELETE\n": "SELECT 1",
    "/* leading ; comment */ SELECT `update`, `into` FROM t": (
        "/* leading ; comment */ SELECT `update`, `into` FROM t"
    ),
    "SELECT CAST(x AS CHAR CHARACTER SET utf8mb4) FROM t": (
        "SELECT CAST(x AS CHAR CHARACTER SET utf8mb4) FROM t"
    ),
    "SELECT get_lock, `nextval`('x'), 'load_file(1)' FROM `get_lock`": (
        "SELECT get_lock, `nextval`('x'), 'load_file(1)' FROM `get_lock`"
    ),
    "SELECT PREVIOUS VALUE FOR s": "SELECT PREVIOUS VALUE FOR s",
}

REFUSED = {
    "SELECT 1; DROP TABLE t": "one statement",
    "SELECT 1;;SELECT 2": "one statement",
    "SELECT 'a' ; SELECT 'b;'": "one statement",
    "SELECT * FROM t FOR UPDATE": "UPDATE",
    "SELECT * FROM t FOR SHARE": "SHARE",
    "SELECT * FROM t LOCK IN SHARE MODE": "LOCK",
    "SELECT 1 INTO @x": "INTO",
    "SELECT 1 INTO OUTFILE '/tmp/x'": "INTO",
    "SELECT * FROM t INTO DUMPFILE '/tmp/y'": "INTO",
    "/*!50000 DROP TABLE t*/ SELECT 1": "executable comment",
    "SELECT /*M! 1; */ 1": "executable comment",
    "SELECT /*+ MAX_EXECUTION_TIME(1) */ 1": "executable comment",
    "UPDATE t SET a = 1": "SELECT",
    "WITH a AS (SELECT 1) DELETE FROM t": "DELETE",
    "SELECT 'unterminated": "unterminated",
    "SELECT 1 /* open": "unterminated",
    "SHOW TABLES": "SELECT",
    "CALL p()": "SELECT",
    "": "empty",
    "  -- only a comment": "SELECT",
    "SELECT GET_LOCK('x', 10), a FROM t": "GET_LOCK(), which takes a named lock",
    "SELECT a FROM t WHERE release_lock ('x')": "RELEASE_LOCK()",
    "SELECT load_file('/etc/passwd') AS f": "LOAD_FILE(), which reads a file",
    "SELECT nextval(s), a FROM t": "NEXTVAL(), which advances a sequence",
    "SELECT NEXT VALUE FOR s, a FROM t": "NEXT VALUE FOR",
    "SELECT next\n value  for s": "NEXT VALUE FOR",
}


@pytest.mark.parametrize("query", sorted(ACCEPTED))
def test_accepted(query):
    assert check_query(query).text == ACCEPTED[query]


@pytest.mark.parametrize("query", sorted(REFUSED))
def test_refused_in_one_line(query):
    with pytest.raises(QueryRefusedError) as info:
        check_query(query)
    assert REFUSED[query] in str(info.value)
    assert "\n" not in str(info.value) and str(info.value).startswith("--query")


@pytest.mark.mysql
def test_a_writing_function_is_stopped_by_the_read_only_transaction(mysql_url):
    """The guard cannot see inside a stored function: the server refuses the write."""
    from tests.mysql_fixtures import admin, read_all

    conn = admin(mysql_url)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS guard_victim (x INT)")
        cur.execute("DELETE FROM guard_victim")
        cur.execute("DROP FUNCTION IF EXISTS guard_writer")
        cur.execute(
            "CREATE FUNCTION guard_writer() RETURNS INT MODIFIES SQL DATA "
            "BEGIN INSERT INTO guard_victim VALUES (1); RETURN 1; END"
        )
    try:
        with pytest.raises(DatabaseError) as info:
            read_all(mysql_url, query="SELECT guard_writer() AS w")
        assert "READ ONLY" in str(info.value).upper()
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM guard_victim")
            assert cur.fetchone()[0] == 0
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP FUNCTION IF EXISTS guard_writer")
            cur.execute("DROP TABLE IF EXISTS guard_victim")
        conn.close()
