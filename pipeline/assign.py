"""Splits by row: tag each row with its split once, transform all rows, route output.

`AssignSplit` converts raw reader batches to tf.Transform's layout and appends the
row's split index as the column `SPLIT_COLUMN` (`list<int32>`, one value per row),
with each batch's rows grouped by split (each split's rows in their read order);
`SelectSplit` keeps one split's rows (the train rows, for the analysis), and
`RouteSplits` sends each transformed row to its split's writer. tf.Transform carries
the split column through `TransformDataset` as a passthrough key
(`with_split_column` adds it to the `TensorAdapterConfig`'s Arrow schema, not to
its tensors, so `preprocessing_fn` never sees it). All splits therefore go through
one transform in the reader's full-size batches, instead of one transform per
split in batches cut to each split's share; selecting and routing a split is a
zero-copy slice. A `preprocessing_fn` must keep one
output row per input row (tf.Transform's rule for passthrough columns).

Rows whose label is NULL cannot be trained on, and rows with a NULL in a feature
configured with `impute: drop` are unwanted: both are dropped here and counted
(`rows_dropped_null_label`, `dropped_null:<column>`, recorded in the manifest),
never dropped silently. So are rows whose floating label is NaN, ±Infinity or
beyond float32's range (`rows_dropped_non_finite_label`), thresholded or not: a
label is never imputed. A text label whose class the train split does not have
gets no id (-1 from the transform); `RouteSplits` drops those rows after the
transform and counts them per split (`unseen_label:<split>`). NULLs of the kept
rows (which the transforms impute) are counted per column (`nulls:<column>`).
NaN, ±Infinity and values beyond float32's range in floating columns, and
±infinity in date and timestamp columns (read as the int64 extremes), are counted
per column (`non_finite:<column>`); the transforms treat them as missing. Rows
whose split key is NULL all hash alike, so they land in one split: they are
counted per split (`null_split_key:<split>`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from tfx_bsl.tfxio import tensor_adapter

from pipeline import METRICS_NAMESPACE, arrow_coder
from pipeline.split import SplitSpec, assign_splits
from transforms.inputs import FLOAT32_MAX
from transforms.schema import TransformBatches
from transforms.types import NEG_INFINITY, POS_INFINITY, TIME_KINDS, Column, Kind

__all__ = [
    "SPLIT_COLUMN",
    "AssignSplit",
    "SelectSplit",
    "RouteSplits",
    "with_split_column",
]

SPLIT_COLUMN = "__sql2tfrecord_split__"
_SPLIT_FIELD = pa.field(SPLIT_COLUMN, pa.list_(pa.int32()))


def with_split_column(
    config: tensor_adapter.TensorAdapterConfig,
) -> tensor_adapter.TensorAdapterConfig:
    """`config` with the split column appended to its Arrow schema (no tensor)."""
    return tensor_adapter.TensorAdapterConfig(
        config.arrow_schema.append(_SPLIT_FIELD), config.tensor_representations
    )


def _split_indices(batch: pa.RecordBatch, unary: dict) -> np.ndarray:
    """The split index of each row of a transformed batch."""
    index = batch.schema.get_field_index(SPLIT_COLUMN)
    if index >= 0:
        column = batch.column(index)
    else:  # tf.Transform hands one value for the whole batch as "unary"
        column = unary[SPLIT_COLUMN]
    values = column.flatten().to_numpy(zero_copy_only=False)
    if len(values) == 1 and batch.num_rows != 1:
        values = np.full(batch.num_rows, values[0])
    return values


def _usable(column: pa.Array) -> pa.Array:
    """True where a floating value is finite and within float32's range."""
    return pc.fill_null(
        pc.and_(pc.is_finite(column), pc.less_equal(pc.abs(column), FLOAT32_MAX)),
        False,
    )


_NUMPY_FLOATS = {pa.float64(): np.float64, pa.float32(): np.float32}


def _count_unusable(column: pa.Array) -> int:
    """The non-NULL values of a floating column that `_usable` rejects."""
    if not len(column):
        return 0
    dtype = _NUMPY_FLOATS.get(column.type)
    if dtype is None:
        return len(column) - column.null_count - (pc.sum(_usable(column)).as_py() or 0)
    start = column.offset
    values = np.frombuffer(column.buffers()[1], dtype)[start : start + len(column)]
    unusable = ~(np.abs(values) <= FLOAT32_MAX)  # NaN compares False
    if not unusable.any():
        return 0
    if column.null_count:  # a NULL's slot holds any value
        unusable &= pc.is_valid(column).to_numpy(zero_copy_only=False)
    return int(np.count_nonzero(unusable))


