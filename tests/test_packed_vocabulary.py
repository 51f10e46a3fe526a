"""The packed vocabulary analyzer writes tft.vocabulary's files byte for byte.

One tf.Transform run (many small batches, so merging across batches matters)
computes each column's vocabulary twice: with `tft.compute_and_apply_vocabulary`
(weights of ones, as the job did) and with `packed_vocabulary.vocabularies` +
`tft.apply_vocabulary`. Files, sizes, asset map entries and ids must agree; the
ordering is also checked against `collections.Counter`.
"""

import collections
import json
import os
import tempfile

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import schema_utils

from pipeline.vocabulary_writer import WriteVocabularies
from transforms.packed_vocabulary import VocabularySpec, vocabularies

_SPECIAL = ["", "a\\b", "\\", "ünï", "列", "x y", "a\nb", "c\rd", "-", "Z", "z"]


def _zipf_tokens(rng, n, vocabulary_size, a=1.3):
    ranks = np.minimum(rng.zipf(a, n), vocabulary_size) - 1
    words = [f"t{i % 37:02d}" for i in range(vocabulary_size)]
    words[: len(_SPECIAL)] = _SPECIAL
    return [words[r] for r in ranks]


def _columns(rng, n):
    """name -> (values (None: NULL), sparse?, top_k, frequency_threshold, oov)."""
    null = rng.random(n) < 0.3
    return {
        "zipf": (_zipf_tokens(rng, n, 60), False, None, None, 1),
        "zipf_top": (_zipf_tokens(rng, n, 60), False, 7, None, 2),
        "threshold": (_zipf_tokens(rng, n, 40), False, None, 3, 1),
        "both": (_zipf_tokens(rng, n, 40), False, 5, 2, 0),
        # n = 600: w0..w5 tie at 67, w6..w8 at 66; top 4 cuts through the tie.
        "ties": ([f"w{i % 9}" for i in range(n)], False, 4, None, 1),
        "sparse": (
            [
                None if m else t
                for m, t in zip(null, _zipf_tokens(rng, n, 30), strict=True)
            ],
            True,
            None,
            None,
            1,
        ),
        "all_null": ([None] * n, True, None, None, 1),
        "all_dropped": (
            [["", "\n", "a\rb"][i % 3] for i in range(n)],
            False,
            3,
            None,
            1,
        ),
        "over_threshold": (_zipf_tokens(rng, n, 40), False, None, 10**6, 0),
    }


def _run(columns, n, batch_size, temp, compat_v1):
    names = sorted(columns)
    rows = []
    for i in range(n):
        row = {}
        for k in names:
            value, sparse = columns[k][0][i], columns[k][1]
            if sparse:
                row[k] = [] if value is None else [value.encode()]
            else:
                row[k] = value.encode()
        rows.append(row)
    spec = {
        k: tf.io.VarLenFeature(tf.string)
        if columns[k][1]
        else tf.io.FixedLenFeature([], tf.string)
        for k in names
    }
    metadata = tft.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))

    def dense(x):
        if isinstance(x, tf.SparseTensor):
            x = tft.sparse_tensor_to_dense_with_shape(x, [None, 1], default_value=-9)
            return tf.squeeze(x, axis=1)
        return x

    def preprocessing_fn(inputs):
        out = {}
        specs = [
            VocabularySpec(
                f"p_{k}", top_k=columns[k][2], frequency_threshold=columns[k][3]
            )
            for k in names
        ]
        results = vocabularies([inputs[k] for k in names], specs, WriteVocabularies)
        for k, (path, _) in zip(names, results, strict=True):
            _, sparse, top_k, threshold, oov = columns[k]
            x = inputs[k]
            weights = tf.ones_like(x.values if sparse else x, tf.float32)
            out[f"t_{k}"] = dense(
                tft.compute_and_apply_vocabulary(
                    x,
                    top_k=top_k,
                    frequency_threshold=threshold,
                    num_oov_buckets=oov,
                    vocab_filename=f"t_{k}",
                    weights=weights,
                )
            )
            out[f"p_{k}"] = dense(
                tft.apply_vocabulary(x, path, default_value=-1, num_oov_buckets=oov)
            )
        return out

    output_dir = os.path.join(temp, "out")
    with (
        beam.Pipeline() as p,
        tft_beam.Context(
            temp_dir=os.path.join(temp, "tmp"),
            desired_batch_size=batch_size,
            force_tf_compat_v1=compat_v1,
        ),
    ):
        data = p | beam.Create(rows, reshuffle=False)
        (transformed, _), transform_fn = (data, metadata) | (
            tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        )
        _ = transform_fn | tft_beam.WriteTransformFn(output_dir)
        _ = (
            transformed
            | beam.combiners.ToList()
            | beam.Map(
                lambda xs: json.dump(
                    [{k: int(v) for k, v in x.items()} for x in xs],
                    open(os.path.join(temp, "rows.json"), "w"),
                )
            )
        )
    with open(os.path.join(temp, "rows.json")) as f:
        return names, json.load(f), tft.TFTransformOutput(output_dir)


