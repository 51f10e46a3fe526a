"""The built preprocessing_fn against golden values, with tf.Transform on in-memory rows.

No database: raw instances in the raw schema go through AnalyzeAndTransformDataset;
expected values come from numpy and collections.Counter.
"""

import collections
import datetime as dt
import tempfile

import numpy as np
import pytest
import tensorflow_transform.beam as tft_beam

from transforms.features import parse_config
from pipeline.vocabulary_writer import WriteVocabularies
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
    fn = build_preprocessing_fn(config, COLUMNS, WriteVocabularies)
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
    fn = build_preprocessing_fn(config, ODD_COLUMNS, WriteVocabularies)
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

    from transforms.tokens import unescape_token

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


# --- Missing values of every type: NULL, ±infinity dates/timestamps, passthrough ---

POS_INF, NEG_INF = 2**63 - 1, -(2**63)  # transforms.types.POS_INFINITY/NEG_INFINITY
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

TYPED = [
    Column("k", "int8", "bigint"),
    Column("key", "int8", "bigint"),
    Column("b", "bool", "boolean"),
    Column("f", "float8", "double precision"),
    Column("s", "text", "text"),
    Column("d", "date", "date"),
    Column("t", "timestamp", "timestamp without time zone"),
    Column("tn", "timestamptz", "timestamp with time zone", not_null=True),
    Column("dn", "date", "date", not_null=True),
    Column("y", "int4", "integer", not_null=True),
]
TYPED_CONFIG = {
    "label": "y",
    "features": [
        {"column": "k", "transform": "passthrough", "indicator": True},
        {"column": "k", "name": "k_median", "transform": "passthrough",
         "impute": "median"},
        {"column": "key", "transform": "passthrough", "impute": "constant",
         "constant": 2.5, "indicator": True},
        {"column": "b", "transform": "passthrough", "indicator": True},
        {"column": "f", "transform": "passthrough", "indicator": True},
        {"column": "s", "transform": "passthrough", "indicator": True},
        {"column": "d", "transform": "passthrough", "indicator": True},
        {"column": "t", "transform": "passthrough", "indicator": True},
        {"column": "tn", "transform": "zscore", "indicator": True},
        {"column": "dn", "transform": "zscore", "indicator": True},
        {"column": "t", "name": "t_hour", "transform": "hour_of_day",
         "indicator": True},
        {"column": "t", "name": "t_dow", "transform": "day_of_week", "indicator": True},
        {"column": "tn", "name": "tn_hour", "transform": "hour_of_day",
         "indicator": True},
        {"column": "d", "name": "d_dow", "transform": "day_of_week", "indicator": True},
        {"column": "dn", "name": "dn_dow", "transform": "day_of_week"},
    ],
}


def _typed_rows(n=400, seed=11):
    rng = np.random.default_rng(seed)

    def maybe(value, p_null=0.15, p_inf=0.0):
        u = rng.random()
        if u < p_null:
            return []
        if u < p_null + p_inf:
            return [POS_INF if rng.random() < 0.5 else NEG_INF]
        return [value]

    rows = []
    for i in range(n):
        rows.append({
            "k": maybe(int(rng.integers(-10**6, 10**6))),
            "key": maybe(int(rng.integers(-(2**63), 2**63 - 1, dtype=np.int64))),
            "b": maybe(int(rng.random() < 0.3)),
            "f": maybe(float(rng.normal(3, 2))),
            "s": maybe(["", "a", "b\nc", "ü"][i % 4].encode()),
            # Dates and timestamps before and after 1970 (floor division matters).
            "d": maybe(int(rng.integers(-30000, 30000)), p_inf=0.1),
            "t": maybe(int(rng.integers(-2 * 10**9, 2 * 10**9)), p_inf=0.1),
            "tn": (maybe(int(rng.integers(-(10**9), 10**9)), 0.0, 0.1) or [0])[0],
            "dn": (maybe(int(rng.integers(-9000, 9000)), 0.0, 0.1) or [0])[0],
            "y": int(rng.integers(0, 2)),
        })
    return rows


@pytest.fixture(scope="module")
def typed():
    rows = _typed_rows()
    config = parse_config(TYPED_CONFIG, TYPED, None)
    fn = build_preprocessing_fn(config, TYPED, WriteVocabularies)
    with tempfile.TemporaryDirectory() as temp, tft_beam.Context(temp_dir=temp):
        analyze = tft_beam.AnalyzeAndTransformDataset(fn)
        (out, _), _ = (rows, raw_metadata(TYPED)) | analyze
    return rows, out


def _value(row, name):
    """The row's finite value of `name`, or None when missing (NULL or ±infinity)."""
    v = row[name] if isinstance(row[name], list) else [row[name]]
    return v[0] if v and v[0] not in (POS_INF, NEG_INF) else None


