"""The same job on four Beam execution paths gives the same output; the graph pickles.

DirectRunner in memory; DirectRunner multi-processing and multi-threading with 2
workers; and the
portable Fn API path Flink and Dataflow use (`PortableRunner --job_endpoint=embed`
with an EXTERNAL worker pool started here on loopback).
"""

import collections
import json
import os
import socket
import subprocess
import sys
import time

import apache_beam as beam
import psycopg2
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from apache_beam.internal import pickler

from pipeline.__main__ import main
from pipeline.build import build_pipeline
from pipeline.job import prepare_job
from pipeline.options import parse_args

FEATURES = {
    "label": "y",
    "features": [
        {"column": "id", "transform": "passthrough"},
        {"column": "x", "transform": "zscore", "indicator": True},
        {"column": "cat", "transform": "vocabulary"},
        {"column": "tag", "transform": "vocabulary", "top_k": 20},
        {"column": "x", "name": "xb", "transform": "bucketize", "num_buckets": 5},
    ],
}


@pytest.fixture(scope="module")
def runner_table(make_table):
    return make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, x double precision, cat text NOT NULL, "
        "tag text, y int NOT NULL)",
        "INSERT INTO {table} SELECT g, CASE WHEN g % 8 = 0 THEN NULL ELSE cos(g) * 100 END, "
        "'c' || (g % 13), CASE WHEN g % 5 = 0 THEN NULL ELSE 't' || (g * 7 % 61) END, "
        "(g % 4 = 0)::int FROM generate_series(1, 6000) g",
    )


@pytest.fixture(scope="module")
def features_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "features.json"
    path.write_text(json.dumps(FEATURES))
    return str(path)


def _argv(database_url, table, features_path, out, *extra):
    return ["--db_url", database_url, "--table", table, "--label", "y", "--features",
            features_path, "--output_dir", str(out), "--num_partitions", "3", *extra]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def worker_pool():
    port = _free_port()
    env = dict(os.environ)
    # The pool starts workers as plain `python` from PATH: ours must come first.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
         f"--service_port={port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert proc.poll() is None, "worker pool exited"
        time.sleep(0.2)
    yield f"localhost:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def _examples(out):
    rows = {}
    spec = tft.TFTransformOutput(out).transformed_feature_spec()
    for split in ("train", "eval"):
        files = tf.io.gfile.glob(os.path.join(out, split, "part-*.tfrecord.gz"))
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            example = {k: v.numpy().item() for k, v in tf.io.parse_single_example(record, spec).items()}
            rows[example["id"]] = (split, example)
    return rows


@pytest.fixture(scope="module")
def outputs(database_url, runner_table, features_path, tmp_path_factory, worker_pool):
    base = tmp_path_factory.mktemp("runners")
    ways = {
        "in_memory": [],
        "multi_processing": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        # Drives one DoFn instance from two threads: per-bundle state must be local.
        "multi_threading": ["--direct_running_mode=multi_threading", "--direct_num_workers=2"],
        "portable": ["--runner=PortableRunner", "--job_endpoint=embed",
                     "--environment_type=EXTERNAL", f"--environment_config={worker_pool}"],
    }
    result = {}
    for name, extra in ways.items():
        out = base / name
        assert main(_argv(database_url, runner_table, features_path, out, *extra)) == 0, name
        result[name] = str(out)
    return result


def test_three_runners_write_the_same_examples(outputs):
    reference = _examples(outputs["in_memory"])
    assert len(reference) == 6000
    for name in ("multi_processing", "multi_threading", "portable"):
        other = _examples(outputs[name])
        assert other.keys() == reference.keys(), name
        for key, (split, example) in reference.items():
            other_split, other_example = other[key]
            assert other_split == split
            assert other_example.keys() == example.keys()
            for feature, value in example.items():
                assert other_example[feature] == pytest.approx(value, rel=1e-6, abs=1e-6), (
                    name, key, feature,
                )


def test_three_runners_write_the_same_vocabularies_and_counts(outputs):
    def summary(out):
        tft_output = tft.TFTransformOutput(out)
        manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
        return (
            tft_output.vocabulary_by_name("cat"),
            tft_output.vocabulary_by_name("tag"),
            {k: v["rows"] for k, v in manifest["splits"].items()},
            manifest["rows_read"],
            manifest["rows_per_partition"],
        )

    reference = summary(outputs["in_memory"])
    for name in ("multi_processing", "multi_threading", "portable"):
        assert summary(outputs[name]) == reference, name


