"""MySQL/MariaDB types -> raw Arrow values, exactly (no Beam: plan + partition reader).

Expected values are computed here from the inserted Python values (datetime
arithmetic, float parsing), never read back from the server.
"""

from __future__ import annotations

import datetime as dt
import decimal
import struct

import pytest

from pipeline.sources import DatabaseError
from pipeline.sources.mysql.partition_reader import ColumnValueError, PartitionReadError
from tests.mysql_fixtures import admin, read_all

pytestmark = pytest.mark.mysql

EPOCH = dt.datetime(1970, 1, 1)


def _seconds(value: dt.datetime) -> int:
    delta = value - EPOCH
    return delta.days * 86400 + delta.seconds  # floored: microseconds dropped


def _days(value: dt.date) -> int:
    return (value - dt.date(1970, 1, 1)).days


def _float32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


TYPES_DDL = (
    "CREATE TABLE {table} (id INT PRIMARY KEY, i8 BIGINT, i4 INT, i3 MEDIUMINT, "
    "i2 SMALLINT, i1 TINYINT, u4 INT UNSIGNED, u8 BIGINT UNSIGNED, b BOOL, "
    "dec65 DECIMAL(65,30), dec10 DECIMAL(10,2), f FLOAT, d DOUBLE, "
    "vc VARCHAR(50) CHARACTER SET utf8mb4, l1 VARCHAR(20) CHARACTER SET latin1, "
    "ch CHAR(5), tx TEXT, e ENUM('red','green'), s SET('a','b','c'), "
    "da DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL, y YEAR, bit1 BIT(1))"
)

ROWS = [
    # id, i8, i4, i3, i2, i1, u4, u8, b, dec65, dec10, f, d, vc, l1, ch, tx, e, s,
    # da, dtm, ts, y, bit1
    (
        1,
        -(2**63),
        -(2**31),
        -(2**23),
        -(2**15),
        -128,
        0,
        2**63 - 1,
        0,
        "-99999999999999999999999999999999999.999999999999999999999999999999",
        "-99999999.99",
        -3.4028234663852886e38,
        -1.7976931348623157e308,
        "😀 emoji ✓",
        "café",
        "ab",
        "",
        "red",
        "",
        "1000-01-01",
        "1000-01-01 00:00:00.000000",
        "1970-01-01 00:00:01.000",
        1901,
        0,
    ),
    (
        2,
        2**63 - 1,
        2**31 - 1,
        2**23 - 1,
        2**15 - 1,
        127,
        2**32 - 1,
        0,
        1,
        "0.000000000000000000000000000001",
        "0.10",
        1.401298464324817e-45,
        5e-324,
        "",
        "Zürich",
        "x  ",
        "long " * 100,
        "green",
        "a,c",
        "9999-12-31",
        "9999-12-31 23:59:59.999999",
        "2038-01-19 03:14:07.999",
        2155,
        1,
    ),
    (
        3,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
        "12345678901234567890.123456789012345678901234567890",
        "0.00",
        0.1,
        0.1,
        'a\tb\nc,"q"',
        "",
        "",
        "'quoted'",
        "green",
        "a,b,c",
        "1969-12-31",
        "1969-12-31 23:59:59.500000",
        "2000-02-29 12:34:56.789",
        2000,
        0,
    ),
    (4, *([None] * 23)),
]


@pytest.fixture(scope="module")
def typed(mysql_url, mysql_table):
    name = mysql_table(TYPES_DDL)
    conn = admin(mysql_url, "STRICT_ALL_TABLES")
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO `{name}` VALUES ({', '.join(['%s'] * 24)})", ROWS)
    conn.close()
    return read_all(mysql_url, table=name, num_partitions=3)


def test_types_map_to_the_shared_vocabulary(typed):
    plan, _, _ = typed
    kinds = {c.name: (c.pg_type, c.kind.value) for c in plan.columns}
    assert kinds["i8"] == ("int8", "int")
    assert kinds["u4"] == ("int8", "int")
    assert kinds["u8"] == ("int8", "int")
    assert kinds["b"] == ("int2", "int")
    assert kinds["dec65"] == ("numeric", "float")
    assert kinds["f"] == ("float4", "float")
    assert kinds["ch"] == ("bpchar", "bytes")
    assert kinds["e"] == ("enum", "bytes")
    assert kinds["s"] == ("text", "bytes")
    assert kinds["da"] == ("date", "date")
    assert kinds["dtm"] == ("timestamp", "timestamp")
    assert kinds["ts"] == ("timestamptz", "timestamp")
    assert kinds["y"] == ("int2", "int")
    assert kinds["bit1"] == ("int2", "int")
    assert plan.column("id").not_null and not plan.column("i8").not_null
    assert plan.column("u8").display_type.startswith("bigint")


