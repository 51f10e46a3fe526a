"""AssignSplit: raw reader batches -> tf.Transform-ready batches, one PCollection per split.

Rows whose label is NULL cannot be trained on: they are dropped here and counted
(`rows_dropped_null_label`, recorded in the manifest), never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from pipeline.split import SplitSpec, assign_splits
from transforms.schema import to_transform_batch
from transforms.types import Column

__all__ = ["AssignSplit"]


class _AssignSplitFn(beam.DoFn):
    def __init__(
        self,
        columns: Sequence[Column],
        label: str,
        split_key: str,
        spec: SplitSpec,
    ):
        self._columns = tuple(columns)
        self._label = label
        self._split_key = split_key
        self._spec = spec
        self._dropped = Metrics.counter("sql2tfrecord", "rows_dropped_null_label")
        self._counters = [
            Metrics.counter("sql2tfrecord", f"rows_{name}") for name in spec.names
        ]

    def process(self, batch: pa.RecordBatch) -> Iterator:
        label = batch.column(self._label)
        if label.null_count:
            self._dropped.inc(label.null_count)
            batch = batch.filter(pc.is_valid(label))
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
            part = prepared if count == batch.num_rows else prepared.filter(pa.array(mask))
            yield beam.pvalue.TaggedOutput(name, part)


class AssignSplit(beam.PTransform):
    """Splits raw batches by the hash of the split key and converts their layout.

    Input: PCollection[pa.RecordBatch] (raw, flat). Output: a dict split name ->
    PCollection[pa.RecordBatch] in `transforms.schema.transform_arrow_schema(columns)`.
    Parallelism: per batch, no shuffle. Deterministic: depends on key values only.
    """

    def __init__(
        self, columns: Sequence[Column], label: str, split_key: str, spec: SplitSpec
    ):
        super().__init__()
        self._columns, self._label = tuple(columns), label
        self._split_key, self._spec = split_key, spec

    def expand(self, batches):
        tagged = batches | "Assign" >> beam.ParDo(
            _AssignSplitFn(self._columns, self._label, self._split_key, self._spec)
        ).with_outputs(*self._spec.names)
        return {name: tagged[name] for name in self._spec.names}
