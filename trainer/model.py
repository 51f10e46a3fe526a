"""The demo model: a small Keras network over the transformed features.

Inputs are built from the output directory alone: vocabulary ids get embeddings
sized from the saved vocabularies (+ OOV buckets), hashed ids embeddings of
`hash_buckets`, hour of day and day of week embeddings of 24 and 7, everything else
is a numeric input. The label is a 0/1 integer (binary cross-entropy, AUC).
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_transform as tft

from trainer.dataset import read_manifest

__all__ = ["build_model", "categorical_sizes"]


def categorical_sizes(output_dir: str) -> dict[str, int]:
    """Number of distinct ids of each categorical transformed feature."""
    manifest = read_manifest(output_dir)
    sizes: dict[str, int] = {}
    features = (manifest.get("features") or {}).get("features", [])
    vocabularies = manifest.get("vocabularies") or {}
    for feature in features:
        name, transform = feature["name"], feature["transform"]
        if transform == "vocabulary":
            info = vocabularies[name]
            sizes[name] = max(1, info["size"]) + info["num_oov_buckets"]
        elif transform == "hash":
            sizes[name] = feature["hash_buckets"]
        elif transform == "hour_of_day":
            sizes[name] = 24
        elif transform == "day_of_week":
            sizes[name] = 7
        elif transform == "bucketize":
            sizes[name] = feature["num_buckets"] + 1
    return sizes


def build_model(
    output_dir: str, hidden: tuple[int, ...] = (64, 32), exclude: tuple[str, ...] = ()
) -> keras.Model:
    """A compiled binary classifier whose inputs are the transformed features.

    Args:
        output_dir: an sql2tfrecord output.
        hidden: widths of the hidden layers.
        exclude: transformed features not to use (e.g. a passed-through row id).
    """
    manifest = read_manifest(output_dir)
    label = manifest["label"]
    spec = tft.TFTransformOutput(output_dir).transformed_feature_spec()
    sizes = categorical_sizes(output_dir)
    inputs, encoded = {}, []
    for name in sorted(spec):
        if name == label or name in exclude:
            continue
        feature = spec[name]
        if not isinstance(feature, tf.io.FixedLenFeature):
            continue  # variable-length outputs (user modules) are not modelled here
        if name in sizes:
            inputs[name] = keras.Input(shape=(), name=name, dtype="int64")
            size = sizes[name]
            dim = max(2, min(16, int(round(1.6 * size**0.56))))
            embedded = keras.layers.Embedding(size, dim, name=f"{name}_embedding")(
                keras.ops.clip(inputs[name], 0, size - 1)
            )
            encoded.append(embedded)
        else:
            inputs[name] = keras.Input(shape=(), name=name, dtype=feature.dtype.name)
            encoded.append(
                keras.layers.Reshape((1,))(keras.ops.cast(inputs[name], "float32"))
            )
    x = keras.layers.Concatenate()(encoded) if len(encoded) > 1 else encoded[0]
    for width in hidden:
        x = keras.layers.Dense(width, activation="relu")(x)
    output = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    model = keras.Model(inputs, output)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=2e-3),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model

