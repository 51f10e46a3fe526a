"""Trainer helper and serving: reading the output, the demo model, no train/serve skew.

The first part needs no database: a tiny output is built by running tf.Transform on
in-memory rows (as the pipeline does: analyze train, transform both splits, gzip
TFRecords, transform_fn, raw metadata, manifest). The second part reads a real
PostgreSQL table through the pipeline.
"""

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

import trainer
from tests.conftest import query
from trainer.model import build_model, model_inputs
from trainer.serving import NULL_SUFFIX, export_serving_model

# --- A tiny output built with tf.Transform on in-memory rows (no database) ---------

MISSING = "__MISSING__"
TOKENS = ["a", "b", "c", "d"]
TRAIN_SHARDS = 3
HASH_BUCKETS = 8


def _tiny_rows(seed: int = 7, n: int = 800) -> list[dict]:
    """Rows as the database has them: None is NULL (f0 and cat are nullable)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        f0 = None if rng.random() < 0.15 else float(np.float32(rng.normal(2.0, 3.0)))
        cat = (
            None
            if rng.random() < 0.1
            else TOKENS[rng.choice(4, p=[0.4, 0.3, 0.2, 0.1])]
        )
        f1 = float(np.float32(rng.uniform(-1, 1)))
        ts = int(rng.integers(1_700_000_000, 1_710_000_000))
        score = f1 + (0.8 if cat == "a" else 0.0) + 0.2 * (f0 or 0.0) - 0.6
        rows.append(
            {"id": i, "f0": f0, "f1": f1, "cat": cat, "ts": ts, "label": int(score > 0)}
        )
    return rows


RAW_SPEC = {
    "id": tf.io.FixedLenFeature([], tf.int64),
    "f0": tf.io.VarLenFeature(tf.float32),
    "f1": tf.io.FixedLenFeature([], tf.float32),
    "cat": tf.io.VarLenFeature(tf.string),
    "ts": tf.io.FixedLenFeature([], tf.int64),
    "label": tf.io.FixedLenFeature([], tf.int64),
}


def _dense(x, default):
    return tf.squeeze(
        tft.sparse_tensor_to_dense_with_shape(x, [None, 1], default_value=default), 1
    )


def _preprocessing_fn(inputs):
    """Like transforms.preprocessing: mean-imputed z-score + indicator, a named
    vocabulary with a missing token, a hash, hour of day, passthroughs."""
    f0 = _dense(inputs["f0"], float("nan"))
    present = tf.logical_not(tf.math.is_nan(f0))
    mean = tft.mean(inputs["f0"].values)
    std = tf.sqrt(tft.var(inputs["f0"].values))
    cat = _dense(inputs["cat"], MISSING)
    return {
        "id": inputs["id"],
        "f0": (tf.where(present, f0, mean) - mean) / std,
        "f0_is_missing": 1 - tf.cast(present, tf.int64),
        "f1": tft.scale_to_z_score(inputs["f1"]),
        "cat": tft.compute_and_apply_vocabulary(
            cat, num_oov_buckets=1, vocab_filename="cat"
        ),
        "cat_hash": tft.hash_strings(cat, HASH_BUCKETS),
        "ts_hour_of_day": tf.math.floormod(tf.math.floordiv(inputs["ts"], 3600), 24),
        "label": inputs["label"],
    }


def _instance(row: dict) -> dict:
    """A tf.Transform instance dict: a VarLen value is a list, empty for NULL."""
    out = dict(row)
    out["f0"] = [] if row["f0"] is None else [row["f0"]]
    out["cat"] = [] if row["cat"] is None else [row["cat"].encode()]
    return out


def _serialize(values: dict) -> bytes:
    """A tf.Example of scalars (numpy or Python); None leaves the feature absent."""
    feature = {}
    for name, value in values.items():
        if value is None:
            continue
        value = np.asarray(value).reshape(-1)
        if value.dtype.kind in "SUO":
            items = [v if isinstance(v, bytes) else str(v).encode() for v in value]
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=items))
        elif value.dtype.kind == "f":
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=value))
        else:
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=value))
    return tf.train.Example(
        features=tf.train.Features(feature=feature)
    ).SerializeToString()


def _write_shards(instances: list, directory: str, num_shards: int) -> None:
    """Writes transformed instances, by id, round robin into gzip TFRecord shards."""
    os.makedirs(directory)
    instances = sorted(instances, key=lambda d: int(d["id"]))
    for shard in range(num_shards):
        path = os.path.join(
            directory, f"part-{shard:05d}-of-{num_shards:05d}.tfrecord.gz"
        )
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for instance in instances[shard::num_shards]:
                writer.write(_serialize(instance))


def _feature(name, column, transform, **options):
    return {"name": name, "column": column, "transform": transform, **options}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(output_dir, train rows, eval rows) of an output written like the pipeline's."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import (
        dataset_metadata,
        metadata_io,
        schema_utils,
    )

    base = tmp_path_factory.mktemp("tiny")
    out = str(base / "out")
    rows = _tiny_rows()
    train_rows, eval_rows = rows[:600], rows[600:]
    raw_metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(RAW_SPEC)
    )
    with tft_beam.Context(temp_dir=str(base / "tmp")), beam.Pipeline() as p:
        train = p | "CreateTrain" >> beam.Create([_instance(r) for r in train_rows])
        evaluation = p | "CreateEval" >> beam.Create([_instance(r) for r in eval_rows])
        (train_out, _), transform_fn = (
            train,
            raw_metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(_preprocessing_fn)
        eval_out, _ = (
            (evaluation, raw_metadata),
            transform_fn,
        ) | tft_beam.TransformDataset()
        for split, data, shards in (
            ("train", train_out, TRAIN_SHARDS),
            ("eval", eval_out, 1),
        ):
            _ = (
                data
                | f"Collect{split}" >> beam.combiners.ToList()
                | f"Write{split}"
                >> beam.Map(_write_shards, os.path.join(out, split), shards)
            )
        _ = transform_fn | tft_beam.WriteTransformFn(out)
    metadata_io.write_metadata(raw_metadata, os.path.join(out, "metadata"))
    tft_output = tft.TFTransformOutput(out)
    manifest = {
        "format": "sql2tfrecord/1",
        "label": "label",
        "features": {
            "label": {"column": "label"},
            "features": [
                _feature("id", "id", "passthrough"),
                _feature("f0", "f0", "zscore", impute="mean", indicator=True),
                _feature("f1", "f1", "zscore"),
                _feature("cat", "cat", "vocabulary", num_oov_buckets=1),
                _feature("cat_hash", "cat", "hash", hash_buckets=HASH_BUCKETS),
                _feature("ts_hour_of_day", "ts", "hour_of_day"),
            ],
        },
        "vocabularies": {
            "cat": {
                "size": tft_output.vocabulary_size_by_name("cat"),
                "num_oov_buckets": 1,
            }
        },
        "splits": {
            "train": {"rows": len(train_rows)},
            "eval": {"rows": len(eval_rows)},
        },
        "transformed_features": sorted(tft_output.transformed_feature_spec()),
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return out, train_rows, eval_rows


@pytest.fixture(scope="module")
def tiny_trained(tiny, tmp_path_factory):
    """A briefly trained model, its serving export, eval loss before and after."""
    import keras

    out, _, _ = tiny
    keras.utils.set_random_seed(0)
    model = build_model(out, exclude=("id",))

    def for_model(features, label):
        return model_inputs(model, features), label

    train = trainer.make_dataset(out, "train", 64, seed=0, num_epochs=5)
    evaluation = trainer.make_dataset(out, "eval", 256, shuffle=False).map(for_model)
    with warnings.catch_warnings():  # Keras on tf.data of unknown length
        warnings.simplefilter("ignore", UserWarning)
        first = model.evaluate(evaluation, verbose=0, return_dict=True)["loss"]
        model.fit(train.map(for_model), verbose=0)  # 5 passes, 50 steps
        last = model.evaluate(evaluation, verbose=0, return_dict=True)["loss"]
    export_dir = str(tmp_path_factory.mktemp("tiny_export") / "serving")
    export_serving_model(model, out, export_dir)
    return model, export_dir, (first, last)


def _read_written(out: str, split: str) -> dict[int, dict]:
    """The examples in the split's files, read without make_dataset, by id."""
    examples = {}
    for path in trainer.dataset.shard_files(out, split):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            proto = tf.train.Example.FromString(record.numpy())
            row = {}
            for name, feature in proto.features.feature.items():
                kind = feature.WhichOneof("kind")
                (row[name],) = getattr(feature, kind).value
            assert int(row["id"]) not in examples
            examples[int(row["id"])] = row
    return examples


