"""The job: plan in the launcher, build the Beam graph, run it, publish the manifest.

`prepare_job` does everything that can fail before the pipeline runs (flags, database,
catalog, feature config, output directory); it first opens the source's session
(`sources.open_session`: locks and the snapshot), then plans in that same transaction;
`build_pipeline(p, job)` only wires transforms from that plain, picklable plan:
read (`sources.read_rows`) -> assign splits -> tf.Transform -> write -> manifest.
`run_job` runs it while holding the snapshot and its locks (closing them at the end,
also on failure) and writes `manifest.json` last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import (
    METRICS_NAMESPACE,
    arrow_coder,
    degenerate,
    heap,
    ownership,
    publish,
    sources,
    spans,
)
from pipeline.assign import (
    SPLIT_COLUMN,
    AssignSplit,
    RouteSplits,
    SelectSplit,
    with_split_column,
)
from pipeline.manifest import build_manifest, raw_snapshot_info
from pipeline.options import JobConfig
from pipeline.sink import output
from pipeline.sink.write import WriteExamples
from pipeline.sources import SourceSpec
from pipeline.sources.read_plan import ReadPlan
from transforms.features import ConfigError, FeatureConfig, infer_features, load_config
from transforms.names import feature_names
from transforms.types import Kind

__all__ = ["Job", "prepare_job", "rereads", "build_pipeline", "run_job"]

_LOGGER = logging.getLogger(__name__)

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


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything decided before the pipeline runs."""

    config: JobConfig
    source: SourceSpec
    plan: ReadPlan
    features: FeatureConfig | None
    split_key: str
    raw_label: str | None
    temp_dir: str
    primary_key: tuple[str, ...] = ()
    snapshot_info: dict | None = None  # of the --input_parquet snapshot
    names: dict[str, str] = dataclasses.field(default_factory=dict)  # column -> key
    # The source's session the plan was made in (locks, snapshot; see
    # `pipeline.sources`); run_job holds it while the pipeline reads, then closes it.
    snapshot: Any = dataclasses.field(default=None, repr=False, compare=False)
    # Where the run builds --output_dir / --raw_parquet_dir (see pipeline.publish).
    output: publish.Publication | None = None
    raw_parquet: publish.Publication | None = None
    span: dict | None = None  # the manifest's `span` section (see pipeline.spans)

    def close(self) -> None:
        """Releases the snapshot and its locks (run_job does; for unrun jobs)."""
        if self.snapshot is not None:
            self.snapshot.close()

    @property
    def label(self) -> str:
        """The (transformed) label key."""
        if self.features is not None:
            return self.features.label_key
        return self.config.label


def _split_key(config: JobConfig, plan: ReadPlan, primary_key: list[str]) -> str:
    if config.split_key:
        return config.split_key
    if plan.table is None:
        raise ConfigError("--split_key is required with --query")
    if len(primary_key) == 1:
        return primary_key[0]
    if primary_key:
        raise ConfigError(
            f"--split_key: table {plan.table} has a composite primary key "
            f"({', '.join(primary_key)}); name one column to hash"
        )
    raise ConfigError(f"--split_key: table {plan.table} has no primary key; name one")


