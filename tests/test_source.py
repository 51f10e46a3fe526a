"""The partitioned PostgreSQL source against a real server: exact, consistent, resilient."""

import collections
import datetime as dt
import math
import threading
import time

import apache_beam as beam
import psycopg2
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.sources.postgres.beam import PartitionReader, ReadFromPostgres
from pipeline.sources.postgres.connection import DatabaseError, Dsn
from pipeline.sources.postgres.plan import ExportedSnapshot, SourceSpec, plan_read
from tests.conftest import query


def _read_rows(source, plan, snapshot_id=None, **kwargs):
    reader = PartitionReader(source, plan, snapshot_id, **kwargs)
    rows = []
    try:
        for partition in plan.partitions:
            for batch in reader.read(partition):
                rows.extend(zip(*(batch.column(i).to_pylist() for i in range(batch.num_columns))))
    finally:
        reader.close()
    return rows, reader


def _norm(value):
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def _multiset(rows):
    return collections.Counter(tuple(_norm(v) for v in row) for row in rows)


SHAPES = {
    "skewed": "SELECT CASE WHEN g <= 900 THEN g ELSE g * 100000 END, md5(g::text), g / 7.0 "
    "FROM generate_series(1, 1000) g",
    "extreme_keys": "SELECT CASE g % 3 WHEN 0 THEN -9223372036854775808 + g "
    "WHEN 1 THEN 9223372036854775807 - g ELSE g - 500 END, 'v' || g, g::float8 "
    "FROM generate_series(1, 900) g",
    "null_and_duplicate_keys": "SELECT CASE WHEN g % 5 = 0 THEN NULL ELSE g % 37 END, "
    "CASE WHEN g % 4 = 0 THEN '' WHEN g % 9 = 0 THEN NULL ELSE 'v' || g END, "
    "CASE WHEN g % 11 = 0 THEN 'NaN'::float8 WHEN g % 13 = 0 THEN NULL ELSE g END "
    "FROM generate_series(1, 700) g",
    "empty": "SELECT 1::bigint, 'x', 1.0::float8 WHERE false",
    "one_row": "SELECT 42::bigint, 'only', 0.5::float8",
}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def shaped_table(request, make_table):
    # No primary key: block ranges need none, key ranges use `k` even with NULLs.
    return request.param, make_table(
        "CREATE TABLE {table} (k bigint, v text, f double precision)",
        f"INSERT INTO {{table}} {SHAPES[request.param]}",
    )


@pytest.mark.parametrize(
    "partitioning", [{"num_partitions": 1}, {"num_partitions": 4},
                     {"num_partitions": 5, "partition_column": "k"}]
)
def test_every_row_exactly_once(database_url, shaped_table, partitioning):
    _, table = shaped_table
    source = SourceSpec(Dsn(database_url), table=table)
    plan = plan_read(source, ["k", "v", "f"], **partitioning)
    rows, _ = _read_rows(source, plan)
    expected = query(database_url, f'SELECT k, v, f FROM "{table}"')
    assert _multiset(rows) == _multiset(expected)


def test_key_ranges_are_balanced_on_skewed_keys(database_url, make_table):
    table = make_table(
        "CREATE TABLE {table} (k bigint)",
        "INSERT INTO {table} SELECT CASE WHEN g <= 9000 THEN g ELSE g::int8 * 1000000 END "
        "FROM generate_series(1, 10000) g",
    )
    source = SourceSpec(Dsn(database_url), table=table)
    plan = plan_read(source, ["k"], num_partitions=4, partition_column="k")
    reader = PartitionReader(source, plan, None)
    sizes = [sum(b.num_rows for b in reader.read(p)) for p in plan.partitions[:-1]]
    reader.close()
    assert sum(sizes) == 10000
    assert max(sizes) <= 1.05 * 10000 / 4  # uniform stride would put 90% in one


