"""Arrow record batches -> framed TFRecords of serialized tf.Examples. No Beam, no TF.

`encode_framed(batch)` returns the bytes of a TFRecord file segment: for each row,
`<len u64><masked crc32c(len) u32><tf.Example><masked crc32c(example) u32>`.

Two encoders give the same `tf.train.Example`s (tests compare them message by
message, over random values, names and sizes):

* the vectorised one (`encode_dense`) for what the built-in features produce: every
  column a `large_list<float32 | int64>` (or `list<…>`) with exactly one value per
  row. Each column becomes a fixed-width block of bytes per row (its constant
  protobuf prefix, then the 4 float bytes or the ≤10 varint bytes), all blocks sit
  side by side in one 2-D array and a byte mask drops the unused varint bytes, a
  few NumPy operations per batch instead of a loop per row (bench/RESULTS.md);
* tfx-bsl's C++ `RecordBatchToExamplesEncoder` for everything else (strings,
  variable-length and multi-valued features, very long feature names).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import google_crc32c
import numpy as np
import pyarrow as pa
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

__all__ = ["encode_framed", "encode_dense", "frame_records", "dense_layout_supported"]

_MAX_KEY_BYTES = 100  # keeps every per-feature length below 128: one varint byte
_CRC_DELTA = np.uint32(0xA282EAD8)
_PACK_LENGTH = struct.Struct("<Q").pack
_PACK_CRC = struct.Struct("<I").pack
_HEADERS: dict[int, bytes] = {}  # record length -> 12-byte TFRecord header


def _mask(crcs: np.ndarray) -> np.ndarray:
    crcs = crcs.astype(np.uint32)
    return ((crcs >> np.uint32(15)) | (crcs << np.uint32(17))) + _CRC_DELTA


def _header(length: int) -> bytes:
    header = _HEADERS.get(length)
    if header is None:
        packed = _PACK_LENGTH(length)
        crc = int(_mask(np.array([google_crc32c.value(packed)]))[0])
        header = _HEADERS[length] = packed + _PACK_CRC(crc)
    return header


def frame_records(records: Sequence[bytes]) -> bytes:
    """TFRecord framing: <len u64><crc(len) u32><data><crc(data) u32>, masked crc32c."""
    crcs = np.fromiter(
        map(google_crc32c.value, records), dtype=np.uint32, count=len(records)
    )
    footers = _mask(crcs).astype("<u4").tobytes()
    parts: list[bytes] = []
    extend = parts.extend
    for i, record in enumerate(records):
        extend((_header(len(record)), record, footers[4 * i : 4 * i + 4]))
    return b"".join(parts)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_LIST_TYPE_IDS = frozenset({pa.list_(pa.int8()).id, pa.large_list(pa.int8()).id})
_VALUE_TYPE_IDS = frozenset({pa.float32().id, pa.int64().id})


def _values(column: pa.Array, one_per_row: np.ndarray) -> np.ndarray | None:
    """Flat values of a one-value-per-row list column of float32/int64, else None.

    `one_per_row` is `np.arange(len(column) + 1)`, such a column's offsets from 0.
    """
    if column.type.id not in _LIST_TYPE_IDS or column.null_count:
        return None
    values = column.values
    if values.type.id not in _VALUE_TYPE_IDS or values.null_count:
        return None
    offsets = column.offsets.to_numpy()
    start = offsets[0]
    if not np.array_equal(offsets - start, one_per_row):
        return None
    return values.to_numpy()[start : start + len(column)]


def _dense_columns(batch: pa.RecordBatch) -> list[np.ndarray] | None:
    """Each column's flat values when `encode_dense` can encode the batch, else None."""
    if any(len(name.encode()) > _MAX_KEY_BYTES for name in batch.schema.names):
        return None
    one_per_row = np.arange(batch.num_rows + 1)
    columns = []
    for column in batch.columns:
        values = _values(column, one_per_row)
        if values is None:
            return None
        columns.append(values)
    return columns


def dense_layout_supported(batch: pa.RecordBatch) -> bool:
    """True when `encode_dense` can encode the batch."""
    return _dense_columns(batch) is not None


