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
files; here `\\`, `\\n` and `\\r` are escaped first (reversibly, `transforms.tokens`)
so multi-line values keep their own ids, and the empty string maps to an OOV id
while NULL maps to the missing token: they stay distinct.

Inputs and outputs are keyed by feature names (`FeatureConfig.names`, see
`transforms.names`), never by raw column names.

A text label becomes ids of a vocabulary over the train rows (`tokens.label_token`:
the escaping above, and the empty string as the two characters `\\e`, so every train
class, '' and multi-line ones included, gets an id; `tokens.unescape_token` inverts
it). Ids follow tf.Transform's order: count descending, ties by token descending
(bytewise). A class absent from train gets -1 here; those rows are dropped after the
transform and counted (`pipeline.assign.RouteSplits`). NULL and non-finite labels
never reach the transform (dropped in `pipeline.assign.AssignSplit`); the label is
never imputed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from transforms.features import Feature, FeatureConfig
from transforms.inputs import (
    dense,
    float_matrix,
    float_values,
    present_mask,
    usable,
)
from transforms.packed_analyzers import mean_and_var_vectors
from transforms.packed_vocabulary import VocabularySpec, vocabularies
from transforms.tokens import escape_token, escaped, label_token
from transforms.types import TIME_KINDS, Column, Kind

__all__ = ["build_preprocessing_fn"]

SECONDS_PER_DAY = 86_400
MISSING_HOUR = 24  # hour_of_day of a missing timestamp
MISSING_DAY = 7  # day_of_week of a missing date or timestamp


class _Numbers:
    """A numeric column as float64 values plus a mask of usable (present, finite) rows.

    NULL, NaN, ±Infinity, magnitudes beyond float32's range and infinite dates and
    timestamps are all "missing": statistics skip them and imputation replaces them.
    `value` comes from `float_values`; `present`, when given, is `usable(value)`
    computed elsewhere (stacked).
    """

    def __init__(self, value: tf.Tensor, present: tf.Tensor | None = None):
        self.value = value
        self.present = usable(value) if present is None else present
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
    return escape_token(dense(x, tf.constant(feature.missing_token.encode())))


def _unescaped_tokens(x, feature: Feature) -> tf.Tensor:
    """1-D: the values a vocabulary feature escapes, counts and looks up.

    The present values for `most_frequent` imputation of a nullable column
    (looked up as a `SparseTensor`: a NULL takes id 0, the most frequent train
    token), else the `[batch]` values with NULL as `missing_token`.
    """
    if _keeps_sparse(x, feature):
        return x.values
    return dense(x, tf.constant(feature.missing_token.encode()))


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
    tokens = escaped(unescaped)
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
        tokens.append(label_token(dense(inputs[config.label_key], tf.constant(b""))))
        specs.append(VocabularySpec(config.label_key))
        oov.append(0)
        names.append(config.label_key)
    out = {}
    for name, x, (path, _), buckets in zip(
        names, tokens, vocabularies(tokens, specs, writer), oov, strict=True
    ):
        ids = tft.apply_vocabulary(x, path, default_value=-1, num_oov_buckets=buckets)
        out[name] = dense(ids, tf.constant(0, tf.int64))
    return out


def _passthrough(x, feature: Feature, kind: Kind, numbers: _Numbers) -> tf.Tensor:
    if kind is Kind.BYTES:
        return dense(x, tf.constant(feature.missing_token.encode()))
    if kind is Kind.FLOAT:
        return tf.cast(numbers.filled(feature), tf.float32)
    # Integers, dates and timestamps stay int64 end to end (float64 would round
    # large keys); only the imputed value goes through float64.
    if not isinstance(x, tf.SparseTensor) and kind not in TIME_KINDS:
        return x  # NOT NULL integers: nothing is missing
    value = dense(x, tf.constant(0, tf.int64))
    if feature.imputation == "constant":
        fill = tf.constant(round(float(feature.constant)), tf.int64)
    else:
        fill = tf.cast(tf.round(numbers.fill_value(feature)), tf.int64)
    return tf.where(numbers.present, value, fill)


def _time_part(x, feature: Feature, kind: Kind, numbers: _Numbers) -> tf.Tensor:
    units = dense(x, tf.constant(0, tf.int64))
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
            out[feature.indicator_name] = 1 - tf.cast(present_mask(x), tf.int64)
        return out
    numbers = _Numbers(float_values(x, kind))
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
    matrix = float_matrix(
        [inputs[keys[f.column]] for f in features], [kinds[f.column] for f in features]
    )
    present = usable(matrix)
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
            value = float_values(y)
            outputs[key] = tf.cast(value > label.threshold, tf.int64)
        elif kinds[label.column] is Kind.FLOAT:
            outputs[key] = dense(y, tf.constant(0.0, tf.float32))
        else:
            outputs[key] = dense(y, tf.constant(0, tf.int64))
        return outputs

    return preprocessing_fn
