"""Beam side of the statistics: one combine per split over the batches the job has.

`WriteStatistics` takes the split-tagged raw batches (`AssignSplit`'s output) and
the transformed `(batch, passthrough)` pairs (`TransformDataset`'s output), both
carrying `SPLIT_COLUMN`, and combines each into per-split `SplitStatistics`
(combiner lifting: each bundle reduces its batches to accumulators, only those
are shuffled; no row is held and the database is not read again). It writes
`<output>/statistics/<split>.pb` (a tensorflow_metadata
`DatasetFeatureStatisticsList`, raw features by name and transformed ones as
`transformed/<name>`) and `<output>/statistics/statistics.json` (all splits, with
the exact histograms and token counts that drift checks and the report use).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline import output
from pipeline.assign import SPLIT_COLUMN, _split_indices, _split_parts
from pipeline.statistics import SplitStatistics, to_proto

__all__ = ["STATISTICS_DIR", "STATISTICS_JSON", "WriteStatistics", "read_statistics"]

_LOGGER = logging.getLogger(__name__)

STATISTICS_DIR = "statistics"
STATISTICS_JSON = "statistics.json"
GROUPS = ("raw", "transformed")


class _SplitStatisticsFn(beam.CombineFn):
    """Batches (or `(batch, passthrough)` pairs) -> {split name: SplitStatistics}."""

    def __init__(self, split_names: Sequence[str]):
        self._names = tuple(split_names)

    def create_accumulator(self) -> dict[str, SplitStatistics]:
        return {}

    def add_input(self, accumulator, element):
        if isinstance(element, tuple):
            batch, unary = element
        else:
            batch, unary = element, {}
        indices = _split_indices(batch, unary)
        for split, part in _split_parts(batch, indices):
            name = self._names[split]
            stats = accumulator.get(name)
            if stats is None:
                stats = accumulator[name] = SplitStatistics.for_schema(
                    batch.schema, exclude=(SPLIT_COLUMN,)
                )
            stats.add(part)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged: dict[str, SplitStatistics] = {}
        for accumulator in accumulators:
            for name, stats in accumulator.items():
                if name in merged:
                    merged[name].merge(stats)
                else:
                    merged[name] = stats
        return merged

    def extract_output(self, accumulator) -> dict[str, Any]:
        empty = {"rows": 0, "features": {}}
        return {
            name: accumulator[name].to_json() if name in accumulator else empty
            for name in self._names
        }


def _write_bytes(directory: str, name: str, data: bytes) -> None:
    final = output.join(directory, name)
    temp = output.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    with FileSystems.create(temp) as f:
        f.write(data)
    FileSystems.rename([temp], [final])


def _write(raw: dict, transformed: dict, output_dir: str, names: Sequence[str]) -> None:
    directory = output.join(output_dir, STATISTICS_DIR)
    if not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)
    everything = {}
    for name in names:
        groups = {"raw": raw[name], "transformed": transformed[name]}
        everything[name] = groups
        proto = to_proto(name, groups, GROUPS)
        _write_bytes(directory, f"{name}.pb", proto.SerializeToString())
    output.write_json(directory, STATISTICS_JSON, everything)
    _LOGGER.info("Wrote feature statistics to %s", directory)


class WriteStatistics(beam.PTransform):
    """Computes per-split statistics of raw and transformed rows and writes them.

    Input: a pair (tagged raw batches, transformed `(batch, passthrough)` pairs),
    both with `SPLIT_COLUMN`. Output: none used (the files). Parallelism: lifted
    combines, one accumulator per bundle; the write is one element.
    """

    def __init__(self, output_dir: str, split_names: Sequence[str]):
        super().__init__()
        self._output_dir = output_dir
        self._names = tuple(split_names)

    def expand(self, pcolls):
        raw, transformed = pcolls
        fn = _SplitStatisticsFn(self._names)
        raw_stats = raw | "CombineRaw" >> beam.CombineGlobally(fn)
        transformed_stats = transformed | "CombineTransformed" >> (
            beam.CombineGlobally(fn)
        )
        return raw_stats | "Write" >> beam.Map(
            _write,
            beam.pvalue.AsSingleton(transformed_stats),
            self._output_dir,
            self._names,
        )


def read_statistics(output_dir: str) -> dict[str, Any] | None:
    """`statistics.json` of an output: {split: {"raw": …, "transformed": …}}."""
    path = output.join(output_dir, STATISTICS_DIR, STATISTICS_JSON)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode())

