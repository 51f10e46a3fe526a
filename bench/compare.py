"""Are two job outputs identical? Every example value by value, files byte for byte.

`python -m bench.compare DIR_A DIR_B` prints the differences (none: exit 0).

Examples are compared per split as multisets (shard layout and order may differ),
first as serialized bytes; only if those differ, each example becomes a canonical
tuple of (feature, kind, raw bytes of its values), floats by their bit patterns,
so -0.0 ≠ 0.0 and a last-bit change is a difference.
The transform graph's assets (vocabularies), `transformed_metadata/` and
`metadata/` are compared byte for byte. The saved graph itself is not: it may
legitimately be built differently.
"""

from __future__ import annotations

import collections
import glob
import gzip
import os
import sys

__all__ = ["compare_outputs"]

_BYTE_FOR_BYTE = ("transform_fn/assets", "transformed_metadata", "metadata")


def _records(path: str):
    """The records of one gzip TFRecord file (length, crc, data, crc framing)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 8], "little")
        offset += 12
        yield data[offset : offset + length]
        offset += length + 4


def _canonical(record: bytes) -> tuple:
    import numpy as np
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(record)
    items = []
    for name, feature in sorted(example.features.feature.items()):
        kind = feature.WhichOneof("kind")
        if kind == "float_list":
            raw = np.asarray(feature.float_list.value, np.float32).tobytes()
        elif kind == "int64_list":
            raw = np.asarray(feature.int64_list.value, np.int64).tobytes()
        elif kind == "bytes_list":
            raw = b"\0".join(v.hex().encode() for v in feature.bytes_list.value)
        else:
            raw = b""
        items.append((name, kind, raw))
    return tuple(items)


def _serialized(out: str, split: str) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for path in sorted(glob.glob(os.path.join(out, split, "part-*.tfrecord.gz"))):
        counts.update(_records(path))
    return counts


def _examples(serialized: collections.Counter) -> collections.Counter:
    return collections.Counter(
        {_canonical(record): n for record, n in serialized.items()}
    )


def _files(root: str) -> dict[str, bytes]:
    found = {}
    for path in sorted(glob.glob(os.path.join(root, "**"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


def compare_outputs(a: str, b: str) -> list[str]:
    """Returns the differences between the outputs in directories `a` and `b`."""
    problems = []
    splits = sorted(
        {
            os.path.basename(os.path.dirname(p))
            for out in (a, b)
            for p in glob.glob(os.path.join(out, "*", "part-*.tfrecord.gz"))
        }
    )
    if not splits:
        problems.append("no example shards in either output")
    for split in splits:
        sa, sb = _serialized(a, split), _serialized(b, split)
        if sa == sb:  # the same bytes: the same values (the fast, common case)
            continue
        ea, eb = _examples(sa), _examples(sb)
        if ea != eb:
            only_a, only_b = ea - eb, eb - ea
            problems.append(
                f"split {split}: {sum(only_a.values())} example(s) only in A, "
                f"{sum(only_b.values())} only in B (of {sum(ea.values())} / "
                f"{sum(eb.values())})"
            )
    for sub in _BYTE_FOR_BYTE:
        fa, fb = _files(os.path.join(a, sub)), _files(os.path.join(b, sub))
        for name in sorted(set(fa) | set(fb)):
            if fa.get(name) != fb.get(name):
                problems.append(f"{sub}/{name} differs")
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m bench.compare DIR_A DIR_B", file=sys.stderr)
        return 2
    problems = compare_outputs(*argv)
    for line in problems:
        print(line)
    print("identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