def _rows_of(dataset) -> list[dict]:
    rows = []
    for features, label in dataset:
        arrays = {k: v.numpy() for k, v in features.items()}
        for i, y in enumerate(label.numpy()):
            rows.append({**{k: a[i] for k, a in arrays.items()}, "label": y})
    return rows


@pytest.mark.parametrize("split", ["train", "eval"])
def test_make_dataset_yields_exactly_the_written_examples(tiny, split):
    out, train_rows, eval_rows = tiny
    raw = {r["id"]: r for r in (train_rows if split == "train" else eval_rows)}
    written = _read_written(out, split)
    read = _rows_of(trainer.make_dataset(out, split, 64, shuffle=False))
    assert len(read) == len(written) == len(raw)
    assert sorted(int(r["id"]) for r in read) == sorted(raw)
    for row in read:
        example = written[int(row["id"])]
        assert set(row) == set(example)
        for name, value in row.items():
            assert value == np.asarray(example[name], dtype=value.dtype), (
                row["id"],
                name,
            )
    # And the values are what the transform promises (golden, numpy).
    f1 = np.array([r["f1"] for r in train_rows], np.float64)
    vocabulary = tft.TFTransformOutput(out).vocabulary_by_name("cat")
    for row in read:
        r = raw[int(row["id"])]
        assert row["f1"] == pytest.approx((r["f1"] - f1.mean()) / f1.std(), abs=1e-5)
        assert row["f0_is_missing"] == (r["f0"] is None)
        assert vocabulary[row["cat"]].decode() == (r["cat"] or MISSING)
        assert row["ts_hour_of_day"] == r["ts"] // 3600 % 24
        assert row["label"] == r["label"]


