"""The shard writer without Beam: framing, threaded gzip, errors, publication."""

import gzip
import struct

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from pipeline.sink import records, write


def _batch(n: int, start: int = 0) -> pa.RecordBatch:
    ids = np.arange(start, start + n, dtype=np.int64)
    offsets = pa.array(np.arange(n + 1, dtype=np.int64))
    return pa.RecordBatch.from_arrays(
        [
            pa.LargeListArray.from_arrays(offsets, pa.array(ids)),
            pa.LargeListArray.from_arrays(
                offsets, pa.array((ids * 0.5).astype(np.float32))
            ),
        ],
        names=["id", "x"],
    )


def _read_examples(path: str) -> list[tuple[int, float]]:
    out = []
    for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        feature = example.features.feature
        out.append(
            (feature["id"].int64_list.value[0], feature["x"].float_list.value[0])
        )
    return out


def test_frame_records_matches_the_tfrecord_format_and_tf_reads_it(tmp_path):
    data = [b"", b"a", b"x" * 300, bytes(range(256)) * 5]
    framed = records.frame_records(data)
    assert len(framed) == sum(len(r) + 16 for r in data)
    # Each record: u64 length, u32 masked CRC of the length, data, u32 masked CRC.
    offset = 0
    for record in data:
        (length,) = struct.unpack_from("<Q", framed, offset)
        assert length == len(record)
        assert framed[offset + 12 : offset + 12 + length] == record
        offset += 16 + length
    path = tmp_path / "f.tfrecord"
    path.write_bytes(framed)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == data


def test_shard_writer_writes_every_batch_in_order_as_gzip(tmp_path):
    path = str(tmp_path / "shard.tfrecord.gz")
    writer = write._ShardWriter(path)
    sizes = [1, 700, 0, 2500, 33] * 3  # more batches than MAX_PENDING_BATCHES
    start = 0
    for n in sizes:
        writer.write(_batch(n, start))
        start += n
    writer.close()
    assert writer.records == start
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # a plain gzip file
    with gzip.open(path) as f:
        assert len(f.read()) > 0
    assert _read_examples(path) == [(i, np.float32(i * 0.5)) for i in range(start)]


def test_shard_writer_raises_the_writer_threads_error(tmp_path):
    writer = write._ShardWriter(str(tmp_path / "bad.tfrecord.gz"))
    unsupported = pa.RecordBatch.from_arrays(
        [pa.array([{"a": 1}, {"a": 2}])], names=["s"]
    )  # not a list column: the encoder refuses it
    # The error surfaces at the next write() once the thread has failed, else at
    # close(): whichever comes first (it depends on the threads' timing), never
    # neither.
    try:
        with pytest.raises(Exception, match='Error encoding feature "s"'):
            writer.write(unsupported)
            writer.close()
    finally:
        writer.abort()


def test_publish_renames_only_complete_shards_and_pads_to_num_shards(tmp_path):
    split_dir = str(tmp_path / "train")
    temp_dir = f"{split_dir}/.incomplete"
    writer = write._ShardWriter(f"{temp_dir}/a{write.SHARD_SUFFIX}")
    writer.write(_batch(10))
    writer.close()
    paths = write._publish([writer.path], split_dir, temp_dir, num_shards=3)
    names = sorted(p.rsplit("/", 1)[-1] for p in paths)
    assert names == [f"part-0000{i}-of-00003{write.SHARD_SUFFIX}" for i in range(3)]
    rows = sorted(r for p in paths for r in _read_examples(p))
    assert rows == [(i, np.float32(i * 0.5)) for i in range(10)]
    assert not (tmp_path / "train" / ".incomplete").exists()
