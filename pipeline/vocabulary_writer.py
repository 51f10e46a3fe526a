r"""The Beam half of the packed vocabulary analyzer (`transforms.packed_vocabulary`).

`WriteVocabularies(specs)` takes the per-batch `[tokens, columns, counts]` of
`packed_vocabulary.vocabularies`, sums counts per (column, token), drops those below
the column's `frequency_threshold`, orders each column's tokens by count descending,
ties by token descending (bytewise), cut to `top_k`, and writes each vocabulary as
`tft.vocabulary` does: one token and `\n` per line, tf.Transform's dummy token
when nothing is left. Files are written whole or not at all (temporary, rename).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform import analyzers

from pipeline.sink import output
from transforms.packed_vocabulary import VocabularySpec

__all__ = ["WriteVocabularies"]

_EMPTY_VOCABULARY_TOKEN = analyzers.get_empy_vocabulary_dummy_value(tf.string)[1]


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


def _write_text(directory: str, filename: str, tokens: Sequence[bytes]) -> str:
    """Publishes one token per line, whole or not at all; returns the path."""
    return output.write_bytes(directory, filename, b"".join(t + b"\n" for t in tokens))


def _keep_above_threshold(kv, thresholds):
    (column, token), count = kv
    if count >= thresholds[column]:
        yield column, (column, count, token)


def _write_column(column_and_items, directory: str, filenames: Sequence[str]):
    column, items = column_and_items
    _write_text(directory, filenames[column], [t for _, _, t in items])
    return column, len(items)


def _outputs(written, directory: str, filenames: Sequence[str]):
    """Each vocabulary's path (tagged by its index), then the sizes (`"sizes"`)."""
    sizes = dict(written)
    for column, filename in enumerate(filenames):
        path = output.join(directory, filename)
        if column not in sizes:  # nothing left: tf.Transform's dummy token
            _write_text(directory, filename, [_EMPTY_VOCABULARY_TOKEN])
            sizes[column] = 1
        yield beam.pvalue.TaggedOutput(str(column), np.array(path.encode()))
    sizes = np.array([sizes[c] for c in range(len(filenames))], np.int64)
    yield beam.pvalue.TaggedOutput("sizes", sizes)


class WriteVocabularies(tft_beam.experimental.PTransformAnalyzer):
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
