"""Exact histograms in power-of-two bins that merge and compare bin for bin.

Pure module (numpy). `Histogram` counts values in bins `[i * 2**k, (i + 1) * 2**k)`
(at most `FINE_BINS`; a wider range doubles the width), so two histograms always
share edges once brought to the same width: `common_bins` puts several on the
same at most `DISPLAY_BINS` bins (train, eval, a baseline), `display_bins` one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["DISPLAY_BINS", "FINE_BINS", "Histogram", "common_bins", "display_bins"]

FINE_BINS = 1024
DISPLAY_BINS = 24


class Histogram:
    """Exact counts in bins `[i * 2**k, (i + 1) * 2**k)`, i in `lo .. lo+len-1`."""

    def __init__(self, integer: bool, max_bins: int = FINE_BINS):
        self.integer = integer
        self.max_bins = max_bins
        self.k: int | None = None
        self.lo = 0
        self.counts = np.zeros(0, dtype=np.int64)

    def _index(self, value, k: int) -> int:
        if self.integer:
            return int(value) >> k
        return math.floor(math.ldexp(float(value), -k))

    def _indices(self, values: np.ndarray, k: int) -> np.ndarray:
        if self.integer:
            return values.astype(np.int64) >> k
        return np.floor(np.ldexp(values, -k)).astype(np.int64)

    def _floor_k(self, vmin, vmax) -> int:
        if self.integer:
            return 0
        largest = max(abs(float(vmin)), abs(float(vmax)))
        # Keep |value| / 2**k below 2**60 so bin indices fit an int64.
        return max(-1074, math.frexp(largest)[1] - 60) if largest else -1074

    def _coarsen(self, k: int) -> None:
        if self.k is None or k == self.k:
            self.k = k
            return
        shift = k - self.k
        old = np.arange(self.lo, self.lo + len(self.counts), dtype=np.int64)
        new = old >> shift
        lo = int(new[0]) if len(new) else self.lo >> shift
        counts = np.zeros(int(new[-1]) - lo + 1 if len(new) else 0, dtype=np.int64)
        np.add.at(counts, new - lo, self.counts)
        self.k, self.lo, self.counts = k, lo, counts

    def _fit(self, vmin, vmax) -> int:
        """The smallest width exponent that holds the old bins and [vmin, vmax]."""
        k = self._floor_k(vmin, vmax)
        if self.k is not None:
            k = max(k, self.k)
        span = float(vmax) - float(vmin)
        if span > 0:
            if math.isinf(span):  # e.g. -1e308 .. 1e308: the same width, halved first
                span = float(vmax) / 2 - float(vmin) / 2
                k = max(k, math.floor(math.log2(span / self.max_bins)) + 1)
            else:
                k = max(k, math.floor(math.log2(span / self.max_bins)))
        while True:
            lo, hi = self._index(vmin, k), self._index(vmax, k)
            if self.k is not None and len(self.counts):
                shift = k - self.k
                lo = min(lo, self.lo >> shift)
                hi = max(hi, (self.lo + len(self.counts) - 1) >> shift)
            if hi - lo + 1 <= self.max_bins:
                return k
            k += 1

    def _extend(self, lo: int, hi: int) -> None:
        if not len(self.counts):
            self.lo, self.counts = lo, np.zeros(hi - lo + 1, dtype=np.int64)
            return
        new_lo = min(lo, self.lo)
        new_hi = max(hi, self.lo + len(self.counts) - 1)
        counts = np.zeros(new_hi - new_lo + 1, dtype=np.int64)
        counts[self.lo - new_lo : self.lo - new_lo + len(self.counts)] = self.counts
        self.lo, self.counts = new_lo, counts

    def add(self, values: np.ndarray, vmin=None, vmax=None) -> None:
        """Counts finite `values` (int64 for an integer histogram, else float64).

        `vmin`/`vmax`: the values' min and max if the caller has them.
        """
        if not len(values):
            return
        if vmin is None or vmax is None:
            vmin, vmax = values.min(), values.max()
        self._coarsen(self._fit(vmin, vmax))
        index = self._indices(values, self.k)
        self._extend(self._index(vmin, self.k), self._index(vmax, self.k))
        self.counts += np.bincount(index - self.lo, minlength=len(self.counts))

    @staticmethod
    def add_segments(
        hists: Sequence[Histogram],
        values: np.ndarray,
        starts: np.ndarray,
        sizes: np.ndarray,
        lows: np.ndarray,
        highs: np.ndarray,
    ) -> None:
        """`hists[i].add(values[starts[i]:][:sizes[i]], lows[i], highs[i])` for all i.

        The same counts; segments whose values fall in their histogram's current
        bins (the usual case after the first batch) are counted by one bincount.
        """
        known = np.array([h.k is not None for h in hists])
        k = np.array([h.k or 0 for h in hists], dtype=np.int64)
        lo = np.array([h.lo for h in hists], dtype=np.int64)
        bins = np.array([len(h.counts) for h in hists], dtype=np.int64)
        # What `_fit` keeps: the current width, when [low, high] lies in its bins.
        if hists[0].integer:
            fits = (lows >> k >= lo) & (highs >> k < lo + bins)
        else:
            largest = np.maximum(np.abs(lows), np.abs(highs))
            floor_k = np.where(
                largest > 0, np.maximum(-1074, np.frexp(largest)[1] - 60), -1074
            )
            with np.errstate(invalid="ignore"):  # past int64: not fitting anyway
                first = np.floor(np.ldexp(lows, -k)).astype(np.int64)
                last = np.floor(np.ldexp(highs, -k)).astype(np.int64)
            fits = (floor_k <= k) & (first >= lo) & (last < lo + bins)
        fits &= known & (bins > 0)
        for i in np.flatnonzero(~fits).tolist():
            start = int(starts[i])
            hists[i].add(values[start : start + int(sizes[i])], lows[i], highs[i])
        if not fits.any():
            return
        chosen = np.flatnonzero(fits)
        offsets = np.concatenate(([0], np.cumsum(bins[chosen])[:-1]))
        picked = np.repeat(fits, sizes)
        part = values if picked.all() else values[picked]
        repeat = sizes[chosen]
        shift = np.repeat(k[chosen], repeat)
        if hists[0].integer:
            index = part >> shift
        else:
            index = np.floor(np.ldexp(part, -shift)).astype(np.int64)
        index += np.repeat(offsets - lo[chosen], repeat)
        counts = np.bincount(index, minlength=int(bins[chosen].sum()))
        for i, start in zip(chosen.tolist(), offsets.tolist(), strict=True):
            hists[i].counts += counts[start : start + len(hists[i].counts)]

    def merge(self, other: Histogram) -> None:
        """Adds `other`'s counts (same `integer`)."""
        if other.k is None or not len(other.counts):
            return
        if self.k is None or not len(self.counts):
            self.k, self.lo, self.counts = other.k, other.lo, other.counts.copy()
            return
        other = other.copy()
        k = max(self.k, other.k)
        while True:
            lo = min(self.lo >> (k - self.k), other.lo >> (k - other.k))
            hi = max(
                (self.lo + len(self.counts) - 1) >> (k - self.k),
                (other.lo + len(other.counts) - 1) >> (k - other.k),
            )
            if hi - lo + 1 <= self.max_bins:
                break
            k += 1
        self._coarsen(k)
        other._coarsen(k)
        self._extend(other.lo, other.lo + len(other.counts) - 1)
        start = other.lo - self.lo
        self.counts[start : start + len(other.counts)] += other.counts

    def edge(self, index: int) -> float:
        """The lower edge of bin `index` (an int for integer histograms).

        An edge past the largest float is ±inf (the top of a bin holding it).
        """
        if self.integer:
            return index << self.k
        try:
            return math.ldexp(index, self.k)
        except OverflowError:
            return math.copysign(math.inf, index)

    def copy(self) -> Histogram:
        """An independent copy."""
        other = Histogram(self.integer, self.max_bins)
        other.k, other.lo, other.counts = self.k, self.lo, self.counts.copy()
        return other

    def to_json(self) -> dict[str, Any]:
        """`{"integer", "k", "lo", "counts"}`: bin i covers [(lo+i)*2**k, +2**k)."""
        return {
            "integer": self.integer,
            "k": self.k,
            "lo": self.lo,
            "counts": self.counts.tolist(),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Histogram:
        """The inverse of `to_json`."""
        hist = cls(bool(value["integer"]))
        hist.k, hist.lo = value["k"], int(value["lo"])
        hist.counts = np.array(value["counts"], dtype=np.int64)
        return hist


def _within(hist: Histogram, max_bins: int) -> Histogram:
    """A trimmed `hist` widened until at most `max_bins` bins remain, then trimmed.

    The same bins as widening by one step and trimming until they fit: the first
    and last non-empty bins of a wider histogram are those of the trimmed one's
    ends, so one widening by the smallest shift that fits does it.
    """
    out = _trimmed(hist)
    lo, hi = out.lo, out.lo + len(out.counts) - 1
    shift = 0
    while (hi >> shift) - (lo >> shift) + 1 > max_bins:
        shift += 1
    if shift:
        out._coarsen(out.k + shift)  # noqa: SLF001 - same class
        out = _trimmed(out)
    return out


def _trimmed(hist: Histogram) -> Histogram:
    nonzero = np.flatnonzero(hist.counts)
    out = hist.copy()
    if len(nonzero):
        out.lo = hist.lo + int(nonzero[0])
        out.counts = hist.counts[nonzero[0] : nonzero[-1] + 1].copy()
    return out


def display_bins(
    hist: Histogram, max_bins: int = DISPLAY_BINS
) -> list[tuple[float, float, int]]:
    """`(low, high, count)` of at most `max_bins` equal-width bins (exact counts)."""
    if hist.k is None or not hist.counts.any():
        return []
    out = _within(hist, max_bins)
    return [
        (out.edge(out.lo + i), out.edge(out.lo + i + 1), int(c))
        for i, c in enumerate(out.counts)
    ]


def common_bins(
    hists: Sequence[Histogram], max_bins: int = DISPLAY_BINS
) -> tuple[list[float], list[np.ndarray]]:
    """All histograms over the same at most `max_bins` bins: (edges, counts of each).

    Exact: the shared bins are unions of each histogram's own bins.
    """
    merged = Histogram(hists[0].integer if hists else False)
    for hist in hists:
        merged.merge(_trimmed(hist))
    if merged.k is None:
        return [], [np.zeros(0, dtype=np.int64) for _ in hists]
    merged = _within(merged, max_bins)
    out = []
    for hist in hists:
        hist = hist.copy()
        counts = np.zeros(len(merged.counts), dtype=np.int64)
        if hist.k is not None and len(hist.counts):
            hist._coarsen(merged.k)  # noqa: SLF001 - same class
            index = np.arange(hist.lo, hist.lo + len(hist.counts)) - merged.lo
            keep = hist.counts > 0
            np.add.at(counts, index[keep], hist.counts[keep])
        out.append(counts)
    edges = [merged.edge(merged.lo + i) for i in range(len(merged.counts) + 1)]
    return edges, out
