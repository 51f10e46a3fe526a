"""tft_speedups: the linear `get_dependent_inputs` gives tf.Transform's answers."""

import pytest
import tensorflow as tf
from tensorflow_transform import graph_tools

from pipeline import beam_speedups, tft_speedups


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
    with caplog.at_level("INFO", logger="pipeline.beam_speedups"):
        tft_speedups.install()
        tft_speedups.install()
    assert not tft_speedups.enabled()
    assert graph_tools.get_dependent_inputs is tft_speedups._ORIGINAL
    skipped = [r for r in caplog.records if "not applied" in r.getMessage()]
    assert len(skipped) == 1  # said once
