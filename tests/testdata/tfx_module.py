"""A module written for TFX's Transform component (taxi-template style), used as is."""

import tensorflow as tf
import tensorflow_transform as tft

DENSE_FLOAT_FEATURE_KEYS = ["x", "n"]
BUCKET_FEATURE_KEYS = ["price"]
VOCAB_FEATURE_KEYS = ["cat", "city"]
FEATURE_BUCKET_COUNT = 4
VOCAB_SIZE = 10
OOV_SIZE = 2
LABEL_KEY = "y"


def _transformed_name(key):
    return key + "_xf"


def _fill_in_missing(x):
    """Replaces missing values in a SparseTensor and converts it to a dense tensor."""
    if not isinstance(x, tf.sparse.SparseTensor):
        return x
    default_value = "" if x.dtype == tf.string else 0
    return tf.squeeze(
        tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value
        ),
        axis=1,
    )


def preprocessing_fn(inputs):
    outputs = {}
    for key in DENSE_FLOAT_FEATURE_KEYS:
        outputs[_transformed_name(key)] = tft.scale_to_z_score(
            tf.cast(_fill_in_missing(inputs[key]), tf.float32)
        )
    for key in VOCAB_FEATURE_KEYS:
        outputs[_transformed_name(key)] = tft.compute_and_apply_vocabulary(
            _fill_in_missing(inputs[key]), top_k=VOCAB_SIZE, num_oov_buckets=OOV_SIZE
        )
    for key in BUCKET_FEATURE_KEYS:
        outputs[_transformed_name(key)] = tft.bucketize(
            tf.cast(_fill_in_missing(inputs[key]), tf.float32), FEATURE_BUCKET_COUNT
        )
    outputs[_transformed_name(LABEL_KEY)] = _fill_in_missing(inputs[LABEL_KEY])
    return outputs
