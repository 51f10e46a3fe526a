"""The whole job against a real PostgreSQL: one rich table, few runs, many assertions.

Expected values are computed independently of the pipeline: from the rows fetched by
SQL, with numpy (means, population std, min/max), collections.Counter (vocabularies)
and a plain-Python SplitMix64 (the split of every id).
"""

import collections
import datetime as dt
import gc
import hashlib
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
FLOAT32_MAX = 3.4028234663852886e38


def _sha8(name):
    return hashlib.sha256(name.encode()).hexdigest()[:8]


# Columns whose names TF, tf.Transform or our own suffixes would trip on, with their
# expected feature names written out (sanitised ASCII + 8 hex digits of SHA-256
# only where needed); the default-features run reads them all, labelled by
# `lab/el`, a text label with '', newlines, CR, backslashes and eval-only classes.
LONG = "é" * 31 + "x"  # 63 bytes, PostgreSQL's longest identifier
ODD = [
    ("a/b", "text NOT NULL", f"a_b_{_sha8('a/b')}"),
    ("a_b", "text NOT NULL", "a_b"),
    # `a b` clashes with a real column named like its 8-digit name: 16 digits.
    ("a b", "text", "a_b_" + hashlib.sha256(b"a b").hexdigest()[:16]),
    (f"a_b_{_sha8('a b')}", "text", f"a_b_{_sha8('a b')}"),
    ("ünïcødé_列", "double precision", f"unic_de_{_sha8('ünïcødé_列')}"),
    ("with space", "integer", f"with_space_{_sha8('with space')}"),
    ('q"uote', "text", f"q_uote_{_sha8(chr(113) + chr(34) + 'uote')}"),
    ("d.o.t", "text", f"d_o_t_{_sha8('d.o.t')}"),
    ("1lead", "integer NOT NULL", f"f_1lead_{_sha8('1lead')}"),
    ("-", "integer", f"f_{_sha8('-')}"),
    (">", "double precision", f"f_{_sha8('>')}"),
    (LONG, "integer", "e" * 31 + f"x_{_sha8(LONG)}"),  # accents dropped
    ("Case", "text", f"Case_{_sha8('Case')}"),
    ("case", "text", f"case_{_sha8('case')}"),
    ("__sql2tfrecord_split__", "integer", f"sql2tfrecord_split_{_sha8('__sql2tfrecord_split__')}"),
    ("x_is_missing", "integer", "x_is_missing"),  # next to nullable x
    ("ts_hour_of_day", "integer NOT NULL", "ts_hour_of_day"),  # next to ts
    ("lab/el", "text", f"lab_el_{_sha8('lab/el')}"),
]
LABELS = ["", "a\nb", "c\rd", "e\r\nf", "back\\slash", "\\e", "plain", "ü 列"]

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


def _y(i, rng):
    """The float label: 0/1, NULL, and NaN, ±Infinity, beyond float32 (dropped)."""
    value = float(rng.random() < 0.4)
    if i % 97 == 0:
        return None
    for every, odd in ((89, "NaN"), (151, "Infinity"), (173, "-Infinity"), (211, 1e300)):
        if i % every == 5:
            return odd
    return value


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
    odd_rng = np.random.default_rng(8)
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
            _y(i, rng),
            *_odd_values(odd_rng, int(row_id)),
        )


def _odd_values(rng, row_id):
    """Values of the ODD columns for one row (their own generator)."""
    split = reference_split(row_id)
    if rng.random() < 0.03:
        label = None
    elif split == "eval" and rng.random() < 0.1:
        label = f"eval-only-{rng.integers(0, 4)}"  # a class the train split lacks
    else:
        label = LABELS[int(rng.integers(0, 64) ** 0.5) % len(LABELS)]
    text = lambda p: None if rng.random() < 0.1 else f"{p}{rng.integers(0, 3)}"  # noqa: E731
    number = lambda: None if rng.random() < 0.1 else int(rng.integers(-5, 5))  # noqa: E731
    return (
        f"p{rng.integers(0, 7)}", f"q{rng.integers(0, 3)}", text("s"), text("t"),
        None if rng.random() < 0.1 else float(rng.normal()), number(), text("u"),
        text("v"), int(rng.integers(0, 9)), number(),
        None if rng.random() < 0.1 else float(rng.random()), number(), text("C"),
        text("c"), number(), number(), int(rng.integers(0, 24)), label,
    )


def _csv(rows) -> io.StringIO:
    def field(v):
        if v is None:
            return "\\N"
        text = str(v)
        if text == "" or any(c in text for c in ',"\n\r\\'):
            return '"' + text.replace('"', '""') + '"'
        return text

    out = io.StringIO()
    for row in rows:
        out.write(",".join(field(v) for v in row) + "\n")
    out.seek(0)
    return out