def _expected(row):
    (
        id_,
        i8,
        i4,
        i3,
        i2,
        i1,
        u4,
        u8,
        b,
        dec65,
        dec10,
        f,
        d,
        vc,
        l1,
        ch,
        tx,
        e,
        s,
        da,
        dtm,
        ts,
        y,
        bit1,
    ) = row
    if id_ == 4:
        return {"id": 4, **{k: None for k in COLUMNS[1:]}}
    return {
        "id": id_,
        "i8": i8,
        "i4": i4,
        "i3": i3,
        "i2": i2,
        "i1": i1,
        "u4": u4,
        "u8": u8,
        "b": b,
        "dec65": float(decimal.Decimal(dec65)),
        "dec10": float(decimal.Decimal(dec10)),
        "f": _float32(f),
        "d": d,
        "vc": vc,
        "l1": l1,
        "ch": ch.rstrip(" "),  # CHAR drops trailing blanks on read
        "tx": tx,
        "e": e,
        "s": s,
        "da": _days(dt.date.fromisoformat(da)),
        "dtm": _seconds(dt.datetime.fromisoformat(dtm)),
        "ts": _seconds(dt.datetime.fromisoformat(ts)),
        "y": y,
        "bit1": bit1,
    }


COLUMNS = [
    "id",
    "i8",
    "i4",
    "i3",
    "i2",
    "i1",
    "u4",
    "u8",
    "b",
    "dec65",
    "dec10",
    "f",
    "d",
    "vc",
    "l1",
    "ch",
    "tx",
    "e",
    "s",
    "da",
    "dtm",
    "ts",
    "y",
    "bit1",
]


def test_every_value_is_exact(typed):
    _, table, zero = typed
    got = {r["id"]: r for r in table.to_pylist()}
    assert sorted(got) == [1, 2, 3, 4]
    for row in ROWS:
        expected = _expected(row)
        for column in COLUMNS:
            assert got[row[0]][column] == expected[column], (row[0], column)
    assert zero == {}


def test_negative_zero_free_and_empty_text_is_not_null(typed):
    _, table, _ = typed
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows[1]["tx"] == "" and rows[4]["tx"] is None
    assert rows[2]["vc"] == "" and rows[3]["l1"] == ""


def test_zero_dates_read_as_null_and_counted(mysql_url, mysql_table):
    name = mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY, da DATE, dtm DATETIME, "
        "ts TIMESTAMP NULL)"
    )
    conn = admin(mysql_url, "")  # no NO_ZERO_DATE: zero dates can be stored
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO `{name}` VALUES (%s, %s, %s, %s)",
            [
                (1, "0000-00-00", "0000-00-00 00:00:00", "0000-00-00 00:00:00"),
                (2, "2020-00-10", "2020-05-00 10:00:00", None),
                (3, "2020-01-02", "2020-01-02 03:04:05", "2020-01-02 03:04:05"),
                (4, None, None, None),
            ],
        )
    conn.close()
    _, table, zero = read_all(mysql_url, table=name, num_partitions=2)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert zero == {"da": 2, "dtm": 2, "ts": 1}
    assert rows[1] == {"id": 1, "da": None, "dtm": None, "ts": None}
    assert rows[2] == {"id": 2, "da": None, "dtm": None, "ts": None}
    seconds = _seconds(dt.datetime(2020, 1, 2, 3, 4, 5))
    assert rows[3] == {
        "id": 3,
        "da": _days(dt.date(2020, 1, 2)),
        "dtm": seconds,
        "ts": seconds,
    }