def _file_bytes(output, name):
    with open(output.vocabulary_file_by_name(name), "rb") as f:
        return f.read()


@pytest.mark.parametrize(
    "seed,batch_size,compat_v1", [(0, 7, True), (1, 64, True), (2, 16, False)]
)
def test_packed_vocabularies_equal_tft_vocabularies(seed, batch_size, compat_v1):
    rng = np.random.default_rng(seed)
    n = 600
    columns = _columns(rng, n)
    with tempfile.TemporaryDirectory() as temp:
        names, rows, output = _run(columns, n, batch_size, temp, compat_v1)
        for k in names:
            assert (
                os.path.basename(output.vocabulary_file_by_name(f"p_{k}")) == f"p_{k}"
            )
            assert _file_bytes(output, f"p_{k}") == _file_bytes(output, f"t_{k}"), k
            assert output.vocabulary_size_by_name(
                f"p_{k}"
            ) == output.vocabulary_size_by_name(f"t_{k}"), k
            assert [r[f"p_{k}"] for r in rows] == [r[f"t_{k}"] for r in rows], k
        schema = output.transformed_metadata.schema
        domains = {f.name: f.int_domain for f in schema.feature}
        for k in names:
            assert domains[f"p_{k}"] == domains[f"t_{k}"], k
        # Not vacuous: the order is tf.Transform's (count desc, token desc), cut.
        counts = collections.Counter(
            t.encode()
            for t in columns["zipf_top"][0]
            if t and "\n" not in t and "\r" not in t
        )
        want = sorted(((c, t) for t, c in counts.items()), reverse=True)[:7]
        assert _file_bytes(output, "p_zipf_top") == b"".join(t + b"\n" for _, t in want)
        dummy = b"49d0cd50-04bb-48c0-bc6f-5b575dce351a\n"
        for k in ("all_null", "all_dropped", "over_threshold"):
            assert _file_bytes(output, f"p_{k}") == dummy, k
        ties = _file_bytes(output, "p_ties").split(b"\n")[:-1]
        assert ties == [b"w5", b"w4", b"w3", b"w2"]  # ties: token descending


def test_vocabularies_need_distinct_file_names():
    with tf.Graph().as_default():
        x = tf.constant(["a"])
        with pytest.raises(ValueError, match="not distinct"):
            vocabularies(
                [x, x], [VocabularySpec("a b"), VocabularySpec("a-b")], WriteVocabularies
            )


def test_transforms_and_trainer_never_import_beam():
    """The TF half is Beam-free: the job injects `WriteVocabularies`."""
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, transforms, trainer\n"
        "for pkg in (transforms, trainer):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        if m.name != '__main__':\n"
        "            importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        "print('apache_beam' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
