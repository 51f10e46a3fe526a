"""The whole job against a real PostgreSQL: one rich table, few runs, many assertions.

Expected values are computed independently of the pipeline: from the rows fetched by
SQL, with numpy (means, population std, min/max), collections.Counter (vocabularies)
and a plain-Python SplitMix64 (the split of every id).
"""

import collections
import datetime as dt
import io
import json
import math
import os

import numpy as np
import psycopg2
import pytest
import tensorflow as tf
import tensorflow_transform as tft

import trainer
from pipeline.__main__ import main
from tests.conftest import query, reference_split

ROWS = 3000
MISSING = "__MISSING__"

FEATURES = {
    "label": "y",
    "features": [
        {"column": "id", "transform": "passthrough"},
        {"column": "x", "transform": "zscore", "indicator": True},
        {"column": "n", "transform": "zscore"},
        {"column": "price", "transform": "scale_0_1", "indicator": True},
        {"column": "flag", "transform": "passthrough"},
        {"column": "cat", "transform": "vocabulary"},
        {"column": "city", "transform": "vocabulary", "top_k": 5, "num_oov_buckets": 2},
        {"column": "born", "transform": "zscore", "indicator": True},
        {"column": "ts", "name": "ts_hour", "transform": "hour_of_day"},
        {"column": "ts", "name": "ts_dow", "transform": "day_of_week"},
        {"column": "x", "name": "x_bucket", "transform": "bucketize", "num_buckets": 4},
        {"column": "x", "name": "x_median", "transform": "zscore", "impute": "median"},
        {"column": "city", "name": "city_mf", "transform": "vocabulary",
         "impute": "most_frequent"},
    ],
}


def _x(rng):
    """10% NULL, 2% NaN, 2% ±Infinity (all "missing" for the transforms)."""
    u = rng.random()
    if u < 0.10:
        return None
    if u < 0.12:
        return "NaN"
    if u < 0.14:
        return "Infinity" if u < 0.13 else "-Infinity"
    return float(rng.normal(5, 2))


def _rows():
    rng = np.random.default_rng(7)
    cats = [f"cat{i}" for i in range(12)]
    cat_p = np.array([0.3, 0.2, 0.1, 0.1, 0.08, 0.07, 0.05, 0.04, 0.03, 0.015, 0.01, 0.005])
    cities = ["Zürich", "", "New\nYork", "Lyon", "Oslo", "Rome", "Kyiv", "Lima", "Cairo"]
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    # Negative and huge bigint keys; distinct (a collision would fail the PK).
    ids = rng.integers(-(2**63), 2**63 - 1, size=ROWS, dtype=np.int64)
    for i, row_id in enumerate(ids):
        yield (
            int(row_id),
            _x(rng),
            int(rng.integers(-1000, 1000)),
            None if rng.random() < 0.2 else f"{rng.uniform(0, 500):.2f}",
            bool(rng.random() < 0.3),
            str(rng.choice(cats, p=cat_p)),
            None if rng.random() < 0.1 else str(rng.choice(cities)),
            None if rng.random() < 0.05 else (dt.date(1950, 1, 1) + dt.timedelta(days=int(rng.integers(0, 25000)))).isoformat(),
            (base + dt.timedelta(seconds=int(rng.integers(0, 3 * 10**7)))).isoformat(),
            None if i % 97 == 0 else int(rng.random() < 0.4),
        )


def _csv(rows) -> io.StringIO:
    import csv

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow(["\\N" if v is None else v for v in row])
    out.seek(0)
    return out


@pytest.fixture(scope="session")
def rich_table(database_url, make_table):
    name = make_table(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, x double precision, "
        "n integer NOT NULL, price numeric(10,2), flag boolean NOT NULL, "
        "cat text NOT NULL, city varchar(20), born date, ts timestamptz NOT NULL, y integer)"
    )
    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.copy_expert(
            f"COPY \"{name}\" FROM STDIN (FORMAT csv, NULL '\\N')", _csv(_rows())
        )
        cur.execute(f'ANALYZE "{name}"')
    conn.close()
    return name


def _run(database_url, table, out, *extra):
    argv = ["--db_url", database_url, "--table", table, "--label", "y",
            "--output_dir", str(out), *extra]
    assert main(argv) == 0


