"""Feature statistics of Arrow batches: mergeable accumulators, JSON and TFMD protos.

Pure module (numpy, pyarrow, tfx-bsl sketches; no Beam): `SplitStatistics.add`
takes a batch whose columns are lists (tf.Transform's layout) or flat arrays and
updates every feature with whole-column numpy/pyarrow operations; accumulators
merge (`merge`) and pickle, so a Beam CombineFn can hold them (see
`pipeline.compute_statistics`). The histograms, quantile summaries and token
counts they hold are `pipeline.histogram`, `pipeline.quantile_summary` and
`pipeline.token_counts`.

What each number means (per split, per feature):
- `rows`: rows of the split; `missing`: rows without a value (a NULL; for an
  array column a NULL or an empty array, the same thing to the feature);
  `num_values`: values per row (min, max, mean; arrays: list lengths).
- Numbers: `non_finite` counts NaN and ±Infinity values (`nan` the NaNs alone);
  `mean`, `std` (population), `min`, `max`, `zeros`, the quantiles and the
  histogram are over the finite values. Floating columns are the float32 feature
  values (what the examples hold), integers exact int64.
- `histogram`: exact counts in equal-width bins whose width is a power of two and
  whose edges are multiples of it (at most `FINE_BINS` bins; a wider range doubles
  the width). Two such histograms always share edges once brought to the same
  width, so train, eval and a baseline compare bin for bin (`common_bins`).
- `quantiles`: deciles from a mergeable weighted summary (`QuantileSummary`,
  rank error below 0.5%); the ends are the exact min and max.
- Text: `unique` and `top` (token counts) are exact while the split has fewer than
  `TOKEN_CAP` distinct values (`exact: true`); beyond that `unique` is a KMV
  estimate (~1% error) and `top` Misra-Gries estimates (off by at most the
  split's value count / `TOKEN_CAP`). `avg_length` is in UTF-8 bytes. Tokens
  longer than `MAX_TOKEN_BYTES` are counted in full but written cut, with the
  number of bytes left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.histogram import (
    DISPLAY_BINS,
    FINE_BINS,
    Histogram,
    common_bins,
    display_bins,
)
from pipeline.quantile_summary import QuantileSummary
from pipeline.token_counts import TOKEN_CAP, TokenCounts

__all__ = [
    "DISPLAY_BINS",
    "FINE_BINS",
    "TOKEN_CAP",
    "TOP_K",
    "FeatureStatistics",
    "Histogram",
    "QuantileSummary",
    "SplitStatistics",
    "TokenCounts",
    "common_bins",
    "display_bins",
    "to_proto",
]

TOP_K = 20
DRIFT_TOKENS = 1000  # token counts kept in the JSON for drift checks
MAX_TOKEN_BYTES = 200  # longer tokens are shown cut (counted in full)


def _is_list(array_type: pa.DataType) -> bool:
    return (
        pa.types.is_list(array_type)
        or pa.types.is_large_list(array_type)
        or pa.types.is_fixed_size_list(array_type)
    )


def _value_type(array_type: pa.DataType) -> pa.DataType:
    while _is_list(array_type):
        array_type = array_type.value_type
    return array_type


def kind_of(array_type: pa.DataType) -> str | None:
    """'int', 'float' or 'bytes' for a column's (list) Arrow type; None if other."""
    value = _value_type(array_type)
    if pa.types.is_integer(value) or pa.types.is_boolean(value):
        return "int"
    if pa.types.is_floating(value):
        return "float"
    if pa.types.is_binary(value) or pa.types.is_large_binary(value):
        return "bytes"
    if pa.types.is_string(value) or pa.types.is_large_string(value):
        return "bytes"
    return None


def _validity(array: pa.Array) -> np.ndarray:
    """Whether each row of `array` (with nulls, so with a bitmap) is valid."""
    bitmap = np.frombuffer(array.buffers()[0], dtype=np.uint8)
    bits = np.unpackbits(bitmap, bitorder="little")
    return bits[array.offset : array.offset + len(array)].astype(bool)


