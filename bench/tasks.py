"""One benchmark task per call, run in its own process (so peak RSS is its own).

`python -m bench.tasks TASK --db_url URL --table T [--out DIR]` prints one JSON line:
{"rows": N, "seconds": S} (seconds measured inside the task, after imports).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


WIDE_FLOATS, WIDE_TEXTS = 200, 20
_WIDE_VOCABULARIES = (10, 100, 1_000, 10_000)  # text column i draws from [i % 4]


def create_wide_table(url: str, table: str, rows: int, seed: int = 0) -> int:
    """Creates (or keeps, at the same size) the wide benchmark table.

    `id bigint PRIMARY KEY`, `w000`..`w199 double precision` (N(i, 1 + i/10), 6
    decimals, each NULL with probability 5%), `t00`..`t19 text` (Zipf tokens from
    vocabularies of 10…10,000, NULL with probability 2%), `label integer` 0/1.
    Deterministic for a seed; loaded with one COPY.
    """
    import io

    import numpy as np
    import psycopg2
    from psycopg2 import sql

    ident = sql.Identifier(table)
    floats = [f"w{i:03d}" for i in range(WIDE_FLOATS)]
    texts = [f"t{i:02d}" for i in range(WIDE_TEXTS)]
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
            if cur.fetchone()[0]:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident))
                if cur.fetchone()[0] == rows:
                    return rows
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
            ddl = (
                ["id bigint PRIMARY KEY"]
                + [f"{c} double precision" for c in floats]
                + [f"{c} text" for c in texts]
                + ["label integer NOT NULL"]
            )
            cur.execute(
                sql.SQL("CREATE TABLE {} (" + ", ".join(ddl) + ")").format(ident)
            )
            rng = np.random.default_rng(seed)
            columns = [list(map(str, range(1, rows + 1)))]
            for i in range(WIDE_FLOATS):
                values = np.round(rng.normal(i, 1 + i / 10, rows), 6)
                strings = list(map(repr, values.tolist()))
                for k in np.flatnonzero(rng.random(rows) < 0.05).tolist():
                    strings[k] = ""
                columns.append(strings)
            for i in range(WIDE_TEXTS):
                size = _WIDE_VOCABULARIES[i % len(_WIDE_VOCABULARIES)]
                weights = 1.0 / np.arange(1, size + 1)
                cdf = np.cumsum(weights / weights.sum())
                codes = np.minimum(
                    np.searchsorted(cdf, rng.random(rows), side="right"), size - 1
                )
                tokens = [f"t{i:02d}_{k:05d}" for k in codes.tolist()]
                for k in np.flatnonzero(rng.random(rows) < 0.02).tolist():
                    tokens[k] = ""
                columns.append(tokens)
            columns.append(list(map(str, rng.integers(0, 2, rows).tolist())))
            data = "\n".join(map(",".join, zip(*columns, strict=True))) + "\n"
            cur.copy_expert(
                sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(ident).as_string(cur),
                io.BytesIO(data.encode("ascii")),
            )
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("ANALYZE {}").format(ident))
    finally:
        conn.close()
    return rows


class _NullSink:
    def __init__(self):
        self.bytes = 0

    def write(self, data):
        self.bytes += len(data)


def copy_null(url: str, table: str, out: str | None) -> dict:
    """Plain psycopg2 COPY … TO STDOUT (FORMAT csv) into a null sink: the floor."""
    import psycopg2

    conn = psycopg2.connect(url)
    started = time.perf_counter()
    sink = _NullSink()
    with conn.cursor() as cur:
        cur.copy_expert(f'COPY (SELECT * FROM "{table}") TO STDOUT (FORMAT csv)', sink)
        cur.execute(f'SELECT count(*) FROM "{table}"')
        rows = cur.fetchone()[0]
    return {"rows": rows, "seconds": time.perf_counter() - started, "bytes": sink.bytes}


def source(url: str, table: str, out: str | None) -> dict:
    """ReadFromPostgres alone on the DirectRunner (table -> RecordBatches -> count)."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    from pipeline.sources.postgres.beam import ReadFromPostgres
    from pipeline.sources.postgres.connection import Dsn
    from pipeline.sources.postgres.plan import ExportedSnapshot, SourceSpec, plan_read

    started = time.perf_counter()
    spec = SourceSpec(Dsn(url), table=table)
    with ExportedSnapshot(spec) as snapshot:
        plan = plan_read(spec, None, snapshot=snapshot)
        p = beam.Pipeline()
        _ = (
            p
            | ReadFromPostgres(spec, plan, snapshot.snapshot_id)
            | beam.Map(lambda batch: batch.num_rows)
            | beam.CombineGlobally(sum)
        )
        result = p.run()
        result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("rows_read"))[
        "counters"
    ]
    rows = sum(c.committed for c in counters)
    return {
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "partitions": len(plan.partitions),
    }