@pytest.fixture(scope="session")
def features_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "features.json"
    path.write_text(json.dumps(FEATURES))
    return str(path)


@pytest.fixture(scope="session")
def output_a(database_url, rich_table, features_file, tmp_path_factory):
    """Block-range partitions (3)."""
    out = tmp_path_factory.mktemp("a") / "out"
    _run(database_url, rich_table, out, "--features", features_file, "--num_partitions", "3")
    return str(out)


@pytest.fixture(scope="session")
def output_b(database_url, rich_table, features_file, tmp_path_factory):
    """Key-range partitions on id (5 ranges + NULL), 2 shards per split, one read."""
    out = tmp_path_factory.mktemp("b") / "out"
    _run(database_url, rich_table, out, "--features", features_file,
         "--partition_column", "id", "--num_partitions", "5", "--num_shards", "2",
         "--read_once")
    return str(out)


def _read_all(out, split):
    features = collections.defaultdict(list)
    for batch, label in trainer.make_dataset(out, split, batch_size=512, shuffle=False):
        for key, value in batch.items():
            features[key].extend(value.numpy().tolist())
        features["y"].extend(label.numpy().tolist())
    return {k: np.array(v) for k, v in features.items()}


def _db_rows(database_url, table):
    rows = query(
        database_url,
        f'SELECT id, x, n, price::float8, flag::int, cat, city, born - DATE \'1970-01-01\', '
        f'extract(epoch FROM ts)::int8, y FROM "{table}"',
    )
    names = ["id", "x", "n", "price", "flag", "cat", "city", "born", "ts", "y"]
    out = {}
    for r in rows:
        row = dict(zip(names, r))
        if row["x"] is not None and not math.isfinite(row["x"]):
            row["x_raw"], row["x"] = row["x"], None  # missing for the transforms
        out[r[0]] = row
    return out


@pytest.fixture(scope="session")
def expected(database_url, rich_table):
    rows = _db_rows(database_url, rich_table)
    labelled = {i: r for i, r in rows.items() if r["y"] is not None}
    splits = {"train": set(), "eval": set()}
    for row_id in labelled:
        splits[reference_split(row_id)].add(row_id)
    train = [labelled[i] for i in splits["train"]]
    return {"rows": rows, "labelled": labelled, "splits": splits, "train": train}


@pytest.fixture(scope="session")
def data_a(output_a):
    return {split: _read_all(output_a, split) for split in ("train", "eval")}


def test_output_layout_matches_design(output_a):
    names = set(os.listdir(output_a))
    assert {"train", "eval", "transform_fn", "transformed_metadata", "metadata",
            "manifest.json"} <= names
    assert not any(n.startswith(".") for n in names)  # temp files cleaned up
    for split in ("train", "eval"):
        files = os.listdir(os.path.join(output_a, split))
        assert files and all(
            f.startswith("part-") and f.endswith(".tfrecord.gz") for f in files
        )
    tft_output = tft.TFTransformOutput(output_a)
    raw = tft_output.raw_feature_spec()
    assert raw["n"] == tf.io.FixedLenFeature([], tf.int64)
    assert raw["x"] == tf.io.VarLenFeature(tf.float32)
    assert raw["cat"] == tf.io.FixedLenFeature([], tf.string)
    assert raw["city"] == tf.io.VarLenFeature(tf.string)


def test_rows_per_split_are_exact(output_a, expected, data_a):
    manifest = trainer.read_manifest(output_a)
    for split in ("train", "eval"):
        ids = data_a[split]["id"]
        assert len(ids) == len(set(ids.tolist()))
        assert set(ids.tolist()) == expected["splits"][split]
        assert manifest["splits"][split]["rows"] == len(expected["splits"][split])
    dropped = sum(1 for r in expected["rows"].values() if r["y"] is None)
    assert manifest["rows_dropped_null_label"] == dropped > 0
    assert manifest["rows_read"] == ROWS
    assert sum(manifest["rows_per_partition"].values()) == ROWS
    non_finite = sum(1 for r in expected["rows"].values() if "x_raw" in r)
    assert manifest["non_finite_values"] == {"x": non_finite} and non_finite > 0
    kept = [r for r in expected["rows"].values() if r["y"] is not None]
    for column in ("price", "city", "born"):  # NULLs the transforms impute
        assert manifest["null_values"][column] == sum(r[column] is None for r in kept)