def test_unsigned_bigint_above_int64_is_refused_naming_the_column(
    mysql_url, mysql_table
):
    name = mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY, big_u BIGINT UNSIGNED)",
        "INSERT INTO {table} VALUES (1, 9223372036854775807), (2, 9223372036854775808)",
    )
    with pytest.raises(ColumnValueError) as info:
        read_all(mysql_url, table=name)
    message = str(info.value)
    assert "'big_u'" in message and "2**63-1" in message and "CAST(" in message
    assert "\n" not in message
    # The fix the message names works: the nearest float64.
    _, table, _ = read_all(
        mysql_url, query=f"SELECT id, CAST(big_u AS DOUBLE) AS big_u FROM `{name}`"
    )
    assert sorted(table.column("big_u").to_pylist()) == [2.0**63, 2.0**63]


@pytest.mark.parametrize(
    "ddl, cast",
    [
        ("bl BLOB", "HEX(`bl`)"),
        ("bn BINARY(4)", "HEX(`bn`)"),
        ("vb VARBINARY(4)", "HEX(`vb`)"),
        ("g GEOMETRY", "ST_AsText(`g`)"),
        ("b8 BIT(8)", "CAST(`b8` AS UNSIGNED)"),
        ("t TIME", "TIME_TO_SEC(`t`)"),
    ],
)
def test_unmapped_types_are_refused_before_the_read(mysql_url, mysql_table, ddl, cast):
    name = mysql_table(f"CREATE TABLE {{table}} (id INT PRIMARY KEY, {ddl})")
    column = ddl.split()[0]
    with pytest.raises(DatabaseError) as info:
        read_all(mysql_url, table=name)
    message = str(info.value)
    assert f"column {column!r}" in message and cast in message, message
    assert not isinstance(info.value, PartitionReadError)


def test_json_is_text_on_mariadb_and_refused_on_mysql(mysql_url, mysql_table):
    name = mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY, j JSON)",
        """INSERT INTO {table} VALUES (1, '{"a": [1, "é"]}'), (2, NULL)""",
    )
    conn = admin(mysql_url)
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        mariadb = "mariadb" in cur.fetchone()[0].lower()
    conn.close()
    if not mariadb:  # MySQL's JSON is a type of its own
        with pytest.raises(DatabaseError, match=r"'j'.*CAST\(`j` AS CHAR\)"):
            read_all(mysql_url, table=name)
        return
    # MariaDB's JSON is LONGTEXT (with a json_valid check): read as its text.
    _, table, _ = read_all(mysql_url, table=name)
    assert sorted(table.to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "j": '{"a": [1, "é"]}'},
        {"id": 2, "j": None},
    ]


def test_query_columns_are_typed_from_result_metadata(mysql_url, mysql_table):
    name = mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY, a BIGINT UNSIGNED, d DATE, "
        "x DECIMAL(5,2))",
        "INSERT INTO {table} VALUES (1, 7, '2001-02-03', 1.25), (2, NULL, NULL, NULL)",
    )
    plan, table, _ = read_all(
        mysql_url,
        query=(
            f"SELECT id, a + 1 AS a1, d, x * 2 AS x2, CONCAT('v', id) AS v, "
            f"TIMESTAMP(d) AS t FROM `{name}`"
        ),
    )
    types = {c.name: c.pg_type for c in plan.columns}
    assert types == {
        "id": "int4",
        "a1": "int8",
        "d": "date",
        "x2": "numeric",
        "v": "text",
        "t": "timestamp",
    }
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows[1] == {
        "id": 1,
        "a1": 8,
        "d": _days(dt.date(2001, 2, 3)),
        "x2": 2.5,
        "v": "v1",
        "t": _seconds(dt.datetime(2001, 2, 3)),
    }
    assert rows[2]["a1"] is None and rows[2]["v"] == "v2"


@pytest.mark.parametrize(
    "name, column",
    [
        ("odd `name` here", "col `x`"),
        ("ünïcødé tåble", "spaced column"),
        ("dot.ted", "sel;ect"),
    ],
)
def test_odd_table_and_column_names(mysql_url, mysql_table, name, column):
    made = mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY, "
        + "`"
        + column.replace("`", "``")
        + "` INT)",
        "INSERT INTO {table} VALUES (1, 10), (2, 20), (3, NULL)",
        prefix=name,
    )
    quoted = "`" + made.replace("`", "``") + "`"
    table_arg = quoted if "." in made or "`" in made else made
    plan, table, _ = read_all(mysql_url, table=table_arg, num_partitions=2)
    assert [c.name for c in plan.columns] == ["id", column]
    assert sorted(
        zip(
            table.column("id").to_pylist(),
            table.column(column).to_pylist(),
            strict=True,
        ),
        key=lambda r: r[0],
    ) == [(1, 10), (2, 20), (3, None)]


