"""The Beam shape every source's read shares: partitions, spread, read each, batches.

`read_partitions(pbegin, plan, read_fn)`: one element per planned partition,
spread over the workers by a Reshuffle, `read_fn` (a DoFn yielding the partition's
`pa.RecordBatch`es) on each, the output typed for `arrow_coder`'s batch coder.
"""

from __future__ import annotations

import apache_beam as beam

from pipeline import arrow_coder
from pipeline.sources.read_plan import ReadPlan

__all__ = ["read_partitions"]


def read_partitions(pbegin, plan: ReadPlan, read_fn: beam.DoFn):
    """PCollection[pa.RecordBatch] of every partition of `plan`, read by `read_fn`."""
    return arrow_coder.batches(
        pbegin
        | "CreatePartitions" >> beam.Create(list(plan.partitions))
        | "Spread" >> beam.Reshuffle()
        | "ReadPartition" >> beam.ParDo(read_fn)
    )
