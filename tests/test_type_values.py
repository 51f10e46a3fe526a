"""Values the reader must keep exact or refuse: arrays and infinite dates/timestamps.

A real PostgreSQL, no Beam: the plan and the partition reader (`read_partition`,
`PartitionReader`) as the job uses them. Expected values come from psycopg2's own
parsing of the same rows and from Python's datetime arithmetic.
"""

import datetime as dt
import math

import pytest

from pipeline.sources.postgres.connection import DatabaseError, Dsn, connect
from pipeline.sources.postgres.partition_reader import (
    PartitionReader,
    PartitionReadError,
)
from pipeline.sources.postgres.plan import SourceSpec, plan_read
from tests.conftest import query
from transforms.features import parse_config
from transforms.types import NEG_INFINITY, POS_INFINITY, UnsupportedTypeError


def _read(url, *, table=None, sql=None, columns=None):
    source = SourceSpec(dsn=Dsn(url), table=table, query=sql)
    plan = plan_read(source, columns)
    reader = PartitionReader(source, plan, None, max_retries=0)
    try:
        rows = {}
        for partition in plan.partitions:
            for batch in reader.read(partition):
                for row in batch.to_pylist():
                    rows[row["id"]] = row
        return plan, rows
    finally:
        reader.close()


@pytest.fixture(scope="module")
def arrays(database_url, make_table):
    return make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, a int[], t text[], "
        "f float8[], d date[], m int[][])",
        "INSERT INTO {table} VALUES "
        "(1, '{1,2}', ARRAY['a\"b', NULL, 'x,y', ''], '{NaN,Infinity,-Infinity,1.5}', "
        " '{1969-12-31,infinity,NULL}', '{{1,2},{3,4}}'),"
        "(2, '{}', '{}', '{}', '{}', '{}'),"
        "(3, '{NULL,5}', '{NULL}', '{NULL}', '{-infinity}', NULL),"
        "(4, NULL, NULL, NULL, NULL, '{7}'),"
        "(5, '[0:1]={7,8}', '{ü}', '{-0.0}', '{2000-02-29}', '{{{1}}}')",
    )


def test_one_dimensional_arrays_read_exactly(database_url, arrays):
    _, rows = _read(database_url, table=arrays, columns=["id", "a", "t", "f", "d"])
    want = {
        r[0]: r[1:]
        for r in query(database_url, f'SELECT id, a, t, f FROM "{arrays}"')
    }
    assert sorted(rows) == sorted(want) == [1, 2, 3, 4, 5]
    for key, (a, t, f) in want.items():
        assert rows[key]["a"] == a  # empty arrays, NULL elements, NULL arrays
        assert rows[key]["t"] == t
        if f is None:
            assert rows[key]["f"] is None
        else:  # NaN and ±Infinity elements kept (array_to_json writes them as text)
            got = rows[key]["f"]
            assert len(got) == len(f)
            for g, w in zip(got, f):
                assert (g is None and w is None) or (
                    math.isnan(w) and math.isnan(g) or g == w
                )
    days = {1: [-1, POS_INFINITY, None], 2: [], 3: [NEG_INFINITY], 4: None, 5: [11016]}
    assert {k: r["d"] for k, r in rows.items()} == days
    assert (dt.date(2000, 2, 29) - dt.date(1970, 1, 1)).days == 11016


def test_declared_multidimensional_column_is_refused_before_the_read(
    database_url, arrays
):
    with pytest.raises(DatabaseError) as info:
        plan_read(SourceSpec(dsn=Dsn(database_url), table=arrays), ["id", "m"])
    message = str(info.value)
    assert 'column "m"' in message and "2 dimensions" in message
    assert 'ARRAY(SELECT unnest("m")) AS "m"' in message and "\n" not in message
    # --features naming it: the same refusal, not "needs a preprocessing module".
    plan = plan_read(SourceSpec(dsn=Dsn(database_url), table=arrays), None)
    with pytest.raises(UnsupportedTypeError, match='column "m" of type integer'):
        parse_config(
            {"label": "id", "features": [{"column": "m", "transform": "vocabulary"}]},
            plan.columns,
            None,
        )


@pytest.mark.parametrize("key, dims", [(1, 2), (5, 3)])
def test_multidimensional_values_in_a_one_dimensional_column_fail_naming_it(
    database_url, arrays, key, dims
):
    # `a` holds a 2-D or 3-D value in one row: PostgreSQL accepts it in int[].
    conn = connect(Dsn(database_url))
    try:
        with conn.cursor() as cur:
            cur.execute(f'SELECT m FROM "{arrays}" WHERE id = %s', (key,))
            (value,) = cur.fetchone()
    finally:
        conn.close()
    sql = (
        f'SELECT id, CASE WHEN id = {key} THEN m ELSE a END AS "odd ""a""" '
        f'FROM "{arrays}"'
    )
    with pytest.raises(PartitionReadError) as info:
        _read(database_url, sql=sql)
    message = str(info.value)
    assert f'column "odd "a"" holds a {dims}-dimensional array value' in message
    assert "array_to_json(" in message and "\n" not in message
    assert str(value) not in message  # no row payload in the error