def test_query_with_join_reads_exactly(database_url, make_table):
    left = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, name text)",
        "INSERT INTO {table} SELECT g, 'n' || g FROM generate_series(1, 300) g",
    )
    right = make_table(
        "CREATE TABLE {table} (id int, score float8)",
        "INSERT INTO {table} SELECT g % 200, g FROM generate_series(1, 500) g",
    )
    sql = f'SELECT l.id, l.name, r.score FROM "{left}" l JOIN "{right}" r USING (id)'
    source = SourceSpec(Dsn(database_url), query=sql)
    for kwargs in ({}, {"partition_column": "id", "num_partitions": 3}):
        plan = plan_read(source, None, **kwargs)
        rows, _ = _read_rows(source, plan)
        assert _multiset(rows) == _multiset(query(database_url, sql))


def test_all_types_round_trip_with_nulls(database_url, make_table):
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP TYPE IF EXISTS s2t_mood CASCADE")
        cur.execute("CREATE TYPE s2t_mood AS ENUM ('sad', 'ok')")
    conn.close()
    table = make_table(
        "CREATE TABLE {table} (i2 smallint, i4 integer, i8 bigint, b boolean, "
        "r real, d double precision, n numeric, t text, vc varchar(5), c char(3), "
        "u uuid, dt date, ts timestamp, tz timestamptz, ai int[], at text[], m s2t_mood)",
        "INSERT INTO {table} VALUES (-2, 40000, 9007199254740993, true, 1.5, "
        "-2.25e300, 12345.678, 'héllo\nworld', '', 'ab', "
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1969-12-31', "
        "'2024-02-29 13:45:59.9', '2024-02-29 13:45:59+02', '{1,NULL,3}', '{\"x,y\",\"\"}', 'ok')",
        "INSERT INTO {table} VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
        "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    source = SourceSpec(Dsn(database_url), table=table)
    plan = plan_read(source, None)
    rows, _ = _read_rows(source, plan)
    full = [r for r in rows if r[0] is not None][0]
    assert full == (
        -2, 40000, 9007199254740993, 1, 1.5, -2.25e300, 12345.678, "héllo\nworld", "",
        "ab", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", -1,
        int(dt.datetime(2024, 2, 29, 13, 45, 59, tzinfo=dt.timezone.utc).timestamp()),
        int(dt.datetime(2024, 2, 29, 11, 45, 59, tzinfo=dt.timezone.utc).timestamp()),
        [1, None, 3], ["x,y", ""], "ok",
    )
    empty = [r for r in rows if r[0] is None][0]
    assert empty == (None,) * 17


def test_domains_at_any_depth_read_as_their_base_types(database_url, make_table):
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in ("s2t_pos2", "s2t_pos", "s2t_dmood", "s2t_dmood_enum", "s2t_ints",
                     "s2t_flag", "s2t_word"):
            cur.execute(f"DROP TYPE IF EXISTS {name} CASCADE")
        cur.execute("CREATE DOMAIN s2t_pos AS integer CHECK (VALUE > 0)")
        cur.execute("CREATE DOMAIN s2t_pos2 AS s2t_pos")  # a domain over a domain
        cur.execute("CREATE TYPE s2t_dmood_enum AS ENUM ('sad', 'ok')")
        cur.execute("CREATE DOMAIN s2t_dmood AS s2t_dmood_enum")
        cur.execute("CREATE DOMAIN s2t_ints AS s2t_pos[]")  # over an array of a domain
        cur.execute("CREATE DOMAIN s2t_flag AS boolean")
        cur.execute("CREATE DOMAIN s2t_word AS varchar(8)")
    conn.close()
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, a s2t_pos2, b s2t_pos2[], "
        "m s2t_dmood, l s2t_ints, f s2t_flag, w s2t_word)",
        "INSERT INTO {table} VALUES (1, 7, '{1,2}', 'ok', '{3,NULL}', true, 'x,y'), "
        "(2, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    for source in (
        SourceSpec(Dsn(database_url), table=table),
        SourceSpec(Dsn(database_url), query=f'SELECT * FROM "{table}"'),
    ):
        plan = plan_read(source, None)
        kinds = {c.name: (c.pg_type, c.is_array) for c in plan.columns}
        assert kinds == {
            "id": ("int4", False), "a": ("int4", False), "b": ("int4", True),
            "m": ("enum", False), "l": ("int4", True), "f": ("bool", False),
            "w": ("varchar", False),
        }
        rows, _ = _read_rows(source, plan)
        assert sorted(rows, key=lambda r: r[0]) == [
            (1, 7, [1, 2], "ok", [3, None], 1, "x,y"),
            (2, None, None, None, None, None, None),
        ]


