"""tft_speedups: the linear `get_dependent_inputs` gives tf.Transform's answers, and
the built-in graph run without Grappler gives the same bits."""

import contextlib
import tempfile

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_transform import graph_tools
from tensorflow_transform.beam import impl as tft_beam_impl

from pipeline import beam_speedups, tft_speedups
from pipeline.runner import pipeline_runner
from pipeline.vocabulary_writer import WriteVocabularies
from transforms.features import parse_config
from transforms.preprocessing import build_preprocessing_fn
from transforms.schema import raw_metadata
from transforms.types import Column


def _graph(columns: int):
    """A TF1 graph of dense and sparse inputs and outputs over subsets of them."""
    graph = tf.Graph()
    with graph.as_default():
        inputs, outputs = {}, {}
        for i in range(columns):
            if i % 3 == 0:
                inputs[f"s{i}"] = tf.compat.v1.sparse_placeholder(tf.float32)
            else:
                inputs[f"d{i}"] = tf.compat.v1.placeholder(tf.float32, [None])
        names = sorted(inputs)
        for i, name in enumerate(names):
            value = inputs[name]
            if isinstance(value, tf.SparseTensor):
                outputs[f"o{i}"] = value  # an input passed through
                continue
            if i % 4 == 1 and i + 2 < len(names) and names[i + 2].startswith("d"):
                value = value + inputs[names[i + 2]]  # two inputs
            if i % 5 == 2:
                continue  # an input no output uses
            outputs[f"o{i}"] = value * 2.0
        dense = next(name for name in names if name.startswith("d"))
        outputs["ragged"] = tf.RaggedTensor.from_row_lengths(
            inputs[dense], tf.constant([1], tf.int64)
        )
        outputs["const"] = tf.constant(1.0)  # depends on no input
    return graph, inputs, outputs


@pytest.mark.parametrize("columns", [2, 7, 40])
@pytest.mark.parametrize("as_list", [False, True])
def test_dependent_inputs_equal_tf_transforms(columns, as_list):
    graph, inputs, outputs = _graph(columns)
    fetches = list(outputs.values()) if as_list else outputs
    expected = tft_speedups._ORIGINAL(graph, inputs, fetches)
    found = tft_speedups.dependent_inputs(graph, inputs, fetches)
    assert list(found) == list(expected)  # same names, same order
    assert all(found[name] is expected[name] for name in expected)
    assert 0 < len(found) < len(inputs) or columns < 7  # some are left out


def test_dependent_inputs_raise_tf_transforms_errors():
    graph, inputs, outputs = _graph(7)
    with graph.as_default():
        stray = tf.compat.v1.placeholder(tf.float32, [None], name="stray")
        outputs["bad"] = stray * 3.0  # a placeholder that is not an input
    errors = []
    for fn in (tft_speedups._ORIGINAL, tft_speedups.dependent_inputs):
        with pytest.raises(ValueError) as caught:
            fn(graph, inputs, outputs)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert "stray" in errors[1]
    for fn in (tft_speedups._ORIGINAL, tft_speedups.dependent_inputs):
        with pytest.raises(TypeError):
            fn(graph, inputs, [object()])


def test_install_routes_tf_transform_through_the_linear_version(monkeypatch):
    monkeypatch.setattr(graph_tools, "get_dependent_inputs", tft_speedups._ORIGINAL)
    tft_speedups.install()
    tft_speedups.install()  # idempotent
    assert graph_tools.get_dependent_inputs is tft_speedups.dependent_inputs


@pytest.mark.parametrize("how", ["another tf.Transform version", "switched off"])
def test_install_changes_nothing_on_another_version_or_when_switched_off(
    monkeypatch, caplog, how
):
    if how == "another tf.Transform version":
        monkeypatch.setattr(tft_speedups.tensorflow_transform, "__version__", "1.22.0")
    else:
        monkeypatch.setenv(tft_speedups.OFF_SWITCH, "0")
    monkeypatch.setattr(beam_speedups, "_SKIPS_LOGGED", set())
    monkeypatch.setattr(graph_tools, "get_dependent_inputs", tft_speedups._ORIGINAL)
    cls = tft_beam_impl._RunMetaGraphDoFn
    monkeypatch.setattr(cls, "_GraphStateCompatV1", tft_speedups._ORIGINAL_GRAPH_STATE)
    with caplog.at_level("INFO", logger="pipeline.beam_speedups"):
        tft_speedups.install()
        tft_speedups.install()
    assert not tft_speedups.enabled()
    assert graph_tools.get_dependent_inputs is tft_speedups._ORIGINAL
    assert cls._GraphStateCompatV1 is tft_speedups._ORIGINAL_GRAPH_STATE
    skipped = [r for r in caplog.records if "not applied" in r.getMessage()]
    assert len(skipped) == 1  # said once


