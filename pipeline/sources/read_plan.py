"""The read plan: the contract between a source's planner and its partition readers.

Decided once by the launcher (`session.plan`), carried to every worker, and read by
everything after the read through `raw_arrow_schema`: the Arrow schema of every
batch any source produces (flat typed columns, arrays as lists; types from
`transforms.types.arrow_type`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pyarrow as pa

from pipeline.sources.partitioning import Partition
from transforms.types import Column, arrow_type

__all__ = ["ReadPlan", "raw_arrow_schema"]


@dataclasses.dataclass(frozen=True)
class ReadPlan:
    """Everything a partition reader needs, decided once by the launcher.

    Attributes:
        relation: SQL text of the FROM item (a quoted table or a parenthesised query).
        columns: the projected columns, in output order.
        partitions: slices whose union is every row exactly once.
        partition_key: quoted SQL of the partition column (key-range plans).
        row_estimate: the catalog's estimate, -1 when unknown.
        description: how the plan was chosen, for the log and the manifest.
        table: the resolved `--table` (None for a query): the engine's `TableRef`,
            whose `str()` names it and `stored_locally` says whether it may be
            read twice with the same rows.
        locks: relations locked (ACCESS SHARE) for the job, children included.
        lock_method: how they were locked (the engine's session says).
        row_filter: a condition on `src` every partition's read adds (see
            `pipeline.spans`), or None.
        consistency: what instants the partitions see, for the manifest
            (`one_snapshot`, `per_partition`, `one_instant`); None: the
            manifest says `one_snapshot` when they share an exported snapshot,
            else `per_partition`.
    """

    relation: str
    columns: tuple[Column, ...]
    partitions: tuple[Partition, ...]
    partition_key: str | None
    row_estimate: int
    description: str
    table: Any = None  # the engine's TableRef: str() names it; .stored_locally
    locks: tuple[str, ...] = ()
    lock_method: str = "none"
    row_filter: str | None = None  # SQL ANDed to every partition's WHERE (spans)
    consistency: str | None = None

    @property
    def source_name(self) -> str:
        """What is read, for messages: the table, or `--query` and its tables."""
        if self.table is not None:
            return str(self.table)
        return f"--query (on {', '.join(self.locks)})" if self.locks else "--query"

    def column(self, name: str) -> Column:
        """The projected column called `name`."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


def raw_arrow_schema(plan: ReadPlan) -> pa.Schema:
    """The Arrow schema of the raw batches (flat typed columns, arrays as lists)."""
    return pa.schema(
        [pa.field(c.name, arrow_type(c), nullable=not c.not_null) for c in plan.columns]
    )
