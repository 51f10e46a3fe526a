"""A TFX-style module through --preprocessing_module equals tf.Transform run directly."""

import importlib.util
import os

import pytest
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

import trainer
from pipeline.__main__ import main
from tests.conftest import query, reference_split

MODULE = os.path.join(os.path.dirname(__file__), "testdata", "tfx_module.py")


@pytest.fixture(scope="module")
def table(make_table):
    return make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, x double precision, n int NOT NULL, "
        "price real, cat text NOT NULL, city text, y int NOT NULL, doc jsonb)",
        "INSERT INTO {table} SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE sin(g) * 10 END, "
        "g % 97, CASE WHEN g % 7 = 0 THEN NULL ELSE (g % 113) * 1.5 END, "
        "'c' || (g * g % 23), CASE WHEN g % 9 = 0 THEN NULL ELSE 'city' || (g % 31) END, "
        "(g % 3 = 0)::int, '{}'::jsonb FROM generate_series(1, 2500) g",
    )


def test_tfx_module_matches_tf_transform_run_directly(database_url, table, tmp_path):
    out = str(tmp_path / "out")
    argv = ["--db_url", database_url, "--table", table, "--label", "y_xf",
            "--preprocessing_module", MODULE, "--output_dir", out]
    assert main(argv) == 0  # the jsonb column is skipped (with a warning), not fatal
    manifest = trainer.read_manifest(out)
    assert manifest["label"] == "y_xf" and manifest["features"] is None

    spec = importlib.util.spec_from_file_location("tfx_module_direct", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    raw_spec = tft.TFTransformOutput(out).raw_feature_spec()
    columns = ["id", "x", "n", "price", "cat", "city", "y"]
    rows = query(database_url, f'SELECT {", ".join(columns)} FROM "{table}"')

    def instance(row):
        d = dict(zip(columns, row))
        out = {}
        for key, feature in raw_spec.items():
            value = d[key]
            if isinstance(value, str):
                value = value.encode()
            if hasattr(feature, "shape"):  # FixedLenFeature: dense
                out[key] = value
            else:
                out[key] = [] if value is None else [value]
        return out

    train = [instance(r) for r in rows if reference_split(r[0]) == "train"]
    evaluation = [instance(r) for r in rows if reference_split(r[0]) == "eval"]
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_spec))
    with tft_beam.Context(temp_dir=str(tmp_path / "tmp")):
        (direct_train, _), transform_fn = (train, metadata) | tft_beam.AnalyzeAndTransformDataset(
            module.preprocessing_fn
        )
        direct_eval, _ = ((evaluation, metadata), transform_fn) | tft_beam.TransformDataset()

    keys = ["x_xf", "n_xf", "price_xf", "cat_xf", "city_xf", "y_xf"]

    def as_rows(dicts):
        return sorted(tuple(round(float(d[k]), 4) for k in keys) for d in dicts)

    for split, direct in (("train", direct_train), ("eval", direct_eval)):
        ours = []
        for features, label in trainer.make_dataset(out, split, batch_size=500, shuffle=False):
            batch = {k: v.numpy() for k, v in features.items()}
            batch["y_xf"] = label.numpy()
            ours.extend({k: batch[k][i] for k in keys} for i in range(len(batch["y_xf"])))
        assert len(ours) == len(direct) > 0
        assert as_rows(ours) == as_rows(direct)
