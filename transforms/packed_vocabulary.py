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

The Beam half lives here (this module imports apache_beam, unlike the rest of
`transforms`): tf.Transform's extension point takes a `beam.PTransform` object
in the `preprocessing_fn`.
"""

from __future__ import annotations

import dataclasses
import heapq
import importlib
import os
import uuid
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from tensorflow_transform import analyzer_nodes, analyzers

__all__ = ["VocabularySpec", "vocabularies"]

# The module, not the package's `analyzers` (its `import *` shadows the name).
_ptransform_analyzers = importlib.import_module(
    "tensorflow_transform.experimental.analyzers"
)
_FILTER_REGEX = analyzers.get_vocab_newline_characters_regex(tf.string, "text")
_EMPTY_VOCABULARY_TOKEN = analyzers.get_empy_vocabulary_dummy_value(tf.string)[1]
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
    return tf.reshape(x, [-1])


def _reduced_batch(tokens: Sequence) -> list[tf.Tensor]:
    """Per batch: unique (token, column) pairs and their counts, all columns at once.

    Returns `[tokens, columns, counts]`, 1-D and of one length; tokens that
    tf.Transform's vocabulary filter matches are left out.
    """
    n = len(tokens)
    flats = [_flat_tokens(x) for x in tokens]
    flat = tf.concat(flats, axis=0)
    columns = tf.repeat(
        tf.range(n, dtype=tf.int64), tf.stack([tf.size(x) for x in flats])
    )
    keep = tf.logical_not(tf.strings.regex_full_match(flat, _FILTER_REGEX))
    flat = tf.boolean_mask(flat, keep)
    columns = tf.boolean_mask(columns, keep)
    unique_tokens, token_index = tf.unique(flat, out_idx=tf.int64)
    keys, _, counts = tf.unique_with_counts(token_index * n + columns, out_idx=tf.int64)
    return [tf.gather(unique_tokens, keys // n), keys % n, counts]


def vocabularies(
    tokens: Sequence, specs: Sequence[VocabularySpec]
) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """`tft.vocabulary` of each string tensor of `tokens`, one analyzer for all.

    Args:
        tokens: string `Tensor`s or `SparseTensor`s (their values are the tokens).
        specs: one per tensor; distinct file names.

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
            _WriteVocabularies(tuple(specs)),
            *_reduced_batch(tokens),
            output_tensor_info_list=[path_info] * n + [sizes_info],
        )
        sizes = tf.unstack(sizes, num=n)
    for spec, size in zip(specs, sizes, strict=True):
        analyzers.register_vocab(
            spec.filename, vocabulary_size=size, vocabulary_key=spec.vocab_filename
        )
    return list(zip(paths, sizes, strict=True))


def _column_token_counts(batch):
    tokens, columns, counts = batch
    pairs = zip(columns.tolist(), tokens.tolist(), strict=True)
    return zip(pairs, counts.tolist(), strict=True)


class _OrderColumnFn(beam.CombineFn):
    """A column's `(column, count, token)` triples, largest first, cut to top_k.

    The column is the same in all triples, so they order as `(count, token)`.
    """

    def __init__(self, top_ks: tuple[int | None, ...]):
        self._top_ks = top_ks

    def _cut(self, items: list) -> list:
        top_k = self._top_ks[items[0][0]] if items else None
        if top_k is not None and len(items) > top_k:
            return heapq.nlargest(top_k, items)
        return items

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, element):
        accumulator.append(element)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = [x for acc in accumulators for x in acc]
        return self._cut(merged)

    def compact(self, accumulator):
        return self._cut(accumulator)

    def extract_output(self, accumulator):
        return sorted(self._cut(accumulator), reverse=True)


def _write_text(path: str, tokens: Sequence[bytes]) -> None:
    """Writes one token per line, whole or not at all (temporary file, rename)."""
    temp = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(temp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(b"".join(t + b"\n" for t in tokens))
    FileSystems.rename([temp], [path])


def _keep_above_threshold(kv, thresholds):
    (column, token), count = kv
    if count >= thresholds[column]:
        yield column, (column, count, token)


def _write_column(column_and_items, directory: str, filenames: Sequence[str]):
    column, items = column_and_items
    _write_text(os.path.join(directory, filenames[column]), [t for _, _, t in items])
    return column, len(items)


def _outputs(written, directory: str, filenames: Sequence[str]):
    """Each vocabulary's path (tagged by its index), then the sizes (`"sizes"`)."""
    sizes = dict(written)
    for column, filename in enumerate(filenames):
        path = os.path.join(directory, filename)
        if column not in sizes:  # nothing left: tf.Transform's dummy token
            _write_text(path, [_EMPTY_VOCABULARY_TOKEN])
            sizes[column] = 1
        yield beam.pvalue.TaggedOutput(str(column), np.array(path.encode()))
    sizes = np.array([sizes[c] for c in range(len(filenames))], np.int64)
    yield beam.pvalue.TaggedOutput("sizes", sizes)


class _WriteVocabularies(tft_beam.experimental.PTransformAnalyzer):
    """Batches of `_reduced_batch` -> one file path per vocabulary, then the sizes.

    Output: n + 1 PCollections of one element each: each vocabulary's path (a 0-d
    bytes array), then the `[n]` int64 sizes. Parallelism: counts are summed per
    (column, token) and ordered per column; only the paths and sizes are gathered.
    """

    def __init__(self, specs: tuple[VocabularySpec, ...]):
        super().__init__()
        self._specs = specs

    def expand(self, batches):
        directory = self.base_temp_dir
        filenames = tuple(s.filename for s in self._specs)
        thresholds = tuple(s.frequency_threshold or 0 for s in self._specs)
        top_ks = tuple(s.top_k for s in self._specs)
        tags = [str(c) for c in range(len(filenames))] + ["sizes"]
        outputs = (
            batches
            | "CountPerColumnAndToken" >> beam.FlatMap(_column_token_counts)
            | "SumCounts" >> beam.CombinePerKey(sum)
            | "ApplyThresholds" >> beam.FlatMap(_keep_above_threshold, thresholds)
            | "OrderPerColumn" >> beam.CombinePerKey(_OrderColumnFn(top_ks))
            | "WriteVocabulary" >> beam.Map(_write_column, directory, filenames)
            | "Gather" >> beam.combiners.ToList()
            | "Outputs"
            >> beam.FlatMap(_outputs, directory, filenames).with_outputs(*tags)
        )
        return tuple(outputs[tag] for tag in tags)