def test_text_that_is_not_utf8_is_refused_naming_the_column(database_url):
    """SQL_ASCII stores any bytes: the read names the column and how to read it."""
    name = "s2t_sql_ascii"
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(
            f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' "
            "LC_CTYPE 'C' TEMPLATE template0"
        )
    url = psycopg2.extensions.make_dsn(database_url, dbname=name)
    try:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute('CREATE TABLE t (id int PRIMARY KEY, "odd ""s""" text)')
            cur.execute(
                "INSERT INTO t SELECT g, CASE WHEN g = 150 THEN E'caf\\xe9' "
                "ELSE 'ok' END FROM generate_series(1, 300) g"
            )
            cur.execute("CREATE TABLE a (id int PRIMARY KEY, tags text[])")
            cur.execute("INSERT INTO a VALUES (1, ARRAY['ok', E'\\xff'])")
        conn.close()
        source = SourceSpec(Dsn(url), table="t")
        with pytest.raises(Exception) as info:
            _read_rows(source, plan_read(source, None))
        assert (
            'column "odd "s"" holds text that is not valid UTF-8' in str(info.value)
        )
        hint = "encode(\"odd \"\"s\"\"\"::bytea, 'escape')"
        assert hint in str(info.value)
        source = SourceSpec(Dsn(url), query=f"SELECT id, {hint} AS s FROM t")
        rows, _ = _read_rows(source, plan_read(source, None))
        assert dict(rows)[150] == "caf\\351" and dict(rows)[1] == "ok"
        source = SourceSpec(Dsn(url), table="a")
        with pytest.raises(Exception) as info:
            _read_rows(source, plan_read(source, None))
        hint = "ARRAY(SELECT encode(v::bytea, 'escape') FROM unnest(\"tags\") v)"
        assert 'column "tags" holds text that is not valid UTF-8' in str(info.value)
        assert hint in str(info.value)
        source = SourceSpec(Dsn(url), query=f"SELECT id, {hint} AS tags FROM a")
        rows, _ = _read_rows(source, plan_read(source, None))
        assert rows == [(1, ["ok", "\\377"])]
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_unsupported_type_fails_before_reading_and_names_column(database_url, make_table):
    table = make_table("CREATE TABLE {table} (id int, doc jsonb, pt point)")
    source = SourceSpec(Dsn(database_url), table=table)
    with pytest.raises(DatabaseError) as info:
        plan_read(source, ["id", "doc", "pt"])
    message = str(info.value)
    assert '"doc" has type jsonb' in message and '"pt" has type point' in message
    assert '"doc"::text' in message
    plan = plan_read(source, ["id"])  # projecting the supported column is fine
    assert [c.name for c in plan.columns] == ["id"]


def test_a_relation_that_is_not_read_as_a_table_is_refused_naming_it(
    database_url, make_table
):
    """Sequences, indexes and composite types resolve by name but are no table."""
    table = make_table("CREATE TABLE {table} (id int PRIMARY KEY, y int)")
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP SEQUENCE IF EXISTS s2t_seq")
        cur.execute("CREATE SEQUENCE s2t_seq")
        cur.execute("DROP TYPE IF EXISTS s2t_pair CASCADE")
        cur.execute("CREATE TYPE s2t_pair AS (a int, b text)")
    conn.close()
    for name, what in (
        ("s2t_seq", "a sequence"),
        (f"{table}_pkey", "an index"),
        ("s2t_pair", "a composite type"),
    ):
        with pytest.raises(DatabaseError) as info:
            plan_read(SourceSpec(Dsn(database_url), table=name), None)
        assert str(info.value).startswith(f"--table {name!r} is {what}, not a table")


