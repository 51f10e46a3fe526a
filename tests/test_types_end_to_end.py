"""Types through the whole job: ±infinity times, time parts, passthrough, arrays.

Few runs, many assertions. Expected values come from SQL over the same table
(`isfinite()`, `extract(hour …)`, `extract(isodow …)`), numpy (train statistics over
the finite values) and a plain-Python SplitMix64 (`reference_split`).
"""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import trainer
from pipeline.__main__ import main
from tests.conftest import query, reference_split

POS_INF, NEG_INF = 2**63 - 1, -(2**63)
ROWS = 600
TIMES = ("d", "dn", "t", "tz", "tn")


def _value_sql(i: int, kind: str) -> str:
    """Deterministic values: ~8% NULL (nullable only), ~8% ±infinity, else finite."""
    if i % 13 == 5:
        return "'infinity'" if i % 2 else "'-infinity'"
    if kind == "date":
        return f"DATE '1969-06-01' + {(i * 7919) % 20000 - 5000}"
    seconds = i * 7919 * 3607 % 10**9
    return f"TIMESTAMPTZ '1969-06-01 00:00:00+00' + interval '{seconds} s'"


@pytest.fixture(scope="module")
def table(make_table):
    values = []
    for i in range(ROWS):
        null = i % 11 == 3
        d = "NULL" if null else _value_sql(i, "date")
        dn = _value_sql(i + 1, "date")
        t = "NULL" if i % 7 == 2 else _value_sql(i + 2, "ts")
        tz = "NULL" if null else _value_sql(i + 3, "ts")
        tn = _value_sql(i + 4, "ts")
        k = "NULL" if i % 5 == 0 else str((i * 104729) % 2001 - 1000)
        b = "NULL" if i % 6 == 0 else ("true" if i % 4 else "false")
        f = "NULL" if i % 9 == 0 else ("'NaN'" if i % 17 == 0 else f"{i / 7:.4f}")
        s = "NULL" if i % 8 == 0 else ("''" if i % 3 == 0 else f"'v{i % 5}'")
        values.append(
            f"({i * 2654435761 % 2**40 - 2**39}, {d}, {dn}, {t}, {tz}, {tn}, {k}, "
            f"{b}, {f}, {s}, {i % 2})"
        )
    return make_table(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, d date, dn date NOT NULL, "
        "t timestamp, tz timestamptz, tn timestamptz NOT NULL, k int, b boolean, "
        "f float8, s text, y int NOT NULL)",
        "INSERT INTO {table} VALUES " + ", ".join(values),
    )


def _write(tmp_path_factory, name, config):
    path = tmp_path_factory.mktemp("cfg") / f"{name}.json"
    path.write_text(json.dumps(config))
    return str(path)


TIME_FEATURES = {
    "label": "y",
    "features": [
        {"column": "id", "transform": "passthrough"},
        *({"column": c, "transform": "zscore", "indicator": True} for c in TIMES),
        {"column": "dn", "name": "dn_pass", "transform": "passthrough",
         "indicator": True},
        *(
            {"column": c, "name": f"{c}_{p}", "transform": p, "indicator": True}
            for c in ("t", "tz", "tn")
            for p in ("hour_of_day", "day_of_week")
        ),
        {"column": "d", "name": "d_day_of_week", "transform": "day_of_week",
         "indicator": True},
    ],
}


@pytest.fixture(scope="module")
def time_run(database_url, table, tmp_path_factory):
    out = tmp_path_factory.mktemp("times") / "out"
    raw = tmp_path_factory.mktemp("times") / "raw"
    argv = [
        "--db_url", database_url, "--table", table, "--label", "y",
        "--output_dir", str(out), "--raw_parquet_dir", str(raw),
        "--features", _write(tmp_path_factory, "times", TIME_FEATURES),
    ]
    assert main(argv) == 0
    return str(out), str(raw)


