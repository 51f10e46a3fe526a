"""AssignSplit: raw reader batches -> tf.Transform-ready batches, one PCollection per split.

Rows whose label is NULL cannot be trained on, and rows with a NULL in a feature
configured with `impute: drop` are unwanted: both are dropped here and counted
(`rows_dropped_null_label`, `dropped_null:<column>`, recorded in the manifest),
never dropped silently. NULLs of the kept rows (which the transforms impute) are
counted per column (`nulls:<column>`). NaN, ±Infinity and values beyond float32's range in floating
columns are counted per column (`non_finite:<column>`); the transforms treat them as
missing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from pipeline.split import SplitSpec, assign_splits
from transforms.preprocessing import FLOAT32_MAX
from transforms.schema import to_transform_batch
from transforms.types import Column, Kind

__all__ = ["AssignSplit"]


class _AssignSplitFn(beam.DoFn):
    def __init__(
        self,
        columns: Sequence[Column],
        label: str | None,
        split_key: str,
        spec: SplitSpec,
        drop_if_null: Sequence[str] = (),
    ):
        self._columns = tuple(columns)
        self._label = label
        self._split_key = split_key
        self._spec = spec
        self._drop_if_null = tuple(drop_if_null)
        self._floats = tuple(
            c.name for c in columns if c.kind is Kind.FLOAT and not c.is_array
        )
        self._counted_nulls = tuple(
            c.name for c in columns if not c.not_null and c.name != label
        )
        self._dropped = Metrics.counter("sql2tfrecord", "rows_dropped_null_label")
        self._counters = [
            Metrics.counter("sql2tfrecord", f"split:{name}") for name in spec.names
        ]

    def process(self, batch: pa.RecordBatch) -> Iterator:
        if self._label is not None:
            label = batch.column(self._label)
            if label.null_count:
                self._dropped.inc(label.null_count)
                batch = batch.filter(pc.is_valid(label))
        for name in self._drop_if_null:
            column = batch.column(name)
            if column.null_count:
                Metrics.counter("sql2tfrecord", f"dropped_null:{name}").inc(
                    column.null_count
                )
                batch = batch.filter(pc.is_valid(column))
        for name in self._counted_nulls:
            nulls = batch.column(name).null_count
            if nulls:
                Metrics.counter("sql2tfrecord", f"nulls:{name}").inc(nulls)
        for name in self._floats:
            column = batch.column(name)
            usable = pc.and_(
                pc.is_finite(column), pc.less_equal(pc.abs(column), FLOAT32_MAX)
            )
            bad = (
                len(column) - column.null_count - (pc.sum(usable).as_py() or 0)
                if len(column)
                else 0
            )
            if bad:
                Metrics.counter("sql2tfrecord", f"non_finite:{name}").inc(bad)
        if batch.num_rows == 0:
            return
        assignment = assign_splits(batch.column(self._split_key), self._spec)
        prepared = to_transform_batch(batch, self._columns)
        for index, name in enumerate(self._spec.names):
            mask = assignment == index
            count = int(np.count_nonzero(mask))
            if count == 0:
                continue
            self._counters[index].inc(count)
            part = (
                prepared if count == batch.num_rows else prepared.filter(pa.array(mask))
            )
            yield beam.pvalue.TaggedOutput(name, part)


class AssignSplit(beam.PTransform):
    """Splits raw batches by the hash of the split key and converts their layout.

    Input: PCollection[pa.RecordBatch] (raw, flat). Output: a dict split name ->
    PCollection[pa.RecordBatch] in `transforms.schema.transform_arrow_schema(columns)`.
    Parallelism: per batch, no shuffle. Deterministic: depends on key values only.
    """

    def __init__(
        self,
        columns: Sequence[Column],
        label: str | None,
        split_key: str,
        spec: SplitSpec,
        drop_if_null: Sequence[str] = (),
    ):
        super().__init__()
        self._names = spec.names
        self._fn = _AssignSplitFn(columns, label, split_key, spec, drop_if_null)

    def expand(self, batches):
        tagged = batches | "Assign" >> beam.ParDo(self._fn).with_outputs(*self._names)
        return {name: tagged[name] for name in self._names}
