"""`--analyze_spans N`: fit the analyzers on the train rows of the last N spans.

Every span lands its raw rows (catalog-typed Arrow, NULLs kept) as Parquet in
`span-NNNN/raw/` (`pipeline.sources.parquet`), so a later run reads the earlier spans'
rows from there, never from the database (their rows may since have been updated
or deleted). `ReadEarlierSpans` reads them with counters of their own: the span's
reported counts stay its own rows.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from pipeline import METRICS_NAMESPACE, arrow_coder, spans
from pipeline.sink import output
from pipeline.sources.parquet import SnapshotError, read_snapshot_info

__all__ = ["RAW_DIR", "EARLIER_NAMESPACE", "earlier_spans", "ReadEarlierSpans"]

RAW_DIR = spans.RAW
EARLIER_NAMESPACE = f"{METRICS_NAMESPACE}.earlier_spans"


def earlier_spans(output_dir: str, target: spans.SpanTarget, n: int, columns) -> list:
    """The N-1 complete spans before `target` whose raw rows the analysis reads.

    Raises:
        spans.SpanError: fewer complete spans, a span without its raw rows, or
            raw columns other than this run's (names and types).
    """
    done = [k for k in spans.complete_spans(output_dir) if k < target.number]
    chosen = done[len(done) - (n - 1) :] if n > 1 else []
    if len(chosen) < n - 1:
        raise spans.SpanError(
            f"--analyze_spans {n}: {output_dir} has {len(done)} complete spans "
            f"before span-{target.number:04d}; it needs {n - 1}"
        )
    want = {(c.name, c.display_type) for c in columns}
    for number in chosen:
        raw = output.join(spans.span_dir(output_dir, number), RAW_DIR)
        try:
            _, have = read_snapshot_info(raw)
        except SnapshotError as err:
            raise spans.SpanError(
                f"--analyze_spans {n}: span-{number:04d} has no complete raw rows "
                f"({str(err).split(': ', 1)[-1]})"
            ) from None
        if {(c.name, c.display_type) for c in have} != want:
            raise spans.SpanError(
                f"--analyze_spans {n}: span-{number:04d} landed other columns "
                f"({sorted(c.name for c in have)}) than this run reads "
                f"({sorted(c.name for c in columns)}); use fewer spans"
            )
    return chosen


class ReadEarlierSpans(beam.PTransform):
    """Output: PCollection[pa.RecordBatch], the raw rows of earlier spans."""

    def __init__(self, directories: list[str], schema: pa.Schema):
        super().__init__()
        self._directories, self._schema = directories, schema

    def expand(self, pbegin):
        patterns = [output.join(d, "part-*.parquet") for d in self._directories]
        schema = self._schema
        return arrow_coder.batches(
            pbegin
            | "Patterns" >> beam.Create(patterns)
            | "ReadParquet" >> beam.io.ReadAllFromParquetBatched()
            | "ToBatches" >> beam.FlatMap(_batches, schema)
        )


def _batches(table: pa.Table, schema: pa.Schema):
    yield from table.select(schema.names).cast(schema).to_batches()