def prepare_job(config: JobConfig, temp_location: str | None = None) -> Job:
    """Plans the read and the features; raises one-line errors before anything runs.

    The outputs are checked first, before any connection; then locks and the
    snapshot come, and the plan is made inside them (see `snapshot`); the returned
    job holds them until `run_job` (or `Job.close`).
    """
    # The outputs first: a mistyped --output_dir is refused before any connection.
    ownership.check_disjoint(
        {
            "--output_dir": config.output_dir,
            "--raw_parquet_dir": config.raw_parquet_dir,
            "--input_parquet": config.input_parquet,
        }
    )
    span_target = None
    if config.span_column:
        span_target = spans.next_span(config.output_dir)
        target = publish.plan_publication(
            span_target.path, span_target.incomplete, flag="--output_dir span"
        )
    else:
        target = publish.plan_publication(config.output_dir, config.overwrite)
    if config.transform_from:
        _check_transform_from(config.transform_from)
    raw_parquet = None
    if config.raw_parquet_dir:
        raw_parquet = publish.plan_publication(
            config.raw_parquet_dir, config.overwrite, "parquet", "--raw_parquet_dir"
        )
    source = sources.source_spec(
        config.db_url,
        table=config.table,
        query=config.query,
        statement_timeout_ms=config.statement_timeout_ms,
        lock_timeout_ms=config.lock_timeout_ms,
        consistency=config.consistency,
    )
    snapshot = None
    if not config.input_parquet:
        shared = config.snapshot and config.reader == "native"
        snapshot = sources.open_session(source, export=shared)
    try:
        job = _prepare_job(config, temp_location, source, snapshot, target, raw_parquet)
        if span_target is not None:
            bounds = spans.plan_span(
                snapshot.conn,
                job.plan.table,
                config.span_column,
                span_target,
                query=job.plan.relation if job.plan.table is None else None,
                lag=config.span_lag,
            )
            merge = config.num_partitions is None and not config.partition_column
            plan = spans.narrow_plan(job.plan, bounds, may_merge=merge)
            if config.analyze_spans:
                from pipeline.span_analysis import earlier_spans

                bounds.info["analyzed_with_spans"] = earlier_spans(
                    config.output_dir, span_target, config.analyze_spans, plan.columns
                )
            job = dataclasses.replace(job, plan=plan, span=bounds.info)
    except BaseException:
        if snapshot is not None:
            snapshot.close()
        raise
    if snapshot is not None and not snapshot.holds_for_run:
        snapshot.close()  # planned under lock; nothing to hold for the run
        job = dataclasses.replace(job, snapshot=None)
    return job


def _prepare_job(config, temp_location, source, snapshot, target, raw_parquet) -> Job:
    snapshot_info = None
    if config.input_parquet:
        from pipeline.sources.parquet import read_snapshot_info

        snapshot_info, columns = read_snapshot_info(config.input_parquet)
        plan = ReadPlan(
            relation=f"parquet:{config.input_parquet}",
            columns=tuple(columns),
            partitions=(),
            partition_key=None,
            row_estimate=snapshot_info["rows"],
            description=f"Parquet snapshot {config.input_parquet}",
        )
        split_key = config.split_key or snapshot_info["split_key"]
        primary_key = list(snapshot_info.get("primary_key", []))
    else:
        plan = snapshot.plan(
            source,
            num_partitions=config.num_partitions,
            partition_column=config.partition_column,
        )
        primary_key = snapshot.primary_key(plan.table) if plan.table else []
        split_key = _split_key(config, plan, primary_key)
    all_columns = plan.columns
    names = {c.name for c in all_columns}
    if split_key not in names:
        raise ConfigError(
            f"--split_key: column {split_key!r} not found; have {sorted(names)}"
        )
    if config.preprocessing_module:
        from transforms.user_module import load_preprocessing_fn

        # Import errors show before anything runs (the import is cached).
        load_preprocessing_fn(config.preprocessing_module, config.label)
        # A user module names its transformed label with --label; when that is also
        # a raw column, rows where it is NULL are dropped (as with built-in features).
        features = None
        raw_label = config.label if config.label in names else None
        needed = [c.name for c in all_columns if _supported(c)]
    else:
        if config.label not in names:
            raise ConfigError(
                f"--label: column {config.label!r} not found; have {sorted(names)}"
            )
        raw_label = config.label
        if config.features:
            features = load_config(config.features, all_columns, config.label)
        else:
            exclude = [split_key] + primary_key
            features = infer_features(all_columns, config.label, exclude=exclude)
        needed = list(dict.fromkeys([*features.columns, split_key]))
    plan = dataclasses.replace(
        plan, columns=tuple(c for c in all_columns if c.name in set(needed))
    )
    for column in plan.columns:
        _ = column.kind  # UnsupportedTypeError names the column and the cast
    if config.reader == "jdbc":
        from pipeline.sources.jdbc import check_jdbc_available

        check_jdbc_available()
    temp_dir = temp_location or output.join(target.staging, ".tmp")
    keys = features.names if features else feature_names(c.name for c in all_columns)
    return Job(
        config,
        source,
        plan,
        features,
        split_key,
        raw_label,
        temp_dir,
        tuple(primary_key),
        snapshot_info,
        dict(keys),
        snapshot,
        target,
        raw_parquet,
    )