def test_query_arrays_of_arrays_fail_and_constant_1d_arrays_read(database_url, arrays):
    with pytest.raises(PartitionReadError, match='column "mm" holds a 2-dimensional'):
        _read(
            database_url,
            sql=f'SELECT id, ARRAY[ARRAY[1,2],ARRAY[3,4]] AS mm FROM "{arrays}"',
        )
    # A constant one-dimensional array: the error branch is never folded into a
    # plan-time error.
    _, rows = _read(database_url, sql=f'SELECT id, ARRAY[1,2] AS c FROM "{arrays}"')
    assert {r["c"] == [1, 2] for r in rows.values()} == {True}
    # The documented fixes read: flattened explicitly, or as JSON text.
    _, rows = _read(
        database_url,
        sql=f'SELECT id, ARRAY(SELECT unnest("m")) AS "m", array_to_json(m)::text '
        f'AS mj FROM "{arrays}"',
    )
    assert rows[1]["m"] == [1, 2, 3, 4] and rows[1]["mj"] == "[[1,2],[3,4]]"
    assert rows[5]["m"] == [1] and rows[5]["mj"] == "[[[1]]]"


@pytest.fixture(scope="module")
def times(database_url, make_table):
    return make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, d date, t timestamp, "
        "tz timestamptz, dn date NOT NULL, tn timestamp NOT NULL)",
        "INSERT INTO {table} VALUES "
        "(1, 'infinity', '-infinity', 'infinity', '-infinity', 'infinity'),"
        "(2, '-infinity', 'infinity', '-infinity', 'infinity', '-infinity'),"
        "(3, NULL, NULL, NULL, '1969-12-31', '1969-12-31 23:59:59.5'),"
        "(4, '2024-02-29', '2024-02-29 13:45:01.999', '2024-02-29 13:45:01+05', "
        " '4713-01-01 BC', '294276-12-31 23:59:59'),"
        "(5, '1970-01-01', '1970-01-01', '1970-01-01 00:00:00+00', '5874897-12-31', "
        " '0001-01-01')",
    )


def test_infinite_dates_and_timestamps_read_as_int64_extremes(database_url, times):
    columns = ["id", "d", "t", "tz", "dn", "tn"]
    _, rows = _read(database_url, table=times, columns=columns)
    epoch_s = "extract(epoch FROM {c})"
    for name in columns[1:]:
        date = name.startswith("d")
        finite = f"({name} - DATE '1970-01-01')" if date else epoch_s.format(c=name)
        sql = (
            f"SELECT id, {name} IS NULL, isfinite({name}), {name} > 'epoch', "
            f"CASE WHEN isfinite({name}) THEN {finite} END FROM \"{times}\""
        )
        for key, null, is_finite, positive, value in query(database_url, sql):
            if null:
                want = None
            elif not is_finite:
                want = POS_INFINITY if positive else NEG_INFINITY
            else:
                want = int(value) if date else math.floor(value)
            assert rows[key][name] == want, (name, key)
    # Floors toward -infinity before 1970, and the extreme finite values fit.
    assert rows[3]["tn"] == -1 and rows[3]["dn"] == -1
    assert rows[4]["tz"] == int(
        dt.datetime(2024, 2, 29, 8, 45, 1, tzinfo=dt.timezone.utc).timestamp()
    )



def test_user_module_gets_no_declared_multidimensional_column(
    database_url, arrays, tmp_path, caplog
):
    from pipeline.job import prepare_job
    from pipeline.options import parse_args

    module = tmp_path / "module.py"
    module.write_text("def preprocessing_fn(inputs):\n    return dict(inputs)\n")
    config, _ = parse_args([
        "--db_url", database_url, "--table", arrays, "--label", "id",
        "--preprocessing_module", str(module), "--output_dir", str(tmp_path / "out"),
    ])
    with caplog.at_level("WARNING", logger="pipeline.job"):
        job = prepare_job(config)
    job.close()  # releases the snapshot and its locks (the job is not run)
    assert [c.name for c in job.plan.columns] == ["id", "a", "t", "f", "d"]
    (warning,) = [r.getMessage() for r in caplog.records if "'m'" in r.getMessage()]
    assert "2 dimensions" in warning and 'ARRAY(SELECT unnest("m")) AS "m"' in warning


def test_numeric_beyond_float64_reads_as_documented_never_a_mid_read_error(
    database_url, make_table
):
    """numeric holds what float8 cannot: the cast used to fail mid-read, unnamed."""
    from decimal import Decimal

    values = ["1e400", "-1e400", "1e-400", "-1e-400", "NaN", "Infinity", "-Infinity",
              "0.1", "-12345678901234567890.123456789", "1.7976931348623157e308",
              "4.9e-324", "0", None]
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, n numeric, a numeric[])",
        *(f"INSERT INTO {{table}} VALUES ({i}, {'NULL' if v is None else repr(v)}, "
          f"ARRAY[{'NULL' if v is None else repr(v)}]::numeric[])"
          for i, v in enumerate(values)),
    )
    _, rows = _read(database_url, table=table, columns=["id", "n", "a"])

    def expected(text):
        if text is None:
            return None
        number = Decimal(text)
        if number.is_nan():
            return math.nan
        return float(number)  # Python rounds to nearest: inf beyond, 0.0 below

    for i, text in enumerate(values):
        want = expected(text)
        for got in (rows[i]["n"], rows[i]["a"][0]):
            if want is None:
                assert got is None
            elif math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == want, (text, got)  # -0.0 == 0.0: JSON arrays drop the sign
