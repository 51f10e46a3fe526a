"""What is ours: the layout a run writes, and judging a directory against it.

`--overwrite` may replace only a directory that carries our marker (`.sql2tfrecord`,
written first by every run) or its completion file (`manifest.json`;
`_snapshot.json` for a Parquet snapshot) and holds nothing but what a run writes:
names are checked path by path, links are never followed and count as foreign.
`check_target` turns that into the one-line refusals; `check_disjoint` keeps the
output, the Parquet snapshot and the staging areas apart.
"""

from __future__ import annotations

import dataclasses
import os
import re

from apache_beam.io.filesystems import FileSystems

from pipeline.sink.output import MANIFEST, OutputError, OutputExistsError

__all__ = [
    "MARKER",
    "FORMAT",
    "DirState",
    "LEFTOVER",
    "completion_file",
    "is_local",
    "normalized",
    "objects_below",
    "inspect_dir",
    "check_target",
    "check_disjoint",
]

MARKER = ".sql2tfrecord"
FORMAT = "sql2tfrecord/1"
LEFTOVER = re.compile(r"\.sql2tfrecord-(staging|old)-[0-9a-f]{12}$")

_SPLIT = r"[A-Za-z_][A-Za-z0-9_-]*"
_HEX = r"[0-9a-f]{32}"
# What a run writes, as paths relative to the output (files, then directories).
_LAYOUT = {
    "tfrecord": (
        MANIFEST,
        re.compile(
            "|".join(
                [
                    re.escape(MARKER),
                    re.escape(MANIFEST),
                    rf"\.manifest\.json\.{_HEX}\.tmp",
                    r"(metadata|transformed_metadata)/(schema\.pbtxt|asset_map)",
                    r"transform_fn/(saved_model\.pb|fingerprint\.pb"
                    r"|variables/variables\.(index|data-\d{5}-of-\d{5})"
                    r"|assets/[^/]+|assets\.extra/[^/]+)",
                    rf"{_SPLIT}/part-\d{{5}}-of-\d{{5}}\.tfrecord\.gz",
                    rf"{_SPLIT}/\.incomplete/{_HEX}\.tfrecord\.gz",
                    r"\.tmp/.+",  # tf.Transform's temp dir (without --temp_location)
                    rf"statistics/({_SPLIT}\.pb|statistics\.json)",
                    rf"statistics/\.({_SPLIT}\.pb|statistics\.json)\.{_HEX}\.tmp",
                    r"report\.html",
                    rf"\.report\.html\.{_HEX}\.tmp",
                    # A span's raw rows (pipeline.span_analysis).
                    rf"raw/(part-\d{{5}}-of-\d{{5}}\.parquet|_snapshot\.json"
                    rf"|\._snapshot\.json\.{_HEX}\.tmp|\.incomplete/{_HEX}\.parquet)",
                ]
            )
        ),
        re.compile(
            r"metadata|transformed_metadata|transform_fn|statistics"
            r"|transform_fn/(variables|assets|assets\.extra)"
            rf"|{_SPLIT}|{_SPLIT}/\.incomplete|\.tmp(/.+)?"
        ),
    ),
    "parquet": (
        "_snapshot.json",
        re.compile(
            rf"{re.escape(MARKER)}|_snapshot\.json|\._snapshot\.json\.{_HEX}\.tmp"
            rf"|part-\d{{5}}-of-\d{{5}}\.parquet|\.incomplete/{_HEX}\.parquet"
        ),
        re.compile(r"\.incomplete"),
    ),
}


_FIXED = {
    "metadata",
    "transformed_metadata",
    "transform_fn",
    "statistics",
    ".tmp",
    ".incomplete",
}


@dataclasses.dataclass(frozen=True)
class DirState:
    """What an existing directory holds, judged against a run's layout."""

    exists: bool
    entries: tuple[str, ...] = ()  # relative paths, sorted
    foreign: str | None = None  # the first entry a run does not write
    ours: bool = False  # carries our marker or the completion file
    complete: bool = False  # carries the completion file (manifest)

    @property
    def empty(self) -> bool:
        """Whether the directory is missing or holds nothing."""
        return not self.entries


def completion_file(kind: str) -> str:
    """The file whose presence means an output of `kind` is complete."""
    return _LAYOUT[kind][0]


def is_local(path: str) -> bool:
    """Whether `path` is on the local filesystem (no `scheme://`)."""
    return "://" not in path


def normalized(path: str) -> str:
    """Local paths with links resolved; others without a trailing slash."""
    return os.path.realpath(path) if is_local(path) else path.rstrip("/")