def _check_transform_from(path: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(output.join(path, "transform_fn", "saved_model.pb")):
        raise ConfigError(
            f"--transform_from {path}: no transform_fn/saved_model.pb there; name a "
            "complete sql2tfrecord output or span"
        )


def _supported(column) -> bool:
    from transforms.types import UnsupportedTypeError

    try:
        _ = column.kind
        return True
    except UnsupportedTypeError as err:
        _LOGGER.warning(
            "Column %r is not read (the preprocessing module gets mapped columns "
            "only): %s",
            column.name,
            err,
        )
        return False


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
            _built(job, "raw_parquet"), raw_arrow_schema(job.plan)
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
            output.join(_built(job, "output"), RAW_DIR), raw_arrow_schema(job.plan)
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
            config.splits, _text_label_key(job)
        )
        if config.statistics:
            from pipeline.compute_statistics import WriteStatistics

            _ = (rows, transformed) | "Statistics" >> WriteStatistics(
                _built(job, "output"), config.splits.names
            )
        for name in config.splits.names:
            step = name[:1].upper() + name[1:]
            routed[name] | f"Write{step}" >> WriteExamples(
                _built(job, "output"), name, config.num_shards
            )
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
            _built(job, "output")
        )


def _text_label_key(job: Job) -> str | None:
    """The transformed key of a built-in text label (its ids), else None."""
    if job.features is None:
        return None
    label = job.features.label.column
    if any(c.name == label and c.kind is Kind.BYTES for c in job.plan.columns):
        return job.features.label_key
    return None


def _built(job: Job, which: str) -> str:
    """Where the run writes an output: its staging directory (see pipeline.publish)."""
    target = getattr(job, which)
    if target is not None:
        return target.staging
    return job.config.output_dir if which == "output" else job.config.raw_parquet_dir


def _counters(result) -> dict[str, int]:
    from apache_beam.metrics.metric import MetricsFilter

    totals: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    for counter in query["counters"]:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + int(counter.committed or 0)
    return totals


def run_job(job: Job, beam_options: PipelineOptions) -> dict[str, Any]:
    """Runs the pipeline in staging directories, then publishes; returns the manifest.

    The outputs are swapped into place only once the job succeeded, the raw Parquet
    snapshot first (the manifest names it); on any failure, an interrupt included,
    the staging directories are removed and the previous outputs stay as they were.
    """
    targets = [t for t in (job.raw_parquet, job.output) if t is not None]
    try:
        for target in targets:
            publish.begin(target)
        manifest = _run_staged(job, beam_options)
        for target in targets:
            publish.publish(target)
    except BaseException:
        for target in targets:
            publish.abandon(target)
        raise
    finally:
        heap.thaw()  # what the run froze (see pipeline.heap)
    _LOGGER.info(
        "Wrote %s: %s rows in %.1f s",
        job.config.output_dir,
        {k: v["rows"] for k, v in manifest["splits"].items()},
        manifest["elapsed_seconds"],
    )
    return manifest


