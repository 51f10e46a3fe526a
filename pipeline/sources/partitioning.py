"""Pure partition planning for the parallel PostgreSQL read.

A plan is a list of `Partition`s whose predicates, taken together, select every row
of the source exactly once:

* block ranges (`ctid`) for a table: `[0, b1), [b1, b2), …, [bk, ∞)` — the last range
  is open-ended because the page count is an estimate taken before the read;
* key ranges on a partition column: `key < b1`, `b1 <= key < b2`, …, `key >= bk`, plus
  one `key IS NULL` partition. Bounds come from the data's quantiles (balanced), and
  they split, never filter: NaN sorts above every number in PostgreSQL and lands in
  the last range;
* a single partition that reads everything;
* for a declaratively partitioned table, each leaf partition's own block ranges
  (`Partition.relation` names the leaf, read `FROM ONLY` it).

Only block ranges are `resumable`: in one snapshot, with synchronized scans and
parallel workers off, a heap read by block range returns its rows in the same order
every time, so a lost read can skip the rows it already emitted.

No database, no Beam: these functions are unit- and property-tested on their own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from psycopg2 import sql

__all__ = [
    "Partition",
    "plan_single",
    "plan_block_ranges",
    "plan_key_ranges",
    "plan_leaves",
    "default_num_partitions",
    "where_clause",
]

ROWS_PER_PARTITION = 250_000
MAX_DEFAULT_PARTITIONS = 64


@dataclasses.dataclass(frozen=True)
class Partition:
    """One independent slice of the source.

    Attributes:
        index: position in the plan, 0-based.
        kind: "all", "blocks", "range" or "null".
        lower: inclusive lower bound (block number or key), None for unbounded.
        upper: exclusive upper bound (block number or key), None for unbounded.
        relation: SQL of the relation to read instead of the plan's (a leaf of a
            partitioned table, `ONLY "schema"."leaf"`), None for the plan's.
        relation_label: that relation's name for people (logs, the manifest).
    """

    index: int
    kind: str
    lower: Any = None
    upper: Any = None
    relation: str | None = None
    relation_label: str | None = None

    @property
    def resumable(self) -> bool:
        """Whether a re-run returns its rows in the same order (block ranges only)."""
        return self.kind == "blocks"

    @property
    def label(self) -> str:
        """A short human-readable name for logs, counters and the manifest."""
        of = f" of {self.relation_label}" if self.relation_label else ""
        if self.kind in ("all", "null"):
            return f"p{self.index}:{self.kind}{of}"
        lo = "-inf" if self.lower is None else str(self.lower)
        hi = "+inf" if self.upper is None else str(self.upper)
        return f"p{self.index}:{self.kind}[{lo},{hi}){of}"


def default_num_partitions(row_estimate: int) -> int:
    """About 250k rows per partition, between 1 and 64."""
    wanted = math.ceil(max(row_estimate, 0) / ROWS_PER_PARTITION)
    return max(1, min(MAX_DEFAULT_PARTITIONS, wanted))


def plan_single() -> list[Partition]:
    """One partition reading the whole source."""
    return [Partition(0, "all")]


def plan_block_ranges(num_pages: int, num_partitions: int) -> list[Partition]:
    """Splits `num_pages` heap blocks into contiguous ranges, the last open-ended.

    Args:
        num_pages: current size of the table in blocks (may be stale or 0).
        num_partitions: wanted number of partitions, >= 1. Fewer are returned when
            the table has fewer blocks than that.
    """
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    n = max(1, min(num_partitions, num_pages))
    starts = [(i * num_pages) // n for i in range(n)]
    partitions = []
    for i, start in enumerate(starts):
        upper = starts[i + 1] if i + 1 < n else None
        lower = start if i > 0 else None
        partitions.append(Partition(i, "blocks", lower, upper))
    return partitions


def plan_leaves(
    leaves: Sequence[tuple[str, str, int, bool]], num_partitions: int
) -> list[Partition]:
    """Block ranges per leaf of a partitioned table, numbered across leaves.

    Args:
        leaves: (relation SQL, label, blocks, block ranges possible) per leaf.
            Leaves of 0 blocks hold no row (the size cannot shrink while the
            relation is locked) and are skipped; a leaf that cannot be read by
            block ranges (a foreign table) is read whole.
        num_partitions: wanted in total, spread in proportion to the blocks;
            every non-empty leaf gets at least one.
    """
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    total = sum(max(0, pages) for _, _, pages, _ in leaves)
    partitions: list[Partition] = []
    for relation, label, pages, by_blocks in leaves:
        if by_blocks and pages <= 0:
            continue
        if not by_blocks:
            pieces = [Partition(0, "all")]
        else:
            share = max(1, round(num_partitions * pages / total))
            pieces = plan_block_ranges(pages, share)
        for piece in pieces:
            partitions.append(
                dataclasses.replace(
                    piece,
                    index=len(partitions),
                    relation=relation,
                    relation_label=label,
                )
            )
    return partitions


def plan_key_ranges(bounds: Sequence[Any]) -> list[Partition]:
    """Key ranges split at `bounds`, plus one IS NULL partition.

    Args:
        bounds: candidate split points (e.g. quantiles); duplicates and NULLs are
            dropped, order does not matter. Values must be mutually comparable.

    Returns:
        len(distinct bounds) + 1 range partitions covering every non-NULL key once,
        then the NULL partition.
    """
    cuts = sorted({b for b in bounds if b is not None and not _is_nan(b)})
    edges: list[Any] = [None, *cuts, None]
    partitions = [
        Partition(i, "range", edges[i], edges[i + 1]) for i in range(len(edges) - 1)
    ]
    partitions.append(Partition(len(partitions), "null"))
    return partitions


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def where_clause(partition: Partition, key: sql.Composable | None) -> sql.Composable:
    """The SQL predicate selecting a partition's rows.

    Args:
        partition: the partition.
        key: the quoted partition column (for "range"/"null" partitions).
    """
    if partition.kind == "all":
        return sql.SQL("TRUE")
    if partition.kind == "null":
        return sql.SQL("{} IS NULL").format(key)
    if partition.kind == "blocks":
        ref = sql.SQL("ctid")
        lower = None if partition.lower is None else f"({partition.lower},0)"
        upper = None if partition.upper is None else f"({partition.upper},0)"
        cast = sql.SQL("::tid")
    elif partition.kind == "range":
        ref, lower, upper, cast = key, partition.lower, partition.upper, sql.SQL("")
    else:
        raise ValueError(f"unknown partition kind {partition.kind!r}")
    terms = []
    if lower is not None:
        terms.append(sql.SQL("{} >= {}{}").format(ref, sql.Literal(lower), cast))
    if upper is not None:
        terms.append(sql.SQL("{} < {}{}").format(ref, sql.Literal(upper), cast))
    if not terms:
        if partition.kind == "blocks":
            return sql.SQL("TRUE")
        return sql.SQL("{} IS NOT NULL").format(ref)
    return sql.SQL(" AND ").join(terms)