@pytest.fixture(scope="module")
def sql_times(database_url, table):
    """Per column: id -> None (NULL), ±inf sentinel or the finite value, from SQL."""
    out = {}
    for c in TIMES:
        finite = (
            f"({c} - DATE '1970-01-01')::float8"
            if c.startswith("d")
            else f"floor(extract(epoch FROM {c}))::float8"
        )
        # A timestamptz's UTC wall clock; a timestamp (no zone) is read as UTC.
        utc = f"({c} AT TIME ZONE 'UTC')" if c in ("tz", "tn") else c
        hour = "NULL" if c.startswith("d") else f"extract(hour FROM {utc})"
        dow = f"extract(isodow FROM {utc}) - 1"
        rows = query(
            database_url,
            f"SELECT id, {c} IS NULL, isfinite({c}), {c} > 'epoch', "
            f"CASE WHEN isfinite({c}) THEN {finite} END, "
            f"CASE WHEN isfinite({c}) THEN {hour} END, "
            f"CASE WHEN isfinite({c}) THEN {dow} END FROM \"{table}\"",
        )
        out[c] = {
            r[0]: {
                "raw": None
                if r[1]
                else (r[4] if r[2] else (POS_INF if r[3] else NEG_INF)),
                "value": r[4],
                "hour": None if r[5] is None else int(r[5]),
                "dow": None if r[6] is None else int(r[6]),
            }
            for r in rows
        }
    return out


def _read_all(out, split):
    data = {}
    dataset = trainer.make_dataset(out, split, batch_size=1024, shuffle=False)
    for batch, label in dataset:
        for key, value in batch.items():
            data.setdefault(key, []).extend(value.numpy().tolist())
        data.setdefault("y", []).extend(label.numpy().tolist())
    return data


def test_infinite_times_counted_per_column_like_sql(time_run, database_url, table):
    manifest = trainer.read_manifest(time_run[0])
    sql = ", ".join(f"count(*) FILTER (WHERE NOT isfinite({c}))" for c in TIMES)
    (counts,) = query(database_url, f'SELECT {sql} FROM "{table}"')
    assert manifest["non_finite_values"] == dict(zip(TIMES, counts))
    assert min(counts) > 0
    assert manifest["warnings"] == []


def test_raw_parquet_keeps_infinity_as_int64_extremes(time_run, sql_times):
    table = pq.read_table(time_run[1]).to_pydict()
    for c in TIMES:
        got = dict(zip(table["id"], table[c]))
        want = {i: v["raw"] for i, v in sql_times[c].items()}
        assert got == {i: (None if w is None else int(w)) for i, w in want.items()}


def test_time_zscores_use_finite_train_values_and_impute_missing(time_run, sql_times):
    out = time_run[0]
    for split in ("train", "eval"):
        data = _read_all(out, split)
        assert {reference_split(i) for i in data["id"]} == {split}
        for c in TIMES:
            train = np.array(
                [
                    v["value"]
                    for i, v in sql_times[c].items()
                    if v["value"] is not None and reference_split(i) == "train"
                ]
            )
            mean, std = train.mean(), train.std()
            for k, row_id in enumerate(data["id"]):
                value = sql_times[c][row_id]["value"]
                want = 0.0 if value is None else (value - mean) / std
                assert data[c][k] == pytest.approx(want, rel=1e-4, abs=1e-5), c
                assert data[f"{c}_is_missing"][k] == (value is None)


def test_time_parts_match_sql_and_missing_is_24_or_7(time_run, sql_times):
    data = _read_all(time_run[0], "eval")
    for k, row_id in enumerate(data["id"]):
        for c in ("t", "tz", "tn", "d"):
            want = sql_times[c][row_id]
            missing = want["value"] is None
            if c != "d":
                assert data[f"{c}_hour_of_day"][k] == (24 if missing else want["hour"])
                assert data[f"{c}_hour_of_day_is_missing"][k] == missing
            assert data[f"{c}_day_of_week"][k] == (7 if missing else want["dow"])
            assert data[f"{c}_day_of_week_is_missing"][k] == missing