class _AssignSplitFn(beam.DoFn):
    def __init__(
        self,
        columns: Sequence[Column],
        label: str | None,
        split_key: str,
        spec: SplitSpec,
        drop_if_null: Sequence[str] = (),
        namespace: str = METRICS_NAMESPACE,
        names: Mapping[str, str] | None = None,
    ):
        self._prepare = TransformBatches(columns, names)
        self._namespace = namespace
        self._label = label
        self._split_key = split_key
        self._spec = spec
        self._drop_if_null = tuple(drop_if_null)
        self._floats = tuple(
            c.name for c in columns if c.kind is Kind.FLOAT and not c.is_array
        )
        self._times = tuple(
            c.name for c in columns if c.kind in TIME_KINDS and not c.is_array
        )
        self._counted_nulls = tuple(
            c.name for c in columns if not c.not_null and c.name != label
        )
        self._float_label = any(
            c.name == label and c.kind is Kind.FLOAT and not c.is_array for c in columns
        )
        self._dropped = Metrics.counter(namespace, "rows_dropped_null_label")
        self._dropped_non_finite = Metrics.counter(
            namespace, "rows_dropped_non_finite_label"
        )
        self._counters = [
            Metrics.counter(namespace, f"split:{name}") for name in spec.names
        ]

    def process(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        if self._label is not None:
            label = batch.column(self._label)
            if label.null_count:
                self._dropped.inc(label.null_count)
                batch = batch.filter(pc.is_valid(label))
            if self._float_label:
                usable = _usable(batch.column(self._label))
                bad = batch.num_rows - (pc.sum(usable).as_py() or 0)
                if bad:
                    self._dropped_non_finite.inc(bad)
                    batch = batch.filter(usable)
        for name in self._drop_if_null:
            column = batch.column(name)
            if column.null_count:
                Metrics.counter(self._namespace, f"dropped_null:{name}").inc(
                    column.null_count
                )
                batch = batch.filter(pc.is_valid(column))
        for name in self._counted_nulls:
            nulls = batch.column(name).null_count
            if nulls:
                Metrics.counter(self._namespace, f"nulls:{name}").inc(nulls)
        for name in self._floats:
            bad = _count_unusable(batch.column(name))
            if bad:
                Metrics.counter(self._namespace, f"non_finite:{name}").inc(bad)
        for name in self._times:
            infinite = _count_infinite_times(batch.column(name))
            if infinite:
                Metrics.counter(self._namespace, f"non_finite:{name}").inc(infinite)
        if batch.num_rows == 0:
            return
        keys = batch.column(self._split_key)
        assignment = assign_splits(keys, self._spec)
        if keys.null_count:
            nulls = np.bincount(
                assignment[~pc.is_valid(keys).to_numpy(zero_copy_only=False)],
                minlength=len(self._spec.names),
            )
            for index, count in enumerate(nulls.tolist()):
                if count:
                    Metrics.counter(
                        self._namespace, f"null_split_key:{self._spec.names[index]}"
                    ).inc(count)
        for index, count in enumerate(
            np.bincount(assignment, minlength=len(self._counters))
        ):
            if count:
                self._counters[index].inc(int(count))
        # Rows grouped by split (stable: each split's rows keep their order), so
        # selecting and routing a split is a zero-copy slice.
        order = np.argsort(assignment, kind="stable")
        if np.any(order != np.arange(len(order))):
            assignment = assignment[order]
        else:
            order = None
        prepared = self._prepare(batch, order)
        split = pa.ListArray.from_arrays(
            pa.array(np.arange(batch.num_rows + 1, dtype=np.int32)),
            pa.array(assignment.astype(np.int32)),
        )
        yield prepared.append_column(_SPLIT_FIELD, split)


def _count_infinite_times(column: pa.Array) -> int:
    """Values of a date/timestamp column that were ±infinity in the database."""
    values = column.drop_null().to_numpy(zero_copy_only=False)  # int64
    return int(np.count_nonzero((values == POS_INFINITY) | (values == NEG_INFINITY)))


class AssignSplit(beam.PTransform):
    """Tags raw batches' rows with their split (the hash of the split key).

    Input: PCollection[pa.RecordBatch] (raw, flat). Output: PCollection[pa.RecordBatch]
    in `transforms.schema.transform_arrow_schema(columns)` plus `SPLIT_COLUMN`.
    Parallelism: per batch, no shuffle. Deterministic: depends on key values only.
    Counters (drops, NULLs, non-finite values, rows per split) go to `namespace`.
    `label`, `split_key` and `drop_if_null` are column names; the output's fields
    are the columns' feature names (`names`, see `transforms.names`).
    """

    def __init__(
        self,
        columns: Sequence[Column],
        label: str | None,
        split_key: str,
        spec: SplitSpec,
        drop_if_null: Sequence[str] = (),
        namespace: str = METRICS_NAMESPACE,
        names: Mapping[str, str] | None = None,
    ):
        super().__init__()
        self._fn = _AssignSplitFn(
            columns, label, split_key, spec, drop_if_null, namespace, names
        )

    def expand(self, raw):
        return arrow_coder.batches(raw | "Assign" >> beam.ParDo(self._fn))


def _split_parts(
    batch: pa.RecordBatch, indices: np.ndarray
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(split index, its rows in order) for each split present in `batch`.

    Zero-copy slices when the rows are grouped by split, as `AssignSplit` emits
    them; filtered copies otherwise.
    """
    if not len(indices):
        return
    if np.all(indices[1:] >= indices[:-1]):
        starts = np.concatenate([[0], np.flatnonzero(np.diff(indices)) + 1])
        stops = np.append(starts[1:], len(indices))
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
            yield int(indices[start]), batch.slice(start, stop - start)
    else:
        for split in np.unique(indices).tolist():
            yield split, batch.filter(pa.array(indices == split))


def _select(batch: pa.RecordBatch, index: int) -> Iterator[pa.RecordBatch]:
    for split, part in _split_parts(batch, _split_indices(batch, {})):
        if split == index:
            yield part


class SelectSplit(beam.PTransform):
    """Keeps the rows of one split of `AssignSplit`'s batches (same schema)."""

    def __init__(self, spec: SplitSpec, name: str):
        super().__init__()
        self._index = spec.names.index(name)

    def expand(self, tagged):
        return arrow_coder.batches(
            tagged | "Select" >> beam.FlatMap(_select, self._index)
        )


def _known_label(batch: pa.RecordBatch, label: str) -> np.ndarray:
    """[rows] bool: the (scalar) label has an id, i.e. is not -1."""
    column = batch.column(label)
    values = column.flatten().to_numpy(zero_copy_only=False)
    if len(values) != batch.num_rows:
        raise RuntimeError(f"label {label!r} is not one value per row")
    return values != -1


class _RouteSplitsFn(beam.DoFn):
    def __init__(
        self,
        names: Sequence[str],
        label_ids: str | None = None,
        namespace: str = METRICS_NAMESPACE,
    ):
        self._names = tuple(names)
        self._label_ids = label_ids
        self._unseen = [
            Metrics.counter(namespace, f"unseen_label:{name}") for name in names
        ]

    def process(self, element) -> Iterator:
        batch, unary = element
        indices = _split_indices(batch, unary)
        index = batch.schema.get_field_index(SPLIT_COLUMN)
        if index >= 0:
            batch = batch.remove_column(index)
        if self._label_ids is not None and batch.num_rows:
            known = _known_label(batch, self._label_ids)
            if not known.all():
                for split, count in enumerate(
                    np.bincount(indices[~known], minlength=len(self._names))
                ):
                    if count:
                        self._unseen[split].inc(int(count))
                batch, indices = batch.filter(pa.array(known)), indices[known]
        for split, part in _split_parts(batch, indices):
            yield beam.pvalue.TaggedOutput(self._names[split], (part, {}))


class RouteSplits(beam.PTransform):
    """Sends transformed `(batch, passthrough)` pairs to their splits' outputs.

    Output: a dict split name -> PCollection[(pa.RecordBatch, {})], the batches
    without `SPLIT_COLUMN`, rows in their input order. With `label_ids` (the key
    of a text label's ids), rows whose label has no id (-1: a class the train split
    lacks) are dropped and counted per split (`unseen_label:<split>`).
    """

    def __init__(self, spec: SplitSpec, label_ids: str | None = None):
        super().__init__()
        self._names = spec.names
        self._label_ids = label_ids

    def expand(self, transformed):
        routed = transformed | "Route" >> beam.ParDo(
            _RouteSplitsFn(self._names, self._label_ids)
        ).with_outputs(*self._names)
        return {name: arrow_coder.batch_pairs(routed[name]) for name in self._names}