def _list_parts(array: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(values per row, the flat values) of a list column or a flat column."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if _is_list(array.type):
        if pa.types.is_fixed_size_list(array.type):
            lengths = pc.fill_null(pc.list_value_length(array), 0)
            lengths = lengths.to_numpy(zero_copy_only=False).astype(np.int64)
            values = array.flatten()
        else:
            # Offsets of the (sliced) rows; a NULL row has length 0 whatever
            # its offsets say (flatten() skips it the same way). Without NULL
            # rows, the values between the first and last offset are flatten()'s.
            offsets = array.offsets.to_numpy()
            lengths = (offsets[1:] - offsets[:-1]).astype(np.int64)
            if array.null_count:
                lengths[~_validity(array)] = 0
                values = array.flatten()
            else:
                start = int(offsets[0])
                values = array.values.slice(start, int(offsets[-1]) - start)
        while _is_list(values.type):
            values = values.flatten()
        values = values.drop_null() if values.null_count else values
        return lengths, values
    lengths = pc.cast(pc.is_valid(array), pa.int64()).to_numpy(zero_copy_only=False)
    return lengths, array.drop_null()


def _numeric_parts(array: pa.Array) -> tuple[np.ndarray | None, np.ndarray] | None:
    """(row offsets, values) of a numeric column `_add_numeric` takes, else None.

    It takes flat columns without NULLs (offsets None: one value per row) and
    list columns without NULL rows, NULL values or nested lists.
    """
    if array.null_count:
        return None
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        values = array.values
        if _is_list(values.type):
            return None
        offsets = array.offsets.to_numpy()
        start = int(offsets[0])
        values = values.slice(start, int(offsets[-1]) - start)
        if values.null_count:
            return None
        return offsets, values.to_numpy(zero_copy_only=False)
    if _is_list(array.type):
        return None
    return None, array.to_numpy(zero_copy_only=False)


def _add_numeric(
    features: list[FeatureStatistics],
    columns: list[pa.Array],
    parts: list[tuple[np.ndarray | None, np.ndarray]],
    rows: int,
) -> None:
    """`features[i].add(columns[i])` for numeric columns of one kind, all at once.

    `parts` are the columns' `_numeric_parts`. The same numbers bit for bit: each
    column's sums reduce its own contiguous values as `add` does (several columns
    of one length as rows of a matrix, which `np.add.reduce` sums row by row in
    the same order), counts, minima and maxima are exact whatever the order (a
    zero minimum or maximum is taken again from its column, for its sign).
    """
    integer = features[0].kind == "int"
    dtype = np.int64 if integer else np.float64
    ones = None
    offsets = np.empty((len(parts), rows + 1), dtype=np.int64)
    for i, (row_offsets, _) in enumerate(parts):
        if row_offsets is None:
            if ones is None:
                ones = np.arange(rows + 1, dtype=np.int64)
            offsets[i] = ones
        else:
            offsets[i] = row_offsets
    values = np.concatenate([v for _, v in parts], dtype=dtype, casting="unsafe")
    sizes = offsets[:, -1] - offsets[:, 0]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    if not integer and not np.isfinite(values).all():
        # NaN or ±Infinity: those columns one by one, the others together.
        ends = starts + sizes
        bad = set(
            np.searchsorted(
                ends, np.flatnonzero(~np.isfinite(values)), "right"
            ).tolist()
        )
        for i in sorted(bad):
            features[i].add(columns[i])
        keep = [i for i in range(len(features)) if i not in bad]
        if keep:
            _add_numeric(
                [features[i] for i in keep],
                [columns[i] for i in keep],
                [parts[i] for i in keep],
                rows,
            )
        return
    lengths = np.diff(offsets, axis=1)
    missing = np.count_nonzero(lengths == 0, axis=1).tolist()
    least, most = lengths.min(axis=1).tolist(), lengths.max(axis=1).tolist()
    for i, stats in enumerate(features):
        stats.rows += rows
        stats.missing += missing[i]
        stats.values += int(sizes[i])
        lo, hi = least[i], most[i]
        stats.min_values = lo if stats.min_values is None else min(stats.min_values, lo)
        stats.max_values = hi if stats.max_values is None else max(stats.max_values, hi)
    present = np.flatnonzero(sizes)
    if not len(present):
        return
    if len(present) < len(features):
        features = [features[i] for i in present.tolist()]
        starts, sizes = starts[present], sizes[present]
    as_float = values if not integer else values.astype(np.float64)
    zeros = np.add.reduceat((values == 0).view(np.uint8), starts, dtype=np.int64)
    lows = np.minimum.reduceat(values, starts)
    highs = np.maximum.reduceat(values, starts)
    means = np.empty(len(features))
    m2s = np.empty(len(features))
    for size in np.unique(sizes).tolist():
        group = np.flatnonzero(sizes == size)
        if len(group) == 1:
            start = int(starts[group[0]])
            matrix = as_float[start : start + size][None, :]
        else:
            matrix = as_float[starts[group][:, None] + np.arange(size)]
        mean = np.add.reduce(matrix, axis=1) / size
        means[group] = mean
        m2s[group] = np.add.reduce(np.square(matrix - mean[:, None]), axis=1)
    if not integer:
        for i in np.flatnonzero((lows == 0) | (highs == 0)).tolist():
            column = values[int(starts[i]) : int(starts[i] + sizes[i])]
            lows[i], highs[i] = np.minimum.reduce(column), np.maximum.reduce(column)
    zeros, counts = zeros.tolist(), sizes.tolist()
    means, m2s = means.tolist(), m2s.tolist()
    for i, stats in enumerate(features):
        stats.zeros += zeros[i]
        stats._merge_moments(counts[i], means[i], m2s[i])
        vmin, vmax = lows[i].item(), highs[i].item()
        stats.min = vmin if stats.min is None else min(stats.min, vmin)
        stats.max = vmax if stats.max is None else max(stats.max, vmax)
        start = int(starts[i])
        stats.quantiles.add(as_float[start : start + counts[i]])
    Histogram.add_segments(
        [s.hist for s in features], values, starts, sizes, lows, highs
    )


class FeatureStatistics:
    """Mergeable statistics of one feature in one split."""

    def __init__(self, kind: str):
        self.kind = kind
        self.rows = 0
        self.missing = 0
        self.values = 0
        self.min_values: int | None = None
        self.max_values: int | None = None
        if kind == "bytes":
            self.bytes = 0
            self.tokens = TokenCounts()
        else:
            self.non_finite = 0
            self.nan = 0
            self.zeros = 0
            self.n = 0
            self.mean = 0.0
            self.m2 = 0.0
            self.min = None
            self.max = None
            self.hist = Histogram(integer=kind == "int")
            self.quantiles = QuantileSummary()

    def add(self, array: pa.Array) -> None:
        """Adds one column slice (list or flat); vectorised, no per-row Python."""
        lengths, values = _list_parts(array)
        self.rows += len(lengths)
        if not len(lengths):
            return
        self.missing += int(np.count_nonzero(lengths == 0))
        self.values += int(lengths.sum())
        lo, hi = int(lengths.min()), int(lengths.max())
        self.min_values = lo if self.min_values is None else min(self.min_values, lo)
        self.max_values = hi if self.max_values is None else max(self.max_values, hi)
        if not len(values):
            return
        if self.kind == "bytes":
            if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                values = values.cast(pa.large_binary())
            self.bytes += int(pc.sum(pc.binary_length(values)).as_py() or 0)
            self.tokens.add(values)
            return
        if self.kind == "int":
            numbers = values.to_numpy(zero_copy_only=False).astype(np.int64)
            finite = numbers
        else:
            numbers = values.to_numpy(zero_copy_only=False).astype(np.float64)
            ok = np.isfinite(numbers)
            finite = numbers
            if not ok.all():
                self.nan += int(np.count_nonzero(np.isnan(numbers)))
                self.non_finite += int(len(numbers) - np.count_nonzero(ok))
                finite = numbers[ok]
        if not len(finite):
            return
        self.zeros += int(np.count_nonzero(finite == 0))
        as_float = finite if finite.dtype == np.float64 else finite.astype(np.float64)
        n = len(as_float)
        # 1-D reductions as ndarray.mean()/.sum() do them (same summation order).
        mean = float(np.add.reduce(as_float) / n)
        m2 = float(np.add.reduce(np.square(as_float - mean)))
        self._merge_moments(n, mean, m2)
        low, high = np.minimum.reduce(finite), np.maximum.reduce(finite)
        vmin, vmax = low.item(), high.item()
        self.min = vmin if self.min is None else min(self.min, vmin)
        self.max = vmax if self.max is None else max(self.max, vmax)
        self.hist.add(finite, low, high)
        self.quantiles.add(as_float)

    def _merge_moments(self, n: int, mean: float, m2: float) -> None:
        """Chan et al.'s parallel update of (count, mean, sum of squared deviations)."""
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    def merge(self, other: FeatureStatistics) -> None:
        """Adds `other` (same kind) into this one."""
        self.rows += other.rows
        self.missing += other.missing
        self.values += other.values
        for name, pick in (("min_values", min), ("max_values", max)):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, theirs if mine is None else pick(mine, theirs))
        if self.kind == "bytes":
            self.bytes += other.bytes
            self.tokens.merge(other.tokens)
            return
        self.non_finite += other.non_finite
        self.nan += other.nan
        self.zeros += other.zeros
        if other.n:
            self._merge_moments(other.n, other.mean, other.m2)
        for name, pick in (("min", min), ("max", max)):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, theirs if mine is None else pick(mine, theirs))
        self.hist.merge(other.hist)
        self.quantiles.merge(other.quantiles)

    def to_json(self) -> dict[str, Any]:
        """The statistics as plain JSON values (see the module docstring)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "rows": self.rows,
            "missing": self.missing,
            "num_values": {
                "min": self.min_values,
                "max": self.max_values,
                "mean": self.values / self.rows if self.rows else None,
                "total": self.values,
            },
        }
        if self.kind == "bytes":
            unique, exact, tokens = self.tokens.result()
            out.update(
                unique=unique,
                exact=exact,
                avg_length=self.bytes / self.values if self.values else None,
                top=[[_text(t), c] for t, c in tokens[:TOP_K]],
                token_counts=[[_text(t), c] for t, c in tokens[:DRIFT_TOKENS]],
            )
            return out
        quantiles = self.quantiles.quantiles(10, self.min, self.max) if self.n else None
        out.update(
            non_finite=self.non_finite,
            nan=self.nan,
            finite=self.n,
            zeros=self.zeros,
            mean=self.mean if self.n else None,
            std=math.sqrt(self.m2 / self.n) if self.n else None,
            min=self.min,
            max=self.max,
            quantiles=quantiles,
            histogram=self.hist.to_json(),
        )
        return out


def _text(token: bytes) -> str:
    """A token for JSON and the report: UTF-8, at most `MAX_TOKEN_BYTES` shown."""
    if len(token) > MAX_TOKEN_BYTES:
        head = token[:MAX_TOKEN_BYTES].decode("utf-8", errors="ignore")
        return f"{head}…(+{len(token) - len(head.encode())} bytes)"
    return token.decode("utf-8", errors="backslashreplace")


class SplitStatistics:
    """Statistics of every (chosen) column of one split's batches."""

    def __init__(self, kinds: Mapping[str, str]):
        self.kinds = dict(kinds)
        self.rows = 0
        self.features = {name: FeatureStatistics(k) for name, k in kinds.items()}

    @classmethod
    def for_schema(
        cls, schema: pa.Schema, exclude: Iterable[str] = ()
    ) -> SplitStatistics:
        """One accumulator per column of a supported type, skipping `exclude`."""
        skip = set(exclude)
        kinds = {}
        for field in schema:
            kind = kind_of(field.type)
            if field.name not in skip and kind is not None:
                kinds[field.name] = kind
        return cls(kinds)

    def add(self, batch: pa.RecordBatch) -> None:
        """Adds a batch's rows (columns by name; an absent column counts missing).

        Numeric columns are added together, per kind (`_add_numeric`); text and
        unusual columns (NULL rows, nested lists) one by one.
        """
        self.rows += batch.num_rows
        names = {name: i for i, name in enumerate(batch.schema.names)}
        numeric: dict[str, tuple[list, list, list]] = {}
        for name, stats in self.features.items():
            if name not in names:
                stats.rows += batch.num_rows
                stats.missing += batch.num_rows
                continue
            column = batch.column(names[name])
            parts = None
            if stats.kind != "bytes" and batch.num_rows:
                parts = _numeric_parts(column)
            if parts is None:
                stats.add(column)
                continue
            group = numeric.setdefault(stats.kind, ([], [], []))
            group[0].append(stats)
            group[1].append(column)
            group[2].append(parts)
        for features, columns, parts in numeric.values():
            _add_numeric(features, columns, parts, batch.num_rows)

    def merge(self, other: SplitStatistics) -> None:
        """Adds `other`'s rows; features only `other` has are taken over."""
        self.rows += other.rows
        for name, stats in other.features.items():
            if name in self.features:
                self.features[name].merge(stats)
            else:
                self.features[name] = stats
                self.kinds[name] = stats.kind

    def to_json(self) -> dict[str, Any]:
        """`{"rows": n, "features": {name: FeatureStatistics.to_json()}}`."""
        return {
            "rows": self.rows,
            "features": {n: s.to_json() for n, s in sorted(self.features.items())},
        }