def test_a_partition_column_without_scalar_ordered_values_is_refused(
    database_url, make_table
):
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, tags int[], pt point, y int)",
        "INSERT INTO {table} SELECT g, ARRAY[g], point(g, g), g % 2 "
        "FROM generate_series(1, 50) g",
    )
    source = SourceSpec(Dsn(database_url), table=table)
    for name, shown in (("tags", "integer[]"), ("pt", "point")):
        with pytest.raises(DatabaseError) as info:
            plan_read(source, ["id", "y"], partition_column=name, num_partitions=4)
        assert str(info.value) == (
            f"--partition_column: column {name!r} has type {shown}; key ranges "
            "need a column of scalar numbers, text, dates or timestamps"
        )


def test_every_unmapped_column_is_named_with_a_cast_that_reads_it(
    database_url, make_table
):
    """One line names them all; each suggested expression reads a mapped type."""
    import re

    from transforms.features import infer_features
    from transforms.types import UnsupportedTypeError

    types = {"b": "bytea", "m": "money", "i": "interval", "n": "inet", "c": "cidr",
             "t": "time", "tz": "timetz", "j": "jsonb", "p": "point", "x": "bit(3)"}
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, y int, "
        + ", ".join(f"{name} {kind}" for name, kind in types.items()) + ")",
        "INSERT INTO {table} VALUES (1, 0, '\\x00ff', 1.5, '1 day', '10.0.0.1', "
        "'10.0.0.0/8', '12:30', '12:30+02', '{\"a\": 1}', '(1,2)', B'101')",
    )
    source = SourceSpec(Dsn(database_url), table=table)
    columns = plan_read(source, ["id", "y"]).columns  # the unmapped ones unread
    with pytest.raises(UnsupportedTypeError) as info:
        infer_features(catalog_columns(database_url, table), "y", exclude=["id"])
    message = str(info.value)
    assert "\n" not in message
    hints = dict(re.findall(r'column "(\w+)" has type [^,]+, which has no TensorFlow '
                            r"feature mapping; select it with a cast in --query, "
                            r"e\.g\. (.+?)(?: or a numeric expression)?(?:; |$)",
                            message))
    assert sorted(hints) == sorted(types)
    select = ", ".join(
        hint if " AS " in hint else f"{hint} AS {name}" for name, hint in hints.items()
    )
    query = SourceSpec(Dsn(database_url), query=f'SELECT id, {select} FROM "{table}"')
    plan = plan_read(query, None, partition_column="id")
    assert [c.name for c in plan.columns] == ["id", *hints]
    for column in plan.columns:
        _ = column.kind  # mapped
    assert [c.name for c in columns] == ["id", "y"]


def catalog_columns(database_url, table):
    from pipeline.sources.postgres import catalog

    conn = psycopg2.connect(database_url)
    try:
        return catalog.describe_table(conn, catalog.resolve_table(conn, table))
    finally:
        conn.close()


def test_missing_table_and_column_are_named(database_url, make_table):
    with pytest.raises(DatabaseError, match="table 'no_such_table' does not exist"):
        plan_read(SourceSpec(Dsn(database_url), table="no_such_table"), None)
    table = make_table("CREATE TABLE {table} (id int)")
    with pytest.raises(DatabaseError, match="'nope' not found"):
        plan_read(SourceSpec(Dsn(database_url), table=table), ["id", "nope"])


def test_snapshot_keeps_an_invariant_under_concurrent_writes(database_url, make_table):
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, balance bigint NOT NULL)",
        "INSERT INTO {table} SELECT g, 1000 FROM generate_series(1, 20000) g",
    )
    total = 20000 * 1000
    stop = threading.Event()
    moved = [0]

    def writer():
        conn = psycopg2.connect(database_url)
        conn.autocommit = False
        import random

        rnd = random.Random(1)
        with conn.cursor() as cur:
            while not stop.is_set():
                a, b = rnd.randint(1, 20000), rnd.randint(1, 20000)
                amount = rnd.randint(1, 50)
                cur.execute(f'UPDATE "{table}" SET balance = balance - %s WHERE id = %s', (amount, a))
                cur.execute(f'UPDATE "{table}" SET balance = balance + %s WHERE id = %s', (amount, b))
                conn.commit()
                moved[0] += 1
        conn.close()

    source = SourceSpec(Dsn(database_url), table=table)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        plan = plan_read(source, ["id", "balance"], num_partitions=4)
        assert len(plan.partitions) == 4
        with ExportedSnapshot(source) as snapshot:
            reader = PartitionReader(source, plan, snapshot.snapshot_id)
            rows = []
            for partition in plan.partitions:
                deadline = time.monotonic() + 30
                while moved[0] < 20:  # make sure writes interleave with every partition
                    assert thread.is_alive() and time.monotonic() < deadline
                    time.sleep(0.001)
                moved[0] = 0
                for batch in reader.read(partition):
                    rows.extend(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()))
            reader.close()
    finally:
        stop.set()
        thread.join()
    assert sorted(r[0] for r in rows) == list(range(1, 20001))
    assert sum(r[1] for r in rows) == total


