"""Builds a tf.Transform `preprocessing_fn` from a FeatureConfig.

Inputs follow the raw schema (`transforms.schema`): dense `[batch]` tensors for NOT
NULL columns, `SparseTensor`s `[batch, ≤1]` for nullable ones. Every output is a dense
`[batch]` tensor: float32 for scaled numbers, int64 for ids, buckets, time parts and
indicators. Statistics are computed on present values only and NULLs are imputed
afterwards — a z-scored NULL with `impute: mean` is exactly 0 — never by filling 0
before the analyzer.

Vocabularies are named after their feature (`vocab_filename`), so the trainer can
ask `TFTransformOutput.vocabulary_size_by_name(name)`. tf.Transform drops the empty
token and tokens containing newlines from vocabulary files; here `\\`, `\\n` and `\\r`
are escaped first (reversibly) so multi-line values keep their own ids, and the empty
string maps to an OOV id while NULL maps to the missing token: they stay distinct.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from transforms.features import Feature, FeatureConfig
from transforms.types import Column, Kind

__all__ = ["build_preprocessing_fn", "escape_token"]

SECONDS_PER_DAY = 86_400


def escape_token(x: tf.Tensor) -> tf.Tensor:
    """Escapes backslash, newline and carriage return (reversible, vocabulary-safe)."""
    x = tf.strings.regex_replace(x, r"\\", r"\\\\")
    x = tf.strings.regex_replace(x, "\n", r"\\n")
    return tf.strings.regex_replace(x, "\r", r"\\r")


def _dense(x, default) -> tf.Tensor:
    """A [batch] tensor from a dense [batch] tensor or a [batch, ≤1] SparseTensor."""
    if isinstance(x, tf.SparseTensor):
        return tf.squeeze(
            tft.sparse_tensor_to_dense_with_shape(x, [None, 1], default_value=default),
            axis=1,
        )
    return x


def _is_missing(x) -> tf.Tensor:
    if not isinstance(x, tf.SparseTensor):
        return tf.zeros_like(x, dtype=tf.int64)
    present = tf.SparseTensor(
        x.indices, tf.ones_like(x.values, dtype=tf.int64), x.dense_shape
    )
    return 1 - _dense(present, tf.constant(0, tf.int64))


def _as_float64(x):
    if isinstance(x, tf.SparseTensor):
        return tf.SparseTensor(x.indices, tf.cast(x.values, tf.float64), x.dense_shape)
    return tf.cast(x, tf.float64)


def _scaled(x, feature: Feature, scale: Callable) -> tf.Tensor:
    x = _as_float64(x)
    if feature.impute == "constant":
        return tf.cast(scale(_dense(x, tf.constant(feature.constant, tf.float64))), tf.float32)
    scaled = scale(x)
    if isinstance(scaled, tf.SparseTensor):
        # A z-scored mean is 0 by definition; other scalings impute their train mean.
        fill = 0.0 if scale is tft.scale_to_z_score else tft.mean(scaled)
        scaled = _dense(scaled, tf.cast(fill, scaled.dtype))
    return tf.cast(scaled, tf.float32)


def _numeric_filled(x, feature: Feature) -> tf.Tensor:
    x = _as_float64(x)
    if not isinstance(x, tf.SparseTensor):
        return x
    fill = (
        tf.constant(feature.constant, tf.float64)
        if feature.impute == "constant"
        else tf.cast(tft.mean(x), tf.float64)
    )
    return _dense(x, fill)


def _strings(x, feature: Feature) -> tf.Tensor:
    return escape_token(_dense(x, tf.constant(feature.missing_token.encode())))


def _apply(feature: Feature, x, kind: Kind) -> tf.Tensor:
    t = feature.transform
    if t == "zscore":
        return _scaled(x, feature, tft.scale_to_z_score)
    if t == "scale_0_1":
        return _scaled(x, feature, tft.scale_to_0_1)
    if t == "bucketize":
        # Quantiles of the present values only; a NULL is imputed, then bucketed.
        values = x.values if isinstance(x, tf.SparseTensor) else x
        boundaries = tft.quantiles(
            tf.cast(values, tf.float32), feature.num_buckets, epsilon=0.001
        )
        return tft.apply_buckets(
            tf.cast(_numeric_filled(x, feature), tf.float32), boundaries
        )
    if t == "vocabulary":
        tokens = _strings(x, feature)
        return tft.compute_and_apply_vocabulary(
            tokens,
            top_k=feature.top_k,
            frequency_threshold=feature.frequency_threshold,
            num_oov_buckets=feature.num_oov_buckets,
            vocab_filename=feature.vocab_filename,
            # Weighted counts are pre-reduced per batch (same vocabulary, far fewer
            # Beam elements than one per token).
            weights=tf.ones_like(tokens, dtype=tf.float32),
        )
    if t == "hash":
        return tft.hash_strings(_strings(x, feature), feature.hash_buckets)
    if t == "passthrough":
        if kind is Kind.BYTES:
            return _dense(x, tf.constant(feature.missing_token.encode()))
        if kind is Kind.FLOAT:
            return tf.cast(_numeric_filled(x, feature), tf.float32)
        # Integers stay int64 end to end (float64 would round large keys).
        if isinstance(x, tf.SparseTensor) and feature.impute == "mean":
            fill = tf.cast(tf.round(tft.mean(_as_float64(x))), tf.int64)
        else:
            fill = tf.constant(int(feature.constant), tf.int64)
        return _dense(x, fill)
    seconds = _dense(x, tf.constant(0, tf.int64))
    if kind is Kind.DATE:
        seconds = seconds * SECONDS_PER_DAY
    if t == "hour_of_day":
        return tf.math.floormod(tf.math.floordiv(seconds, 3600), 24)
    if t == "day_of_week":  # Monday = 0; 1970-01-01 was a Thursday
        return tf.math.floormod(tf.math.floordiv(seconds, SECONDS_PER_DAY) + 3, 7)
    raise ValueError(f"unknown transform {t!r} for feature {feature.name!r}")


def build_preprocessing_fn(
    config: FeatureConfig, columns: Sequence[Column]
) -> Callable[[Mapping[str, tf.Tensor]], dict[str, tf.Tensor]]:
    """Returns `preprocessing_fn(inputs) -> outputs` for tf.Transform."""
    kinds = {c.name: c.kind for c in columns}

    def preprocessing_fn(inputs):
        outputs = {}
        for feature in config.features:
            x = inputs[feature.column]
            outputs[feature.name] = _apply(feature, x, kinds[feature.column])
            if feature.indicator:
                outputs[feature.indicator_name] = _is_missing(x)
        label = config.label
        y = inputs[label.column]
        if kinds[label.column] is Kind.BYTES:
            outputs[label.column] = tft.compute_and_apply_vocabulary(
                _dense(y, tf.constant(b"")),
                num_oov_buckets=0,
                vocab_filename=label.column,
            )
        elif label.threshold is not None:
            value = _dense(_as_float64(y), tf.constant(0.0, tf.float64))
            outputs[label.column] = tf.cast(value > label.threshold, tf.int64)
        elif kinds[label.column] is Kind.FLOAT:
            outputs[label.column] = _dense(y, tf.constant(0.0, tf.float32))
        else:
            outputs[label.column] = _dense(y, tf.constant(0, tf.int64))
        return outputs

    return preprocessing_fn
