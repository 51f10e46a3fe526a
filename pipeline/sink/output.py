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

from apache_beam.io.filesystems import FileSystems

__all__ = [
    "MANIFEST",
    "OutputError",
    "OutputExistsError",
    "publish_shards",
    "dumps",
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


_SCALARS = {
    str: json.encoder.encode_basestring_ascii,
    int: int.__repr__,
    float: lambda x: json.dumps(x),
    bool: lambda x: "true" if x else "false",
    type(None): lambda x: "null",
}


def _render(item: Any, level: int) -> str | None:
    """A list as the indenting encoder writes it at `level`.

    None if it holds anything but lists and plain str/int/float/bool/None.
    """
    if not item:
        return "[]"
    inner = "  " * (level + 1)
    types = set(map(type, item))
    if types <= {int, float}:  # the C encoder, then its separator replaced
        body = json.dumps(item)[1:-1].replace(", ", ",\n" + inner)
    else:
        parts = []
        for x in item:
            kind = type(x)
            if kind is list or kind is tuple:
                text = _render(x, level + 1)
                if text is None:
                    return None
                parts.append(text)
            elif kind in _SCALARS:
                parts.append(_SCALARS[kind](x))
            else:
                return None
        body = (",\n" + inner).join(parts)
    return f"[\n{inner}{body}\n{'  ' * level}]"


def dumps(value: Any) -> str:
    """`json.dumps(value, indent=2, sort_keys=True, default=str)`, the same text.

    Lists of lists and plain scalars (histogram counts, token counts) are rendered
    directly, numbers by the C encoder; the rest of the value, with a unique
    placeholder string for each such list, by the (pure Python) indenting encoder.
    """
    nonce = uuid.uuid4().hex
    lists: list[str] = []

    def reduce(item: Any, level: int) -> Any:
        if isinstance(item, dict):
            return {k: reduce(v, level + 1) for k, v in item.items()}
        if isinstance(item, list | tuple):
            text = _render(item, level)
            if text is None:
                return [reduce(v, level + 1) for v in item]
            lists.append(text)
            return f"{nonce}:{len(lists) - 1}"
        return item

    text = json.dumps(reduce(value, 0), indent=2, sort_keys=True, default=str)
    parts = text.split(f'"{nonce}:')
    if len(parts) != len(lists) + 1:  # a placeholder lost (a key, or default=str)
        return json.dumps(value, indent=2, sort_keys=True, default=str)
    out = [parts[0]]
    for part in parts[1:]:
        index, rest = part.split('"', 1)
        out.append(lists[int(index)])
        out.append(rest)
    return "".join(out)


def write_json(path: str, name: str, value: dict[str, Any]) -> str:
    """Publishes `<path>/<name>` atomically (temp file, then rename)."""
    final = join(path, name)
    temp = join(path, f".{name}.{uuid.uuid4().hex}.tmp")
    with FileSystems.create(temp) as f:
        f.write(dumps(value).encode())
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
