"""dataset_from_postgres: stream a table straight into tf.data (no TFRecords).

For small tables, notebooks and quick iterations. Each epoch opens one
REPEATABLE READ snapshot (all partitions of that epoch see one instant), streams
`COPY` → Arrow → tensors with bounded memory (one Arrow batch of a few MB at a time),
and, given a sql2tfrecord output directory, applies its saved transform graph, so
the features equal those `make_dataset` reads from the TFRecords. Partitions are
read one after the other, or `num_parallel_reads` at a time on separate connections.

Prefer the TFRecords (`python -m pipeline` + `make_dataset`) when you train for
several epochs, on several workers, or on a table that changes: they are read ~10×
faster than the database can serve rows, do not load the database during training,
and freeze one consistent version of the data.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from trainer.serving import NULL_SUFFIX, raw_tensors

__all__ = ["dataset_from_postgres"]


def _column_arrays(batch: pa.RecordBatch, name: str, dtype: tf.DType):
    column = batch.column(name)
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    if dtype == tf.string:
        filled = pc.fill_null(column.cast(pa.large_string()), "")
        values = np.array(filled.to_pylist(), dtype=object)
    elif dtype == tf.float32:
        values = (
            pc.fill_null(column, 0.0).to_numpy(zero_copy_only=False).astype(np.float32)
        )
    else:
        values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return values, nulls


def _read_batches(
    source, plan, snapshot_id: str, parallel: int
) -> Iterator[pa.RecordBatch]:
    """The plan's partitions as Arrow batches, `parallel` partitions at a time.

    Each reader thread has its own connection in the shared snapshot; at most a few
    batches wait in the queue, so memory stays bounded.
    """
    from pipeline.sources.postgres.partition_reader import PartitionReader

    if parallel == 1:
        reader = PartitionReader(source, plan, snapshot_id)
        try:
            for partition in plan.partitions:
                yield from reader.read(partition)
        finally:
            reader.close()
        return
    pending = queue.Queue()
    for partition in plan.partitions:
        pending.put(partition)
    results: queue.Queue = queue.Queue(maxsize=2 * parallel)
    stop = threading.Event()
    done = object()

    def work() -> None:
        reader = PartitionReader(source, plan, snapshot_id)
        try:
            while not stop.is_set():
                try:
                    partition = pending.get_nowait()
                except queue.Empty:
                    break
                for batch in reader.read(partition):
                    while not stop.is_set():
                        try:
                            results.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            results.put(err)
        finally:
            reader.close()
            results.put(done)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    finished = 0
    try:
        while finished < parallel:
            item = results.get()
            if item is done:
                finished += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        while any(t.is_alive() for t in threads):
            try:
                results.get(timeout=0.1)
            except queue.Empty:
                pass


def dataset_from_postgres(
    db_url: str,
    table: str | None = None,
    query: str | None = None,
    batch_size: int = 1024,
    *,
    transform_output_dir: str | None = None,
    label: str | None = None,
    columns: Sequence[str] | None = None,
    num_partitions: int | None = None,
    num_parallel_reads: int = 1,
) -> tf.data.Dataset:
    """Returns a dataset of raw or transformed batches read from PostgreSQL.

    Args:
        db_url: libpq URL or DSN (passwords may come from PGPASSWORD/.pgpass).
        table: the table to read (name as stored, or schema.table), as for the
            pipeline's `--table`; give exactly one of `table` and `query`.
        query: a single SELECT to read instead of `table`, as for the pipeline's
            `--query`; giving both or neither raises ValueError.
        batch_size: rows per batch (the last batch of each partition may be smaller).
        transform_output_dir: an sql2tfrecord output; its raw columns are read and
            its transform graph applied; batches are `(features, label)` with the
            output's label key.
        label: without a transform: a column to split off as `(features, label)`.
        columns: without a transform: the columns to read (default: all).
        num_partitions: how the read is partitioned (default: from the row estimate).
        num_parallel_reads: partitions read at once, each on its own connection,
            all in the epoch's one snapshot (order across partitions then varies).

    Without a transform, features are the raw columns: dense tensors for NOT NULL
    columns; for nullable ones a value tensor (NULL as 0/"") plus `<col>__is_null`.
    """
    from pipeline.sources.postgres.connection import Dsn
    from pipeline.sources.postgres.plan import ExportedSnapshot, SourceSpec, plan_read

    if (table is None) == (query is None):
        raise ValueError("give exactly one of table and query")
    source = SourceSpec(Dsn(db_url), table=table, query=query)
    transform_layer = raw_spec = None
    column_of: dict[str, str] = {}  # raw feature key -> column name
    if transform_output_dir is not None:
        import tensorflow_transform as tft

        from trainer.dataset import read_manifest

        tft_output = tft.TFTransformOutput(transform_output_dir)
        manifest = read_manifest(transform_output_dir)
        label = manifest["label"]
        raw_spec = tft_output.raw_feature_spec()
        column_of = {key: col for col, key in (manifest.get("names") or {}).items()}
        columns = [column_of.get(key, key) for key in raw_spec]
        transform_layer = tft_output.transform_features_layer()
    plan = plan_read(source, columns, num_partitions=num_partitions)
    if raw_spec is None:
        from transforms.schema import raw_feature_spec

        # Without a transform, features keep the column names.
        identity = {c.name: c.name for c in plan.columns}
        raw_spec = raw_feature_spec(plan.columns, identity)

    signature = {}
    for name, spec in raw_spec.items():
        signature[name] = tf.TensorSpec([None], spec.dtype, name=name)
        signature[f"{name}{NULL_SUFFIX}"] = tf.TensorSpec([None], tf.bool)

    def to_tensors(piece: pa.RecordBatch) -> dict:
        out = {}
        for name, spec in raw_spec.items():
            column = column_of.get(name, name)
            values, nulls = _column_arrays(piece, column, spec.dtype)
            out[name] = values
            out[f"{name}{NULL_SUFFIX}"] = nulls
        return out

    def generate() -> Iterator[dict]:
        with ExportedSnapshot(source) as snapshot:
            batches = _read_batches(
                source, plan, snapshot.snapshot_id, max(1, num_parallel_reads)
            )
            for batch in batches:
                for start in range(0, batch.num_rows, batch_size):
                    yield to_tensors(batch.slice(start, batch_size))

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)

    if transform_layer is not None:

        def transform(inputs):
            features = dict(transform_layer(raw_tensors(inputs, raw_spec)))
            return features, features.pop(label)

        dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    else:

        def raw(inputs):
            features = {
                k: v
                for k, v in inputs.items()
                if not (
                    k.endswith(NULL_SUFFIX)
                    and isinstance(
                        raw_spec.get(k[: -len(NULL_SUFFIX)]), tf.io.FixedLenFeature
                    )
                )
            }
            if label is None:
                return features
            return features, features.pop(label)

        dataset = dataset.map(raw, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
