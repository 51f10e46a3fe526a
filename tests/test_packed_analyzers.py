"""The packed mean-and-variance analyzer equals tft.mean/tft.var bit for bit.

First the combiner alone (numpy, no Beam): the same accumulators merged per column
as vectors and one column at a time with tf.Transform's own combiner. Then one
tf.Transform run whose `preprocessing_fn` outputs both, over columns built to hit
the edge cases, in many small batches.
"""

import struct
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform import analyzers
from tensorflow_transform.tf_metadata import schema_utils

from transforms.packed_analyzers import _PackedMeanAndVarCombiner, mean_and_var

_Acc = analyzers._WeightedMeanAndVarAccumulator


def _bits(x) -> bytes:
    return np.asarray(x, np.float64).tobytes()


def _batches(rng, n_columns, n_batches):
    """Per-batch (count, mean, var) vectors with empty, equal and NaN entries."""
    out = []
    for _ in range(n_batches):
        count = rng.integers(0, 4, n_columns).astype(np.float64)
        count[rng.random(n_columns) < 0.2] = 0.0
        mean = rng.normal(rng.uniform(-1e6, 1e6), 1e3, n_columns)
        mean[count == 0] = 0.0
        var = rng.gamma(2.0, 1e4, n_columns)
        var[count == 0] = 0.0
        var[rng.random(n_columns) < 0.05] = np.nan  # make_nan_to_num's case
        out.append((count, mean, var))
    return out


def _scalar(combiner, batches, column, order):
    accs = []
    for chunk in order:
        acc = combiner.create_accumulator()
        for i in chunk:
            count, mean, var = batches[i]
            acc = combiner.add_input(
                acc, _Acc(count[column], mean[column], var[column], np.float32(0))
            )
        accs.append(acc)
    return combiner.extract_output(combiner.merge_accumulators(accs))


def _packed(combiner, batches, order):
    accs = []
    for chunk in order:
        acc = combiner.create_accumulator()
        for i in chunk:
            acc = combiner.add_input(acc, _Acc(*batches[i], np.float32(0)))
        accs.append(acc)
    return combiner.extract_output(combiner.merge_accumulators(accs))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packed_combiner_equals_one_scalar_combiner_per_column(seed):
    rng = np.random.default_rng(seed)
    n_columns, n_batches = 40, 30
    batches = _batches(rng, n_columns, n_batches)
    # Bundles of batches, merged in a shuffled order, as a runner may.
    order = np.array_split(rng.permutation(n_batches), 5)
    scalar = analyzers.WeightedMeanAndVarCombiner(np.float64, ())
    packed = _PackedMeanAndVarCombiner(np.float64, (n_columns,))
    mean, var = _packed(packed, batches, order)
    for column in range(n_columns):
        want_mean, want_var = _scalar(scalar, batches, column, order)
        assert _bits(mean[column]) == _bits(want_mean), column
        assert _bits(var[column]) == _bits(want_var), column


def test_stock_vector_combiner_is_not_per_column_exact():
    """Why the packed combiner exists: tf.Transform's own combiner on vectors
    decides the merge order on the summed counts, so columns drift in the last bits.
    """
    rng = np.random.default_rng(0)
    n_columns, n_batches = 40, 30
    batches = _batches(rng, n_columns, n_batches)
    order = np.array_split(rng.permutation(n_batches), 5)
    scalar = analyzers.WeightedMeanAndVarCombiner(np.float64, ())
    stock = analyzers.WeightedMeanAndVarCombiner(np.float64, (n_columns,))
    mean, var = _packed(stock, batches, order)
    differing = sum(
        _bits(mean[c]) + _bits(var[c])
        != b"".join(map(_bits, _scalar(scalar, batches, c, order)))
        for c in range(n_columns)
    )
    assert differing > 0


def _column_values(rng, n):
    """Named edge cases (float32 raw values, as the job's floats); None is NULL."""
    big = 3.0e38
    cols = {
        "normal": [float(v) for v in rng.normal(7.25, 3.0, n)],
        "all_null": [None] * n,
        "one_value": [None] * (n - 1) + [42.125],
        "constant": [0.1] * n,
        "huge": [float(v) for v in rng.normal(1e37, 1e36, n)],  # squares overflow f32
        "mixed": [
            [None, float("nan"), float("inf"), -big, 1.5, -0.0][i % 6] for i in range(n)
        ],
        "tiny": [float(v) for v in rng.normal(0.0, 1e-30, n)],
        "offset": [1e9 + float(v) for v in rng.random(n)],
    }
    for i in range(6):
        cols[f"gappy_{i}"] = [
            None if rng.random() < 0.3 else float(v) for v in rng.lognormal(i, 1.0, n)
        ]
    return cols


def test_mean_and_var_equals_tft_mean_and_var_in_a_pipeline():
    rng = np.random.default_rng(7)
    n = 257
    cols = _column_values(rng, n)
    names = sorted(cols)
    rows = [
        {k: ([] if cols[k][i] is None else [cols[k][i]]) for k in names}
        for i in range(n)
    ]
    spec = {k: tf.io.VarLenFeature(tf.float32) for k in names}
    metadata = tft.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))

    def values(x):
        v = tf.cast(x.values, tf.float64)
        return tf.boolean_mask(v, tf.math.is_finite(v))

    def preprocessing_fn(inputs):
        xs = [values(inputs[k]) for k in names]
        out = {}
        batch = inputs[names[0]].dense_shape[:1]

        def bits(value):  # float64 outputs are not allowed: pass the bit pattern
            return tf.fill(batch, tf.bitcast(value, tf.int64))

        for k, x, (m, v) in zip(names, xs, mean_and_var(xs), strict=True):
            out[f"{k}__pm"] = bits(m)
            out[f"{k}__pv"] = bits(v)
            out[f"{k}__tm"] = bits(tft.mean(x))
            out[f"{k}__tv"] = bits(tft.var(x))
        return out

    with tempfile.TemporaryDirectory() as temp, tft_beam.Context(
        temp_dir=temp, desired_batch_size=11, force_tf_compat_v1=True
    ):
        (out, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn
        )
    assert len(out) == n
    first = out[0]

    def value(name):
        return struct.unpack("<d", struct.pack("<q", int(first[name])))[0]

    for k in names:
        for stat in ("m", "v"):
            assert first[f"{k}__p{stat}"] == first[f"{k}__t{stat}"], (k, stat)
    # Not vacuous: the statistics are the columns' own (numpy, float64 of float32).
    present = [np.float64(np.float32(v)) for v in cols["gappy_3"] if v is not None]
    assert value("gappy_3__pm") == pytest.approx(np.mean(present), rel=1e-12)
    assert value("gappy_3__pv") == pytest.approx(np.var(present), rel=1e-9)
    assert value("all_null__pm") == 0.0 and value("one_value__pm") == 42.125
