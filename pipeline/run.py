"""Running a prepared job: in staging directories, manifest last, then published.

`run_job` runs the Beam graph of `pipeline.build` while holding the job's snapshot
and its locks (closing them at the end, also on failure), checks what the run
counted, writes `manifest.json` last and swaps the finished outputs into place
(`pipeline.publish`); on any failure the previous outputs stay as they were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import METRICS_NAMESPACE, degenerate, heap, publish, sources, spans
from pipeline.build import REREAD_METRICS_NAMESPACE, build_pipeline, rereads
from pipeline.job import Job
from pipeline.manifest import build_manifest, raw_snapshot_info
from pipeline.sink import output
from transforms.features import ConfigError

__all__ = ["run_job"]

_LOGGER = logging.getLogger(__name__)


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
    built = job.built("output")
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
        text_label_key=job.text_label_key,
    )
    if config.raw_parquet_dir:
        from pipeline.sources.parquet import write_snapshot_info

        write_snapshot_info(
            job.built("raw_parquet"), raw_snapshot_info(job, manifest, snapshot_id)
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

    default_temp = output.join(job.built("output"), ".tmp")
    if job.temp_dir == default_temp and FileSystems.exists(default_temp):
        FileSystems.delete([default_temp])