# --- Grappler off: the built-in graph gives the same bits ---

HOSTILE = [
    Column("f", "float8", "double precision"),
    Column("g", "float8", "double precision"),
    Column("gone", "float8", "double precision"),
    Column("n", "float8", "double precision", not_null=True),
    Column("i", "int8", "bigint"),
    Column("t", "timestamp", "timestamp without time zone"),
    Column("s", "text", "text"),
    Column("u", "text", "text"),
    Column("w", "text", "text", not_null=True),
    Column("y", "text", "text", not_null=True),
]
HOSTILE_CONFIG = {
    "label": "y",
    "features": [
        {"column": "f", "transform": "zscore", "indicator": True},
        {"column": "g", "transform": "zscore", "impute": "median"},
        {
            "column": "gone",
            "transform": "zscore",
            "impute": "constant",
            "constant": 1.5,
            "indicator": True,
        },
        {"column": "n", "transform": "zscore"},
        {"column": "i", "transform": "zscore", "indicator": True},
        {"column": "t", "transform": "zscore"},
        {"column": "f", "name": "f01", "transform": "scale_0_1", "indicator": True},
        {"column": "g", "name": "gb", "transform": "bucketize", "num_buckets": 3},
        {"column": "i", "name": "ip", "transform": "passthrough", "impute": "median"},
        {"column": "t", "name": "th", "transform": "hour_of_day", "indicator": True},
        {"column": "s", "transform": "vocabulary", "indicator": True},
        {
            "column": "u",
            "transform": "vocabulary",
            "impute": "most_frequent",
            "top_k": 3,
            "num_oov_buckets": 2,
        },
        {"column": "w", "transform": "vocabulary", "frequency_threshold": 3},
        {"column": "s", "name": "sh", "transform": "hash", "hash_buckets": 7},
        {"column": "u", "name": "up", "transform": "passthrough", "indicator": True},
    ],
}
_FLOATS = [
    float("nan"),
    float("inf"),
    -float("inf"),
    1e308,
    -3.5e38,
    -0.0,
    0.0,
    5e-324,
    1e-300,
    123456789.123,
    -2.5,
]
_TEXTS = ["", "a", "b\nc", "d\re", "back\\slash", "\\n", "ü", "a a", "x" * 300]


def _hostile_rows(n=700, seed=3):
    rng = np.random.default_rng(seed)

    def pick(values, p_null=0.2):
        return [] if rng.random() < p_null else [values[rng.integers(len(values))]]

    rows = []
    for _ in range(n):
        rows.append(
            {
                "f": pick(_FLOATS + list(rng.normal(0, 1e3, 20))),
                "g": pick(list(rng.lognormal(0, 5, 30))),
                "gone": [],
                "n": float(rng.choice(_FLOATS[2:] + list(rng.normal(size=20)))),
                "i": pick([2**63 - 1, -(2**63), 0, 7, -13, 10**15 + 1]),
                "t": pick([2**63 - 1, -(2**63), -1, 3600 * 25 + 1, 1_700_000_000]),
                "s": [t.encode() for t in pick(_TEXTS)],
                "u": [t.encode() for t in pick(_TEXTS, 0.4)],
                "w": _TEXTS[rng.integers(len(_TEXTS))].encode(),
                "y": _TEXTS[rng.integers(4)].encode(),
            }
        )
    return rows


_COLLECTED: list = []


def _collect(example) -> None:
    _COLLECTED.append(example)  # the in-process runner: this module's list