def test_make_dataset_shards_by_file(tiny):
    out, train_rows, _ = tiny
    ids = []
    for index in range(2):
        part = [
            int(r["id"])
            for r in _rows_of(
                trainer.make_dataset(out, "train", 64, shuffle=False, shard=(2, index))
            )
        ]
        ids.append(set(part))
    assert len(ids[0]) == 400 and len(ids[1]) == 200  # files 0 and 2 / file 1
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {r["id"] for r in train_rows}
    with pytest.raises(ValueError, match="has 3 files for 4 workers"):
        trainer.make_dataset(out, "train", shard=(4, 0))


def test_build_model_inputs_come_from_the_output(tiny, tmp_path):
    import keras

    out, _, _ = tiny
    model = build_model(out, exclude=("id",))
    assert sorted(i.name for i in model.inputs) == [
        "cat",
        "cat_hash",
        "f0",
        "f0_is_missing",
        "f1",
        "ts_hour_of_day",
    ]
    embeddings = {
        layer.name: layer.input_dim
        for layer in model.layers
        if isinstance(layer, keras.layers.Embedding)
    }
    vocabulary_size = tft.TFTransformOutput(out).vocabulary_size_by_name("cat")
    assert embeddings == {
        "cat_embedding": vocabulary_size + 1,
        "cat_hash_embedding": HASH_BUCKETS,
        "ts_hour_of_day_embedding": 25,  # 24 hours + missing
    }
    # A user preprocessing_fn's output (no feature records): everything numeric.
    user = tmp_path / "user"
    shutil.copytree(out, user)
    manifest = json.loads((user / "manifest.json").read_text())
    manifest["features"] = None
    (user / "manifest.json").write_text(json.dumps(manifest))
    numeric = build_model(str(user))
    assert len(numeric.inputs) == 7  # the id too: nothing is excluded
    assert not [
        layer for layer in numeric.layers if isinstance(layer, keras.layers.Embedding)
    ]
    features, _ = next(iter(trainer.make_dataset(str(user), "eval", 8, shuffle=False)))
    assert numeric(model_inputs(numeric, features)).shape == (8, 1)