def to_proto(split: str, stats: Mapping[str, Any], groups: Sequence[str] = ()):
    """A `DatasetFeatureStatisticsList` (tensorflow_metadata) of one split's JSON.

    `stats` maps a group name ("raw", "transformed") to `SplitStatistics.to_json()`;
    the features of a group other than the first are named `<group>/<feature>`.
    """
    from tensorflow_metadata.proto.v0 import statistics_pb2 as pb

    groups = list(groups or stats)
    result = pb.DatasetFeatureStatisticsList()
    dataset = result.datasets.add(name=split)
    dataset.num_examples = int(stats[groups[0]]["rows"]) if groups else 0
    for group_index, group in enumerate(groups):
        for name, feature in stats[group]["features"].items():
            out = dataset.features.add()
            out.path.step.append(name if group_index == 0 else f"{group}/{name}")
            _feature_proto(pb, out, feature)
    return result


def _common(common, feature: Mapping[str, Any]) -> None:
    present = feature["rows"] - feature["missing"]
    common.num_non_missing = present
    common.num_missing = feature["missing"]
    nv = feature["num_values"]
    if present:
        common.min_num_values = nv["min"] if feature["missing"] == 0 else 0
        common.max_num_values = nv["max"] or 0
        common.avg_num_values = nv["total"] / present
        common.tot_num_values = nv["total"]


