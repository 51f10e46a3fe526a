"""The manifest: what a run read, decided, dropped and wrote; published last.

`build_manifest` assembles it from the job's plan, the pipeline's counters and the
written transform graph; `raw_snapshot_info` is the `_snapshot.json` of a raw
Parquet landing of the same read. Its presence in an output means the output is
complete (see `pipeline.publish`). Pure assembly: nothing here reads the database.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipeline.sink import output
from pipeline.sink.write import SHARD_SUFFIX
from transforms.types import conversion

__all__ = [
    "FORMAT",
    "build_manifest",
    "by_column",
    "label_classes",
    "raw_snapshot_info",
]

FORMAT = "sql2tfrecord/1"


def build_manifest(
    job,
    *,
    counts: dict[str, int],
    tft_output,
    built: str,
    snapshot_used: bool,
    reread: bool,
    warnings: list[str],
    elapsed: float,
    text_label_key: str | None,
) -> dict[str, Any]:
    """The manifest of `job` (a `pipeline.job.Job`) once its pipeline has run.

    Args:
        job: the job that ran.
        counts: its counters (`pipeline.run._counters`).
        tft_output: `tft.TFTransformOutput` of the written transform graph.
        built: the directory the run wrote (its staging directory).
        snapshot_used: every read imported one exported snapshot.
        reread: the transform pass read the snapshot again.
        warnings: one line each (empty splits, NULL split keys, …).
        elapsed: seconds the run took.
        text_label_key: the transformed key of a text label's ids, else None.
    """
    transformed = tft_output.transformed_feature_spec()
    vocabularies = {}
    if job.features is not None:
        for feature in job.features.features:
            if feature.transform == "vocabulary":
                vocabularies[feature.name] = {
                    "column": feature.column,
                    "size": tft_output.vocabulary_size_by_name(feature.vocab_filename),
                    "num_oov_buckets": feature.num_oov_buckets,
                }
    splits = {}
    for name, weight in job.config.splits.splits:
        pattern = output.join(built, name, f"part-*{SHARD_SUFFIX}")
        files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
        splits[name] = {
            "weight": weight,
            "rows": counts.get(f"examples_{name}", 0),
            "files": [f.rsplit("/", 1)[-1] for f in files],
        }
    manifest = {
        "format": FORMAT,
        "source": {
            "db": job.source.dsn.masked,
            "table": job.config.table,
            "query": job.config.query,
            "columns": [
                {
                    "name": c.name,
                    "type": c.display_type,
                    "not_null": c.not_null,
                    "conversion": conversion(c),
                }
                for c in job.plan.columns
            ],
        },
        "read_plan": {
            "description": job.plan.description,
            "partitions": [p.label for p in job.plan.partitions],
            "snapshot": snapshot_used,
            "consistency": job.plan.consistency
            or ("one_snapshot" if snapshot_used else "per_partition"),
            "reread_for_transform": reread,
            "row_estimate": job.plan.row_estimate,
            "locks": list(job.plan.locks),
            "lock": job.plan.lock_method,
        },
        "label": job.label,
        "label_column": job.raw_label,
        "label_classes": label_classes(tft_output, text_label_key),
        "names": {c.name: job.names.get(c.name, c.name) for c in job.plan.columns},
        "split_key": job.split_key,
        "splits": splits,
        "rows_read": counts.get("rows_read", 0),
        "rows_dropped_null_label": counts.get("rows_dropped_null_label", 0),
        "rows_dropped_non_finite_label": counts.get("rows_dropped_non_finite_label", 0),
        "rows_dropped_unseen_label": {
            name: counts.get(f"unseen_label:{name}", 0)
            for name in job.config.splits.names
        },
        "rows_dropped_null": by_column(counts, "dropped_null:"),
        "non_finite_values": by_column(counts, "non_finite:"),
        "zero_dates": by_column(counts, "zero_date:"),
        "null_values": by_column(counts, "nulls:"),
        "null_split_keys": by_column(counts, "null_split_key:"),
        "warnings": warnings,
        "rows_per_partition": {
            p.label: counts.get(f"partition:{p.label}", 0) for p in job.plan.partitions
        },
        "features": job.features.to_json() if job.features else None,
        "preprocessing_module": job.config.preprocessing_module,
        "transformed_features": sorted(transformed),
        "vocabularies": vocabularies,
        "compression": "GZIP",
        "transform": (
            {"fitted": False, "from": job.config.transform_from}
            if job.config.transform_from
            else {
                "fitted": True,
                "from": None,
                "analyzed_spans": (
                    [*job.span.get("analyzed_with_spans", []), job.span["number"]]
                    if job.span
                    else None
                ),
            }
        ),
        "elapsed_seconds": round(elapsed, 3),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return manifest


def label_classes(tft_output, text_label_key: str | None) -> list[str] | None:
    """A text label's classes in id order (the label vocabulary, unescaped)."""
    if text_label_key is None:
        return None
    from transforms.tokens import unescape_token

    return [
        unescape_token(t).decode("utf-8")
        for t in tft_output.vocabulary_by_name(text_label_key)
    ]


def by_column(counts: dict[str, int], prefix: str) -> dict[str, int]:
    """The counters named `<prefix><column>`, keyed by column."""
    return {k[len(prefix) :]: v for k, v in counts.items() if k.startswith(prefix)}


def raw_snapshot_info(job, manifest: dict[str, Any], snapshot_id: str | None) -> dict:
    """`_snapshot.json` of a raw Parquet landing of the same read (written last)."""
    return {
        "columns": [dataclasses.asdict(c) for c in job.plan.columns],
        "split_key": job.split_key,
        "primary_key": list(job.primary_key),
        "source": manifest["source"],
        "snapshot_id": snapshot_id,
        "rows": manifest["rows_read"],
        "created_at": manifest["created_at"],
    }
