"""The output directory: refusing to clobber, clearing, and the manifest written last.

All paths go through Beam's `FileSystems`, so local paths, `gs://` and `s3://` work.
`manifest.json` is published last by write-to-temp-then-rename: its presence means
the output is complete. A run removes any old manifest before writing anything.
"""

from __future__ import annotations

import json
import logging
import posixpath
import uuid
from typing import Any

from apache_beam.io.filesystems import FileSystems

__all__ = [
    "MANIFEST",
    "OutputError",
    "OutputExistsError",
    "publish_shards",
    "write_json",
    "prepare_output_dir",
    "write_manifest",
    "read_manifest",
    "join",
]

_LOGGER = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class OutputError(RuntimeError):
    """The output directory cannot be used; the message names it and why."""


class OutputExistsError(OutputError):
    """The output directory is not empty and --overwrite was not given."""


def join(base: str, *parts: str) -> str:
    """Joins path parts for any Beam filesystem."""
    return (
        FileSystems.join(base, *parts)
        if "://" in base
        else posixpath.join(base, *parts)
    )


def _is_nonempty_dir(path: str) -> bool:
    if not FileSystems.exists(path):
        return False
    match = FileSystems.match([join(path, "**")], limits=[1])
    return bool(match and match[0].metadata_list)


def prepare_output_dir(path: str, overwrite: bool, flag: str = "--output_dir") -> None:
    """Refuses a non-empty output without --overwrite; with it, deletes the old output.

    The old manifest is deleted first, so an interrupted clean-up never leaves an
    output that looks complete.
    """
    if _is_nonempty_dir(path):
        if not overwrite:
            complete = FileSystems.exists(join(path, MANIFEST))
            state = "holds a complete output" if complete else "is not empty"
            raise OutputExistsError(
                f"{flag} {path} {state}; pass --overwrite to replace it"
            )
        _LOGGER.info("Removing the existing output %s (--overwrite)", path)
        if FileSystems.exists(join(path, MANIFEST)):
            FileSystems.delete([join(path, MANIFEST)])
        FileSystems.delete([path])
    if "://" not in path:
        import os

        try:
            os.makedirs(path, exist_ok=True)
            probe = os.path.join(path, f".write-test-{uuid.uuid4().hex}")
            with open(probe, "wb"):
                pass
            os.remove(probe)
        except OSError as err:
            raise OutputError(
                f"{flag} {path} is not writable: {err.strerror or err}"
            ) from err


def publish_shards(
    temp_paths: list[str], directory: str, temp_dir: str, suffix: str
) -> list[str]:
    """Renames complete temporary files to `part-SSSSS-of-NNNNN<suffix>`.

    Then removes `temp_dir`; returns the final paths in shard order.
    """
    temp_paths = sorted(temp_paths)
    total = len(temp_paths)
    final = [
        join(directory, f"part-{i:05d}-of-{total:05d}{suffix}") for i in range(total)
    ]
    if temp_paths:
        FileSystems.rename(temp_paths, final)
    if FileSystems.exists(temp_dir):
        FileSystems.delete([temp_dir])
    return final


def write_json(path: str, name: str, value: dict[str, Any]) -> str:
    """Publishes `<path>/<name>` atomically (temp file, then rename)."""
    final = join(path, name)
    temp = join(path, f".{name}.{uuid.uuid4().hex}.tmp")
    with FileSystems.create(temp) as f:
        f.write(json.dumps(value, indent=2, sort_keys=True, default=str).encode())
    FileSystems.rename([temp], [final])
    return final


def write_manifest(path: str, manifest: dict[str, Any]) -> str:
    """Publishes `<path>/manifest.json` atomically (temp file, then rename)."""
    return write_json(path, MANIFEST, manifest)


def read_manifest(path: str) -> dict[str, Any]:
    """Reads the manifest of a complete output; FileNotFoundError when incomplete."""
    final = join(path, MANIFEST)
    if not FileSystems.exists(final):
        raise FileNotFoundError(
            f"{path} has no {MANIFEST}: not an sql2tfrecord output, or incomplete"
        )
    with FileSystems.open(final) as f:
        return json.loads(f.read().decode())