def test_killed_connection_mid_partition_is_survived_exactly(database_url, make_table):
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, v text)",
        "INSERT INTO {table} SELECT g, repeat('x', 50) || g FROM generate_series(1, 60000) g",
    )
    source = SourceSpec(Dsn(database_url), table=table)
    plan = plan_read(source, ["id", "v"], num_partitions=1)
    killer = psycopg2.connect(database_url)
    killer.autocommit = True
    with ExportedSnapshot(source) as snapshot:
        reader = PartitionReader(source, plan, snapshot.snapshot_id, block_size=1 << 16,
                                 backoff_s=0.01)
        ids = []
        killed = False
        for batch in reader.read(plan.partitions[0]):
            ids.extend(batch.column(0).to_pylist())
            if not killed:
                with killer.cursor() as cur:
                    cur.execute("SELECT pg_terminate_backend(%s)", (reader.conn.get_backend_pid(),))
                killed = True
        reader.close()
    killer.close()
    assert reader.reconnects == 1
    assert sorted(ids) == list(range(1, 60001))


def test_read_from_postgres_in_a_pipeline_emits_every_row_once(database_url, make_table):
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, v text)",
        "INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, 5000) g",
    )
    source = SourceSpec(Dsn(database_url), table=table)
    plan = plan_read(source, ["id"], num_partitions=3)
    with BeamTestPipeline() as p:
        ids = (
            p
            | ReadFromPostgres(source, plan, None)
            | beam.FlatMap(lambda batch: batch.column(0).to_pylist())
        )
        assert_that(ids, equal_to(list(range(1, 5001))))


def test_resolved_tables_know_whether_their_rows_are_stored_here(database_url, make_table):
    """Views are computed per read; only stored relations may be read twice."""
    from pipeline.sources.postgres import catalog

    table = make_table("CREATE TABLE {table} (id int)")
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE VIEW "{table}_v" AS SELECT id, random() AS r FROM "{table}"')
        cur.execute(f'CREATE MATERIALIZED VIEW "{table}_m" AS SELECT id FROM "{table}"')
    try:
        kinds = {name: catalog.resolve_table(conn, name)
                 for name in (table, f"{table}_v", f"{table}_m")}
    finally:
        conn.close()
    assert [(t.kind, t.stored_locally) for t in kinds.values()] == [
        ("r", True), ("v", False), ("m", True)]


def test_table_types_keep_their_modifiers_so_precision_changes_show(
    database_url, make_table
):
    """numeric(10,2) -> numeric(12,3) is schema drift: the type shows its modifiers."""
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, p numeric(10,2), v varchar(20), "
        "t timestamp(3), f double precision, a numeric(5,1)[])"
    )
    plan = plan_read(SourceSpec(Dsn(database_url), table=table), None)
    assert {c.name: c.display_type for c in plan.columns} == {
        "id": "integer", "p": "numeric(10,2)", "v": "character varying(20)",
        "t": "timestamp(3) without time zone", "f": "double precision",
        "a": "numeric(5,1)[]",
    }
    assert {c.name: c.pg_type for c in plan.columns}["p"] == "numeric"
    # A --query's columns carry no modifiers (PostgreSQL's result description).
    plan = plan_read(SourceSpec(Dsn(database_url), query=f'SELECT p FROM "{table}"'), None)
    assert plan.columns[0].display_type == "numeric"
