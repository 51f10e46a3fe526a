"""The built preprocessing_fn against golden values, with tf.Transform on in-memory rows.

No database: raw instances in the raw schema go through AnalyzeAndTransformDataset;
expected values come from numpy and collections.Counter.
"""

import collections
import tempfile

import numpy as np
import pytest
import tensorflow_transform.beam as tft_beam

from transforms.features import parse_config
from transforms.preprocessing import build_preprocessing_fn
from transforms.schema import raw_metadata
from transforms.types import Column

COLUMNS = [
    Column("x", "float8", "double precision"),
    Column("gone", "float8", "double precision"),
    Column("s", "text", "text"),
    Column("v", "float8", "double precision", not_null=True),
    Column("kind", "text", "text", not_null=True),
]


def _rows(n=1200, seed=4):
    rng = np.random.default_rng(seed)
    tokens = ["a", "b", "c", "d", "rare1", "rare2"]
    p = [0.4, 0.3, 0.2, 0.0983, 0.001, 0.0007]
    rows = []
    for i in range(n):
        rows.append({
            "x": [] if i % 10 == 0 else [float(rng.uniform(0, 100))],
            "gone": [],  # an all-NULL column
            "s": [] if i % 17 == 0 else [str(rng.choice(tokens, p=p)).encode()],
            "v": float(rng.random()),
            "kind": str(rng.choice(["cat", "dog", "eel"], p=[0.5, 0.3, 0.2])).encode(),
        })
    return rows


def _transform(config_raw, rows):
    config = parse_config(config_raw, COLUMNS, None)
    fn = build_preprocessing_fn(config, COLUMNS)
    with tempfile.TemporaryDirectory() as temp, tft_beam.Context(temp_dir=temp):
        (out, _), _ = (rows, raw_metadata(COLUMNS)) | tft_beam.AnalyzeAndTransformDataset(fn)
    return out


@pytest.fixture(scope="module")
def rows():
    return _rows()


@pytest.fixture(scope="module")
def string_label_output(rows):
    return _transform({
        "label": "kind",
        "features": [
            {"column": "s", "transform": "vocabulary", "frequency_threshold": 5},
            {"column": "x", "name": "xb", "transform": "bucketize", "num_buckets": 4},
            {"column": "gone", "transform": "zscore", "indicator": True},
            {"column": "gone", "name": "gone01", "transform": "scale_0_1", "impute": "median"},
        ],
    }, rows)


def test_frequency_threshold_vocabulary_matches_counter(rows, string_label_output):
    counts = collections.Counter(r["s"][0] for r in rows if r["s"])
    counts[b"__MISSING__"] = sum(1 for r in rows if not r["s"])
    kept = sorted(((c, t) for t, c in counts.items() if c >= 5), reverse=True)
    vocab = [t for _, t in kept]
    assert b"rare1" not in vocab and len(vocab) >= 5
    for raw, out in zip(rows, string_label_output):
        token = raw["s"][0] if raw["s"] else b"__MISSING__"
        want = vocab.index(token) if token in vocab else len(vocab)  # one OOV bucket
        assert out["s"] == want


def test_string_label_becomes_ids_in_frequency_order(rows, string_label_output):
    order = [t for t, _ in sorted(collections.Counter(r["kind"] for r in rows).items(),
                                  key=lambda kv: (kv[1], kv[0]), reverse=True)]
    assert [out["kind"] for out in string_label_output] == [order.index(r["kind"]) for r in rows]


def test_quantile_buckets_agree_with_numpy(rows, string_label_output):
    present = np.array([r["x"][0] for r in rows if r["x"]])
    edges = np.quantile(present, [0.25, 0.5, 0.75])
    got = np.array([o["xb"] for r, o in zip(rows, string_label_output) if r["x"]])
    want = np.searchsorted(edges, present, side="right")
    # tf.Transform's quantiles are approximate (epsilon 0.001): a few rows at a
    # boundary may fall on the other side.
    assert np.mean(got != want) < 0.01
    assert np.all(np.abs(got - want) <= 1)


def test_all_null_column_gives_zero_and_indicator_not_nan(string_label_output):
    for out in string_label_output:
        assert out["gone"] == 0.0 and out["gone_is_missing"] == 1
        assert np.isfinite(out["gone01"])


