"""Mean and variance of many columns in one tf.Transform analyzer, bit for bit.

`tft.mean(x)` and `tft.var(x)` are one analyzer each, and every analyzer costs the
job a fixed amount whatever the data: ops in the graph that is traced, loaded and
run several times per job, and Beam stages (extract, bind, side inputs).
tf.Transform packs the accumulation of its combiners but not those per-analyzer
costs. `mean_and_var_vectors` gives n columns the statistics `tft.mean`/`tft.var`
give, from a single analyzer:

* per batch, each column's sum and sum of squared deviations come from the same
  reduction (`tf.reduce_sum` over the column's own 1-D vector of finite values)
  as in `tf_utils.reduce_batch_count_mean_and_var`; counts, divisions and
  deviations are element-wise over all columns at once (element-wise float64
  arithmetic is correctly rounded, so this is exact);
* across batches, `_PackedMeanAndVarCombiner` merges the `[n]` vectors with
  tf.Transform's own formulas, element by element, deciding per column what
  tf.Transform decides per analyzer (which side is larger, an empty side).

So each column's result is the one its own analyzer would give, to the last bit.
Not done, on purpose: one reduction over a stacked `[batch, n]` tensor
(`reduce_instance_dims=False`), which sums in another order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from tensorflow_transform import analyzers

__all__ = ["mean_and_var", "mean_and_var_vectors"]


class _PackedMeanAndVarCombiner(analyzers.WeightedMeanAndVarCombiner):
    """tf.Transform's mean-and-variance combiner, per column of `[n]` vectors.

    `WeightedMeanAndVarCombiner` decides on the sum of the counts which
    accumulator is the larger and whether one is empty; here that is decided per
    column, as for `n` separate scalar analyzers. The formulas are tf.Transform's.
    """

    def _combine_mean_and_var_accumulators(self, a, b):
        accumulator = analyzers._WeightedMeanAndVarAccumulator  # noqa: SLF001
        flags = {"compute_variance": True, "compute_weighted": False}
        a = accumulator.make_nan_to_num(*a, **flags)
        b = accumulator.make_nan_to_num(*b, **flags)
        shape = np.broadcast_shapes(*(np.shape(v) for v in (*a[:3], *b[:3])))
        a_count, a_mean, a_var, b_count, b_mean, b_var = (
            np.broadcast_to(v, shape) for v in (*a[:3], *b[:3])
        )
        swap = a_count < b_count
        big_count = np.where(swap, b_count, a_count)
        big_mean = np.where(swap, b_mean, a_mean)
        big_var = np.where(swap, b_var, a_var)
        small_count = np.where(swap, a_count, b_count)
        small_mean = np.where(swap, a_mean, b_mean)
        small_var = np.where(swap, a_var, b_var)
        with np.errstate(divide="ignore", invalid="ignore"):
            total = big_count + small_count
            mean = big_mean + (small_count / total * (small_mean - big_mean))
            var = big_var + (small_count / total) * (
                small_var - big_var + ((small_mean - mean) * (small_mean - big_mean))
            )
        empty = big_count == 0  # tf.Transform returns the other side unchanged
        return accumulator(
            np.where(empty, small_count, total),
            np.where(empty, small_mean, mean),
            np.where(empty, small_var, var),
            np.ones(shape),
        )


def mean_and_var_vectors(
    flat: tf.Tensor, counts: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """`tft.mean` and `tft.var` of n columns, as two `[n]` float64 vectors.

    Args:
        flat: 1-D float64, the finite values of column 0, then of column 1, …
        counts: `[n]` int64 (n static), how many values of `flat` each column has.

    Returns:
        `(mean, var)`; element i equals bit for bit `tft.mean(x_i)` and
        `tft.var(x_i)` of the column's 1-D vector `x_i`. One analyzer. Per batch
        only the two sums are per column (each over `x_i` itself, as in
        `tf_utils.reduce_batch_count_mean_and_var`); counts, divisions and
        deviations are element-wise over all columns at once, which is exact.
    """
    n = counts.shape[0]
    with tf.compat.v1.name_scope("packed_mean_and_var"):
        count = tf.cast(counts, tf.float64)
        axis = tf.constant([0])  # one node shared by the 2n sums
        sums = [tf.reduce_sum(x, axis) for x in tf.split(flat, counts, num=n)]
        means = tf.math.divide_no_nan(tf.stack(sums), count)
        squares = tf.square(flat - tf.repeat(means, counts))
        sums_of_squares = [
            tf.reduce_sum(x, axis) for x in tf.split(squares, counts, num=n)
        ]
        variances = tf.math.divide_no_nan(tf.stack(sums_of_squares), count)
        mean, var = analyzers._apply_cacheable_combiner(  # noqa: SLF001
            _PackedMeanAndVarCombiner(np.float64, (n,)),
            count,
            means,
            variances,
            tf.zeros([], tf.float32),
        )
        mean.set_shape([n])
        var.set_shape([n])
        return mean, var


def mean_and_var(
    columns: Sequence[tf.Tensor],
) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """`(tft.mean(x), tft.var(x))` for each 1-D float64 `x` of `columns`, one analyzer.

    Args:
        columns: 1-D float64 tensors (NaN and ±Infinity are ignored, as by
            `tft.mean`).

    Returns:
        Per column, scalar float64 tensors equal bit for bit to `tft.mean(x)` and
        `tft.var(x)`.
    """
    if not columns:
        return []
    finite = [tf.boolean_mask(x, tf.math.is_finite(x)) for x in columns]
    counts = tf.stack([tf.size(x, out_type=tf.int64) for x in finite])
    mean, var = mean_and_var_vectors(tf.concat(finite, axis=0), counts)
    return list(zip(tf.unstack(mean), tf.unstack(var), strict=True))
