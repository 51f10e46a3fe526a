"""Raw inputs as dense tensors: `[batch]` columns and `[batch, n]` float64 matrices.

The raw schema (`transforms.schema`) gives dense `[batch]` tensors for NOT NULL
columns and `SparseTensor`s `[batch, ≤1]` for nullable ones. `dense` and
`present_mask` turn either into a `[batch]` tensor and its presence; `float_values`
and `float_matrix` give numeric columns as float64, NaN where a value is NULL or an
infinite date or timestamp (read as the int64 extremes); `usable` tells the values
that can become float32 features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from transforms.types import NEG_INFINITY, POS_INFINITY, TIME_KINDS, Kind

__all__ = [
    "FLOAT32_MAX",
    "as_float64",
    "dense",
    "float_matrix",
    "float_values",
    "present_mask",
    "usable",
]


FLOAT32_MAX = 3.4028234663852886e38  # beyond it a value cannot become a float32 feature


def dense(x, default) -> tf.Tensor:
    """A [batch] tensor from a dense [batch] tensor or a [batch, ≤1] SparseTensor."""
    if isinstance(x, tf.SparseTensor):
        return tf.squeeze(
            tft.sparse_tensor_to_dense_with_shape(x, [None, 1], default_value=default),
            axis=1,
        )
    return x


def present_mask(x) -> tf.Tensor:
    """[batch] bool: the row has a value (a NULL is absent from the SparseTensor)."""
    if not isinstance(x, tf.SparseTensor):
        return tf.ones_like(x, dtype=tf.bool)
    ones = tf.SparseTensor(x.indices, tf.ones_like(x.values, tf.int64), x.dense_shape)
    return dense(ones, tf.constant(0, tf.int64)) > 0


def as_float64(values: tf.Tensor, kind: Kind | None) -> tf.Tensor:
    """float64 values; ±infinity dates and timestamps (int64 extremes) become NaN."""
    floats = tf.cast(values, tf.float64)
    if kind not in TIME_KINDS:
        return floats
    finite = tf.logical_and(
        tf.not_equal(values, tf.constant(POS_INFINITY, tf.int64)),
        tf.not_equal(values, tf.constant(NEG_INFINITY, tf.int64)),
    )
    return tf.where(finite, floats, tf.constant(float("nan"), tf.float64))


def float_values(x, kind: Kind | None = None) -> tf.Tensor:
    """[batch] float64 of a numeric column, NaN where NULL or an infinite date."""
    if isinstance(x, tf.SparseTensor):
        x = tf.SparseTensor(x.indices, as_float64(x.values, kind), x.dense_shape)
        return dense(x, tf.constant(float("nan"), tf.float64))
    return as_float64(x, kind)


def float_matrix(xs: Sequence, kinds: Sequence[Kind | None]) -> tf.Tensor:
    """[batch, n] float64: column j is `float_values(xs[j], kinds[j])`, bit for bit.

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
            [float_values(x, k) for x, k in zip(xs, kinds, strict=True)], axis=1
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
        values.append(as_float64(group, kinds[members[0]]))
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
        rest = [as_float64(xs[j], kinds[j]) for j in dense]
        matrix = tf.concat([matrix, tf.stack(rest, axis=1)], axis=1)
        order += dense
    if order != sorted(order):
        matrix = tf.gather(matrix, np.argsort(order), axis=1)
    matrix.set_shape([None, len(xs)])
    return matrix


def usable(value: tf.Tensor) -> tf.Tensor:
    """bool, element-wise: finite and within float32's range."""
    return tf.logical_and(tf.math.is_finite(value), tf.abs(value) <= FLOAT32_MAX)