def test_split_is_the_same_with_another_partition_plan(output_a, output_b):
    manifest_b = trainer.read_manifest(output_b)
    assert len(manifest_b["read_plan"]["partitions"]) == 6
    assert len(manifest_b["splits"]["train"]["files"]) == 2
    for split in ("train", "eval"):
        a = sorted(_read_all(output_a, split)["id"].tolist())
        b = sorted(_read_all(output_b, split)["id"].tolist())
        assert a == b


def test_reading_twice_or_once_writes_the_same_examples(output_a, output_b):
    """a: the transform pass re-reads the snapshot; b: the rows are read once."""
    manifest_a, manifest_b = trainer.read_manifest(output_a), trainer.read_manifest(output_b)
    assert manifest_a["read_plan"]["reread_for_transform"] is True
    assert manifest_b["read_plan"]["reread_for_transform"] is False
    for key in ("rows_read", "rows_dropped_null_label", "null_values", "non_finite_values"):
        assert manifest_a[key] == manifest_b[key], key  # counted once, not per read
    for split in ("train", "eval"):
        a, b = _read_all(output_a, split), _read_all(output_b, split)
        assert sorted(a) == sorted(b)
        order_a, order_b = np.argsort(a["id"]), np.argsort(b["id"])
        for key in a:
            np.testing.assert_array_equal(a[key][order_a], b[key][order_b], err_msg=key)


def _by_id(data):
    return {int(i): k for k, i in enumerate(data["id"])}


def test_zscore_uses_train_population_stats_and_imputes_mean(expected, data_a):
    for column in ("x", "n", "born"):
        train_values = np.array([r[column] for r in expected["train"] if r[column] is not None], dtype=np.float64)
        mean, std = train_values.mean(), train_values.std()
        for split in ("train", "eval"):
            data = data_a[split]
            for row_id, k in _by_id(data).items():
                raw = expected["labelled"][row_id][column]
                got = data[column][k]
                if raw is None:
                    assert got == 0.0
                    if column != "n":
                        assert data[f"{column}_is_missing"][k] == 1
                else:
                    assert got == pytest.approx((raw - mean) / std, rel=1e-4, abs=1e-5)
                    if column != "n":
                        assert data[f"{column}_is_missing"][k] == 0


def test_median_imputation_uses_the_train_median(expected, data_a):
    present = np.array([r["x"] for r in expected["train"] if r["x"] is not None])
    mean, std, median = present.mean(), present.std(), np.median(present)
    for split in ("train", "eval"):
        data = data_a[split]
        for row_id, k in _by_id(data).items():
            raw = expected["labelled"][row_id]["x"]
            if raw is None:
                # quantiles are approximate (epsilon 0.001): allow a small rank error
                assert data["x_median"][k] == pytest.approx((median - mean) / std, abs=0.02)
            else:
                assert data["x_median"][k] == pytest.approx((raw - mean) / std, rel=1e-4, abs=1e-5)


def test_most_frequent_imputation_maps_null_to_id_zero(output_a, expected, data_a):
    vocab = [t.decode() for t in tft.TFTransformOutput(output_a).vocabulary_by_name("city_mf")]
    assert MISSING not in vocab
    for split in ("train", "eval"):
        data = data_a[split]
        for row_id, k in _by_id(data).items():
            raw = expected["labelled"][row_id]["city"]
            if raw is None:
                assert data["city_mf"][k] == 0


def test_scale_0_1_uses_train_range_and_imputes_train_mean(expected, data_a):
    present = np.array([r["price"] for r in expected["train"] if r["price"] is not None])
    lo, hi = present.min(), present.max()
    fill = ((present - lo) / (hi - lo)).mean()
    for split in ("train", "eval"):
        data = data_a[split]
        for row_id, k in _by_id(data).items():
            raw = expected["labelled"][row_id]["price"]
            want = fill if raw is None else (raw - lo) / (hi - lo)
            assert data["price"][k] == pytest.approx(want, rel=1e-4, abs=1e-5)
            assert data["price_is_missing"][k] == (raw is None)