def test_model_trains(tiny_trained):
    model, _, (first, last) = tiny_trained
    assert last < first - 0.05
    assert model.output_shape == (None, 1)


def _transformed_by_id(out: str, split: str) -> dict[int, dict]:
    return {
        int(r["id"]): r
        for r in _rows_of(trainer.make_dataset(out, split, 256, shuffle=False))
    }


def _predict(model, rows: list[dict]) -> np.ndarray:
    batch = {name: tf.constant([r[name] for r in rows]) for name in rows[0]}
    return model(model_inputs(model, batch)).numpy().reshape(-1)


def _serve_raw_inputs(rows: list[dict]) -> dict:
    raw = {}
    for name, spec in RAW_SPEC.items():
        if name == "label":
            continue
        values = [r[name] for r in rows]
        fill = "" if spec.dtype == tf.string else 0
        raw[name] = tf.constant([fill if v is None else v for v in values], spec.dtype)
        if isinstance(spec, tf.io.VarLenFeature):
            raw[f"{name}{NULL_SUFFIX}"] = tf.constant([v is None for v in values])
    return raw


def _raw_examples(rows: list[dict]) -> tf.Tensor:
    return tf.constant(
        [_serialize({k: v for k, v in r.items() if k != "label"}) for r in rows]
    )


def test_serving_matches_the_model_on_the_written_features(tiny, tiny_trained):
    out, _, eval_rows = tiny
    model, export_dir, _ = tiny_trained
    transformed = _transformed_by_id(out, "eval")
    expected = _predict(model, [transformed[r["id"]] for r in eval_rows])
    assert any(r["f0"] is None for r in eval_rows)
    assert any(r["cat"] is None for r in eval_rows)
    assert expected.std() > 0.01  # a model that says the same thing would prove little

    serving = tf.saved_model.load(export_dir)
    assert set(serving.signatures) == {"serving_default", "serve_raw"}
    served = serving.signatures["serving_default"](examples=_raw_examples(eval_rows))
    np.testing.assert_allclose(
        served["probability"].numpy(), expected, rtol=0, atol=1e-5
    )
    served_raw = serving.signatures["serve_raw"](**_serve_raw_inputs(eval_rows))
    np.testing.assert_allclose(
        served_raw["probability"].numpy(), expected, rtol=0, atol=1e-5
    )
    # The vocabulary travelled with the SavedModel.
    assert os.listdir(os.path.join(export_dir, "assets")) == ["cat"]


def test_serving_imputes_nulls_as_in_training(tiny, tiny_trained):
    out, _, _ = tiny
    model, export_dir, _ = tiny_trained
    vocabulary = [
        t.decode() for t in tft.TFTransformOutput(out).vocabulary_by_name("cat")
    ]
    raw = {"id": 10_000, "f0": None, "f1": 0.25, "cat": None, "ts": 1_700_003_600}
    hour = 1_700_003_600 // 3600 % 24
    present = {**raw, "f0": 1.5, "cat": "zz-unseen"}
    f1 = np.array([r["f1"] for r in tiny[1]], np.float64)
    hashed = tf.strings.to_hash_bucket_fast(
        [MISSING, "zz-unseen"], HASH_BUCKETS
    ).numpy()
    f0_train = np.array([r["f0"] for r in tiny[1] if r["f0"] is not None], np.float32)
    # The training imputation, computed independently: a NULL f0 is the train mean
    # (z-score 0) with its indicator set; a NULL cat is the missing token's id.
    expected = [
        {
            "f0": 0.0,
            "f0_is_missing": 1,
            "f1": (0.25 - f1.mean()) / f1.std(),
            "cat": vocabulary.index(MISSING),
            "cat_hash": hashed[0],
            "ts_hour_of_day": hour,
        },
        {
            "f0": (1.5 - f0_train.mean()) / f0_train.std(),
            "f0_is_missing": 0,
            "f1": (0.25 - f1.mean()) / f1.std(),
            "cat": len(vocabulary),  # the OOV id
            "cat_hash": hashed[1],
            "ts_hour_of_day": hour,
        },
    ]
    for row in expected:
        for name in ("f0", "f1"):
            row[name] = np.float32(row[name])
        for name in ("f0_is_missing", "cat", "cat_hash", "ts_hour_of_day"):
            row[name] = np.int64(row[name])
    want = _predict(model, expected)
    serving = tf.saved_model.load(export_dir)
    served = serving.signatures["serving_default"](
        examples=_raw_examples([raw, present])
    )
    np.testing.assert_allclose(served["probability"].numpy(), want, rtol=0, atol=1e-5)
    served_raw = serving.signatures["serve_raw"](**_serve_raw_inputs([raw, present]))
    np.testing.assert_allclose(
        served_raw["probability"].numpy(), want, rtol=0, atol=1e-5
    )