@pytest.fixture(scope="session")
def rich_table(database_url, make_table):
    name = make_table(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, x double precision, "
        "n integer NOT NULL, price numeric(10,2), flag boolean NOT NULL, "
        "cat text NOT NULL, city varchar(20), born date, ts timestamptz NOT NULL, "
        "y double precision, "
        + ", ".join('"{}" {}'.format(n.replace('"', '""'), t) for n, t, _ in ODD)
        + ")"
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
    assert gc.get_freeze_count() == 0  # the job thawed what it froze (pipeline.heap)


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


def _read_all(out, split, label_as="y"):
    features = collections.defaultdict(list)
    for batch, label in trainer.make_dataset(out, split, batch_size=512, shuffle=False):
        for key, value in batch.items():
            features[key].extend(value.numpy().tolist())
        features[label_as].extend(label.numpy().tolist())
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


def _finite_label(y):
    return y is not None and math.isfinite(y) and abs(y) <= FLOAT32_MAX


@pytest.fixture(scope="session")
def expected(database_url, rich_table):
    rows = _db_rows(database_url, rich_table)
    labelled = {i: r for i, r in rows.items() if _finite_label(r["y"])}
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
    # Temp files cleaned up; the marker of our own output stays (see pipeline.publish).
    assert [n for n in names if n.startswith(".")] == [".sql2tfrecord"]
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


def test_rows_per_split_are_exact(database_url, rich_table, output_a, expected, data_a):
    manifest = trainer.read_manifest(output_a)
    for split in ("train", "eval"):
        ids = data_a[split]["id"]
        assert len(ids) == len(set(ids.tolist()))
        assert set(ids.tolist()) == expected["splits"][split]
        assert manifest["splits"][split]["rows"] == len(expected["splits"][split])
    dropped = sum(1 for r in expected["rows"].values() if r["y"] is None)
    assert manifest["rows_dropped_null_label"] == dropped > 0
    (non_finite_labels,) = query(
        database_url,
        f'SELECT count(*) FROM "{rich_table}" WHERE y = \'NaN\' OR y = \'Infinity\' '
        f"OR y = '-Infinity' OR abs(y) > {FLOAT32_MAX!r}",
    )[0]
    assert manifest["rows_dropped_non_finite_label"] == non_finite_labels >= 4
    for split in ("train", "eval"):  # the trainer never sees a non-finite label
        assert np.all(np.isfinite(data_a[split]["y"]))
        assert set(data_a[split]["y"].tolist()) == {0.0, 1.0}
    assert manifest["rows_read"] == ROWS
    assert sum(manifest["rows_per_partition"].values()) == ROWS
    # Counted on the rows kept (a label, a finite one).
    non_finite = sum(1 for r in expected["labelled"].values() if "x_raw" in r)
    assert manifest["non_finite_values"] == {"x": non_finite} and non_finite > 0
    kept = [r for r in expected["rows"].values() if r["y"] is not None]
    kept = [r for r in kept if _finite_label(r["y"])]
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
    for key in ("rows_read", "rows_dropped_null_label", "rows_dropped_non_finite_label",
                "null_values", "non_finite_values"):
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


@pytest.fixture(scope="session")
def output_default(database_url, rich_table, tmp_path_factory):
    """Default (inferred) features over every column, labelled by `lab/el` (text)."""
    out = tmp_path_factory.mktemp("default") / "out"
    argv = ["--db_url", database_url, "--table", rich_table, "--label", "lab/el",
            "--output_dir", str(out)]
    assert main(argv) == 0
    return str(out)


def _label_token(value):
    """The documented label vocabulary encoding, written out independently."""
    if value == "":
        return b"\\e"
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").encode()


def _counter_vocab(tokens):
    counts = collections.Counter(tokens)
    # tf.Transform: count descending, ties by token (bytes) descending.
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


@pytest.fixture(scope="session")
def odd_expected(database_url, rich_table):
    columns = ", ".join('"{}"'.format(n.replace('"', '""')) for n, _, _ in ODD)
    rows = query(database_url, f'SELECT id, {columns} FROM "{rich_table}"')
    by_split = {"train": [], "eval": []}
    for r in rows:
        row = dict(zip([n for n, _, _ in ODD], r[1:]))
        if row["lab/el"] is not None:
            by_split[reference_split(r[0])].append({"id": r[0], **row})
    return by_split


def test_default_features_names_are_valid_mapped_and_recorded(output_default):
    manifest = trainer.read_manifest(output_default)
    names = manifest["names"]
    for column, _, key in ODD:
        assert names[column] == key, column
    label_key = f"lab_el_{_sha8('lab/el')}"
    assert manifest["label"] == label_key and manifest["label_column"] == "lab/el"
    assert manifest["split_key"] == "id"
    # Derived outputs never take a real column's name.
    x_missing = f"x_is_missing_{_sha8('x_is_missing')}"
    ts_hour = f"ts_hour_of_day_{_sha8('ts_hour_of_day')}"
    nullable_numbers = ["x", "price", "born", "y", "ünïcødé_列", "with space", "-", ">",
                        LONG, "__sql2tfrecord_split__", "x_is_missing"]
    want = {label_key, "n", "flag", "cat", "city", "ts", ts_hour, "ts_day_of_week",
            x_missing}
    want |= {names[c] for c, _, _ in ODD if c != "lab/el"}
    want |= {"x", "price", "born", "y"}
    want |= {f"{names.get(c, c)}_is_missing" for c in nullable_numbers if c != "x"}
    assert set(manifest["transformed_features"]) == want
    raw = tft.TFTransformOutput(output_default).raw_feature_spec()
    assert set(raw) == set(names.values())
    assert manifest["vocabularies"]["cat"]["size"] == 12
    assert manifest["vocabularies"][names["a/b"]]["column"] == "a/b"
    features, label = next(iter(trainer.make_dataset(output_default, "eval", batch_size=8)))
    assert label.dtype == tf.int64 and features["x"].dtype == tf.float32


def test_columns_tf_transform_rewrites_alike_have_their_own_vocabularies(
    output_default, odd_expected
):
    manifest = trainer.read_manifest(output_default)
    tft_output = tft.TFTransformOutput(output_default)
    data = {s: _read_all(output_default, s, "label") for s in ("train", "eval")}
    for column in ("a/b", "a_b"):
        key = manifest["names"][column]
        vocab = _counter_vocab(r[column].encode() for r in odd_expected["train"])
        assert tft_output.vocabulary_by_name(key) == vocab
        assert manifest["vocabularies"][key]["size"] == len(vocab)
        got = collections.Counter(data["train"][key].tolist())
        assert got == collections.Counter(
            vocab.index(r[column].encode()) for r in odd_expected["train"]
        )
    assert manifest["vocabularies"]["a_b"]["size"] == 3
    assert manifest["vocabularies"][manifest["names"]["a/b"]]["size"] == 7


def test_text_label_every_train_class_has_an_id_and_unseen_classes_are_counted(
    database_url, rich_table, output_default, odd_expected
):
    manifest = trainer.read_manifest(output_default)
    train_labels = [r["lab/el"] for r in odd_expected["train"]]
    vocab = _counter_vocab(_label_token(v) for v in train_labels)
    assert len(vocab) == len(LABELS)  # '', newlines, CR, backslashes included
    key = manifest["label"]
    assert tft.TFTransformOutput(output_default).vocabulary_by_name(key) == vocab
    classes = manifest["label_classes"]
    assert [_label_token(c) for c in classes] == vocab and set(classes) == set(LABELS)
    seen = set(train_labels)
    eval_ids = [r["id"] for r in odd_expected["eval"]]
    (unseen,) = query(
        database_url,
        f'SELECT count(*) FROM "{rich_table}" WHERE "lab/el" IS NOT NULL '
        f'AND id = ANY(%s) AND NOT ("lab/el" = ANY(%s))',
        (eval_ids, sorted(seen)),
    )[0]
    assert manifest["rows_dropped_unseen_label"] == {"train": 0, "eval": unseen}
    assert unseen > 0
    for split in ("train", "eval"):
        labels = _read_all(output_default, split, label_as="label")["label"]
        assert labels.min() >= 0  # never a -1
        want = collections.Counter(
            classes.index(r["lab/el"]) for r in odd_expected[split] if r["lab/el"] in seen
        )
        assert collections.Counter(labels.tolist()) == want
        assert manifest["splits"][split]["rows"] == sum(want.values())
    (nulls,) = query(database_url, f'SELECT count(*) FROM "{rich_table}" WHERE "lab/el" IS NULL')[0]
    assert manifest["rows_dropped_null_label"] == nulls


def test_serving_signature_takes_the_mapped_raw_names(output_default, tmp_path):
    from trainer.model import build_model
    from trainer.serving import NULL_SUFFIX, export_serving_model

    manifest = trainer.read_manifest(output_default)
    tft_output = tft.TFTransformOutput(output_default)
    raw_spec = {k: v for k, v in tft_output.raw_feature_spec().items()
                if k != manifest["label"]}
    model = build_model(output_default)
    export_dir = export_serving_model(model, output_default, str(tmp_path / "serving"))
    serve_raw = tf.saved_model.load(export_dir).signatures["serve_raw"]
    inputs = {}
    for key, spec in raw_spec.items():
        fill = "v" if spec.dtype == tf.string else 1
        inputs[key] = tf.constant([fill, fill], spec.dtype)
        if isinstance(spec, tf.io.VarLenFeature):
            inputs[f"{key}{NULL_SUFFIX}"] = tf.constant([True, False])
    assert set(serve_raw.structured_input_signature[1]) == set(inputs)
    got = serve_raw(**inputs)["probability"].numpy()
    sparse = {
        k: tf.sparse.from_dense(tf.reshape(v, [-1, 1]))
        if isinstance(raw_spec[k], tf.io.VarLenFeature) else v
        for k, v in inputs.items() if k in raw_spec
    }
    # The row with every nullable value NULL, and the one with all present.
    sparse = {k: tf.sparse.retain(v, [False, True]) if isinstance(v, tf.SparseTensor) else v
              for k, v in sparse.items()}
    transformed = tft_output.transform_features_layer()(sparse)
    want = model({i.name: transformed[i.name] for i in model.inputs}).numpy().reshape(-1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


from tests.statistics_checks import *  # noqa: E402,F403 - statistics on output_a
