"""Degenerate outputs: empty splits and NULL split keys, reported or refused.

A job can succeed and still write nothing useful: every label NULL (every row
dropped), an empty source, or a split key that is NULL in every row (all NULL keys
hash alike, so every such row lands in one split and the others stay empty).
`output_warnings` turns the job's counters into one-line warnings, which the job
logs, records in the manifest (`warnings`) and appends to the command's summary
line; with `--fail_on_empty_split` an empty split is an `EmptySplitError` instead,
raised before the manifest is written (the output is never published).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["EmptySplitError", "output_warnings", "empty_splits", "check_empty_splits"]


class EmptySplitError(RuntimeError):
    """A split got no rows and `--fail_on_empty_split` was given."""


def empty_splits(rows_per_split: Mapping[str, int]) -> list[str]:
    """Names of the splits that got no rows, in split order."""
    return [name for name, rows in rows_per_split.items() if rows == 0]


def _why_empty(
    name: str, counts: Mapping[str, int], label: str | None, split_key: str
) -> str:
    rows_read = counts.get("rows_read", 0)
    label_drops = sum(
        v
        for k, v in counts.items()
        if k.startswith("rows_dropped_") and k.endswith("_label")
    )
    prefix = "null_split_key:"
    null_keys = {k[len(prefix) :]: v for k, v in counts.items() if k.startswith(prefix)}
    kept = sum(v for k, v in counts.items() if k.startswith("split:"))
    assigned = counts.get(f"split:{name}", 0)
    if rows_read == 0:
        return "the source has no rows"
    if label is not None and label_drops >= rows_read:
        if counts.get("rows_dropped_null_label", 0) >= rows_read:
            return f"all {rows_read} rows read have a NULL label (--label {label})"
        return (
            f"all {rows_read} rows read were dropped for their label (--label "
            f"{label}; see rows_dropped_* in the manifest)"
        )
    if kept == 0:
        return f"all {rows_read} rows read were dropped (see the manifest)"
    if assigned:
        return (
            f"its {assigned} rows were dropped after the transform (see the manifest)"
        )
    if null_keys and sum(null_keys.values()) == kept:
        target = max(null_keys, key=null_keys.get)  # NULL keys all hash alike
        return (
            f"every row's split key is NULL (--split_key {split_key}), so all "
            f"went to split {target!r}"
        )
    return f"none of the {kept} rows kept hashed to it"


def output_warnings(
    rows_per_split: Mapping[str, int],
    counts: Mapping[str, int],
    label: str | None,
    split_key: str,
) -> list[str]:
    """One-line warnings about the output, for the log, manifest and summary.

    Args:
        rows_per_split: examples written per split, in split order.
        counts: the job's counters (`rows_read`, `rows_dropped_null_label`,
            `split:<name>`, `null_split_key:<name>`).
        label: the raw label column (None when a user module names no raw column).
        split_key: the split key column.
    """
    found = []
    for name in empty_splits(rows_per_split):
        found.append(
            f"split {name!r} is empty: {_why_empty(name, counts, label, split_key)}"
        )
    for key, rows in sorted(counts.items()):
        if key.startswith("null_split_key:") and rows:
            found.append(
                f"{rows} rows have a NULL split key (--split_key {split_key}) and "
                f"all went to split {key.split(':', 1)[1]!r}; choose a NOT NULL key"
            )
    return found


def check_empty_splits(
    rows_per_split: Mapping[str, int], warnings: Sequence[str]
) -> None:
    """Raises EmptySplitError (one line, naming the flag) if a split is empty."""
    empty = empty_splits(rows_per_split)
    if empty:
        reasons = [w for w in warnings if w.startswith("split ")]
        raise EmptySplitError(
            f"--fail_on_empty_split: {'; '.join(reasons)}; the output was not "
            "published (no manifest)"
        )
