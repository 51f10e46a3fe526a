"""Trainer helper and serving: reading the output, the demo model, no train/serve skew."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

import trainer
from localdev.sample_table import create_sample_table
from pipeline.__main__ import main
from tests.conftest import query
from trainer.model import build_model
from trainer.serving import NULL_SUFFIX, export_serving_model

ROWS = 20_000


@pytest.fixture(scope="module")
def sample_output(database_url, tmp_path_factory):
    create_sample_table(database_url, "sample_trainer", ROWS, seed=11, replace=True)
    features = {
        "label": "label",
        "features": [{"column": "id", "transform": "passthrough"}]
        + [{"column": f"f{i}", "transform": "zscore", "indicator": True} for i in range(4)]
        + [
            {"column": "c10", "transform": "vocabulary"},
            {"column": "c100", "transform": "vocabulary", "impute": "most_frequent"},
            {"column": "c1k", "transform": "hash", "hash_buckets": 64},
            {"column": "created_at", "name": "hour", "transform": "hour_of_day"},
            {"column": "f4", "transform": "bucketize", "num_buckets": 8},
        ],
    }
    base = tmp_path_factory.mktemp("trainer")
    (base / "features.json").write_text(json.dumps(features))
    out = str(base / "out")
    assert main(["--db_url", database_url, "--table", "sample_trainer", "--label", "label",
                 "--features", str(base / "features.json"), "--output_dir", out,
                 "--num_shards", "4"]) == 0
    return out


@pytest.fixture(scope="module")
def trained(sample_output, tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(sample_output, exclude=("id",))  # the id is only for matching
    names = [i.name for i in model.inputs]
    train = trainer.make_dataset(sample_output, "train", 256, seed=0).map(
        lambda f, y: ({k: f[k] for k in names}, y)
    )
    model.fit(train, epochs=3, verbose=0)
    export_dir = str(tmp_path_factory.mktemp("export") / "serving")
    export_serving_model(model, sample_output, export_dir)
    return model, export_dir


def test_make_dataset_reads_every_example_once_and_shards_by_file(sample_output):
    manifest = trainer.read_manifest(sample_output)
    ids = [int(i) for f, _ in trainer.make_dataset(sample_output, "train", 1000, shuffle=False)
           for i in f["id"].numpy()]
    assert len(ids) == len(set(ids)) == manifest["splits"]["train"]["rows"]
    sharded = []
    for index in range(2):
        part = [int(i) for f, _ in trainer.make_dataset(
            sample_output, "train", 1000, shuffle=False, shard=(2, index)) for i in f["id"].numpy()]
        sharded.append(set(part))
    assert not sharded[0] & sharded[1] and sharded[0] | sharded[1] == set(ids)
    with pytest.raises(ValueError, match="has 4 files for 5 workers"):
        trainer.make_dataset(sample_output, "train", shard=(5, 0))


def test_make_dataset_epochs_cache_and_incomplete_output(sample_output, tmp_path):
    rows = trainer.read_manifest(sample_output)["splits"]["eval"]["rows"]
    seen = sum(int(y.shape[0]) for _, y in trainer.make_dataset(
        sample_output, "eval", 512, num_epochs=2, cache=True, seed=1))
    assert seen == 2 * rows
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        trainer.make_dataset(str(tmp_path), "train")


def test_demo_model_beats_the_majority_baseline(sample_output, trained):
    model, _ = trained
    names = [i.name for i in model.inputs]
    evaluation = trainer.make_dataset(sample_output, "eval", 2048, shuffle=False).map(
        lambda f, y: ({k: f[k] for k in names}, y)
    )
    _, auc, accuracy = model.evaluate(evaluation, verbose=0)
    labels = np.concatenate([y.numpy() for _, y in evaluation])
    baseline = max(labels.mean(), 1 - labels.mean())
    assert auc > 0.7
    assert accuracy > baseline + 0.03


def _raw_rows(database_url, n=400):
    raw_columns = ["id"] + [f"f{i}" for i in range(5)] + ["c10", "c100", "c1k", "created_at"]
    sql = (
        "SELECT id, f0, f1, f2, f3, f4, c10, c100, c1k, "
        "floor(extract(epoch FROM created_at))::int8 FROM sample_trainer "
        "WHERE f0 IS NULL OR c100 IS NULL OR id %% 50 = 0 ORDER BY id LIMIT %s"
    )
    return raw_columns, query(database_url, sql, (n,))


def _example(raw_spec, row: dict) -> bytes:
    feature = {}
    for name, spec in raw_spec.items():
        value = row[name]
        if value is None:
            continue  # NULL: the feature is absent, as for a nullable column
        if spec.dtype == tf.string:
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        elif spec.dtype == tf.float32:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        else:
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_serving_signatures_match_the_model_on_the_tfrecords(database_url, sample_output, trained):
    model, export_dir = trained
    columns, rows = _raw_rows(database_url)
    rows = [dict(zip(columns, r)) for r in rows]
    assert any(r["f0"] is None for r in rows) and any(r["c100"] is None for r in rows)
    wanted = {r["id"] for r in rows}

    # The same rows as the pipeline wrote them, fed to the model.
    from_records = {}
    for split in ("train", "eval"):
        for features, _ in trainer.make_dataset(sample_output, split, 4096, shuffle=False):
            keep = np.isin(features["id"].numpy(), list(wanted))
            if not keep.any():
                continue
            picked = {k: tf.boolean_mask(v, keep) for k, v in features.items()}
            inputs = {i.name: picked[i.name] for i in model.inputs}
            probabilities = model(inputs).numpy().reshape(-1)
            for row_id, p in zip(picked["id"].numpy(), probabilities):
                from_records[int(row_id)] = float(p)
    assert set(from_records) == wanted

    serving = tf.saved_model.load(export_dir)
    raw_spec = {k: v for k, v in tft.TFTransformOutput(sample_output).raw_feature_spec().items()
                if k != "label"}
    examples = tf.constant([_example(raw_spec, r) for r in rows])
    served = serving.signatures["serving_default"](examples=examples)["probability"].numpy()

    raw = {}
    for name, spec in raw_spec.items():
        values = [r[name] for r in rows]
        fill = "" if spec.dtype == tf.string else 0
        raw[name] = tf.constant([fill if v is None else v for v in values], dtype=spec.dtype)
        if isinstance(spec, tf.io.VarLenFeature):
            raw[f"{name}{NULL_SUFFIX}"] = tf.constant([v is None for v in values])
    served_raw = serving.signatures["serve_raw"](**raw)["probability"].numpy()

    expected = np.array([from_records[r["id"]] for r in rows])
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served_raw, expected, rtol=1e-5, atol=1e-6)


def test_dataset_from_postgres_matches_make_dataset(database_url, sample_output):
    def by_id(dataset):
        rows = {}
        for features, label in dataset:
            arrays = {k: v.numpy() for k, v in features.items()}
            for i, row_id in enumerate(arrays["id"]):
                rows[int(row_id)] = ({k: a[i] for k, a in arrays.items()}, int(label[i]))
        return rows

    direct = by_id(trainer.dataset_from_postgres(
        database_url, table="sample_trainer", batch_size=700,
        transform_output_dir=sample_output, num_partitions=3))
    assert len(direct) == ROWS
    for split in ("train", "eval"):
        stored = by_id(trainer.make_dataset(sample_output, split, 2048, shuffle=False))
        for row_id, (features, label) in stored.items():
            got, got_label = direct[row_id]
            assert got_label == label
            for name, value in features.items():
                assert got[name] == pytest.approx(value, rel=1e-6, abs=1e-6), (row_id, name)


def test_dataset_from_postgres_raw_columns(database_url, sample_output):
    dataset = trainer.dataset_from_postgres(
        database_url, table="sample_trainer", batch_size=5000, label="label",
        columns=["id", "f0", "c10", "label"])
    ids, nulls = [], 0
    for features, label in dataset:
        assert set(features) == {"id", "f0", "f0__is_null", "c10", "c10__is_null"}
        ids.extend(features["id"].numpy().tolist())
        nulls += int(features["f0__is_null"].numpy().sum())
    assert sorted(ids) == list(range(1, ROWS + 1))
    ((expected_nulls,),) = query(database_url, "SELECT count(*) FROM sample_trainer WHERE f0 IS NULL")
    assert nulls == expected_nulls
