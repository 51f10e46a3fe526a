"""dataset_from_postgres without a transform: raw columns, NULL masks, parallel reads."""

import math

import pytest

import trainer
from tests.conftest import query


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, x float8, s text, y int NOT NULL)",
        "INSERT INTO {table} SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE g / 3.0 END, "
        "CASE WHEN g % 5 = 0 THEN NULL WHEN g % 11 = 0 THEN '' ELSE 's' || g END, g % 2 "
        "FROM generate_series(1, 30000) g",
    )


@pytest.mark.parametrize("parallel", [1, 3])
def test_raw_rows_exact_with_null_masks(database_url, table, parallel):
    dataset = trainer.dataset_from_postgres(
        database_url, table=table, batch_size=999, label="y",
        num_partitions=4, num_parallel_reads=parallel)
    got = {}
    for features, label in dataset:
        arrays = {k: v.numpy() for k, v in features.items()}
        for i, row_id in enumerate(arrays["id"]):
            x = None if arrays["x__is_null"][i] else float(arrays["x"][i])
            s = None if arrays["s__is_null"][i] else arrays["s"][i].decode()
            got[int(row_id)] = (x, s, int(label[i]))
    expected = {r[0]: (r[1], r[2], r[3]) for r in query(database_url, f'SELECT id, x, s, y FROM "{table}"')}
    assert got.keys() == expected.keys()
    for row_id, (x, s, y) in expected.items():
        gx, gs, gy = got[row_id]
        assert (gs, gy) == (s, y)
        assert (gx is None) == (x is None) and (x is None or math.isclose(gx, x, rel_tol=1e-6))


def test_exactly_one_of_table_and_query(database_url):
    with pytest.raises(ValueError, match="exactly one of table and query"):
        trainer.dataset_from_postgres(database_url)
