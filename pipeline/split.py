"""Deterministic train/eval assignment by hashing a split key.

A row's split depends only on its split-key value: the same on every rerun, runner
and partition plan. Integer-like keys (int, date, timestamp, bool) are mixed with
SplitMix64; text keys with CRC-32 of their UTF-8 bytes followed by SplitMix64; float
keys by their IEEE bits. The hash modulo the sum of weights picks the split by
cumulative weight. Rows whose key is NULL all hash like the value 0 (so they land in
one split together); choose a NOT NULL split key to avoid that.
"""

from __future__ import annotations

import dataclasses
import re
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["SplitSpec", "parse_splits", "hash_keys", "assign_splits"]

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """Named splits with integer weights, e.g. (("train", 80), ("eval", 20))."""

    splits: tuple[tuple[str, int], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Split names in order."""
        return tuple(name for name, _ in self.splits)

    @property
    def total(self) -> int:
        """Sum of the weights."""
        return sum(w for _, w in self.splits)


# Directories of the output layout a split's shard directory must not take.
RESERVED_NAMES = frozenset(
    {"metadata", "transformed_metadata", "transform_fn", "statistics", "raw"}
)
_SPLIT_ITEM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(\d+)\s*$")


def parse_splits(text: str) -> SplitSpec:
    """Parses `--splits` such as "train=80,eval=20". Raises ValueError with the rule."""
    items = [item for item in text.split(",") if item.strip()]
    splits, names, folded = [], set(), set()  # folded: the names in lower case
    for item in items:
        match = _SPLIT_ITEM.match(item)
        if not match:
            raise ValueError(
                f"`--splits` must look like train=80,eval=20, got {text!r}"
            )
        name, weight = match.group(1), int(match.group(2))
        # Each split is a directory: names equal up to case would be one
        # directory on a case-insensitive filesystem (macOS, Windows).
        if name.lower() in folded:
            raise ValueError(
                f"`--splits` names split {name!r} twice (split names are "
                "directories: they must differ in more than case)"
            )
        if name.lower() in RESERVED_NAMES:
            raise ValueError(
                f"`--splits` split name {name!r} is a directory of the output "
                "layout; choose another (reserved: "
                f"{', '.join(sorted(RESERVED_NAMES))})"
            )
        if weight <= 0:
            raise ValueError(
                f"`--splits` weight of {name!r} must be >= 1, got {weight}"
            )
        names.add(name)
        folded.add(name.lower())
        splits.append((name, weight))
    if "train" not in names:
        raise ValueError(f"`--splits` must include a 'train' split, got {text!r}")
    return SplitSpec(tuple(splits))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_keys(keys: pa.Array) -> np.ndarray:
    """Stable 64-bit hashes of a key column (NULL hashes like 0)."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    kind = keys.type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        raw = pc.fill_null(keys.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        return _splitmix64(raw.view(np.uint64))
    if pa.types.is_floating(kind):
        raw = pc.fill_null(keys.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        return _splitmix64(raw.view(np.uint64))
    if (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    ):
        crc = np.fromiter(
            (
                0
                if v is None
                else zlib.crc32(v if isinstance(v, bytes) else v.encode())
                for v in keys.to_pylist()
            ),
            dtype=np.uint64,
            count=len(keys),
        )
        return _splitmix64(crc)
    raise ValueError(f"--split_key: cannot hash a column of Arrow type {kind}")


def assign_splits(keys: pa.Array, spec: SplitSpec) -> np.ndarray:
    """Returns, per row, the index of its split in `spec.splits`."""
    buckets = hash_keys(keys) % np.uint64(spec.total)
    edges = np.cumsum([w for _, w in spec.splits]).astype(np.uint64)
    return np.searchsorted(edges, buckets, side="right").astype(np.int64)


def split_counts(assignment: np.ndarray, spec: SplitSpec) -> dict[str, int]:
    """How many rows each split received (for tests and logs)."""
    counts = np.bincount(assignment, minlength=len(spec.splits))
    return {name: int(c) for name, c in zip(spec.names, counts, strict=True)}
