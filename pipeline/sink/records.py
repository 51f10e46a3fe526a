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


def _values(column: pa.Array) -> np.ndarray | None:
    """Flat values of a one-value-per-row list column of float32/int64, else None."""
    if not (pa.types.is_large_list(column.type) or pa.types.is_list(column.type)):
        return None
    values = column.values
    if values.type not in (pa.float32(), pa.int64()):
        return None
    if column.null_count or values.null_count:
        return None
    offsets = column.offsets.to_numpy()
    if len(offsets) != len(column) + 1 or not np.array_equal(
        offsets - offsets[0], np.arange(len(column) + 1)
    ):
        return None
    return values.to_numpy()[offsets[0] : offsets[0] + len(column)]


def _dense_columns(batch: pa.RecordBatch) -> list[np.ndarray] | None:
    """Each column's flat values when `encode_dense` can encode the batch, else None."""
    if any(len(name.encode()) > _MAX_KEY_BYTES for name in batch.schema.names):
        return None
    columns = []
    for column in batch.columns:
        values = _values(column)
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
    parts = []  # (prefix bytes, value bytes [n, w], value lengths or None)
    for name, values in zip(batch.schema.names, columns, strict=True):
        key = name.encode()
        key_part = b"\x0a" + _varint(len(key)) + key
        if values.dtype == np.float32:
            raw = values.astype("<f4", copy=False).view(np.uint8).reshape(n, 4)
            parts.append((_float_prefix(key_part), None, raw, None))
        else:
            prefix, grows = _int_prefix(key_part)
            varints, nbytes = _varint_block(values)
            parts.append((prefix, grows, varints, nbytes))
    lengths = np.zeros(n, dtype=np.int64)
    for prefix, _, raw, nbytes in parts:
        lengths += len(prefix) + (raw.shape[1] if nbytes is None else nbytes)
    # Example.features (field 1) holding Features: 0x0a, varint(length), entries.
    head, head_bytes = _varint_block(lengths)
    width = 1 + head.shape[1] + sum(len(p) + raw.shape[1] for p, _, raw, _ in parts)
    block = np.empty((n, width), dtype=np.uint8)
    mask = None
    block[:, 0] = 0x0A
    at = 1

    def place(raw, nbytes):
        nonlocal at, mask
        w = raw.shape[1]
        block[:, at : at + w] = raw
        if nbytes is not None and w > 1 and not (nbytes == w).all():
            if mask is None:
                mask = np.ones((n, width), dtype=bool)
            mask[:, at : at + w] = np.arange(w) < nbytes[:, None]
        at += w

    place(head, head_bytes)
    for prefix, grows, raw, nbytes in parts:
        block[:, at : at + len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
        if grows is not None:
            for position in grows:
                block[:, at + position] += nbytes.astype(np.uint8)
        at += len(prefix)
        place(raw, nbytes)
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
