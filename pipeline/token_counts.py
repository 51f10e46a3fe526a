"""Token counts: exact up to a cap of distinct tokens, then tfx-bsl's sketches."""

from __future__ import annotations

import copy

import pyarrow as pa
import pyarrow.compute as pc
from tfx_bsl import sketches

__all__ = ["TOKEN_CAP", "TokenCounts"]

TOKEN_CAP = 10_000


class TokenCounts:
    """Token counts: exact while fewer than `cap` distinct, then KMV + Misra-Gries.

    Each batch is reduced with `pyarrow.compute.value_counts`; pending counts are
    summed with a vectorised group-by. Past `cap` distinct tokens the exact table
    is handed to the sketches (the counts as Misra-Gries weights) and later batches
    go to them directly.
    """

    def __init__(self, cap: int = TOKEN_CAP):
        self.cap = cap
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.kmv = None
        self.mg = None

    @property
    def exact(self) -> bool:
        """Whether the counts are exact (fewer than `cap` distinct tokens)."""
        return self.kmv is None

    def add(self, values: pa.Array) -> None:
        """Counts a flat binary array's values."""
        if not self.exact:
            self.kmv.AddValues(values)
            self.mg.AddValues(values)
            return
        counts = pc.value_counts(values)
        self._pend(
            pa.table(
                {
                    "values": counts.field("values"),
                    "counts": counts.field("counts"),
                }
            )
        )

    def _pend(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows > 4 * self.cap:
            self._consolidate()

    def _consolidate(self) -> None:
        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        if len(self.pending) > 1:
            table = table.group_by("values").aggregate([("counts", "sum")])
            table = table.rename_columns(["values", "counts"])
        self.pending, self.pending_rows = [table], table.num_rows
        if table.num_rows >= self.cap:
            self._to_sketches(table)

    def _to_sketches(self, table: pa.Table | None = None) -> None:
        if table is None:
            self._consolidate()
            if not self.exact:
                return
            table = self.pending[0] if self.pending else None
        self.kmv = sketches.KmvSketch(self.cap)
        self.mg = sketches.MisraGriesSketch(self.cap)
        if table is not None and table.num_rows:
            values = table.column("values").combine_chunks()
            weights = table.column("counts").combine_chunks().cast(pa.float32())
            self.kmv.AddValues(values)
            self.mg.AddValues(values, weights)
        self.pending, self.pending_rows = [], 0

    def merge(self, other: TokenCounts) -> None:
        """Adds `other`'s counts."""
        if self.exact and other.exact:
            for table in other.pending:
                self._pend(table)
            return
        if self.exact:
            self._to_sketches()
        if other.exact:
            other = copy.deepcopy(other)
            other._to_sketches()  # noqa: SLF001 - same class
        self.kmv.Merge(other.kmv)
        self.mg.Merge(other.mg)

    def result(self) -> tuple[int, bool, list[tuple[bytes, int]]]:
        """(unique count, exact, tokens by descending count then bytes)."""
        self._consolidate()
        if self.exact:
            if not self.pending:
                return 0, True, []
            table = self.pending[0]
            order = pc.sort_indices(
                table, sort_keys=[("counts", "descending"), ("values", "ascending")]
            )
            table = table.take(order)
            tokens = list(
                zip(
                    table.column("values").to_pylist(),
                    table.column("counts").to_pylist(),
                    strict=True,
                )
            )
            return len(tokens), True, tokens
        estimate = self.mg.Estimate().to_pylist()
        tokens = sorted(
            ((t["values"], int(t["counts"])) for t in estimate),
            key=lambda tc: (-tc[1], tc[0]),
        )
        return int(self.kmv.Estimate()), False, tokens