def _feature_proto(pb, out, feature: Mapping[str, Any]) -> None:
    kind = feature["kind"]
    if kind == "bytes":
        out.type = pb.FeatureNameStatistics.STRING
        s = out.string_stats
        _common(s.common_stats, feature)
        s.unique = feature["unique"]
        s.avg_length = feature["avg_length"] or 0.0
        for rank, (token, count) in enumerate(feature["top"]):
            s.top_values.add(value=token, frequency=count)
            s.rank_histogram.buckets.add(
                low_rank=rank, high_rank=rank, label=token, sample_count=count
            )
        out.custom_stats.add(name="unique_exact", num=1.0 if feature["exact"] else 0.0)
        return
    out.type = (
        pb.FeatureNameStatistics.INT
        if kind == "int"
        else pb.FeatureNameStatistics.FLOAT
    )
    s = out.num_stats
    _common(s.common_stats, feature)
    if feature["finite"]:
        s.mean, s.std_dev = feature["mean"], feature["std"]
        s.min, s.max = float(feature["min"]), float(feature["max"])
        s.num_zeros = feature["zeros"]
        quantiles = feature["quantiles"]
        s.median = quantiles[5]
        standard = s.histograms.add(type=pb.Histogram.STANDARD, num_nan=feature["nan"])
        hist = Histogram.from_json(feature["histogram"])
        for low, high, count in display_bins(hist):
            high_value = high - 1 if hist.integer else high
            standard.buckets.add(
                low_value=low, high_value=high_value, sample_count=count
            )
        q = s.histograms.add(type=pb.Histogram.QUANTILES, num_nan=feature["nan"])
        per = feature["finite"] / 10
        for low, high in zip(quantiles[:-1], quantiles[1:], strict=True):
            q.buckets.add(low_value=low, high_value=high, sample_count=per)
    out.custom_stats.add(name="non_finite", num=float(feature["non_finite"]))