def _transformed(rows, grappler: bool):
    """The examples (in canonical bytes) and tf.Transform's data sessions' configs."""
    config = parse_config(HOSTILE_CONFIG, HOSTILE, None)
    fn = build_preprocessing_fn(config, HOSTILE, WriteVocabularies)
    sessions = (
        contextlib.nullcontext()
        if grappler
        else tft_speedups.sessions_without_grappler()
    )
    _COLLECTED.clear()
    options = PipelineOptions()
    found = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            dofn = getattr(node.transform, "fn", None)
            if isinstance(dofn, tft_beam_impl._RunMetaGraphDoFn):
                found.append(dofn._tf_config)

    with tempfile.TemporaryDirectory() as temp:
        p = beam.Pipeline(runner=pipeline_runner(options), options=options)
        with (
            sessions,
            tft_beam.Context(
                temp_dir=temp, force_tf_compat_v1=True, desired_batch_size=150
            ),
        ):
            raw = p | beam.Create(rows, reshuffle=False)
            (out, _), _ = (raw, raw_metadata(HOSTILE)) | (
                tft_beam.AnalyzeAndTransformDataset(fn)
            )
            _ = out | beam.Map(_collect)
        p.visit(Visitor())
        p.run().wait_until_finish()
    examples = sorted(
        tuple(
            (k, np.asarray(v).dtype.str, np.asarray(v).tobytes())
            for k, v in sorted(e.items())
        )
        for e in _COLLECTED
    )
    return examples, found


@pytest.fixture(scope="module")
def both_ways():
    rows = _hostile_rows()
    return _transformed(rows, grappler=True), _transformed(rows, grappler=False)


def test_built_in_graph_gives_the_same_bits_without_grappler(both_ways):
    (with_grappler, configs_on), (without, configs_off) = both_ways
    assert len(with_grappler) == 700
    assert with_grappler == without
    assert len(configs_on) == len(configs_off) == 2  # the analysis and the transform
    for on, off in zip(configs_on, configs_off, strict=True):
        assert not on.graph_options.rewrite_options.disable_meta_optimizer
        assert off.graph_options.rewrite_options.disable_meta_optimizer
        assert tft_speedups.without_grappler(on) == off  # nothing else differs


def test_without_grappler_copies_the_config():
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=3)
    changed = tft_speedups.without_grappler(config)
    assert changed.graph_options.rewrite_options.disable_meta_optimizer
    assert changed.intra_op_parallelism_threads == 3
    assert not config.graph_options.rewrite_options.disable_meta_optimizer


def test_sessions_without_grappler_restores_tf_transforms_table(monkeypatch):
    original = tft_beam_impl._DEFAULT_TENSORFLOW_CONFIG_BY_BEAM_RUNNER_TYPE
    with pytest.raises(RuntimeError), tft_speedups.sessions_without_grappler():
        inside = tft_beam_impl._DEFAULT_TENSORFLOW_CONFIG_BY_BEAM_RUNNER_TYPE
        assert inside.keys() == original.keys()
        assert all(
            c.graph_options.rewrite_options.disable_meta_optimizer
            for c in inside.values()
        )
        raise RuntimeError("the build failed")
    assert tft_beam_impl._DEFAULT_TENSORFLOW_CONFIG_BY_BEAM_RUNNER_TYPE is original
    assert not any(
        c.graph_options.rewrite_options.disable_meta_optimizer
        for c in original.values()
    )
    monkeypatch.setenv(tft_speedups.OFF_SWITCH, "0")
    with tft_speedups.sessions_without_grappler():
        assert tft_beam_impl._DEFAULT_TENSORFLOW_CONFIG_BY_BEAM_RUNNER_TYPE is original


# --- FastGraphState: tf.Transform's graph state, fed without Session.run ---


def _saved_transform(path, composite_output=False):
    """A saved transform graph: dense, sparse, string and scalar inputs and outputs."""
    from tensorflow_transform.saved import saved_transform_io

    with tf.compat.v1.Graph().as_default() as graph:
        inputs = {
            "d": tf.compat.v1.placeholder(tf.float64, [None], name="d"),
            "s": tf.compat.v1.sparse_placeholder(tf.float32, [None, 1], name="s"),
            "t": tf.compat.v1.sparse_placeholder(tf.string, [None, None], name="t"),
            "unused": tf.compat.v1.placeholder(tf.int64, [None], name="unused"),
        }
        dense_s = tf.sparse.to_dense(inputs["s"], default_value=float("nan"))
        outputs = {
            "d2": inputs["d"] * 3.0 - 1e-300,
            "s_sum": tf.reduce_sum(dense_s, axis=1),
            "t_joined": tf.strings.reduce_join(
                tf.sparse.to_dense(inputs["t"], default_value=b"-"), axis=1
            ),
            "count": tf.size(inputs["d"]),  # a scalar
            "rows": tf.shape(dense_s, out_type=tf.int64),
        }
        if composite_output:
            outputs["sparse"] = tf.SparseTensor(
                inputs["s"].indices, inputs["s"].values * 2.0, inputs["s"].dense_shape
            )
        with tf.compat.v1.Session(graph=graph) as session:
            saved_transform_io.write_saved_transform_from_session(
                session, inputs, outputs, str(path)
            )
    return str(path)


