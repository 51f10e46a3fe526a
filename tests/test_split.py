"""Pure split assignment: stable, proportional, independent of batching."""

import zlib

import numpy as np
import pyarrow as pa
import pytest

from pipeline.split import assign_splits, hash_keys, parse_splits, split_counts
from tests.conftest import splitmix64_reference


def test_hash_keys_match_reference_for_ints_and_text():
    ints = [0, 1, -1, 2**63 - 1, -(2**63), 123456789]
    expected = [splitmix64_reference(v & ((1 << 64) - 1)) for v in ints]
    assert hash_keys(pa.array(ints, pa.int64())).tolist() == expected
    texts = ["", "a", "héllo", "line\nbreak"]
    expected = [splitmix64_reference(zlib.crc32(t.encode())) for t in texts]
    assert hash_keys(pa.array(texts, pa.large_string())).tolist() == expected


def test_null_keys_hash_like_zero():
    got = hash_keys(pa.array([None, 0], pa.int64()))
    assert got[0] == got[1]


def test_assignment_is_independent_of_batching():
    spec = parse_splits("train=70,eval=20,test=10")
    ids = np.arange(-5000, 5000, dtype=np.int64)
    whole = assign_splits(pa.array(ids), spec)
    pieces = np.concatenate(
        [assign_splits(pa.array(chunk), spec) for chunk in np.array_split(ids, 7)]
    )
    np.testing.assert_array_equal(whole, pieces)


def test_assignment_follows_weights():
    spec = parse_splits("train=80,eval=20")
    counts = split_counts(assign_splits(pa.array(np.arange(100_000)), spec), spec)
    assert sum(counts.values()) == 100_000
    assert abs(counts["train"] / 100_000 - 0.8) < 0.01


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("train=80,eval", "must look like"),
        ("train=0,eval=20", "must be >= 1"),
        ("eval=20", "must include a 'train'"),
        ("train=1,train=2", "twice"),
        ("train=1,eval=1,EVAL=1", "twice .*differ in more than case"),
        ("train=8,Train=2", "twice"),
        ("train=8,Metadata=2", "is a directory of the output layout"),
        ("", "must include a 'train'"),
    ],
)
def test_parse_splits_rejects_bad_specs(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_splits(text)


def test_parse_splits_keeps_order_and_weights():
    spec = parse_splits(" train=8, eval=1,test=1 ")
    assert spec.splits == (("train", 8), ("eval", 1), ("test", 1))
    assert spec.total == 10


@pytest.mark.parametrize("name", ["metadata", "transformed_metadata", "transform_fn", "raw",
                                  "statistics"])
def test_split_names_of_the_output_layout_are_refused(name):
    with pytest.raises(ValueError, match=f"split name '{name}' is a directory"):
        parse_splits(f"train=80,{name}=20")