def test_main_trains_evaluates_exports_and_prints_json_last(tiny, tmp_path, capsys):
    from trainer.__main__ import main as train_main

    out, train_rows, eval_rows = tiny
    export_dir = str(tmp_path / "export")
    argv = [
        "--data_dir",
        out,
        "--epochs",
        "1",
        "--batch_size",
        "128",
        "--export_dir",
        export_dir,
        "--seed",
        "3",
    ]
    assert train_main(argv) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(metrics) == {
        "auc",
        "accuracy",
        "baseline_accuracy",
        "loss",
        "train_examples",
        "eval_examples",
        "seconds",
        "export_dir",
    }
    assert metrics["train_examples"] == len(train_rows)
    assert metrics["eval_examples"] == len(eval_rows)
    positive = np.mean([r["label"] for r in eval_rows])
    assert metrics["baseline_accuracy"] == pytest.approx(max(positive, 1 - positive))
    assert 0 <= metrics["auc"] <= 1 and metrics["loss"] > 0
    assert "serving_default" in tf.saved_model.load(export_dir).signatures


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "1"], "the following arguments are required: --data_dir"),
        (["--data_dir", "DIR", "--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--data_dir", "DIR", "--epoch", "1"], "unrecognized arguments: --epoch"),
        (["--data_dir", "DIR"], "has no manifest.json"),
    ],
)
def test_main_errors_are_one_line_and_exit_1(tmp_path, capsys, argv, message):
    from trainer.__main__ import main as train_main

    argv = [str(tmp_path) if a == "DIR" else a for a in argv]
    assert train_main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("trainer: error: ") and message in captured.err


# --- Against a real PostgreSQL, through the pipeline ------------------------------

ROWS = 20_000


@pytest.fixture(scope="module")
def sample_output(database_url, tmp_path_factory):
    from localdev.sample_table import create_sample_table
    from pipeline.__main__ import main

    create_sample_table(database_url, "sample_trainer", ROWS, seed=11, replace=True)
    features = {
        "label": "label",
        "features": [{"column": "id", "transform": "passthrough"}]
        + [
            {"column": f"f{i}", "transform": "zscore", "indicator": True}
            for i in range(4)
        ]
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
    assert (
        main(
            [
                "--db_url",
                database_url,
                "--table",
                "sample_trainer",
                "--label",
                "label",
                "--features",
                str(base / "features.json"),
                "--output_dir",
                out,
                "--num_shards",
                "4",
            ]
        )
        == 0
    )
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
    ids = [
        int(i)
        for f, _ in trainer.make_dataset(sample_output, "train", 1000, shuffle=False)
        for i in f["id"].numpy()
    ]
    assert len(ids) == len(set(ids)) == manifest["splits"]["train"]["rows"]
    sharded = []
    for index in range(2):
        part = [
            int(i)
            for f, _ in trainer.make_dataset(
                sample_output, "train", 1000, shuffle=False, shard=(2, index)
            )
            for i in f["id"].numpy()
        ]
        sharded.append(set(part))
    assert not sharded[0] & sharded[1] and sharded[0] | sharded[1] == set(ids)
    with pytest.raises(ValueError, match="has 4 files for 5 workers"):
        trainer.make_dataset(sample_output, "train", shard=(5, 0))


def test_make_dataset_epochs_cache_and_incomplete_output(sample_output, tmp_path):
    rows = trainer.read_manifest(sample_output)["splits"]["eval"]["rows"]
    seen = sum(
        int(y.shape[0])
        for _, y in trainer.make_dataset(
            sample_output, "eval", 512, num_epochs=2, cache=True, seed=1
        )
    )
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
    raw_columns = (
        ["id"] + [f"f{i}" for i in range(5)] + ["c10", "c100", "c1k", "created_at"]
    )
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
            feature[name] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[value.encode()])
            )
        elif spec.dtype == tf.float32:
            feature[name] = tf.train.Feature(
                float_list=tf.train.FloatList(value=[value])
            )
        else:
            feature[name] = tf.train.Feature(
                int64_list=tf.train.Int64List(value=[value])
            )
    return tf.train.Example(
        features=tf.train.Features(feature=feature)
    ).SerializeToString()