def test_not_null_date_passthrough_imputes_rounded_train_mean(time_run, sql_times):
    train = [
        v["value"]
        for i, v in sql_times["dn"].items()
        if v["value"] is not None and reference_split(i) == "train"
    ]
    fill = int(np.round(np.mean(train)))
    data = _read_all(time_run[0], "train")
    for k, row_id in enumerate(data["id"]):
        value = sql_times["dn"][row_id]["value"]
        assert data["dn_pass"][k] == (fill if value is None else int(value))
        assert data["dn_pass_is_missing"][k] == (value is None)


PASS_FEATURES = {
    "label": "y",
    "features": [
        {"column": c, "transform": "passthrough", "indicator": True}
        for c in ("id", "k", "b", "f", "s", "d", "t")
    ],
}


@pytest.fixture(scope="module")
def query_run(database_url, table, tmp_path_factory):
    """A --query: every column nullable; passthrough of each type."""
    out = tmp_path_factory.mktemp("query") / "out"
    argv = [
        "--db_url", database_url, "--label", "y", "--split_key", "id",
        "--query", f'SELECT id, k, b, f, s, d, t, y FROM "{table}"',
        "--output_dir", str(out),
        "--features", _write(tmp_path_factory, "pass", PASS_FEATURES),
    ]
    assert main(argv) == 0
    return str(out)


def test_query_passthrough_of_every_type_against_sql(query_run, database_url, table):
    rows = query(
        database_url,
        "SELECT id, k, b::int, f, s, CASE WHEN isfinite(d) THEN d - DATE '1970-01-01' "
        "END, CASE WHEN isfinite(t) THEN floor(extract(epoch FROM t))::int8 END "
        f'FROM "{table}"',
    )
    names = ("k", "b", "f", "s", "d", "t")
    by_id = {r[0]: dict(zip(names, r[1:])) for r in rows}
    for row in by_id.values():
        if row["f"] is not None and np.isnan(row["f"]):
            row["f"] = None  # NaN is missing, like NULL
    train = [r for i, r in by_id.items() if reference_split(i) == "train"]
    fills = {
        c: np.mean([r[c] for r in train if r[c] is not None]) for c in names if c != "s"
    }
    for split in ("train", "eval"):
        data = _read_all(query_run, split)
        assert data["id"] and {reference_split(i) for i in data["id"]} == {split}
        for k, row_id in enumerate(data["id"]):
            row = by_id[row_id]
            for c in ("k", "b", "d", "t"):
                want = int(np.round(fills[c])) if row[c] is None else row[c]
                assert data[c][k] == want, c
            want_f = fills["f"] if row["f"] is None else row["f"]
            assert data["f"][k] == pytest.approx(want_f, rel=1e-6)
            want_s = "__MISSING__" if row["s"] is None else row["s"]
            assert data["s"][k] == want_s.encode()
            for c in names:
                assert data[f"{c}_is_missing"][k] == (row[c] is None), c


def test_multidimensional_value_fails_the_job_in_one_line(
    database_url, table, tmp_path, capsys
):
    module = tmp_path / "module.py"
    module.write_text(
        "import tensorflow_transform as tft\n\n"
        "def preprocessing_fn(inputs):\n"
        "    y = tft.sparse_tensor_to_dense_with_shape(inputs['y'], [None, 1])\n"
        "    return {'y_xf': y[:, 0], 'm_sum': tft.sparse_tensor_to_dense_with_shape(\n"
        "        inputs['m'], [None, 2])[:, 0]}\n"
    )
    out = tmp_path / "out"
    argv = [
        "--db_url", database_url, "--split_key", "id", "--label", "y_xf",
        "--query", f'SELECT id, y, CASE WHEN id % 7 = 3 THEN ARRAY[[1, 2], [3, 4]] '
        f'ELSE ARRAY[y] END AS m FROM "{table}"',
        "--preprocessing_module", str(module), "--output_dir", str(out),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sql2tfrecord: error: ")
    assert 'column "m" holds a 2-dimensional array value' in err[0]
    assert 'ARRAY(SELECT unnest("m")) AS "m"' in err[0]
    assert not (out / "manifest.json").exists()
