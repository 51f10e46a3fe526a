"""The demo model: a small Keras network over the transformed features.

Inputs are built from the output directory alone (`manifest.json` and the
transformed schema), one `keras.Input` per scalar transformed feature except the
label: vocabulary ids get embeddings sized from the saved vocabularies (+ OOV
buckets), hashed ids embeddings of `hash_buckets`, bucketized values embeddings of
`num_buckets + 1`, hour of day and day of week embeddings of 25 and 8 (their
missing values are 24 and 7: `transforms.preprocessing`); every other
int or float feature is a numeric input. Outputs of a user `--preprocessing_module`
(no feature records in the manifest) are all numeric. Variable-length and string
outputs are not modelled. The label is a 0/1 integer (binary cross-entropy, AUC).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf
import tensorflow_transform as tft

from trainer.dataset import read_manifest

__all__ = ["build_model", "categorical_sizes", "embedding_dim", "model_inputs"]

_FIXED_SIZES = {"hour_of_day": 25, "day_of_week": 8}  # + the missing category


def categorical_sizes(output_dir: str) -> dict[str, int]:
    """Number of distinct ids of each categorical transformed feature.

    Empty for outputs of a user preprocessing module (the manifest has no feature
    records): their features are all treated as numeric.
    """
    manifest = read_manifest(output_dir)
    sizes: dict[str, int] = {}
    features = (manifest.get("features") or {}).get("features") or []
    vocabularies = manifest.get("vocabularies") or {}
    for feature in features:
        name, transform = feature["name"], feature["transform"]
        if transform == "vocabulary":
            info = vocabularies[name]
            # Ids run over the vocabulary, then the OOV buckets; tf.Transform
            # writes a placeholder token into an empty vocabulary file.
            sizes[name] = max(1, info["size"]) + info["num_oov_buckets"]
        elif transform == "hash":
            sizes[name] = feature["hash_buckets"]
        elif transform in _FIXED_SIZES:
            sizes[name] = _FIXED_SIZES[transform]
        elif transform == "bucketize":
            sizes[name] = feature["num_buckets"] + 1
    return sizes


def embedding_dim(size: int) -> int:
    """Embedding width for `size` ids: 1.6 * size**0.56, between 2 and 16."""
    return max(2, min(16, int(round(1.6 * size**0.56))))


def model_inputs(model: keras.Model, features: Mapping[str, tf.Tensor]) -> dict:
    """The subset of `features` that `model` takes (its inputs are named by feature).

    Use as `dataset.map(lambda f, y: (model_inputs(model, f), y))` when the output
    has features the model does not use (excluded, string or variable-length ones).
    """
    return {i.name: features[i.name] for i in model.inputs}


def build_model(
    output_dir: str, hidden: tuple[int, ...] = (64, 32), exclude: tuple[str, ...] = ()
) -> keras.Model:
    """A compiled binary classifier whose inputs are the transformed features.

    Args:
        output_dir: an sql2tfrecord output.
        hidden: widths of the hidden relu layers.
        exclude: transformed features not to use (e.g. a passed-through row id).

    Returns:
        A functional model taking a dict of `[batch]` (or `[batch, k]`) tensors named
        after the features and returning `[batch, 1]` probabilities of label 1;
        compiled with Adam, binary cross-entropy, AUC and accuracy.

    Raises:
        ValueError: the output has no feature the model can use.
    """
    manifest = read_manifest(output_dir)
    label = manifest["label"]
    spec = tft.TFTransformOutput(output_dir).transformed_feature_spec()
    sizes = categorical_sizes(output_dir)
    inputs, encoded = {}, []
    for name in sorted(spec):
        feature = spec[name]
        if name == label or name in exclude:
            continue
        if not isinstance(feature, tf.io.FixedLenFeature) or not (
            feature.dtype.is_integer or feature.dtype.is_floating
        ):
            continue  # variable-length or string outputs are not modelled here
        shape = tuple(feature.shape)
        if name in sizes and shape == ():
            size = sizes[name]
            inputs[name] = keras.Input(shape=(), name=name, dtype="int64")
            # Ids outside [0, size) (impossible for our transforms) share the ends.
            ids = keras.ops.clip(inputs[name], 0, size - 1)
            encoded.append(
                keras.layers.Embedding(
                    size, embedding_dim(size), name=f"{name}_embedding"
                )(ids)
            )
        else:
            width = 1
            for dim in shape:
                width *= dim
            inputs[name] = keras.Input(shape=shape, name=name, dtype=feature.dtype.name)
            encoded.append(
                keras.layers.Reshape((width,), name=f"{name}_numeric")(
                    keras.ops.cast(inputs[name], "float32")
                )
            )
    if not encoded:
        raise ValueError(
            f"{output_dir} has no fixed-length numeric feature besides the label "
            f"{label!r} to train on"
        )
    x = keras.layers.Concatenate()(encoded) if len(encoded) > 1 else encoded[0]
    for width in hidden:
        x = keras.layers.Dense(width, activation="relu")(x)
    output = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    model = keras.Model(inputs, output)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=2e-3),
        loss="binary_crossentropy",
        metrics=[
            keras.metrics.AUC(name="auc"),
            keras.metrics.BinaryAccuracy(name="accuracy"),
        ],
    )
    return model