def check_disjoint(paths: dict[str, str]) -> None:
    """Refuses output/input directories that are the same, nested, or staging.

    Two of `--output_dir`, `--raw_parquet_dir`, `--input_parquet` may not be the
    same directory or nested, and none may lie inside a staging area.
    """
    items = [(flag, path, normalized(path)) for flag, path in paths.items() if path]
    for flag, path, norm in items:
        for part in norm.split("/"):
            if LEFTOVER.search(part):
                raise OutputError(
                    f"{flag} {path} is inside {part}, a staging area of sql2tfrecord; "
                    "choose another directory"
                )
    for i, (flag_a, path_a, a) in enumerate(items):
        for flag_b, path_b, b in items[i + 1 :]:
            if a == b:
                raise OutputError(
                    f"{flag_a} and {flag_b} are the same directory ({path_a}); use "
                    "separate directories"
                )
            for (fo, po, o), (fi, pi, n) in (
                ((flag_a, path_a, a), (flag_b, path_b, b)),
                ((flag_b, path_b, b), (flag_a, path_a, a)),
            ):
                if n.startswith(o.rstrip("/") + "/"):
                    raise OutputError(
                        f"{fi} {pi} is inside {fo} {po}; use separate directories"
                    )


def inspect_dir(path: str, kind: str) -> DirState:
    """Lists `path` (never following links) and judges it against `kind`'s layout.

    Locally the walk stops at the first entry a run does not write (a directory of
    another layout is not entered), so `--output_dir ~` costs one listing.
    """
    done, files, dirs = _LAYOUT[kind]
    entries: list[str] = []
    foreign = None
    if is_local(path):
        if not os.path.lexists(path):
            return DirState(False)
        if not os.path.isdir(path):
            return DirState(True, (".",), foreign=".")
        for root, dirnames, filenames in os.walk(path):
            rel_root = os.path.relpath(root, path)
            prefix = "" if rel_root == "." else f"{rel_root}/"
            descend = []
            for name in sorted(filenames) + sorted(dirnames):
                rel, full = prefix + name, os.path.join(root, name)
                if os.path.islink(full):
                    foreign = f"{rel} (a symbolic link)"
                elif name in dirnames:
                    empty = not os.listdir(full)
                    # An empty top-level directory named like a split is not ours.
                    if dirs.fullmatch(rel) and not empty:
                        descend.append(name)
                        continue
                    if dirs.fullmatch(rel) and ("/" in rel or rel in _FIXED):
                        entries.append(rel)
                        continue
                    foreign = f"{rel}/"
                elif not files.fullmatch(rel):
                    foreign = rel
                else:
                    entries.append(rel)
                    continue
                entries.append(foreign)
                break
            if foreign is not None:
                break
            dirnames[:] = descend
    else:
        # An object store has no directories: a prefix without objects is missing.
        prefix = path.rstrip("/") + "/"
        entries = sorted(p[len(prefix) :] for p in objects_below(path))
        if not entries:
            return DirState(False)
        foreign = next((rel for rel in entries if not files.fullmatch(rel)), None)
    names = set(entries)
    return DirState(
        True,
        tuple(entries),
        foreign,
        ours=MARKER in names or done in names,
        complete=done in names,
    )


def objects_below(path: str) -> list[str]:
    """The objects below a prefix of an object store (no directory placeholders)."""
    prefix = path.rstrip("/") + "/"
    match = FileSystems.match([prefix + "**"])
    found = [m.path for m in match[0].metadata_list] if match else []
    return [p for p in found if p.startswith(prefix) and not p.endswith("/")]


def check_target(path: str, state: DirState, overwrite: bool, flag: str) -> None:
    """Raises unless the target may receive a new output.

    It may when missing, empty, or (with `overwrite`) an output of ours that holds
    nothing else.
    """
    if state.empty:
        return
    if state.foreign == ".":
        raise OutputError(f"{flag} {path} is a file, not a directory")
    if state.foreign is not None:
        action = "refusing to --overwrite it" if overwrite else "use a new or empty one"
        raise OutputError(
            f"{flag} {path} holds {state.foreign}, which sql2tfrecord did not write; "
            f"{action}"
        )
    if not state.ours:
        raise OutputError(
            f"{flag} {path} holds {state.entries[0]} but no {MARKER} or {MANIFEST}: "
            "not an sql2tfrecord output; use a new or empty directory"
        )
    if not overwrite:
        what = "a complete output" if state.complete else "an incomplete output"
        raise OutputExistsError(
            f"{flag} {path} holds {what}; pass --overwrite to replace it"
        )
