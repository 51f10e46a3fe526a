"""The job: everything decided in the launcher before the pipeline runs.

`prepare_job` does everything that can fail before the pipeline runs (flags, database,
catalog, feature config, output directory); it first opens the source's session
(`sources.open_session`: locks and the snapshot), then plans in that same transaction.
The plain, picklable `Job` it returns is what `pipeline.build.build_pipeline` wires
into a Beam graph and `pipeline.run.run_job` runs, holding the snapshot and its
locks, before it publishes the outputs with `manifest.json` last.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pipeline import ownership, publish, sources, spans
from pipeline.options import JobConfig
from pipeline.sink import output
from pipeline.sources import SourceSpec
from pipeline.sources.read_plan import ReadPlan
from transforms.features import ConfigError, FeatureConfig, infer_features, load_config
from transforms.names import feature_names
from transforms.types import Kind

__all__ = ["Job", "prepare_job"]

_LOGGER = logging.getLogger(__name__)


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

    @property
    def text_label_key(self) -> str | None:
        """The transformed key of a built-in text label (its ids), else None."""
        if self.features is None:
            return None
        label = self.features.label.column
        if any(c.name == label and c.kind is Kind.BYTES for c in self.plan.columns):
            return self.features.label_key
        return None

    def built(self, which: str) -> str:
        """Where the run writes output `which` ("output" or "raw_parquet").

        Its staging directory (see `pipeline.publish`), else the flag's directory.
        """
        target = getattr(self, which)
        if target is not None:
            return target.staging
        if which == "output":
            return self.config.output_dir
        return self.config.raw_parquet_dir


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
    key_column = next(c for c in all_columns if c.name == split_key)
    if key_column.is_array:  # hashed value by value: one value per row
        raise ConfigError(
            f"--split_key: column {split_key!r} has type {key_column.display_type}; "
            "name a column of scalar values"
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