def test_serving_signatures_match_the_model_on_the_tfrecords(
    database_url, sample_output, trained
):
    model, export_dir = trained
    columns, rows = _raw_rows(database_url)
    rows = [dict(zip(columns, r, strict=True)) for r in rows]
    assert any(r["f0"] is None for r in rows) and any(r["c100"] is None for r in rows)
    wanted = {r["id"] for r in rows}

    # The same rows as the pipeline wrote them, fed to the model.
    from_records = {}
    for split in ("train", "eval"):
        for features, _ in trainer.make_dataset(
            sample_output, split, 4096, shuffle=False
        ):
            keep = np.isin(features["id"].numpy(), list(wanted))
            if not keep.any():
                continue
            picked = {k: tf.boolean_mask(v, keep) for k, v in features.items()}
            inputs = {i.name: picked[i.name] for i in model.inputs}
            probabilities = model(inputs).numpy().reshape(-1)
            for row_id, p in zip(picked["id"].numpy(), probabilities, strict=True):
                from_records[int(row_id)] = float(p)
    assert set(from_records) == wanted

    serving = tf.saved_model.load(export_dir)
    raw_spec = {
        k: v
        for k, v in tft.TFTransformOutput(sample_output).raw_feature_spec().items()
        if k != "label"
    }
    examples = tf.constant([_example(raw_spec, r) for r in rows])
    served = serving.signatures["serving_default"](examples=examples)[
        "probability"
    ].numpy()

    raw = {}
    for name, spec in raw_spec.items():
        values = [r[name] for r in rows]
        fill = "" if spec.dtype == tf.string else 0
        raw[name] = tf.constant(
            [fill if v is None else v for v in values], dtype=spec.dtype
        )
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
                rows[int(row_id)] = (
                    {k: a[i] for k, a in arrays.items()},
                    int(label[i]),
                )
        return rows

    direct = by_id(
        trainer.dataset_from_postgres(
            database_url,
            table="sample_trainer",
            batch_size=700,
            transform_output_dir=sample_output,
            num_partitions=3,
        )
    )
    assert len(direct) == ROWS
    for split in ("train", "eval"):
        stored = by_id(trainer.make_dataset(sample_output, split, 2048, shuffle=False))
        for row_id, (features, label) in stored.items():
            got, got_label = direct[row_id]
            assert got_label == label
            for name, value in features.items():
                assert got[name] == pytest.approx(value, rel=1e-6, abs=1e-6), (
                    row_id,
                    name,
                )


def test_dataset_from_postgres_raw_columns(database_url, sample_output):
    dataset = trainer.dataset_from_postgres(
        database_url,
        table="sample_trainer",
        batch_size=5000,
        label="label",
        columns=["id", "f0", "c10", "label"],
    )
    ids, nulls = [], 0
    for features, _ in dataset:
        assert set(features) == {"id", "f0", "f0__is_null", "c10", "c10__is_null"}
        ids.extend(features["id"].numpy().tolist())
        nulls += int(features["f0__is_null"].numpy().sum())
    assert sorted(ids) == list(range(1, ROWS + 1))
    ((expected_nulls,),) = query(
        database_url, "SELECT count(*) FROM sample_trainer WHERE f0 IS NULL"
    )
    assert nulls == expected_nulls
