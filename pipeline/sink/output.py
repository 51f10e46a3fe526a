"""Files of an output: shards published by rename, JSON files, the manifest.

All paths go through Beam's `FileSystems`, so local paths, `gs://` and `s3://` work.
`manifest.json` is published last by write-to-temp-then-rename: its presence means
the output is complete. Where an output is built and how it replaces an old one:
`pipeline.publish`.
"""

from __future__ import annotations

import json
import logging
import posixpath
import uuid
from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

__all__ = [
    "MANIFEST",
    "OutputError",
    "OutputExistsError",
    "publish_shards",
    "write_bytes",
    "write_json",
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


def write_bytes(path: str, name: str, data: bytes) -> str:
    """Publishes `<path>/<name>` atomically (temp file, then rename); its path."""
    final = join(path, name)
    temp = join(path, f".{name}.{uuid.uuid4().hex}.tmp")
    with FileSystems.create(temp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)
    FileSystems.rename([temp], [final])
    return final


def write_json(
    path: str, name: str, value: dict[str, Any], compact: bool = False
) -> str:
    """Publishes `<path>/<name>` atomically (temp file, then rename).

    Indented for reading, or `compact` (one line, no spaces) for large data files:
    Python's JSON encoder is C only without an indent, about 7x faster.
    """
    if compact:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    else:
        text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return write_bytes(path, name, text.encode())


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
