"""Serving export: raw rows in, predictions out, through the same transform graph.

`export_serving_model(model, output_dir, export_dir)` writes a SavedModel with two
signatures, both applying the saved `transform_fn`, then the model:

* `serving_default(examples)`: serialized `tf.Example`s of raw columns (as the
  database has them, the label excepted: every NOT NULL column is required, even
  one the model does not use; a nullable one is absent for NULL; array columns
  are lists);
* `serve_raw(**raw)`: one `[batch]` tensor per raw column except the label; for a
  nullable column `<col>` also a `<col>__is_null` bool tensor (True where the
  value is NULL; the value in that row is ignored).

Both key raw columns by their feature names (the manifest's `names`; the column
name itself for plain ASCII names, see `transforms.names`), which are valid
signature input names and never end in `__is_null`. One value per row: array
  columns are served through `serving_default` only.

Absent (NULL) values get the same imputation as in training, because the same
graph does it. Output: `{"probability": [batch] float32}`. The transform layer is
tracked by the exported module, so its vocabulary files are the SavedModel's assets.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_transform as tft

from trainer.dataset import read_manifest

__all__ = ["export_serving_model", "raw_tensors", "NULL_SUFFIX"]

NULL_SUFFIX = "__is_null"


def raw_tensors(inputs: dict, raw_spec: dict) -> dict:
    """Raw-schema tensors from `[batch]` values plus `<col>__is_null` masks.

    NOT NULL (FixedLen) columns pass through; nullable (VarLen) ones become
    `[batch, 1]` SparseTensors holding only the non-NULL values — what the
    transform graph was traced with.
    """
    raw = {}
    for name, feature in raw_spec.items():
        values = inputs[name]
        if isinstance(feature, tf.io.VarLenFeature):
            present = tf.logical_not(inputs[f"{name}{NULL_SUFFIX}"])
            rows = tf.where(present)[:, 0]
            raw[name] = tf.SparseTensor(
                indices=tf.stack([rows, tf.zeros_like(rows)], axis=1),
                values=tf.boolean_mask(values, present),
                dense_shape=tf.stack([tf.shape(values, out_type=tf.int64)[0], 1]),
            )
        else:
            raw[name] = values
    return raw


class _ServingModule(tf.Module):
    def __init__(self, model: keras.Model, output_dir: str):
        super().__init__()
        tft_output = tft.TFTransformOutput(output_dir)
        manifest = read_manifest(output_dir)
        # The label's transformed key and its raw key (they differ for a user
        # module that renames it); raw keys are feature names (transforms.names).
        label_keys = {
            manifest["label"],
            (manifest.get("names") or {}).get(manifest.get("label_column")),
        }
        self.model = model
        self.transform_layer = tft_output.transform_features_layer()
        self._raw_spec = {
            k: v
            for k, v in tft_output.raw_feature_spec().items()
            if k not in label_keys
        }
        self._inputs = [i.name for i in model.inputs]
        signature = {}
        for name, feature in self._raw_spec.items():
            signature[name] = tf.TensorSpec([None], feature.dtype, name=name)
            if isinstance(feature, tf.io.VarLenFeature):
                null = f"{name}{NULL_SUFFIX}"
                signature[null] = tf.TensorSpec([None], tf.bool, name=null)
        self.serve_examples = tf.function(
            self._serve_examples,
            input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
        )
        self.serve_raw = tf.function(self._serve_raw, input_signature=[signature])

    def _predict(self, raw: dict) -> dict:
        transformed = self.transform_layer(raw)
        features = {name: transformed[name] for name in self._inputs}
        return {"probability": tf.reshape(self.model(features), [-1])}

    def _serve_examples(self, examples):
        return self._predict(tf.io.parse_example(examples, self._raw_spec))

    def _serve_raw(self, inputs):
        return self._predict(raw_tensors(inputs, self._raw_spec))


def export_serving_model(model: keras.Model, output_dir: str, export_dir: str) -> str:
    """Saves the serving SavedModel (transform graph + model) to `export_dir`.

    Args:
        model: a model whose inputs are named after transformed features (as
            `trainer.model.build_model` makes it).
        output_dir: the sql2tfrecord output the model was trained on.
        export_dir: where to write the SavedModel (any TF filesystem path).

    Returns:
        `export_dir`.
    """
    module = _ServingModule(model, output_dir)
    tf.saved_model.save(
        module,
        export_dir,
        signatures={
            "serving_default": module.serve_examples.get_concrete_function(),
            "serve_raw": module.serve_raw.get_concrete_function(),
        },
    )
    return export_dir
