"""Beam side of the statistics: a combine over the batches the job already has.

`WriteStatistics` takes the split-tagged raw batches (`AssignSplit`'s output) and
the transformed `(batch, passthrough)` pairs (`TransformDataset`'s output), both
carrying `SPLIT_COLUMN`, and combines them into `SplitStatistics` per group and
split (each bundle reduces its batches to one accumulator, `_PartialStatisticsFn`;
only those are shuffled, into one GroupByKey, then merged in order and written; no
row is held, the database is not read again). It writes
`<output>/statistics/<split>.pb` (a tensorflow_metadata
`DatasetFeatureStatisticsList`, raw features by name and transformed ones as
`transformed/<name>`) and `<output>/statistics/statistics.json` (all splits, with
the exact histograms and token counts that drift checks and the report use; compact
JSON, one line: `jq . statistics.json` indents it).
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from pipeline import heap
from pipeline.assign import SPLIT_COLUMN, _split_indices, _split_parts
from pipeline.sink import output
from pipeline.statistics import SplitStatistics, to_proto

__all__ = ["STATISTICS_DIR", "STATISTICS_JSON", "WriteStatistics", "read_statistics"]

_LOGGER = logging.getLogger(__name__)

STATISTICS_DIR = "statistics"
STATISTICS_JSON = "statistics.json"
GROUPS = ("raw", "transformed")


class _SplitStatisticsFn(beam.CombineFn):
    """(group, batch or `(batch, passthrough)`) -> {split: {group: statistics JSON}}."""

    def __init__(self, split_names: Sequence[str]):
        self._names = tuple(split_names)

    def create_accumulator(self) -> dict[tuple[str, str], SplitStatistics]:
        return {}

    def add_input(self, accumulator, element):
        group, value = element
        if isinstance(value, tuple):
            batch, unary = value
        else:
            batch, unary = value, {}
        indices = _split_indices(batch, unary)
        for split, part in _split_parts(batch, indices):
            key = (group, self._names[split])
            stats = accumulator.get(key)
            if stats is None:
                stats = accumulator[key] = SplitStatistics.for_schema(
                    batch.schema, exclude=(SPLIT_COLUMN,)
                )
            stats.add(part)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged: dict[tuple[str, str], SplitStatistics] = {}
        for accumulator in accumulators:
            for key, stats in accumulator.items():
                if key in merged:
                    merged[key].merge(stats)
                else:
                    merged[key] = stats
        return merged

    def extract_output(self, accumulator) -> dict[str, Any]:
        empty = {"rows": 0, "features": {}}
        with heap.collection_paused():
            return self._extract(accumulator, empty)

    def _extract(self, accumulator, empty) -> dict[str, Any]:
        return {
            name: {
                group: accumulator[(group, name)].to_json()
                if (group, name) in accumulator
                else empty
                for group in GROUPS
            }
            for name in self._names
        }


class _PartialStatisticsFn(beam.DoFn):
    """One group's batches -> per bundle, `(None, pickled accumulator)`.

    The lifted half of the combine, by hand: `CombineGlobally` first keys every
    element, and Beam samples each untyped element's size by pickling it, so the
    batches were pickled only to be measured. Here they arrive typed (sized for
    free, see `arrow_coder`) and only the accumulator is pickled, once.
    """

    def __init__(self, split_names: Sequence[str], group: str):
        self._combine = _SplitStatisticsFn(split_names)
        self._group = group
        self._accumulator = None

    def start_bundle(self):
        self._accumulator = None

    def process(self, batch):
        if self._accumulator is None:
            self._accumulator = self._combine.create_accumulator()
        self._combine.add_input(self._accumulator, (self._group, batch))

    def finish_bundle(self):
        if self._accumulator is not None:
            payload = pickle.dumps(self._accumulator, pickle.HIGHEST_PROTOCOL)
            self._accumulator = None
            yield GlobalWindows.windowed_value((None, payload))


def _merge_and_write(keyed, output_dir: str, names) -> None:
    """Merges the bundles' pickled accumulators (and a None), writes the results.

    One accumulator is unpickled at a time, in order, and merged into the running
    one (as `merge_accumulators` would over the list): a run of many bundles never
    holds all of them.
    """
    combine = _SplitStatisticsFn(names)
    merged = combine.create_accumulator()
    for payload in keyed[1]:
        if payload:
            with heap.collection_paused():
                accumulator = pickle.loads(payload)
            merged = combine.merge_accumulators([merged, accumulator])
    _write(combine.extract_output(merged), output_dir, names)


def _write(everything: dict, output_dir: str, names: Sequence[str]) -> None:
    directory = output.join(output_dir, STATISTICS_DIR)
    if not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)
    for name in names:
        proto = to_proto(name, everything[name], GROUPS)
        output.write_bytes(directory, f"{name}.pb", proto.SerializeToString())
    output.write_json(directory, STATISTICS_JSON, everything, compact=True)
    _LOGGER.debug("Wrote feature statistics to %s", directory)


class WriteStatistics(beam.PTransform):
    """Computes per-split statistics of raw and transformed rows and writes them.

    Input: a pair (raw batches, transformed `(batch, passthrough)` pairs), both
    with `SPLIT_COLUMN`. Output: none used (the files). Parallelism: one
    accumulator per bundle (the combine's lifted half); the merge and the write are
    one element.
    """

    def __init__(self, output_dir: str, split_names: Sequence[str]):
        super().__init__()
        self._output_dir = output_dir
        self._names = tuple(split_names)

    def expand(self, pcolls):
        raw, transformed = pcolls
        # Each input is reduced in the stage that produces it (a Flatten of the
        # batches would hand the runner every batch to buffer); the bundles'
        # accumulators, one pickled element each, meet in one GroupByKey, not in
        # side inputs (whose cache walks a whole value to size it).
        partials = [
            pcoll
            | f"Partial{group.capitalize()}"
            >> beam.ParDo(_PartialStatisticsFn(self._names, group))
            for group, pcoll in zip(GROUPS, (raw, transformed), strict=True)
        ]
        # Written even when both inputs are empty.
        partials.append(raw.pipeline | "Always" >> beam.Create([(None, None)]))
        return (
            partials
            | "Join" >> beam.Flatten()
            | "Gather" >> beam.GroupByKey()
            | "Write" >> beam.Map(_merge_and_write, self._output_dir, self._names)
        )


def read_statistics(output_dir: str) -> dict[str, Any] | None:
    """`statistics.json` of an output: {split: {"raw": …, "transformed": …}}."""
    path = output.join(output_dir, STATISTICS_DIR, STATISTICS_JSON)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f, heap.collection_paused():
        return json.loads(f.read().decode())