def _vocab(tokens, top_k=None):
    counts = collections.Counter(tokens)
    # tf.Transform breaks count ties by the token, descending.
    ordered = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    return [t for t, _ in ordered][:top_k]


def test_vocabulary_matches_counter_on_train_and_eval_only_tokens_are_oov(
    output_a, expected, data_a
):
    tft_output = tft.TFTransformOutput(output_a)
    cat_vocab = _vocab([r["cat"] for r in expected["train"]])
    got = [t.decode() for t in tft_output.vocabulary_by_name("cat")]
    assert got == cat_vocab
    index = {t: i for i, t in enumerate(cat_vocab)}
    for split in ("train", "eval"):
        data = data_a[split]
        for row_id, k in _by_id(data).items():
            token = expected["labelled"][row_id]["cat"]
            assert data["cat"][k] == index.get(token, len(cat_vocab))


def test_city_vocabulary_top_k_missing_token_empty_string_and_newlines(
    output_a, expected, data_a
):
    tft_output = tft.TFTransformOutput(output_a)

    def token(raw):
        if raw is None:
            return MISSING
        return raw.replace("\\", "\\\\").replace("\n", "\\n")

    # '' is never a vocabulary entry (tf.Transform drops it): it maps to OOV.
    city_vocab = _vocab([token(r["city"]) for r in expected["train"] if r["city"] != ""], 5)
    assert [t.decode() for t in tft_output.vocabulary_by_name("city")] == city_vocab
    assert tft_output.vocabulary_size_by_name("city") == 5
    for split in ("train", "eval"):
        data = data_a[split]
        for row_id, k in _by_id(data).items():
            want = token(expected["labelled"][row_id]["city"])
            got = data["city"][k]
            if want in city_vocab:
                assert got == city_vocab.index(want)
            else:
                assert 5 <= got < 7


def test_time_parts_and_passthrough_values(expected, data_a):
    for split in ("train", "eval"):
        data = data_a[split]
        for row_id, k in _by_id(data).items():
            row = expected["labelled"][row_id]
            when = dt.datetime.fromtimestamp(row["ts"], dt.timezone.utc)
            assert data["ts_hour"][k] == when.hour
            assert data["ts_dow"][k] == when.weekday()
            assert data["flag"][k] == row["flag"]
            assert data["y"][k] == row["y"]


def test_bucketize_is_monotonic_in_x_with_balanced_buckets(expected, data_a):
    data = data_a["train"]
    by_id = _by_id(data)
    pairs = sorted(
        (expected["labelled"][i]["x"], data["x_bucket"][k])
        for i, k in by_id.items()
        if expected["labelled"][i]["x"] is not None
    )
    buckets = [b for _, b in pairs]
    assert buckets == sorted(buckets)
    counts = collections.Counter(buckets)
    assert set(counts) == {0, 1, 2, 3}
    assert max(counts.values()) / min(counts.values()) < 1.3


def test_existing_output_without_overwrite_is_refused(database_url, rich_table, output_a, capsys):
    argv = ["--db_url", database_url, "--table", rich_table, "--label", "y",
            "--output_dir", output_a]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "--overwrite" in err and err.count("\n") == 0
    assert os.path.exists(os.path.join(output_a, "manifest.json"))


def test_default_features_inferred_from_catalog(database_url, rich_table, tmp_path):
    out = tmp_path / "default"
    _run(database_url, rich_table, out)
    manifest = trainer.read_manifest(str(out))
    names = set(manifest["transformed_features"])
    assert names == {
        "y", "x", "x_is_missing", "n", "price", "price_is_missing", "flag", "cat",
        "city", "born", "born_is_missing", "ts", "ts_hour_of_day", "ts_day_of_week",
    }
    assert manifest["vocabularies"]["cat"]["size"] == 12
    features, label = next(iter(trainer.make_dataset(str(out), "eval", batch_size=8)))
    assert label.dtype == tf.int64 and features["x"].dtype == tf.float32


from tests.statistics_checks import *  # noqa: E402,F403 - statistics on output_a