@pytest.mark.parametrize("name", ["k", "b", "d", "t"])
def test_passthrough_of_nullable_integers_dates_timestamps(typed, name):
    rows, out = typed
    present = np.array([_value(r, name) for r in rows if _value(r, name) is not None])
    fill = int(np.round(present.mean()))  # numpy rounds half to even, as documented
    assert any(_value(r, name) is None for r in rows)
    for row, o in zip(rows, out):
        want = _value(row, name)
        assert o[name] == (fill if want is None else want)
        assert o[f"{name}_is_missing"] == (want is None)


def test_passthrough_median_and_constant_keep_int64_exact(typed):
    rows, out = typed
    present = np.array([_value(r, "k") for r in rows if _value(r, "k") is not None])
    median = np.median(present)
    for row, o in zip(rows, out):
        if _value(row, "k") is None:
            # tf.Transform's quantiles are approximate (epsilon 0.001).
            assert abs(o["k_median"] - median) <= 0.01 * np.ptp(present)
        else:
            assert o["k_median"] == _value(row, "k")
        # Keys near ±2**63 survive exactly (no float64 on the way); the constant
        # 2.5 is rounded half to even.
        assert o["key"] == (2 if _value(row, "key") is None else _value(row, "key"))


def test_passthrough_of_nullable_floats_and_text(typed):
    rows, out = typed
    mean = np.mean([_value(r, "f") for r in rows if _value(r, "f") is not None])
    for row, o in zip(rows, out):
        f = _value(row, "f")
        assert o["f"] == pytest.approx(np.float32(mean if f is None else f), rel=1e-6)
        s = _value(row, "s")
        assert o["s"] == (b"__MISSING__" if s is None else s)
        assert o["s_is_missing"] == (s is None)


@pytest.mark.parametrize("name", ["tn", "dn"])
def test_infinite_dense_times_are_missing_and_skip_the_statistics(typed, name):
    rows, out = typed
    finite = np.array([_value(r, name) for r in rows if _value(r, name) is not None],
                      dtype=np.float64)
    assert len(finite) < len(rows)  # the NOT NULL column does hold ±infinity
    mean, std = finite.mean(), finite.std()
    for row, o in zip(rows, out):
        v = _value(row, name)
        want = 0.0 if v is None else (v - mean) / std
        assert o[name] == pytest.approx(want, abs=1e-5)
        assert o[f"{name}_is_missing"] == (v is None)


def test_time_parts_of_missing_values_are_24_and_7_with_indicators(typed):
    rows, out = typed
    for row, o in zip(rows, out):
        t, tn, d, dn = (_value(row, c) for c in ("t", "tn", "d", "dn"))
        at = None if t is None else EPOCH + dt.timedelta(seconds=t)
        assert o["t_hour"] == (24 if t is None else at.hour)
        assert o["t_dow"] == (7 if t is None else at.weekday())
        assert o["t_hour_is_missing"] == o["t_dow_is_missing"] == (t is None)
        assert o["tn_hour"] == (
            24 if tn is None else (EPOCH + dt.timedelta(seconds=tn)).hour
        )
        assert o["tn_hour_is_missing"] == (tn is None)
        for name, days in (("d_dow", d), ("dn_dow", dn)):
            want = 7 if days is None else (EPOCH + dt.timedelta(days=days)).weekday()
            assert o[name] == want
        assert o["d_dow_is_missing"] == (d is None)


def _sparse(values, present, dtype):
    import tensorflow as tf

    rows = np.flatnonzero(present)
    return tf.SparseTensor(
        np.stack([rows, np.zeros_like(rows)], axis=1).astype(np.int64),
        tf.constant(np.asarray(values)[rows], dtype),
        [len(present), 1],
    )


