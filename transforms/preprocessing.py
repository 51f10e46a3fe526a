r"""Builds a tf.Transform `preprocessing_fn` from a FeatureConfig.

Inputs follow the raw schema (`transforms.schema`): dense `[batch]` tensors for NOT
NULL columns, `SparseTensor`s `[batch, ≤1]` for nullable ones. Every output is a dense
`[batch]` tensor: float32 for scaled numbers, int64 for ids, buckets, time parts and
indicators. NULL, NaN, ±Infinity, values beyond float32's range and ±infinity dates
and timestamps (read as the int64 extremes, `transforms.types.POS_INFINITY`) count
as missing: statistics are computed on the present, finite values of the train
split only, and missing values are imputed afterwards (mean, median or a constant)
and then transformed like any value — a z-scored NULL with `impute: mean` is exactly
0 — never by filling 0 before the analyzer. An all-missing column yields 0 (and
its indicator 1), never NaN. The is-missing indicator of every transform is 1
exactly where its input counts as missing.

Missing values of the other transforms:

- `hour_of_day` and `day_of_week` of a missing date or timestamp are 24 and 7 (one
  past the last hour / day: a category of its own, never a real hour or Monday).
- `passthrough`: text becomes `missing_token`; floats are imputed as above (float32);
  integers, booleans, dates and timestamps stay exact int64 and a missing value
  becomes the train mean or median rounded half to even (0 when the train split
  has no value), or `constant` rounded half to even.

Vocabularies are named after their feature (`vocab_filename`), so the trainer can
ask `TFTransformOutput.vocabulary_size_by_name(name)`. All of them (and a text
label's) come from one analyzer (`transforms.packed_vocabulary`): byte for byte the
files `tft.compute_and_apply_vocabulary` writes, applied with `tft.apply_vocabulary`.
tf.Transform drops the empty token and tokens containing newlines from vocabulary
files; here `\\`, `\\n` and `\\r` are escaped first (reversibly) so multi-line
values keep their own ids, and the empty string maps to an OOV id while NULL maps to
the missing token: they stay distinct.

Inputs and outputs are keyed by feature names (`FeatureConfig.names`, see
`transforms.names`), never by raw column names.

A text label becomes ids of a vocabulary over the train rows (`label_token`: the
escaping above, and the empty string as the two characters `\\e`, so every train
class, '' and multi-line ones included, gets an id; `unescape_token` inverts it).
Ids follow tf.Transform's order: count descending, ties by token descending
(bytewise). A class absent from train gets -1 here; those rows are dropped after the
transform and counted (`pipeline.assign.RouteSplits`). NULL and non-finite labels
never reach the transform (dropped in `pipeline.assign.AssignSplit`); the label is
never imputed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from transforms.features import Feature, FeatureConfig
from transforms.packed_analyzers import mean_and_var_vectors
from transforms.packed_vocabulary import VocabularySpec, vocabularies
from transforms.types import NEG_INFINITY, POS_INFINITY, TIME_KINDS, Column, Kind

__all__ = ["build_preprocessing_fn", "escape_token", "label_token", "unescape_token"]

SECONDS_PER_DAY = 86_400
MISSING_HOUR = 24  # hour_of_day of a missing timestamp
MISSING_DAY = 7  # day_of_week of a missing date or timestamp
FLOAT32_MAX = 3.4028234663852886e38  # beyond it a value cannot become a float32 feature


def escape_token(x: tf.Tensor) -> tf.Tensor:
    """Escapes backslash, newline and carriage return (reversible, vocabulary-safe).

    The three rewrites run only when some value of the batch needs them, which
    one match over the joined batch tells (clean batches, the usual case, skip
    them).
    """

    def escape():
        y = tf.strings.regex_replace(x, r"\\", r"\\\\")
        y = tf.strings.regex_replace(y, "\n", r"\\n")
        return tf.strings.regex_replace(y, "\r", r"\\r")

    clean = tf.strings.regex_full_match(tf.strings.reduce_join(x), "[^\\\\\n\r]*")
    return tf.cond(clean, lambda: tf.identity(x), escape)


EMPTY_TOKEN = b"\\e"  # the empty string in a label vocabulary
_UNESCAPE = {b"\\": b"\\", b"n": b"\n", b"r": b"\r"}


def label_token(x: tf.Tensor) -> tf.Tensor:
    """`escape_token`, and the empty string as `EMPTY_TOKEN` (both reversible)."""
    y = escape_token(x)
    return tf.where(tf.equal(y, b""), tf.constant(EMPTY_TOKEN), y)


def _escaped(values: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """`escape_token` of each 1-D string tensor, by one escape of them all.

    Escaping is element-wise (whether a batch skips it changes no value), so the
    values of all are concatenated, escaped once and split back: one match and
    one `cond` in the graph instead of one per tensor. Each result then needs all
    the tensors: pass feature columns only (serving feeds every feature column,
    never the label).
    """
    if len(values) < 2:
        return [escape_token(x) for x in values]
    sizes = tf.concat(tf.shape_n(values, out_type=tf.int64), axis=0)
    return tf.split(escape_token(tf.concat(values, axis=0)), sizes, num=len(values))


def unescape_token(token: bytes) -> bytes:
    """Inverts `label_token` (and `escape_token`): a vocabulary entry -> the value."""
    if token == EMPTY_TOKEN:
        return b""
    return re.sub(rb"\\(.)", lambda m: _UNESCAPE[m.group(1)], token, flags=re.S)


def _dense(x, default) -> tf.Tensor:
    """A [batch] tensor from a dense [batch] tensor or a [batch, ≤1] SparseTensor."""
    if isinstance(x, tf.SparseTensor):
        return tf.squeeze(
            tft.sparse_tensor_to_dense_with_shape(x, [None, 1], default_value=default),
            axis=1,
        )
    return x


def _present_mask(x) -> tf.Tensor:
    """[batch] bool: the row has a value (a NULL is absent from the SparseTensor)."""
    if not isinstance(x, tf.SparseTensor):
        return tf.ones_like(x, dtype=tf.bool)
    ones = tf.SparseTensor(x.indices, tf.ones_like(x.values, tf.int64), x.dense_shape)
    return _dense(ones, tf.constant(0, tf.int64)) > 0


def _as_float64(values: tf.Tensor, kind: Kind | None) -> tf.Tensor:
    """float64 values; ±infinity dates and timestamps (int64 extremes) become NaN."""
    floats = tf.cast(values, tf.float64)
    if kind not in TIME_KINDS:
        return floats
    finite = tf.logical_and(
        tf.not_equal(values, tf.constant(POS_INFINITY, tf.int64)),
        tf.not_equal(values, tf.constant(NEG_INFINITY, tf.int64)),
    )
    return tf.where(finite, floats, tf.constant(float("nan"), tf.float64))


def _float_values(x, kind: Kind | None = None) -> tf.Tensor:
    """[batch] float64 of a numeric column, NaN where NULL or an infinite date."""
    if isinstance(x, tf.SparseTensor):
        x = tf.SparseTensor(x.indices, _as_float64(x.values, kind), x.dense_shape)
        return _dense(x, tf.constant(float("nan"), tf.float64))
    return _as_float64(x, kind)


def _float_matrix(xs: Sequence, kinds: Sequence[Kind | None]) -> tf.Tensor:
    """[batch, n] float64: column j is `_float_values(xs[j], kinds[j])`, bit for bit.

    The nullable columns (SparseTensors `[batch, ≤1]`) become one matrix in one
    `SparseToDense`: their indices and values are concatenated (values cast once
    per value type), each value placed at (its column's slot, row, 0) of a
    `[m, batch, 1]` tensor, transposed. That op checks, as each column's own
    densifying did, that every index is in bounds (at most one value per row),
    sorted and unique, and all columns must share one batch size. So a column
    costs one op (its value count) instead of about ten; the values are moved, not
    computed, and the casts are element-wise.
    """
    sparse = [j for j, x in enumerate(xs) if isinstance(x, tf.SparseTensor)]
    if len(sparse) < 2:
        return tf.stack(
            [_float_values(x, k) for x, k in zip(xs, kinds, strict=True)], axis=1
        )
    groups: dict[tuple, list[int]] = {}
    for j in sparse:
        key = (xs[j].values.dtype, kinds[j] in TIME_KINDS)
        groups.setdefault(key, []).append(j)
    order, indices, values = [], [], []
    for members in groups.values():
        order += members
        indices += [xs[j].indices for j in members]
        group = tf.concat([xs[j].values for j in members], axis=0)
        values.append(_as_float64(group, kinds[members[0]]))
    sizes = tf.concat(  # value counts, in `order`: one ShapeN per value type
        [
            tf.concat(tf.shape_n([xs[j].values for j in members], tf.int64), 0)
            for members in groups.values()
        ],
        axis=0,
    )
    slots = tf.repeat(tf.range(len(order), dtype=tf.int64), sizes)
    # One batch size for all (each column's own densifying met a mismatch in
    # the stack): a short column must not read as missing values.
    shapes = tf.reshape(tf.concat([xs[j].dense_shape for j in order], 0), [-1, 2])
    batch = shapes[0, 0]
    same = tf.debugging.assert_equal(
        shapes[:, 0], batch, message="nullable inputs of different batch sizes"
    )
    with tf.control_dependencies([same]):
        cube = tf.raw_ops.SparseToDense(
            sparse_indices=tf.concat([slots[:, None], tf.concat(indices, axis=0)], 1),
            output_shape=tf.stack([tf.constant(len(order), tf.int64), batch, 1]),
            sparse_values=tf.concat(values, axis=0),
            default_value=tf.constant(float("nan"), tf.float64),
        )
    matrix = tf.transpose(tf.reshape(cube, tf.stack([len(order), -1])))
    dense = [j for j, x in enumerate(xs) if not isinstance(x, tf.SparseTensor)]
    if dense:
        rest = [_as_float64(xs[j], kinds[j]) for j in dense]
        matrix = tf.concat([matrix, tf.stack(rest, axis=1)], axis=1)
        order += dense
    if order != sorted(order):
        matrix = tf.gather(matrix, np.argsort(order), axis=1)
    matrix.set_shape([None, len(xs)])
    return matrix


def _usable(value: tf.Tensor) -> tf.Tensor:
    """bool, element-wise: finite and within float32's range."""
    return tf.logical_and(tf.math.is_finite(value), tf.abs(value) <= FLOAT32_MAX)


class _Numbers:
    """A numeric column as float64 values plus a mask of usable (present, finite) rows.

    NULL, NaN, ±Infinity, magnitudes beyond float32's range and infinite dates and
    timestamps are all "missing": statistics skip them and imputation replaces them.
    `value` comes from `_float_values`; `present`, when given, is `_usable(value)`
    computed elsewhere (stacked).
    """

    def __init__(self, value: tf.Tensor, present: tf.Tensor | None = None):
        self.value = value
        self.present = _usable(value) if present is None else present
        self.values = tf.boolean_mask(value, self.present)  # for analyzers
        self._mean: tf.Tensor | None = None

    def missing(self) -> tf.Tensor:
        """[batch] int64 indicator, 1 where the value is missing."""
        return 1 - tf.cast(self.present, tf.int64)

    def mean(self) -> tf.Tensor:
        """Train mean of usable values (0 when there are none); one analyzer."""
        if self._mean is None:
            self._mean = _finite_or(tft.mean(self.values), 0.0)
        return self._mean

    def fill_value(self, feature: Feature) -> tf.Tensor:
        """The float64 scalar a missing value becomes, as the feature asks."""
        how = feature.imputation
        if how == "constant":
            return tf.constant(float(feature.constant), tf.float64)
        if how == "median":
            median = tft.quantiles(self.values, num_buckets=2, epsilon=0.001)
            return _finite_or(tf.cast(tf.reshape(median, [-1])[0], tf.float64), 0.0)
        return self.mean()  # "mean"; also "drop", whose rows never reach here

    def filled(self, feature: Feature) -> tf.Tensor:
        """[batch] float64 with missing values imputed as the feature asks."""
        return tf.where(self.present, self.value, self.fill_value(feature))


def _finite_or(value: tf.Tensor, default: float) -> tf.Tensor:
    value = tf.cast(value, tf.float64)
    return tf.where(tf.math.is_finite(value), value, tf.constant(default, tf.float64))


def _scale_0_1(numbers: _Numbers, feature: Feature) -> tf.Tensor:
    low = _finite_or(tft.min(numbers.values), 0.0)
    high = _finite_or(tft.max(numbers.values), 0.0)
    span = tf.where(high > low, high - low, tf.constant(1.0, tf.float64))
    return tf.cast((numbers.filled(feature) - low) / span, tf.float32)


def _bucketize(numbers: _Numbers, feature: Feature) -> tf.Tensor:
    boundaries = tft.quantiles(
        tf.cast(numbers.values, tf.float32), feature.num_buckets, epsilon=0.001
    )
    return tft.apply_buckets(tf.cast(numbers.filled(feature), tf.float32), boundaries)


def _strings(x, feature: Feature) -> tf.Tensor:
    return escape_token(_dense(x, tf.constant(feature.missing_token.encode())))


def _unescaped_tokens(x, feature: Feature) -> tf.Tensor:
    """1-D: the values a vocabulary feature escapes, counts and looks up.

    The present values for `most_frequent` imputation of a nullable column
    (looked up as a `SparseTensor`: a NULL takes id 0, the most frequent train
    token), else the `[batch]` values with NULL as `missing_token`.
    """
    if _keeps_sparse(x, feature):
        return x.values
    return _dense(x, tf.constant(feature.missing_token.encode()))


def _keeps_sparse(x, feature: Feature) -> bool:
    return feature.imputation == "most_frequent" and isinstance(x, tf.SparseTensor)


def _packed_vocabularies(
    config: FeatureConfig,
    inputs,
    keys: Mapping[str, str],
    kinds: Mapping[str, Kind],
    writer: Callable,
) -> dict[str, tf.Tensor]:
    """The ids of every vocabulary feature and of a text label (name -> ids).

    All vocabularies come from one analyzer (`packed_vocabulary.vocabularies`),
    the same files `tft.compute_and_apply_vocabulary` writes; each is applied
    with `tft.apply_vocabulary` and its default value and OOV buckets.
    """
    features = [
        f
        for f in config.features
        if f.transform == "vocabulary" and kinds[f.column] is Kind.BYTES
    ]
    xs = [inputs[keys[f.column]] for f in features]
    text_label = kinds[config.label.column] is Kind.BYTES
    unescaped = [_unescaped_tokens(x, f) for x, f in zip(xs, features, strict=True)]
    tokens = _escaped(unescaped)
    for i, (x, f) in enumerate(zip(xs, features, strict=True)):
        if _keeps_sparse(x, f):
            tokens[i] = tf.SparseTensor(x.indices, tokens[i], x.dense_shape)
    specs = [
        VocabularySpec(f.vocab_filename, f.top_k, f.frequency_threshold)
        for f in features
    ]
    oov = [f.num_oov_buckets for f in features]
    names = [f.name for f in features]
    if text_label:  # escaped on its own: serving has features but no label
        tokens.append(label_token(_dense(inputs[config.label_key], tf.constant(b""))))
        specs.append(VocabularySpec(config.label_key))
        oov.append(0)
        names.append(config.label_key)
    out = {}
    for name, x, (path, _), buckets in zip(
        names, tokens, vocabularies(tokens, specs, writer), oov, strict=True
    ):
        ids = tft.apply_vocabulary(x, path, default_value=-1, num_oov_buckets=buckets)
        out[name] = _dense(ids, tf.constant(0, tf.int64))
    return out


def _passthrough(x, feature: Feature, kind: Kind, numbers: _Numbers) -> tf.Tensor:
    if kind is Kind.BYTES:
        return _dense(x, tf.constant(feature.missing_token.encode()))
    if kind is Kind.FLOAT:
        return tf.cast(numbers.filled(feature), tf.float32)
    # Integers, dates and timestamps stay int64 end to end (float64 would round
    # large keys); only the imputed value goes through float64.
    if not isinstance(x, tf.SparseTensor) and kind not in TIME_KINDS:
        return x  # NOT NULL integers: nothing is missing
    value = _dense(x, tf.constant(0, tf.int64))
    if feature.imputation == "constant":
        fill = tf.constant(round(float(feature.constant)), tf.int64)
    else:
        fill = tf.cast(tf.round(numbers.fill_value(feature)), tf.int64)
    return tf.where(numbers.present, value, fill)


def _time_part(x, feature: Feature, kind: Kind, numbers: _Numbers) -> tf.Tensor:
    units = _dense(x, tf.constant(0, tf.int64))
    # The int64 extremes of ±infinity would overflow below: masked out first.
    units = tf.where(numbers.present, units, tf.zeros_like(units))
    seconds = units * SECONDS_PER_DAY if kind is Kind.DATE else units
    if feature.transform == "hour_of_day":
        part = tf.math.floormod(tf.math.floordiv(seconds, 3600), 24)
        missing = MISSING_HOUR
    else:  # day_of_week, Monday = 0; 1970-01-01 was a Thursday.
        part = tf.math.floormod(tf.math.floordiv(seconds, SECONDS_PER_DAY) + 3, 7)
        missing = MISSING_DAY
    return tf.where(numbers.present, part, tf.constant(missing, tf.int64))


_NUMERIC_TRANSFORMS = {  # z-scores: `_stacked_zscores`
    "scale_0_1": _scale_0_1,
    "bucketize": _bucketize,
}


def _apply(
    feature: Feature, x, kind: Kind, ids: Mapping[str, tf.Tensor]
) -> dict[str, tf.Tensor]:
    """The feature's output(s): its value and, if asked, its is-missing indicator.

    Not for z-scores, which `_stacked_zscores` builds for all columns at once, nor
    vocabulary ids, which `_packed_vocabularies` builds for all features (`ids`).
    """
    t = feature.transform
    if kind is Kind.BYTES:
        if t == "vocabulary":
            value = ids[feature.name]
        elif t == "hash":
            value = tft.hash_strings(_strings(x, feature), feature.hash_buckets)
        else:  # passthrough
            value = _passthrough(x, feature, kind, None)
        out = {feature.name: value}
        if feature.indicator:
            out[feature.indicator_name] = 1 - tf.cast(_present_mask(x), tf.int64)
        return out
    numbers = _Numbers(_float_values(x, kind))
    if t in _NUMERIC_TRANSFORMS:
        value = _NUMERIC_TRANSFORMS[t](numbers, feature)
    elif t == "passthrough":
        value = _passthrough(x, feature, kind, numbers)
    else:  # hour_of_day, day_of_week
        value = _time_part(x, feature, kind, numbers)
    out = {feature.name: value}
    if feature.indicator:
        out[feature.indicator_name] = numbers.missing()
    return out


def _usable_flat(matrix: tf.Tensor, present: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`mean_and_var_vectors`'s input: the usable values of `matrix` [batch, n].

    Column after column, each in row order, and the `[n]` int64 counts: one mask
    over the transposed matrix instead of one per column.
    """
    flat = tf.boolean_mask(tf.transpose(matrix), tf.transpose(present))
    return flat, tf.reduce_sum(tf.cast(present, tf.int64), axis=0)


def _stacked_zscores(
    config: FeatureConfig, inputs, keys: Mapping[str, str], kinds: Mapping[str, Kind]
) -> dict[str, dict[str, tf.Tensor]]:
    """The outputs of every z-score feature (name -> its value and indicator).

    Per column stay only what must be per column to equal `tft.mean`/`tft.var` bit
    for bit: the dense float64 values and the two sums over the column's usable
    values in one packed analyzer (`mean_and_var_vectors`). The rest (the usable
    mask, imputation, shift, scale, cast, indicator) runs once over the
    `[batch, n]` matrix of all z-scored columns: element-wise float64 ops are correctly
    rounded, so each column's output is what its own ops would give, while the
    graph (traced, loaded and run several times per job) no longer grows by some
    fifty ops per column. Median imputation keeps its own quantiles analyzer.
    """
    features = [f for f in config.features if f.transform == "zscore"]
    if not features:
        return {}
    matrix = _float_matrix(
        [inputs[keys[f.column]] for f in features], [kinds[f.column] for f in features]
    )
    present = _usable(matrix)
    mean, var = mean_and_var_vectors(*_usable_flat(matrix, present))
    mean = _finite_or(mean, 0.0)
    std = _finite_or(tf.sqrt(var), 0.0)
    scale = tf.where(std > 0, std, tf.constant(1.0, tf.float64))
    fill = mean
    if any(f.imputation in ("constant", "median") for f in features):
        fills = [
            _Numbers(v, p).fill_value(f)
            if f.imputation in ("constant", "median")
            else None
            for f, v, p in zip(
                features,
                tf.unstack(matrix, axis=1),
                tf.unstack(present, axis=1),
                strict=True,
            )
        ]
        own = [x is not None for x in fills]
        fill = tf.where(
            tf.constant(own),
            tf.stack([x if x is not None else tf.zeros([], tf.float64) for x in fills]),
            mean,
        )
    filled = tf.where(present, matrix, fill)
    scores = tf.unstack(tf.cast((filled - mean) / scale, tf.float32), axis=1)
    missing = tf.unstack(1 - tf.cast(present, tf.int64), axis=1)
    out = {}
    for i, feature in enumerate(features):
        out[feature.name] = {feature.name: scores[i]}
        if feature.indicator:
            out[feature.name][feature.indicator_name] = missing[i]
    return out


def build_preprocessing_fn(
    config: FeatureConfig, columns: Sequence[Column], vocabulary_writer: Callable
) -> Callable[[Mapping[str, tf.Tensor]], dict[str, tf.Tensor]]:
    """Returns `preprocessing_fn(inputs) -> outputs` for tf.Transform.

    `vocabulary_writer` is the Beam half of the packed vocabulary analyzer
    (`pipeline.vocabulary_writer.WriteVocabularies`; see `packed_vocabulary`).
    """
    kinds = {c.name: c.kind for c in columns}
    keys = {c.name: config.names.get(c.name, c.name) for c in columns}

    def preprocessing_fn(inputs):
        outputs = {}
        stacked = _stacked_zscores(config, inputs, keys, kinds)
        ids = _packed_vocabularies(config, inputs, keys, kinds, vocabulary_writer)
        for feature in config.features:
            column = feature.column
            if feature.name in stacked:
                outputs.update(stacked[feature.name])
            else:
                x = inputs[keys[column]]
                outputs.update(_apply(feature, x, kinds[column], ids))
        label = config.label
        key = config.label_key
        y = inputs[key]
        if kinds[label.column] is Kind.BYTES:
            outputs[key] = ids[key]
        elif label.threshold is not None:
            value = _float_values(y)
            outputs[key] = tf.cast(value > label.threshold, tf.int64)
        elif kinds[label.column] is Kind.FLOAT:
            outputs[key] = _dense(y, tf.constant(0.0, tf.float32))
        else:
            outputs[key] = _dense(y, tf.constant(0, tf.int64))
        return outputs

    return preprocessing_fn