@pytest.mark.parametrize("ddl", ["v VARCHAR(20)", "v INT", "v DATE"])
def test_one_column_rows_holding_null_are_rows(mysql_url, mysql_table, ddl):
    """A one-column row holding NULL is an empty line of the read: never skipped."""
    value = {"VARCHAR(20)": "", "INT": 0, "DATE": "1970-01-01"}[ddl.split()[1]]
    name = mysql_table(f"CREATE TABLE {{table}} ({ddl})")
    conn = admin(mysql_url, "")
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO `{name}` VALUES (%s)", [(None,), (value,), (None,)]
        )
    conn.close()
    _, table, _ = read_all(mysql_url, table=name)
    got = table.column("v").to_pylist()
    assert sorted(got, key=lambda v: v is None) == [
        0 if ddl != "v VARCHAR(20)" else "",
        None,
        None,
    ]


def test_text_with_csv_and_line_characters(mysql_url, mysql_table):
    values = [
        '"',
        '""',
        ",",
        "\r\n",
        "\n",
        "a\r",
        ' "x" ',
        "\\",
        "\\N",
        "NULL",
        "é\x00z",
    ]
    name = mysql_table("CREATE TABLE {table} (id INT PRIMARY KEY, t TEXT, n INT)")
    conn = admin(mysql_url, "STRICT_ALL_TABLES")
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO `{name}` VALUES (%s, %s, %s)",
            [(i, v, i) for i, v in enumerate(values)],
        )
    conn.close()
    _, table, _ = read_all(mysql_url, table=name, num_partitions=3)
    got = {r["id"]: (r["t"], r["n"]) for r in table.to_pylist()}
    assert got == {i: (v, i) for i, v in enumerate(values)}


def test_random_double_and_float_bit_patterns_are_exact(mysql_url, mysql_table):
    """2,000 random finite DOUBLE and FLOAT bit patterns (subnormals included)."""
    import random

    rng = random.Random(5)
    rows = []
    while len(rows) < 2000:
        d = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        f = struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0]
        if all(x == x and abs(x) != float("inf") for x in (d, f)):
            rows.append((len(rows), d, f))
    name = mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY, d DOUBLE, f FLOAT)",
        ("INSERT INTO {table} VALUES (%s, %s, %s)", rows),
    )
    _, table, _ = read_all(mysql_url, table=name, num_partitions=4)
    got = {r["id"]: (r["d"], r["f"]) for r in table.to_pylist()}
    assert got == {i: (d, f) for i, d, f in rows}


@pytest.mark.parametrize(
    "expression, says",
    [
        ("v * 1e300", "out of range"),  # overflow: 0 where MySQL only warns
        ("CAST(IF(v > 1, CONCAT(id, 'abc'), id) AS SIGNED)", "truncated"),  # 2abc: 2
        ("CAST(v AS DECIMAL(3,1))", "out of range"),  # clamped to 99.9
    ],
)
def test_values_the_server_computed_with_a_warning_fail_the_read(
    mysql_url, mysql_table, expression, says
):
    """MySQL stands in a value (0, a prefix, a clamp) and warns: never written.

    (MariaDB raises the overflow as an error in a select list and warns in a
    virtual column: either way the read fails, without a retry.)
    """
    name = mysql_table(
        "CREATE TABLE {table} (id INT PRIMARY KEY, v DOUBLE)",
        ("INSERT INTO {table} VALUES (%s, %s)", [(1, 2.0), (2, 5e10), (3, 0.5)]),
    )
    query = f"SELECT id, {expression} AS x FROM `{name}`"
    with pytest.raises(PartitionReadError) as info:
        read_all(mysql_url, query=query)
    message = str(info.value)
    assert says in message.lower() and "\n" not in message
    assert "rerun" not in message  # a statement error, not a lost connection
    # The same query over rows it computes exactly is read.
    _, table, _ = read_all(mysql_url, query=query + " WHERE id = 3")
    assert table.num_rows == 1