@pytest.mark.parametrize("seed", range(6))
def test_float_matrix_is_each_columns_densified_values_bit_for_bit(seed):
    """The stacked densifying equals `_float_values` per column, NaN bits included."""
    import tensorflow as tf

    from transforms.inputs import float_matrix as _float_matrix
    from transforms.inputs import float_values as _float_values
    from transforms.types import NEG_INFINITY, POS_INFINITY, Kind

    rng = np.random.default_rng(seed)
    batch = int(rng.integers(0, 40))
    odd = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3.4e38, 1e-45, -1.5])
    xs, kinds = [], []
    for _ in range(int(rng.integers(2, 12))):
        present = rng.random(batch) < rng.choice([0.0, 0.5, 0.95, 1.0])
        shape = rng.integers(0, 5)
        if shape == 0:  # nullable float32, with odd values
            values = np.where(rng.random(batch) < 0.3, rng.choice(odd, batch),
                              rng.normal(size=batch) * 1e6)
            xs.append(_sparse(values, present, tf.float32))
            kinds.append(Kind.FLOAT)
        elif shape == 1:  # nullable int64
            values = rng.integers(-(2**62), 2**62, batch)
            xs.append(_sparse(values, present, tf.int64))
            kinds.append(Kind.INT)
        elif shape == 2:  # nullable timestamp with ±infinity
            values = rng.choice([POS_INFINITY, NEG_INFINITY, 0, 1_700_000_000], batch)
            xs.append(_sparse(values, present, tf.int64))
            kinds.append(Kind.TIMESTAMP)
        elif shape == 3:  # NOT NULL float32
            xs.append(tf.constant(rng.normal(size=batch), tf.float32))
            kinds.append(Kind.FLOAT)
        else:  # NOT NULL date
            xs.append(tf.constant(rng.choice([POS_INFINITY, 19000], batch), tf.int64))
            kinds.append(Kind.DATE)
    got = _float_matrix(xs, kinds).numpy()
    want = np.stack(
        [_float_values(x, k).numpy() for x, k in zip(xs, kinds, strict=True)], axis=1
    ).reshape(batch, len(xs))
    assert got.shape == (batch, len(xs))
    assert got.view(np.int64).tolist() == want.view(np.int64).tolist()


def test_float_matrix_refuses_two_values_in_a_row():
    """A nullable scalar with two values in one row fails, as its own densifying did."""
    import tensorflow as tf

    from transforms.inputs import float_matrix as _float_matrix
    from transforms.types import Kind

    good = _sparse([1.0, 2.0], np.array([True, True]), tf.float32)
    bad = tf.SparseTensor([[0, 0], [0, 1]], tf.constant([1.0, 2.0]), [2, 2])
    with pytest.raises(tf.errors.InvalidArgumentError):
        _float_matrix([good, bad], [Kind.FLOAT, Kind.FLOAT])


def test_float_matrix_refuses_inputs_of_different_batch_sizes():
    """A short nullable column fails, never reads as missing values (serving)."""
    import tensorflow as tf

    from transforms.inputs import float_matrix as _float_matrix
    from transforms.types import Kind

    three = _sparse([1.0, 2.0, 3.0], np.array([True, True, True]), tf.float32)
    two = _sparse([1.0, 2.0], np.array([True, True]), tf.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch sizes"):
        _float_matrix([three, two], [Kind.FLOAT, Kind.FLOAT])
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch sizes"):
        _float_matrix([two, three], [Kind.FLOAT, Kind.FLOAT])


@pytest.mark.parametrize("seed", range(4))
def test_escaped_all_at_once_equals_each_tensors_escape(seed):
    """One escape over the concatenation: each tensor's `escape_token`, in order."""
    import tensorflow as tf

    from transforms.tokens import escape_token
    from transforms.tokens import escaped as _escaped

    rng = np.random.default_rng(seed)
    pool = ["", "a", "b\nc", "d\re", "\\", "\\n", "ü", "x" * 200, "\r\n", "plain"]
    tensors, clean = [], ["", "a", "ü", "plain"]
    for i in range(int(rng.integers(1, 7))):
        choices = clean if i % 2 == 0 else pool  # clean tensors beside dirty ones
        size = int(rng.integers(0, 6))
        tensors.append(tf.constant(list(rng.choice(choices, size)) or [], tf.string))
    got = _escaped(tensors)
    assert len(got) == len(tensors)
    for x, y in zip(tensors, got, strict=True):
        want = [
            v.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
            for v in x.numpy().tolist()
        ]
        assert y.numpy().tolist() == want == escape_token(x).numpy().tolist()


def test_each_feature_depends_on_its_column_never_on_the_label():
    """Serving feeds no label: no feature may need it (the text label's ids do)."""
    import tensorflow as tf
    from tensorflow_transform import graph_tools, impl_helper
    from tensorflow_transform.tf_metadata import schema_utils

    config = parse_config({
        "label": "kind",
        "features": [
            {"column": "s", "transform": "vocabulary", "indicator": True},
            {"column": "s", "name": "s_mf", "transform": "vocabulary",
             "impute": "most_frequent"},
            {"column": "x", "transform": "zscore"},
        ],
    }, COLUMNS, None)
    fn = build_preprocessing_fn(config, COLUMNS, WriteVocabularies)
    schema = raw_metadata(COLUMNS).schema
    specs = schema_utils.schema_as_feature_spec(schema).feature_spec
    graph, inputs, outputs = impl_helper.trace_preprocessing_function(fn, specs, True)
    with graph.as_default():
        for name, output in outputs.items():
            needed = graph_tools.get_dependent_inputs(graph, inputs, [output])
            if name == "kind":
                assert set(needed) == {"kind"}
            else:
                assert "kind" not in needed, name
    assert isinstance(outputs["s"], tf.Tensor)
