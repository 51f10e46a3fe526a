r"""Many frequency vocabularies in one tf.Transform analyzer, file for file.

`tft.vocabulary` is a chain of analyzers per call (accumulate, merge, prune,
count twice, order and write), each with its fixed per-analyzer cost in the
traced graph and in Beam stages. `vocabularies` computes n of them from a single
`tft.experimental.ptransform_analyzer` and writes the same files as
`tft.vocabulary(x, top_k=…, frequency_threshold=…, vocab_filename=…, weights=ones)`
(text format, no frequencies, no labels, no reserved tokens), for string `x`:

* tokens matching tf.Transform's filter (`^$|\C*[\n\r]\C*`: empty, or containing
  a newline or carriage return) are dropped, by the same regex op;
* a token's count is its number of occurrences on the dataset. tf.Transform sums
  float32 ones per batch and then Python floats across batches: exact integers
  (below 2**24 per batch and 2**53 in all), so integer counts order alike;
* tokens with a count below `frequency_threshold` are dropped, then the rest are
  ordered by count descending, ties by token descending (bytewise) — Python's
  order of `(count, token)` tuples, as `Top.Of` and the sort of
  `_VocabularyOrderAndWriteImpl` — and cut to `top_k`;
* the file holds each token and `\n`; an empty vocabulary holds tf.Transform's
  dummy token (`analyzers.get_empy_vocabulary_dummy_value`) and has size 1;
* the file is named `vocab_filename` sanitised as tf.Transform does, registered
  under `vocab_filename` with its size (`register_vocab`): `TFTransformOutput.
  vocabulary_file_by_name` and the asset map are as for `tft.vocabulary`.

Per batch, each column's tokens are reduced to (token, count) pairs by two
`tf.unique` over all columns at once (tokens, then (token, column) keys). In
Beam, counts are summed per (column, token) and ordered per column with a
combiner that keeps only `top_k` per column (as `Top.Of`), so the work is spread
over keys as in tf.Transform's own chain.

The Beam half (summing, ordering, writing the files) is the `writer` the caller
passes in, `pipeline.vocabulary_writer.WriteVocabularies`: tf.Transform's
extension point takes a `beam.PTransform` object, and `transforms` never imports
apache_beam.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence

import tensorflow as tf
from tensorflow_transform import analyzer_nodes, analyzers

__all__ = ["VocabularySpec", "vocabularies"]

# The module, not the package's `analyzers` (its `import *` shadows the name).
_ptransform_analyzers = importlib.import_module(
    "tensorflow_transform.experimental.analyzers"
)
_FILTER_REGEX = analyzers.get_vocab_newline_characters_regex(tf.string, "text")
_TEMPORARY_ASSET_VALUE = b"TEMPORARY_ASSET_VALUE"  # as tft.vocabulary's, until analysed


@dataclasses.dataclass(frozen=True)
class VocabularySpec:
    """One vocabulary: `tft.vocabulary`'s arguments of the same names."""

    vocab_filename: str
    top_k: int | None = None
    frequency_threshold: int | None = None

    @property
    def filename(self) -> str:
        """The asset's file name (tf.Transform's sanitisation)."""
        return analyzers.sanitized_vocab_filename(self.vocab_filename)


def _flat_tokens(x) -> tf.Tensor:
    if isinstance(x, tf.SparseTensor):
        x = x.values
    return x if x.shape.rank == 1 else tf.reshape(x, [-1])


def _reduced_batch(tokens: Sequence) -> list[tf.Tensor]:
    """Per batch: unique (token, column) pairs and their counts, all columns at once.

    Returns `[tokens, columns, counts]`, 1-D and of one length; tokens that
    tf.Transform's vocabulary filter matches are left out.
    """
    n = len(tokens)
    flats = [_flat_tokens(x) for x in tokens]
    flat = tf.concat(flats, axis=0)
    sizes = tf.concat(tf.shape_n(flats, out_type=tf.int64), axis=0)
    columns = tf.repeat(tf.range(n, dtype=tf.int64), sizes)
    keep = tf.logical_not(tf.strings.regex_full_match(flat, _FILTER_REGEX))
    flat = tf.boolean_mask(flat, keep)
    columns = tf.boolean_mask(columns, keep)
    unique_tokens, token_index = tf.unique(flat, out_idx=tf.int64)
    keys, _, counts = tf.unique_with_counts(token_index * n + columns, out_idx=tf.int64)
    return [tf.gather(unique_tokens, keys // n), keys % n, counts]


def vocabularies(
    tokens: Sequence, specs: Sequence[VocabularySpec], writer: Callable
) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """`tft.vocabulary` of each string tensor of `tokens`, one analyzer for all.

    Args:
        tokens: string `Tensor`s or `SparseTensor`s (their values are the tokens).
        specs: one per tensor; distinct file names.
        writer: `specs -> beam.PTransform` of tf.Transform's `PTransformAnalyzer`
            kind (`pipeline.vocabulary_writer.WriteVocabularies`): batches of
            `[tokens, columns, counts]` in, each vocabulary's file path then the
            `[n]` sizes out.

    Returns:
        Per vocabulary, the deferred file path (for `tft.apply_vocabulary`) and
        its size (int64 scalar, at least 1), as `tft.vocabulary` gives them.
    """
    if len(tokens) != len(specs):
        raise ValueError(f"{len(tokens)} token tensors for {len(specs)} vocabularies")
    if not specs:
        return []
    filenames = [s.filename for s in specs]
    if len(set(filenames)) != len(filenames):
        raise ValueError(f"vocabulary file names are not distinct: {filenames}")
    n = len(specs)
    # What `tft.experimental.ptransform_analyzer` does, but with the sizes not an
    # asset: given asset defaults, it makes every output an asset path.
    path_info = analyzer_nodes.TensorInfo(
        tf.string, [], analyzer_nodes.TemporaryAssetInfo(_TEMPORARY_ASSET_VALUE, "text")
    )
    sizes_info = analyzer_nodes.TensorInfo(tf.int64, [n], None)
    with tf.compat.v1.name_scope("packed_vocabularies"):
        *paths, sizes = _ptransform_analyzers._apply_analyzer(  # noqa: SLF001
            writer(tuple(specs)),
            *_reduced_batch(tokens),
            output_tensor_info_list=[path_info] * n + [sizes_info],
        )
        sizes = tf.unstack(sizes, num=n)
    for spec, size in zip(specs, sizes, strict=True):
        analyzers.register_vocab(
            spec.filename, vocabulary_size=size, vocabulary_key=spec.vocab_filename
        )
    return list(zip(paths, sizes, strict=True))
