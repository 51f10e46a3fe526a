"""The Beam graph of a prepared job: read -> splits -> tf.Transform -> write.

`build_pipeline(p, job)` wires transforms from the job's plain, picklable plan
(`pipeline.job.Job`); the steps' own modules say what each does. `rereads` decides
whether the transform pass reads the database a second time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import apache_beam as beam

from pipeline import METRICS_NAMESPACE, arrow_coder, sources, spans
from pipeline.assign import (
    SPLIT_COLUMN,
    AssignSplit,
    RouteSplits,
    SelectSplit,
    with_split_column,
)
from pipeline.sink import output
from pipeline.sink.write import WriteExamples

if TYPE_CHECKING:
    from pipeline.job import Job

__all__ = ["REREAD_METRICS_NAMESPACE", "build_pipeline", "rereads"]

# tf.Transform runs its graph on our RecordBatches as they come (its
# `desired_batch_size` applies to instance-dict input only): the batch size is the
# reader's, `partition_reader.BLOCK_SIZE` of CSV (~31,000 rows of the bench table).

# tf.Transform builds `preprocessing_fn` as a TF1 graph: traced once and saved as a
# TF1 SavedModel, instead of traced several times as tf.functions. The examples are
# identical (compared example by example); a 20,000-row run takes 3.5 s less. The
# saved transform_fn loads the same way in `TFTransformOutput` (training, serving).
FORCE_TF_COMPAT_V1 = True

# Counters of the second read (see `rereads`), kept apart from the reported ones.
REREAD_METRICS_NAMESPACE = f"{METRICS_NAMESPACE}.reread"


def _preprocessing_fn(job: Job) -> Callable:
    if job.features is None:
        from transforms.user_module import load_preprocessing_fn

        return load_preprocessing_fn(job.config.preprocessing_module, job.label)
    from pipeline.vocabulary_writer import WriteVocabularies
    from transforms.preprocessing import build_preprocessing_fn

    return build_preprocessing_fn(job.features, job.plan.columns, WriteVocabularies)


def rereads(job: Job, snapshot_id: str | None) -> bool:
    """Whether the transform pass reads the database again (see `build_pipeline`).

    It does for a `--table` stored here (a table, partitioned table or
    materialized view) when every read imports one exported snapshot (the same
    rows, in the same order, both times) and `--read_once` is not given. A
    `--query` or a view is read once: it need not give the same rows twice even in
    one snapshot (`random()`, `now()`, `LIMIT` without `ORDER BY`, sequences); a
    foreign table lives outside the snapshot. So are reads without a shared
    snapshot, `--reader jdbc`, `--input_parquet` (whose plan has no table) and
    every MySQL read (its `TableRef.stored_locally` is False: partitions cannot
    re-enter one snapshot there, so a second read may see other rows); the
    runner then holds the rows between the two passes: in memory on the
    DirectRunner (~175 bytes per row), in its shuffle on Dataflow or Flink.
    """
    table = job.plan.table
    return bool(
        snapshot_id
        and table is not None
        and table.stored_locally
        and job.config.reader == "native"
        and not job.config.read_once
    )


def build_pipeline(p: beam.Pipeline, job: Job, snapshot_id: str | None) -> None:
    """Wires read -> tag splits -> analyze (train) -> transform all -> route, write.

    tf.Transform makes two passes over the rows: the analysis (train rows only)
    and, once its results are known, the transform (all rows). For a stored table
    read in a shared snapshot the second pass reads it again (`rereads`) instead
    of having the runner keep every row in between: on the DirectRunner memory
    then stays flat in the table size, for a second COPY on the database server.
    """
    import tensorflow_transform.beam as tft_beam

    from pipeline import tft_speedups
    from transforms.schema import tensor_adapter_config

    config = job.config
    adapter_config = tensor_adapter_config(job.plan.columns, job.names)
    from pipeline.sources.read_plan import raw_arrow_schema

    if config.input_parquet:
        from pipeline.sources.parquet import ReadRawParquet

        raw = p | "Read" >> ReadRawParquet(
            config.input_parquet, raw_arrow_schema(job.plan)
        )
    elif config.reader == "jdbc":
        from pipeline.sources.jdbc import ReadWithJdbc

        raw = p | "Read" >> ReadWithJdbc(job.source, job.plan, config.partition_column)
    else:
        raw = p | "Read" >> sources.read_rows(
            job.source, job.plan, snapshot_id, METRICS_NAMESPACE
        )
    if config.raw_parquet_dir:
        from pipeline.sources.parquet import WriteRawParquet

        _ = raw | "LandParquet" >> WriteRawParquet(
            job.built("raw_parquet"), raw_arrow_schema(job.plan)
        )
    assign_args = (
        job.plan.columns,
        job.raw_label,
        job.split_key,
        config.splits,
        job.features.drop_if_null if job.features else (),
    )
    if job.span is not None:  # a span lands its raw rows for --analyze_spans
        from pipeline.sources.parquet import WriteRawParquet
        from pipeline.span_analysis import RAW_DIR

        _ = raw | "LandSpanParquet" >> WriteRawParquet(
            output.join(job.built("output"), RAW_DIR), raw_arrow_schema(job.plan)
        )
    rows = raw | "AssignSplit" >> AssignSplit(*assign_args, names=job.names)
    if rereads(job, snapshot_id):
        # The transform pass reads the same snapshot again, so the runner never
        # holds every row between the analysis and the transform.
        namespace = REREAD_METRICS_NAMESPACE
        rows_to_transform = (
            p
            | "Reread"
            >> sources.read_rows(job.source, job.plan, snapshot_id, namespace)
            | "AssignSplitAgain"
            >> AssignSplit(*assign_args, namespace=namespace, names=job.names)
        )
    else:
        rows_to_transform = rows
    adapter_config = with_split_column(adapter_config)
    # The built-in graph runs as written, without Grappler (see tft_speedups).
    built_in = job.features is not None and not config.transform_from
    sessions = (
        tft_speedups.sessions_without_grappler()
        if built_in
        else contextlib.nullcontext()
    )
    with (
        sessions,
        tft_beam.Context(temp_dir=job.temp_dir, force_tf_compat_v1=FORCE_TF_COMPAT_V1),
    ):
        earlier = (job.span or {}).get("analyzed_with_spans")
        if not config.transform_from:
            train = rows | "SelectTrain" >> SelectSplit(config.splits, "train")
        if earlier:
            from pipeline.span_analysis import (
                EARLIER_NAMESPACE,
                RAW_DIR,
                ReadEarlierSpans,
            )

            dirs = [
                output.join(spans.span_dir(config.output_dir, k), RAW_DIR)
                for k in earlier
            ]
            earlier_train = (
                p
                | "ReadEarlierSpans"
                >> ReadEarlierSpans(dirs, raw_arrow_schema(job.plan))
                | "AssignSplitEarlier"
                >> AssignSplit(
                    *assign_args, namespace=EARLIER_NAMESPACE, names=job.names
                )
                | "SelectTrainEarlier" >> SelectSplit(config.splits, "train")
            )
            train = (train, earlier_train) | "WithEarlierSpans" >> beam.Flatten()
        if config.transform_from:  # applied unchanged: no analysis
            transform_fn = p | "ReadTransformFn" >> tft_beam.ReadTransformFn(
                config.transform_from
            )
        else:
            transform_fn = (train, adapter_config) | "Analyze" >> (
                tft_beam.AnalyzeDataset(_preprocessing_fn(job))
            )
        # One transform for all splits; each row carries its split through it.
        with tft_beam.Context(passthrough_keys={SPLIT_COLUMN}):
            transformed, _ = ((rows_to_transform, adapter_config), transform_fn) | (
                "Transform" >> tft_beam.TransformDataset(output_record_batches=True)
            )
        # Typed, so Beam sizes the batches without pickling them (`arrow_coder`).
        transformed = arrow_coder.batch_pairs(transformed)
        routed = transformed | "RouteSplits" >> RouteSplits(
            config.splits, job.text_label_key
        )
        if config.statistics:
            from pipeline.compute_statistics import WriteStatistics

            _ = (rows, transformed) | "Statistics" >> WriteStatistics(
                job.built("output"), config.splits.names
            )
        for name in config.splits.names:
            step = name[:1].upper() + name[1:]
            routed[name] | f"Write{step}" >> WriteExamples(
                job.built("output"), name, config.num_shards
            )
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
            job.built("output")
        )