def handwritten(url: str, table: str, out: str) -> dict:
    """The usual hand-written export: fetch, pandas z-score/vocabulary, a Python loop of
    tf.train.Examples, gzip TFRecords. No splits, no analysis graph."""
    import pandas as pd
    import psycopg2
    import tensorflow as tf

    started = time.perf_counter()
    conn = psycopg2.connect(url)
    with conn.cursor(name="export") as cur:
        cur.itersize = 10_000
        cur.execute(
            f"SELECT id, f0, f1, f2, f3, f4, f5, f6, f7, c10, c100, c1k, c50k, label, "
            f'floor(extract(epoch FROM created_at))::int8 AS created_at FROM "{table}"'
        )
        rows = cur.fetchall()
        columns = [d.name for d in cur.description]
    frame = pd.DataFrame(rows, columns=columns)
    floats = [c for c in columns if c.startswith("f")]
    texts = [c for c in columns if c.startswith("c")]
    for c in floats:
        values = frame[c].astype("float64")
        frame[c] = ((values - values.mean()) / values.std(ddof=0)).fillna(0.0)
    for c in texts:
        vocab = {
            t: i
            for i, t in enumerate(frame[c].fillna("__MISSING__").value_counts().index)
        }
        frame[c] = frame[c].fillna("__MISSING__").map(vocab)
    os.makedirs(out, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(
        os.path.join(out, "part-00000.tfrecord.gz"), options
    ) as writer:
        for record in frame.itertuples(index=False):
            feature = {}
            for name, value in zip(columns, record, strict=True):
                if name in floats:
                    feature[name] = tf.train.Feature(
                        float_list=tf.train.FloatList(value=[value])
                    )
                else:
                    feature[name] = tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[int(value)])
                    )
            writer.write(
                tf.train.Example(
                    features=tf.train.Features(feature=feature)
                ).SerializeToString()
            )
    return {"rows": len(frame), "seconds": time.perf_counter() - started}


def copy_binary_null(url: str, table: str, out: str | None) -> dict:
    """psycopg2 `COPY t TO STDOUT (FORMAT binary)` into a null sink: the stand-in
    for `psql -c "COPY …" > /dev/null` where psql is not installed."""
    import psycopg2

    conn = psycopg2.connect(url)
    started = time.perf_counter()
    sink = _NullSink()
    with conn.cursor() as cur:
        cur.copy_expert(f'COPY "{table}" TO STDOUT (FORMAT binary)', sink)
    return {"seconds": time.perf_counter() - started, "bytes": sink.bytes}


_DOCS_FLOATS = [f"f{i}" for i in range(8)]
_DOCS_TEXTS = ["c10", "c100", "c1k", "c50k"]


def tft_docs(url: str, table: str, out: str) -> dict:
    """The pipeline of tf.Transform's documentation (census example) on the sample
    table: rows fetched as instance dicts (a NULL is an empty list) into
    `beam.Create`, `AnalyzeAndTransformDataset` (z-score per float, vocabulary per
    text column, NULLs filled before the analyzers as the example does),
    `ExampleProtoCoder`, `WriteToTFRecord` gzip. No splits."""
    import tempfile

    import apache_beam as beam
    import psycopg2
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    started = time.perf_counter()
    columns = _DOCS_FLOATS + _DOCS_TEXTS + ["label"]
    conn = psycopg2.connect(url)
    with conn.cursor(name="export") as cur:
        cur.itersize = 10_000
        cur.execute(f'SELECT {", ".join(columns)} FROM "{table}"')
        rows = [
            {c: [] if v is None else [v] for c, v in zip(columns, row, strict=True)}
            for row in cur
        ]
    conn.close()
    spec = {c: tf.io.VarLenFeature(tf.float32) for c in _DOCS_FLOATS}
    spec.update({c: tf.io.VarLenFeature(tf.string) for c in _DOCS_TEXTS})
    spec["label"] = tf.io.FixedLenFeature([], tf.int64)
    for row in rows:
        row["label"] = row["label"][0]
    schema = schema_utils.schema_from_feature_spec(spec)
    metadata = dataset_metadata.DatasetMetadata(schema)

    def preprocessing_fn(inputs):
        outputs = {"label": inputs["label"]}
        for c in _DOCS_FLOATS:
            dense = tft.sparse_tensor_to_dense_with_shape(inputs[c], [None, 1], 0.0)
            outputs[c] = tft.scale_to_z_score(tf.squeeze(dense, axis=1))
        for c in _DOCS_TEXTS:
            dense = tft.sparse_tensor_to_dense_with_shape(inputs[c], [None, 1], "")
            outputs[c] = tft.compute_and_apply_vocabulary(tf.squeeze(dense, axis=1))
        return outputs

    with tempfile.TemporaryDirectory() as temp, beam.Pipeline() as p:
        with tft_beam.Context(temp_dir=temp):
            data = p | beam.Create(rows)
            (transformed, transformed_metadata), _ = (
                data,
                metadata,
            ) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
            coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
            _ = (
                transformed
                | beam.Map(coder.encode)
                | beam.io.WriteToTFRecord(
                    os.path.join(out, "part"), file_name_suffix=".tfrecord.gz"
                )
            )
    return {"rows": len(rows), "seconds": time.perf_counter() - started}


