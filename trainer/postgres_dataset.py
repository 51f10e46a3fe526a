"""dataset_from_postgres: stream a table straight into tf.data (no TFRecords).

For small tables, notebooks and quick iterations. Each epoch opens one
REPEATABLE READ snapshot (all partitions of that epoch see one instant), streams
`COPY` → Arrow → tensors with bounded memory (one Arrow batch of a few MB at a time),
and, given a sql2tfrecord output directory, applies its saved transform graph, so
the features equal those `make_dataset` reads from the TFRecords.

Prefer the TFRecords (`python -m pipeline` + `make_dataset`) when you train for
several epochs, on several workers, or on a table that changes: they are read ~10×
faster than the database can serve rows, do not load the database during training,
and freeze one consistent version of the data. Partitions are read one after the
other (in plan order); the Beam pipeline is the parallel path.
"""

from __future__ import annotations

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
        values = pc.fill_null(column, 0.0).to_numpy(zero_copy_only=False).astype(np.float32)
    else:
        values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return values, nulls


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
) -> tf.data.Dataset:
    """Returns a dataset of raw or transformed batches read from PostgreSQL.

    Args:
        db_url: libpq URL or DSN (passwords may come from PGPASSWORD/.pgpass).
        table, query: exactly one, as for the pipeline.
        batch_size: rows per batch (the last batch of each partition may be smaller).
        transform_output_dir: an sql2tfrecord output; its raw columns are read and
            its transform graph applied; batches are `(features, label)` with the
            output's label key.
        label: without a transform: a column to split off as `(features, label)`.
        columns: without a transform: the columns to read (default: all).
        num_partitions: how the read is partitioned (default: from the row estimate).

    Without a transform, features are the raw columns: dense tensors for NOT NULL
    columns; for nullable ones a value tensor (NULL as 0/"") plus `<col>__is_null`.
    """
    from pipeline.connection import Dsn
    from pipeline.partition_reader import PartitionReader
    from pipeline.source import ExportedSnapshot, SourceSpec, plan_read

    if (table is None) == (query is None):
        raise ValueError("give exactly one of table and query")
    source = SourceSpec(Dsn(db_url), table=table, query=query)
    transform_layer = raw_spec = None
    if transform_output_dir is not None:
        import tensorflow_transform as tft

        from trainer.dataset import read_manifest

        tft_output = tft.TFTransformOutput(transform_output_dir)
        label = read_manifest(transform_output_dir)["label"]
        raw_spec = tft_output.raw_feature_spec()
        columns = list(raw_spec)
        transform_layer = tft_output.transform_features_layer()
    plan = plan_read(source, columns, num_partitions=num_partitions)
    if raw_spec is None:
        from transforms.schema import raw_feature_spec

        raw_spec = raw_feature_spec(plan.columns)

    signature = {}
    for name, spec in raw_spec.items():
        signature[name] = tf.TensorSpec([None], spec.dtype, name=name)
        signature[f"{name}{NULL_SUFFIX}"] = tf.TensorSpec([None], tf.bool)

    def generate() -> Iterator[dict]:
        with ExportedSnapshot(source.dsn) as snapshot:
            reader = PartitionReader(source, plan, snapshot.snapshot_id)
            try:
                for partition in plan.partitions:
                    for batch in reader.read(partition):
                        for start in range(0, batch.num_rows, batch_size):
                            piece = batch.slice(start, batch_size)
                            out = {}
                            for name, spec in raw_spec.items():
                                values, nulls = _column_arrays(piece, name, spec.dtype)
                                out[name] = values
                                out[f"{name}{NULL_SUFFIX}"] = nulls
                            yield out
            finally:
                reader.close()

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
                if not (k.endswith(NULL_SUFFIX) and isinstance(
                    raw_spec.get(k[: -len(NULL_SUFFIX)]), tf.io.FixedLenFeature))
            }
            if label is None:
                return features
            return features, features.pop(label)

        dataset = dataset.map(raw, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