def _feeds(rng, batch):
    present = np.flatnonzero(rng.random(batch) < 0.6)
    strings = np.array([b"a", b"", b"\n", "ü".encode()], dtype=object)
    t_rows = np.repeat(np.arange(batch), 2)
    return {
        "d": rng.normal(size=batch) * 1e300,
        "s": tf.compat.v1.SparseTensorValue(
            np.stack([present, np.zeros_like(present)], 1).astype(np.int64),
            rng.normal(size=len(present)).astype(np.float32),
            np.array([batch, 1], np.int64),
        ),
        "t": tf.compat.v1.SparseTensorValue(
            np.stack([t_rows, np.tile([0, 1], batch)], 1).astype(np.int64),
            rng.choice(strings, 2 * batch),
            np.array([batch, 2], np.int64),
        ),
    }


def _run_state(state, feeds):
    return state.callable_get_outputs(*(feeds[k] for k in state.inputs_tensor_keys))


@pytest.mark.parametrize("composite_output", [False, True])
def test_fast_graph_state_gives_tf_transforms_values(tmp_path, composite_output):
    path = _saved_transform(tmp_path / "tf", composite_output)
    names = {"d", "s", "t", "unused"}
    original = tft_speedups._ORIGINAL_GRAPH_STATE(path, names, [], None)
    fast = tft_speedups.FastGraphState(path, names, [], None)
    assert fast.inputs_tensor_keys == original.inputs_tensor_keys == ["d", "s", "t"]
    assert fast.outputs_tensor_keys == original.outputs_tensor_keys
    rng = np.random.default_rng(5)
    for batch in (0, 1, 7, 300):
        feeds = _feeds(rng, batch)
        want, got = _run_state(original, feeds), _run_state(fast, feeds)
        assert len(got) == len(want) == len(fast.outputs_tensor_keys)
        for w, g in zip(want, got, strict=True):
            assert type(g) is type(w)
            for a, b in zip(tf.nest.flatten(w), tf.nest.flatten(g), strict=True):
                a, b = np.asarray(a), np.asarray(b)
                assert a.dtype == b.dtype and a.shape == b.shape
                assert (
                    a.tolist() == b.tolist()
                    if a.dtype == object
                    else (a.tobytes() == b.tobytes())
                )


def test_fast_graph_state_converts_and_checks_feeds_as_session_run(tmp_path):
    path = _saved_transform(tmp_path / "tf")
    names = {"d", "s", "t", "unused"}
    original = tft_speedups._ORIGINAL_GRAPH_STATE(path, names, [], None)
    fast = tft_speedups.FastGraphState(path, names, [], None)
    feeds = _feeds(np.random.default_rng(1), 4)
    feeds["d"] = [1, 2, 3, 4]  # a list of ints: converted to float64
    want, got = _run_state(original, feeds), _run_state(fast, feeds)
    assert got[0].tolist() == want[0].tolist()
    feeds["d"] = np.ones((4, 1))  # a wrong shape
    for state in (original, fast):
        with pytest.raises(ValueError, match="Cannot feed value of shape"):
            _run_state(state, feeds)
    with pytest.raises(ValueError, match="not in graph"):
        tft_speedups.FastGraphState(path, {"d", "nope"}, [], None)
    with pytest.raises(ValueError, match="not in graph"):
        tft_speedups.FastGraphState(path, names, ["nope"], None)


def test_install_gives_tf_transform_the_fast_graph_state(monkeypatch):
    cls = tft_beam_impl._RunMetaGraphDoFn
    monkeypatch.setattr(cls, "_GraphStateCompatV1", tft_speedups._ORIGINAL_GRAPH_STATE)
    tft_speedups.install()
    assert cls._GraphStateCompatV1 is tft_speedups.FastGraphState