def _spec_and_files(out: str, split: str):
    import tensorflow_transform as tft

    spec = tft.TFTransformOutput(out).transformed_feature_spec()
    files = sorted(glob.glob(os.path.join(out, split, "part-*.tfrecord.gz")))
    return spec, files


def read_make_dataset(url: str, table: str, out: str) -> dict:
    """trainer.make_dataset: one epoch, then a cached second epoch."""
    import trainer

    dataset = trainer.make_dataset(out, "train", batch_size=1024, num_epochs=1)
    started = time.perf_counter()
    rows = sum(int(y.shape[0]) for _, y in dataset)
    first = time.perf_counter() - started
    cached = trainer.make_dataset(
        out, "train", batch_size=1024, num_epochs=2, cache=True
    )
    started = time.perf_counter()
    rows2 = sum(int(y.shape[0]) for _, y in cached)
    both = time.perf_counter() - started
    return {
        "rows": rows,
        "seconds": first,
        "cached_epoch_seconds": max(both - first, 1e-9),
        "rows_two_epochs": rows2,
    }


def read_ceiling(url: str, table: str, out: str) -> dict:
    """A best-effort hand-written tf.data reader of the same files (the ceiling)."""
    import tensorflow as tf

    spec, files = _spec_and_files(out, "train")
    dataset = (
        tf.data.TFRecordDataset(
            files, compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE
        )
        .batch(1024)
        .map(
            lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE
        )
        .prefetch(tf.data.AUTOTUNE)
    )
    started = time.perf_counter()
    rows = sum(int(next(iter(b.values())).shape[0]) for b in dataset)
    return {"rows": rows, "seconds": time.perf_counter() - started}


def read_fetchmany(url: str, table: str, out: str | None) -> dict:
    """The common baseline: psycopg2 fetchmany(1000) in from_generator, batch(32)."""
    import psycopg2
    import tensorflow as tf

    columns = [f"f{i}" for i in range(8)] + ["label"]

    def rows():
        conn = psycopg2.connect(url)
        with conn.cursor(name="train") as cur:
            cur.execute(f'SELECT {", ".join(columns)} FROM "{table}"')
            while True:
                chunk = cur.fetchmany(1000)
                if not chunk:
                    break
                for row in chunk:
                    yield (
                        tuple(0.0 if v is None else float(v) for v in row[:-1]),
                        row[-1],
                    )
        conn.close()

    dataset = (
        tf.data.Dataset.from_generator(
            rows,
            output_signature=(
                tf.TensorSpec([8], tf.float32),
                tf.TensorSpec([], tf.int64),
            ),
        )
        .batch(32)
        .prefetch(tf.data.AUTOTUNE)
    )
    started = time.perf_counter()
    n = sum(int(y.shape[0]) for _, y in dataset)
    return {"rows": n, "seconds": time.perf_counter() - started}


def read_from_postgres(url: str, table: str, out: str | None) -> dict:
    """trainer.dataset_from_postgres over the fetchmany baseline's raw columns."""
    import trainer

    columns = [f"f{i}" for i in range(8)] + ["label"]
    dataset = trainer.dataset_from_postgres(
        url, table=table, batch_size=1024, label="label", columns=columns
    )
    started = time.perf_counter()
    rows = sum(int(y.shape[0]) for _, y in dataset)
    return {"rows": rows, "seconds": time.perf_counter() - started}


TASKS = {
    "read_from_postgres": read_from_postgres,
    "copy_null": copy_null,
    "source": source,
    "handwritten": handwritten,
    "copy_binary_null": copy_binary_null,
    "tft_docs": tft_docs,
    "read_make_dataset": read_make_dataset,
    "read_ceiling": read_ceiling,
    "read_fetchmany": read_fetchmany,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--db_url", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    print(json.dumps(TASKS[args.task](args.db_url, args.table, args.out)), flush=True)
    return 0


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    # As the job does (`pipeline.__main__`): no interpreter teardown, which with
    # TensorFlow and Beam loaded is slow and has crashed (SIGSEGV) after the result.
    os._exit(status)
