"""Feature names: valid in every place TF uses them, unique, stable; no TF graph run."""

import hashlib
import itertools
import random
import re

import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow_transform.analyzers import sanitized_vocab_filename

from transforms.names import derived_name, feature_names, is_safe, suggest

# The rules of the places a feature name goes, written out here independently.
TF_SCOPE = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")  # tf.name_scope, op names

ADVERSARIAL = [
    "a/b", "a_b", "a b", "ünïcødé_列", "with space", 'q"uote', "it's", "d.o.t",
    "1lead", "-", ">", "é" * 31 + "x", "x" * 63, "Case", "case", "CASE",
    "__sql2tfrecord_split__", "x__is_null", "", " ", "列", "a__b", "_a", "a_",
    "tab\there", "new\nline", "back\\slash",
]


def _sha8(name):
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def _valid_everywhere(name):
    assert TF_SCOPE.fullmatch(name), name
    assert name.isascii() and name.isidentifier(), name  # JSON/Arrow/Keras-safe too
    assert "__" not in name  # never clashes with `<key>__is_null`
    # tf.Transform writes the vocabulary file under this sanitised name.
    assert sanitized_vocab_filename(filename=name) == name


def test_adversarial_names_are_valid_unique_and_case_distinct():
    names = feature_names(ADVERSARIAL)
    assert set(names) == set(ADVERSARIAL)
    for name in names.values():
        _valid_everywhere(name)
    folded = [n.lower() for n in names.values()]
    assert len(set(folded)) == len(folded)


def test_golden_names_are_sanitised_plus_sha256_only_when_needed():
    names = feature_names(ADVERSARIAL)
    assert names["a_b"] == "a_b" and names["x" * 63] == "x" * 63
    assert names["a/b"] == f"a_b_{_sha8('a/b')}"
    assert names["a b"] == f"a_b_{_sha8('a b')}"
    assert names["ünïcødé_列"] == f"unic_de_{_sha8('ünïcødé_列')}"
    assert names["1lead"] == f"f_1lead_{_sha8('1lead')}"
    assert names["__sql2tfrecord_split__"] == (
        f"sql2tfrecord_split_{_sha8('__sql2tfrecord_split__')}"
    )
    # Names equal up to case all take a suffix (vocabulary files on
    # case-insensitive filesystems would be one file).
    assert names["Case"] == f"Case_{_sha8('Case')}"
    assert names["case"] == f"case_{_sha8('case')}"


def test_names_do_not_depend_on_column_order():
    want = feature_names(ADVERSARIAL)
    rng = random.Random(3)
    for _ in range(20):
        shuffled = ADVERSARIAL[:]
        rng.shuffle(shuffled)
        assert feature_names(shuffled) == want


def test_a_real_column_named_like_a_suffixed_name_keeps_its_name():
    clash = f"a_b_{_sha8('a b')}"
    names = feature_names(["a b", "a_b", clash])
    assert names["a_b"] == "a_b" and names[clash] == clash
    assert names["a b"] == "a_b_" + hashlib.sha256(b"a b").hexdigest()[:16]
    # Also when the real column differs only by case.
    names = feature_names(["a b", clash.upper()])
    assert names[clash.upper()] == clash.upper()
    assert names["a b"].lower() != clash


def test_derived_names_avoid_real_columns():
    keys = feature_names(["x", "x_is_missing"])
    taken = set(keys.values())
    got = derived_name("x", "is_missing", taken)
    assert got == f"x_is_missing_{_sha8('x_is_missing')}"
    assert derived_name("y", "is_missing", taken) == "y_is_missing"
    assert derived_name("x", "is_missing", {"X_IS_MISSING"}) != "x_is_missing"


def test_suggest_is_safe():
    for name in ADVERSARIAL:
        assert is_safe(suggest(name))
    assert not any(is_safe(n) for n in ["a/b", "a b", "1a", "_a", "a__b", "a_", ""])


def test_names_work_as_graph_scopes_and_signature_inputs():
    names = feature_names(ADVERSARIAL)
    with tf.Graph().as_default():
        for name in names.values():
            with tf.name_scope(name):
                tf.compat.v1.placeholder(tf.float32, [None], name=name)
    signature = {n: tf.TensorSpec([None], tf.float32, name=n) for n in names.values()}
    fn = tf.function(lambda inputs: {"n": tf.add_n(list(inputs.values()))})
    concrete = fn.get_concrete_function(signature)
    assert {t.name.split(":")[0] for t in concrete.inputs} == set(names.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=12), max_size=12, unique=True))
def test_any_names_map_injectively_to_valid_names(columns):
    names = feature_names(columns)
    assert set(names) == set(columns)
    folded = [n.lower() for n in names.values()]
    assert len(set(folded)) == len(folded)
    for column, name in names.items():
        _valid_everywhere(name)
        if is_safe(column) and sum(c.lower() == column.lower() for c in columns) == 1:
            assert name == column


@pytest.mark.parametrize("a, b", list(itertools.combinations(["a/b", "a_b", "a b", "a.b"], 2)))
def test_vocabulary_files_differ_for_names_tf_transform_rewrites_alike(a, b):
    names = feature_names([a, b])
    assert sanitized_vocab_filename(filename=names[a]) != sanitized_vocab_filename(
        filename=names[b]
    )