def _run_staged(job: Job, beam_options: PipelineOptions) -> dict[str, Any]:
    """Runs the pipeline into the staging directories, manifest last."""
    import tensorflow_transform as tft
    from tensorflow_transform.tf_metadata import metadata_io

    from transforms.schema import raw_metadata

    config = job.config
    built = _built(job, "output")
    started = time.time()
    use_snapshot = (
        config.snapshot and config.reader == "native" and not config.input_parquet
    )
    snapshot = job.snapshot
    try:
        if snapshot is None and use_snapshot:  # a Job made without prepare_job
            snapshot = sources.open_session(job.source, export=True)
            if not snapshot.holds_for_run:  # nothing to hold for the run
                snapshot.close()
                snapshot = None
        # Written once the snapshot exists (tests wait for it in the staging dir).
        metadata_io.write_metadata(
            raw_metadata(job.plan.columns, job.names),
            output.join(built, "metadata"),
        )
        from pipeline import beam_speedups, tft_speedups
        from pipeline.runner import pipeline_runner

        beam_speedups.install()
        tft_speedups.install()
        p = beam.Pipeline(runner=pipeline_runner(beam_options), options=beam_options)
        snapshot_id = snapshot.snapshot_id if snapshot else None
        build_pipeline(p, job, snapshot_id)
        heap.freeze()  # the built graph lives to the end of the run
        with _progress_reporter(job, snapshot_id):
            result = p.run()
            # The snapshot must outlive every partition read: wait for the whole job.
            state = result.wait_until_finish()
        if state is not None and str(state).rsplit(".", 1)[-1] not in (
            "DONE",
            "UNKNOWN",
        ):
            raise RuntimeError(
                f"the pipeline ended in state {state}; no manifest written"
            )
        if snapshot is not None:
            snapshot.check_held()  # its locks guarded every partition's read
    finally:
        if snapshot is not None:
            snapshot.__exit__(None, None, None)
    elapsed = time.time() - started
    counts = _counters(result)
    reread = rereads(job, snapshot_id)
    if reread:
        _check_reread(counts, config.splits.names)
    label_key = job.label
    warnings = degenerate.output_warnings(
        {name: counts.get(f"examples_{name}", 0) for name in config.splits.names},
        counts,
        job.raw_label,
        job.split_key,
    )
    for warning in warnings:
        _LOGGER.warning("%s", warning)
    if config.fail_on_empty_split:
        degenerate.check_empty_splits(
            {name: counts.get(f"examples_{name}", 0) for name in config.splits.names},
            warnings,
        )

    tft_output = tft.TFTransformOutput(built)
    transformed = tft_output.transformed_feature_spec()
    if label_key not in transformed:
        raise ConfigError(
            f"--label: {label_key!r} is not among the transformed features "
            f"{sorted(transformed)}; nothing was published"
        )
    manifest = build_manifest(
        job,
        counts=counts,
        tft_output=tft_output,
        built=built,
        snapshot_used=bool(snapshot_id),
        reread=reread,
        warnings=warnings,
        elapsed=elapsed,
        text_label_key=_text_label_key(job),
    )
    if config.raw_parquet_dir:
        from pipeline.sources.parquet import write_snapshot_info

        write_snapshot_info(
            _built(job, "raw_parquet"), raw_snapshot_info(job, manifest, snapshot_id)
        )
        manifest["raw_parquet_dir"] = config.raw_parquet_dir
    if job.span is not None:
        manifest["span"] = job.span
        from pipeline.sources.parquet import write_snapshot_info
        from pipeline.span_analysis import RAW_DIR

        write_snapshot_info(
            output.join(built, RAW_DIR), raw_snapshot_info(job, manifest, snapshot_id)
        )
        # Updated rows come again (a new version, a new C): counted by primary key.
        key = job.primary_key[0] if len(job.primary_key) == 1 else None
        if key is not None and key in {c.name for c in job.plan.columns}:
            manifest["span"]["key"] = key
            manifest["span"]["rows_seen_in_earlier_spans"] = spans.count_seen_before(
                config.output_dir, job.span["number"], output.join(built, RAW_DIR), key
            )
    if job.snapshot_info is not None:
        manifest["input_parquet"] = {
            "path": config.input_parquet,
            "source": job.snapshot_info["source"],
            "snapshot_id": job.snapshot_info["snapshot_id"],
            "created_at": job.snapshot_info["created_at"],
            "rows": job.snapshot_info["rows"],
        }
    if config.statistics:  # drift, anomalies and report.html (may refuse to publish)
        from pipeline.report import publish_statistics

        heap.freeze()  # the run's results and garbage: thawed when run_job ends
        publish_statistics(config, manifest, built)
    _cleanup_temp(job)
    output.write_manifest(built, manifest)
    return manifest


def _progress_reporter(job: Job, snapshot_id: str | None):
    from pipeline.progress import Reporter

    total, estimate = len(job.plan.partitions), job.plan.row_estimate or None
    passes = {METRICS_NAMESPACE: ("read", total, estimate)}
    if rereads(job, snapshot_id):
        passes[REREAD_METRICS_NAMESPACE] = ("second read", total, estimate)
    return Reporter(passes)


def _check_reread(counts: dict[str, int], splits: Sequence[str]) -> None:
    """Fails when the transform pass wrote other rows than the analysis pass saw."""
    for name in splits:
        seen, written = (
            counts.get(f"split:{name}", 0) - counts.get(f"unseen_label:{name}", 0),
            counts.get(f"examples_{name}", 0),
        )
        if seen != written:
            raise RuntimeError(
                f"split {name}: the analysis read {seen} rows but {written} examples "
                "were written from the second read of the same snapshot; no manifest "
                "written (rerun with --read_once to read the database once)"
            )


def _cleanup_temp(job: Job) -> None:
    from apache_beam.io.filesystems import FileSystems

    default_temp = output.join(_built(job, "output"), ".tmp")
    if job.temp_dir == default_temp and FileSystems.exists(default_temp):
        FileSystems.delete([default_temp])