def test_runners_compute_the_same_statistics(outputs):
    """Counts, extremes and histograms exact on every runner; moments to rounding."""
    def stats(out):
        return json.loads(open(os.path.join(out, "statistics", "statistics.json")).read())

    def exact_part(feature):
        keys = ("rows", "missing", "num_values", "non_finite", "zeros", "min", "max",
                "histogram", "unique", "exact", "top")
        return {k: feature[k] for k in keys if k in feature}

    reference = stats(outputs["in_memory"])
    for name in ("multi_processing", "multi_threading", "portable"):
        other = stats(outputs[name])
        assert other.keys() == reference.keys(), name
        for split, groups in reference.items():
            for group, value in groups.items():
                theirs = other[split][group]
                assert theirs["rows"] == value["rows"] > 0, (name, split)
                for feature, f in value["features"].items():
                    g = theirs["features"][feature]
                    assert exact_part(g) == exact_part(f), (name, split, feature)
                    for key in ("mean", "std"):
                        if f.get(key) is not None:
                            assert g[key] == pytest.approx(f[key], rel=1e-9, abs=1e-12)


def test_every_transform_and_dofn_pickles_without_connections(
    database_url, runner_table, features_path, tmp_path
):
    config, beam_args = parse_args(_argv(database_url, runner_table, features_path, tmp_path / "o"))
    job = prepare_job(config)
    job.close()  # the graph is only built, never run: release the locks now
    p = beam.Pipeline(argv=beam_args)
    build_pipeline(p, job, snapshot_id="00000003-00000002-1")
    seen = collections.Counter()

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            self._check(node)

        def enter_composite_transform(self, node):
            self._check(node)

        def _check(self, node):
            transform = node.transform
            if transform is None:
                return
            # Our PTransforms are shipped whole; tf.Transform's composites are only
            # expanded in the launcher. Every DoFn (what workers run) must pickle.
            if type(transform).__module__.split(".")[0] in ("pipeline", "transforms"):
                payload = pickler.dumps(transform)  # raises on sockets, connections
                assert b"psycopg2.extensions" not in payload, node.full_label
                seen[type(transform).__name__] += 1
            fn = getattr(transform, "fn", None)
            if fn is not None:
                payload = pickler.dumps(fn)
                assert b"psycopg2.extensions" not in payload, node.full_label
                pickler.loads(payload)
                seen[type(fn).__name__] += 1

    p.visit(Visitor())
    # With a snapshot the database is read twice: for the analysis, then again for
    # the transform (pipeline.build.rereads).
    assert seen["_ReadPartitionFn"] == 2 and seen["_AssignSplitFn"] == 2
    assert seen["ReadFromPostgres"] == 2 and seen["WriteExamples"] == 2


def test_parquet_snapshot_reproduces_the_database_run(
    database_url, runner_table, features_path, tmp_path
):
    parquet, from_db, from_parquet = (tmp_path / n for n in ("raw", "db", "pq"))
    assert main(_argv(database_url, runner_table, features_path, from_db,
                      "--raw_parquet_dir", str(parquet))) == 0
    files = sorted(os.listdir(parquet))
    assert "_snapshot.json" in files and any(f.endswith(".parquet") for f in files)
    # Both were built beside their targets and swapped in: no staging dir is left.
    assert sorted(os.listdir(tmp_path)) == ["db", "raw"] and ".sql2tfrecord" in files
    import pyarrow.parquet as pq

    table = pq.read_table([str(parquet / f) for f in files if f.endswith(".parquet")])
    assert table.num_rows == 6000 and table.column("x").null_count == 750  # NULLs kept
    assert main(["--input_parquet", str(parquet), "--label", "y", "--features",
                 features_path, "--output_dir", str(from_parquet)]) == 0
    reference, other = _examples(str(from_db)), _examples(str(from_parquet))
    assert reference.keys() == other.keys()
    for key, (split, example) in reference.items():
        assert other[key][0] == split
        for feature, value in example.items():
            assert other[key][1][feature] == pytest.approx(value, rel=1e-6, abs=1e-6)
    manifest = json.loads((from_parquet / "manifest.json").read_text())
    assert manifest["input_parquet"]["path"] == str(parquet)
    assert manifest["input_parquet"]["snapshot_id"]


def test_spans_on_the_portable_runner(database_url, make_table, features_path,
                                      worker_pool, tmp_path):
    """Two spans through the Fn API path: every row in exactly one span, exactly."""
    table = make_table(
        "CREATE TABLE {table} (id int PRIMARY KEY, x double precision, "
        "cat text NOT NULL, tag text, y int NOT NULL)",
    )

    def insert(first, last):
        conn = psycopg2.connect(database_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                f'INSERT INTO "{table}" SELECT g, sin(g), \'c\' || (g % 5), NULL, '
                f"g % 2 FROM generate_series({first}, {last}) g"
            )
        conn.close()

    out = tmp_path / "spans"
    argv = _argv(database_url, table, features_path, out, "--span_column", "id",
                 "--runner=PortableRunner", "--job_endpoint=embed",
                 "--environment_type=EXTERNAL", f"--environment_config={worker_pool}")
    insert(1, 1500)
    assert main(argv) == 0
    insert(1501, 1800)
    assert main(argv) == 0
    assert sorted(os.listdir(out)) == ["span-0001", "span-0002"]
    assert sorted(_examples(str(out / "span-0001"))) == list(range(1, 1501))
    assert sorted(_examples(str(out / "span-0002"))) == list(range(1501, 1801))