def test_threshold_label(rows):
    out = _transform({
        "label": {"column": "v", "threshold": 0.5},
        "features": [{"column": "x", "transform": "scale_0_1"}],
    }, rows)
    assert [o["v"] for o in out] == [int(r["v"] > 0.5) for r in rows]


ODD_COLUMNS = [
    Column("a/b", "text", "text", not_null=True),
    Column("a_b", "text", "text", not_null=True),
    Column("ünïcødé_列", "text", "text"),
    Column("lab/el", "text", "text", not_null=True),
]
# Labels tf.Transform would drop or merge without the encoding, and values that
# look like the encoding itself.
CLASSES = ["", "a\nb", "c\rd", "e\r\nf", "back\\slash", "\\e", "\\n", "plain", "ü"]


def _label_token(value: str) -> bytes:
    """The documented label encoding, written out independently."""
    if value == "":
        return b"\\e"
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return escaped.encode()


def _counter_vocab(tokens):
    counts = collections.Counter(tokens)
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


@pytest.fixture(scope="module")
def odd_output(tmp_path_factory):
    from transforms.features import infer_features

    rng = np.random.default_rng(11)
    config = infer_features(ODD_COLUMNS, "lab/el")
    keys = config.names
    # Equal counts in pairs: tf.Transform breaks ties by the token, descending.
    counts = [60, 60, 90, 90, 30, 120, 120, 10, 20]
    labels = [c for c, n in zip(CLASSES, counts, strict=True) for _ in range(n)]
    rng.shuffle(labels)
    raw = []
    for i in range(600):
        raw.append({
            "a/b": f"p{rng.integers(0, 7)}".encode(),
            "a_b": f"q{rng.integers(0, 3)}".encode(),
            "ünïcødé_列": [] if i % 5 == 0 else [f"u{i % 4}".encode()],
            "lab/el": labels[i].encode(),
        })
    rows = [{keys[k]: v for k, v in r.items()} for r in raw]
    fn = build_preprocessing_fn(config, ODD_COLUMNS)
    out_dir = str(tmp_path_factory.mktemp("odd") / "tft")
    with tempfile.TemporaryDirectory() as temp, tft_beam.Context(
        temp_dir=temp, force_tf_compat_v1=True
    ):
        (out, _), transform_fn = (
            rows, raw_metadata(ODD_COLUMNS, keys)
        ) | tft_beam.AnalyzeAndTransformDataset(fn)
        _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
    return config, raw, out, out_dir


def test_names_tf_transform_rewrites_alike_keep_separate_vocabularies(odd_output):
    import tensorflow_transform as tft

    config, raw, out, out_dir = odd_output
    keys = config.names
    assert keys["a_b"] == "a_b" and keys["a/b"] != "a_b"
    tft_output = tft.TFTransformOutput(out_dir)
    for column in ("a/b", "a_b"):
        vocab = _counter_vocab(r[column] for r in raw)
        assert tft_output.vocabulary_size_by_name(keys[column]) == len(vocab)
        assert tft_output.vocabulary_by_name(keys[column]) == vocab
        assert [o[keys[column]] for o in out] == [vocab.index(r[column]) for r in raw]
    unicode_key = keys["ünïcødé_列"]
    assert all(o[unicode_key] >= 0 for o in out)


def test_every_text_label_class_gets_an_id_in_counter_order(odd_output):
    import tensorflow_transform as tft

    from transforms.preprocessing import unescape_token

    config, raw, out, out_dir = odd_output
    vocab = _counter_vocab(_label_token(r["lab/el"].decode()) for r in raw)
    assert len(vocab) == len(CLASSES)  # '' and newlines included
    got = tft.TFTransformOutput(out_dir).vocabulary_by_name(config.label_key)
    assert got == vocab
    ids = [o[config.label_key] for o in out]
    assert ids == [vocab.index(_label_token(r["lab/el"].decode())) for r in raw]
    assert [unescape_token(t).decode() for t in got] == [
        next(c for c in CLASSES if _label_token(c) == t) for t in vocab
    ]