def _varint_block(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varint bytes of int64 values (two's complement, as protobuf).

    Returns ([n, w] bytes, lengths), w the longest varint of the column.
    """
    x = values.astype(np.int64, copy=False).view(np.uint64)
    lengths = np.ones(len(x), dtype=np.int64)
    for i in range(1, 10):
        above = x >= np.uint64(1 << (7 * i))
        if not above.any():
            break
        lengths += above
    width = int(lengths.max()) if len(x) else 1
    groups = np.empty((len(x), width), dtype=np.uint8)
    for i in range(width):
        group = ((x >> np.uint64(7 * i)) & np.uint64(0x7F)).astype(np.uint8)
        if i < width - 1:
            group |= (lengths > i + 1).astype(np.uint8) << 7
        groups[:, i] = group
    return groups, lengths


def _float_prefix(key_part: bytes) -> bytes:
    feature = b"\x12\x06\x0a\x04"  # Feature.float_list, FloatList.value (packed)
    entry = key_part + b"\x12" + bytes([len(feature) + 4]) + feature
    return b"\x0a" + bytes([len(entry) + 4]) + entry


def _int_prefix(key_part: bytes) -> tuple[bytes, tuple[int, ...]]:
    """The map entry prefix for a 0-byte varint.

    Also returns the positions of the four lengths that grow with the varint's.
    """
    feature = b"\x1a\x02\x0a\x00"  # Feature.int64_list, Int64List.value (packed)
    entry = key_part + b"\x12" + bytes([len(feature)]) + feature
    prefix = b"\x0a" + bytes([len(entry)]) + entry
    k = 2 + len(key_part)
    return prefix, (1, k + 1, k + 3, k + 5)


def encode_dense(
    batch: pa.RecordBatch, columns: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Serialized tf.Examples of a batch `dense_layout_supported` accepts.

    `columns` are the batch's `_dense_columns`, when the caller has them already.
    Returns (flat uint8 bytes of all examples, row offsets of length rows + 1).
    """
    n = batch.num_rows
    if columns is None:
        columns = _dense_columns(batch)
        if columns is None:
            raise ValueError("encode_dense: the batch is not dense and numeric")
    # Every example is `0x0a varint(length)` then the same entries: the bytes that
    # do not vary (keys, tags, lengths of fixed-width values) form one template
    # row; the values, and the lengths that grow with a varint, are written over.
    template = bytearray()
    varying = []  # (position in template, value bytes [n, w], varint lengths, grows)
    lengths = np.zeros(n, dtype=np.int64)
    for name, values in zip(batch.schema.names, columns, strict=True):
        key = name.encode()
        key_part = b"\x0a" + _varint(len(key)) + key
        if values.dtype == np.float32:
            template += _float_prefix(key_part)
            raw = values.astype("<f4", copy=False).view(np.uint8).reshape(n, 4)
            varying.append((len(template), raw, None, ()))
            template += bytes(4)
            continue
        prefix, grows = _int_prefix(key_part)
        varints, nbytes = _varint_block(values)
        w = varints.shape[1]
        if (nbytes == w).all():  # one width: its lengths are constant too
            prefix = bytearray(prefix)
            for position in grows:
                prefix[position] += w
            template += prefix
            varying.append((len(template), varints, None, ()))
        else:
            at = len(template)
            template += prefix
            varying.append((len(template), varints, nbytes, [at + g for g in grows]))
            lengths += nbytes - w
        template += bytes(w)
    lengths += len(template)
    # Example.features (field 1) holding Features: 0x0a, varint(length), entries.
    head, head_bytes = _varint_block(lengths)
    skip = 1 + head.shape[1]
    width = skip + len(template)
    block = np.empty((n, width), dtype=np.uint8)
    block[:, skip:] = np.frombuffer(bytes(template), dtype=np.uint8)
    block[:, 0] = 0x0A
    block[:, 1:skip] = head
    mask = None

    def drop_unused(at, w, nbytes):
        nonlocal mask
        if mask is None:
            mask = np.ones((n, width), dtype=bool)
        mask[:, at : at + w] = np.arange(w) < nbytes[:, None]

    if not (head_bytes == head.shape[1]).all():
        drop_unused(1, head.shape[1], head_bytes)
    for at, raw, nbytes, grows in varying:
        w = raw.shape[1]
        block[:, skip + at : skip + at + w] = raw
        if nbytes is not None:
            grown = nbytes.astype(np.uint8)
            for position in grows:
                block[:, skip + position] += grown
            drop_unused(skip + at, w, nbytes)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths + 1 + head_bytes, out=offsets[1:])
    flat = block.reshape(-1) if mask is None else block[mask]
    return flat, offsets


def _frame_flat(flat: np.ndarray, offsets: np.ndarray) -> bytes:
    data = flat.tobytes()
    bounds = offsets.tolist()
    return frame_records(
        [data[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    )


class RecordsEncoder:
    """Encodes batches into framed TFRecord bytes; one instance per thread."""

    def __init__(self):
        self._fallback = RecordBatchToExamplesEncoder()

    def encode_framed(self, batch: pa.RecordBatch) -> bytes:
        """Framed TFRecords of the batch's rows as tf.Examples."""
        columns = _dense_columns(batch) if batch.num_rows else None
        if columns is not None:
            return _frame_flat(*encode_dense(batch, columns))
        return frame_records(self._fallback.encode(batch))


def encode_framed(batch: pa.RecordBatch) -> bytes:
    """Framed TFRecords of the batch's rows as tf.Examples (see module docstring)."""
    return RecordsEncoder().encode_framed(batch)
