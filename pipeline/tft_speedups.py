"""Cuts three tf.Transform costs that grow with the graph; results unchanged.

What they save is in bench/RESULTS.md.

1. Dependent inputs. `tensorflow_transform.graph_tools.get_dependent_inputs(graph,
inputs, outputs)` returns the inputs that the outputs transitively depend on.
tf.Transform calls it each time it loads a transform graph to run it
(`_RunMetaGraphDoFn`: the analysis phase's graph and the final one), and it checks
every input against every output, decomposing each input's composite tensor (a
`SparseTensor` per nullable column) anew each time: columns × outputs
`tf.nest.flatten` calls, most of a wide graph's load time. `install()` swaps in
`dependent_inputs`: the same graph analysis per output, then one pass over the
inputs against the union of what the outputs depend on. That is the same answer by
construction (an input is kept iff one of its components is a source of some
output) and the same errors (the analysis raises them per output, translated by
tf.Transform's own decorator).

2. Grappler. The sessions in which tf.Transform runs a graph over the data (its
`_RunMetaGraphDoFn`, once per graph and process) take their `ConfigProto` from a
table keyed by the runner's type. A session's first run hands the graph to
Grappler, whose passes cost about as much as loading it. Inside
`sessions_without_grappler()` the transforms built take the same configuration
with Grappler's meta-optimizer disabled: the graph runs as written, op for op.
Grappler's rewrites are meant to keep results, but a few of its arithmetic ones
(e.g. `log(1 + x)` into `log1p(x)`) need not keep the last bit, so the launcher
opens it only around the built-in `preprocessing_fn`, whose ops it leaves alone
(tests compare both ways on hostile values); a user's module keeps Grappler.

3. Feeding a batch. tf.Transform runs its graph through
`Session.make_callable(fetches, feed_list=...)`, which with feeds calls
`Session.run` each time: per fed tensor (three per `SparseTensor` input) it
resolves the graph element, converts the value, checks dtype, shape and
feedability, and rebuilds the fetch structure, about a third of a wide batch's
time. `install()` gives tf.Transform's TF1 graph state `FastGraphState`: the same
loading, checks and errors, and a callable made once from `CallableOptions`
(TensorFlow's `Session._make_callable_from_options`) that converts each value as
`Session.run` does (`numpy_compat.np_asarray` with the placeholder's dtype) and
checks its shape against the placeholder's, then hands all to the C++ callable.
The graph runs the same way and its results come back as the same numpy values.
Graphs with composite fetches keep `Session.make_callable`.

`install()` is idempotent and called by the launcher before the graph is built;
nothing happens at import time. Both apply only on the tf.Transform version they
were tested with (`TESTED_TFT_VERSION`; on any other `install()` logs once and
changes nothing), and `SQL2TFRECORD_TFT_SPEEDUPS=0` in the environment turns them
off (the gate and its log line are `beam_speedups`'). Either way the job's output
is the same (a test compares two runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform
from tensorflow.core.protobuf import config_pb2
from tensorflow_transform import analyzer_nodes, graph_tools, tf_utils
from tensorflow_transform.beam import impl as tft_beam_impl
from tensorflow_transform.saved import saved_transform_io

from pipeline import beam_speedups

__all__ = [
    "FastGraphState",
    "OFF_SWITCH",
    "TESTED_TFT_VERSION",
    "dependent_inputs",
    "enabled",
    "fast_callable",
    "install",
    "sessions_without_grappler",
    "without_grappler",
]

TESTED_TFT_VERSION = "1.21.0"
OFF_SWITCH = "SQL2TFRECORD_TFT_SPEEDUPS"

_ORIGINAL = graph_tools.get_dependent_inputs
_ACCEPTED_TYPES = (tf.Tensor, tf.SparseTensor, tf.RaggedTensor, tf.Operation)
_SESSION_CONFIGS = "_DEFAULT_TENSORFLOW_CONFIG_BY_BEAM_RUNNER_TYPE"  # runner -> config
_RunMetaGraphDoFn = tft_beam_impl._RunMetaGraphDoFn  # noqa: SLF001
_ORIGINAL_GRAPH_STATE = _RunMetaGraphDoFn._GraphStateCompatV1  # noqa: SLF001
# `numpy_compat.np_asarray`'s branch, decided once instead of per value.
_NUMPY_2 = np.lib.NumpyVersion(np.__version__) >= "2.0.0.dev0"


@graph_tools._reraise_unexpected_error  # noqa: SLF001 - the original's error contract
def _sources(analyzer, tensor_or_op) -> set:
    """The hashable sources `tensor_or_op` depends on (the original's first half)."""
    if not isinstance(tensor_or_op, _ACCEPTED_TYPES):
        raise TypeError(
            "Expected Tensor, SparseTensor, RaggedTensor or Operation got "
            f"{tensor_or_op} of type {type(tensor_or_op)}"
        )
    found = set()
    graph_analyzer = analyzer._graph_analyzer  # noqa: SLF001
    for component in graph_tools._decompose_tensor_or_op(tensor_or_op):  # noqa: SLF001
        found.update(graph_analyzer.analyze_tensor(component).dependent_sources)
    return found


def dependent_inputs(graph, input_tensors: Mapping, output_tensors) -> dict:
    """`graph_tools.get_dependent_inputs`, linear in inputs + outputs."""
    outputs = (
        output_tensors if isinstance(output_tensors, list) else output_tensors.values()
    )
    sinks = graph.get_collection(analyzer_nodes.TENSOR_REPLACEMENTS)
    analyzer = graph_tools._QuietInitializableGraphAnalyzer(  # noqa: SLF001
        graph, input_tensors, [(sink.tensor, False) for sink in sinks]
    )
    sources = set()
    for output in outputs:
        sources |= _sources(analyzer, output)
    return {
        name: tensor
        for name, tensor in input_tensors.items()
        if any(
            tf_utils.hashable_tensor_or_op(component) in sources
            for component in graph_tools._decompose_tensor_or_op(tensor)  # noqa: SLF001
        )
    }


def enabled() -> bool:
    """Whether `install()` patches: the tested version, and not switched off."""
    return (
        not beam_speedups.switched_off(OFF_SWITCH)
        and tensorflow_transform.__version__ == TESTED_TFT_VERSION
    )


def install() -> None:
    """Routes `graph_tools.get_dependent_inputs` to `dependent_inputs` (idempotent).

    Does nothing (and says so once) on another tf.Transform version or when off.
    """
    if not enabled():
        beam_speedups.log_skip_once(
            "tf.Transform speed-up",
            "tf.Transform",
            tensorflow_transform.__version__,
            TESTED_TFT_VERSION,
            OFF_SWITCH,
        )
        return
    graph_tools.get_dependent_inputs = dependent_inputs
    _RunMetaGraphDoFn._GraphStateCompatV1 = FastGraphState  # noqa: SLF001


def without_grappler(config: tf.compat.v1.ConfigProto) -> tf.compat.v1.ConfigProto:
    """A copy of `config` with Grappler's meta-optimizer disabled."""
    copy = tf.compat.v1.ConfigProto()
    copy.CopyFrom(config)
    copy.graph_options.rewrite_options.disable_meta_optimizer = True
    return copy


@contextlib.contextmanager
def sessions_without_grappler() -> Iterator[None]:
    """tf.Transform's transforms built inside run their graphs without Grappler.

    Only runners tf.Transform has a session configuration for (the direct
    runners, Dataflow) change: the configuration travels with each `DoFn`.
    Nothing changes when `enabled()` is false.
    """
    if not enabled():
        yield
        return
    original = getattr(tft_beam_impl, _SESSION_CONFIGS)
    changed = {runner: without_grappler(c) for runner, c in original.items()}
    setattr(tft_beam_impl, _SESSION_CONFIGS, changed)
    try:
        yield
    finally:
        setattr(tft_beam_impl, _SESSION_CONFIGS, original)


def _as_feed(value, dtype) -> np.ndarray:
    """`numpy_compat.np_asarray(value, dtype)`, as `Session.run` converts a feed."""
    if _NUMPY_2:
        if dtype is not None and np.issubdtype(dtype, np.number):
            return np.asarray(value).astype(dtype, copy=None)
        return np.asarray(value, dtype=dtype)
    return np.asarray(value, dtype=dtype)


def fast_callable(session, fetches: Sequence, feeds: Sequence) -> Callable:
    """`session.make_callable(fetches, feed_list=feeds)`, without `Session.run`.

    Called with one value per feed (a `SparseTensorValue` for a `SparseTensor`),
    it returns the fetches' values as `Session.run` does. Composite fetches, or a
    feed that cannot be fed or is fetched, keep `session.make_callable`.
    """
    parts = [
        [f.indices, f.values, f.dense_shape] if isinstance(f, tf.SparseTensor) else [f]
        for f in feeds
    ]
    placeholders = [t for p in parts for t in p]
    fed = {t.ref() for t in placeholders}
    if (
        not all(isinstance(t, tf.Tensor) for t in [*fetches, *placeholders])
        or not all(session.graph.is_feedable(t) for t in placeholders)
        or any(t.ref() in fed for t in fetches)
    ):
        return session.make_callable(fetches, feed_list=feeds)
    options = config_pb2.CallableOptions()
    options.feed.extend(t.name for t in placeholders)
    options.fetch.extend(t.name for t in fetches)
    run = session._make_callable_from_options(options)  # noqa: SLF001
    checks = [
        (
            t.name,
            t.dtype.as_numpy_dtype,
            t.shape.as_list() if t.shape.rank is not None else None,
        )
        for t in placeholders
    ]
    sparse = [len(p) == 3 for p in parts]

    def call(*values):
        flat = []
        for is_sparse, value in zip(sparse, values, strict=True):
            if is_sparse:
                flat.extend(value)  # indices, values, dense_shape
            else:
                flat.append(value)
        args = []
        for (name, dtype, dims), value in zip(checks, flat, strict=True):
            array = _as_feed(value, dtype)
            if dims is not None and (
                array.ndim != len(dims)
                or any(
                    d is not None and d != n
                    for d, n in zip(dims, array.shape, strict=True)
                )
            ):
                raise ValueError(
                    f"Cannot feed value of shape {array.shape} for Tensor {name}, "
                    f"which has shape {tf.TensorShape(dims)}"
                )
            args.append(array)
        return run(*args)

    return call


class FastGraphState(_ORIGINAL_GRAPH_STATE):
    """tf.Transform's `_GraphStateCompatV1` (1.21.0), run by `fast_callable`."""

    def __init__(self, saved_model_dir, input_tensor_names, exclude_outputs, tf_config):
        # tf.Transform's own __init__, but for the callable.
        with tf.compat.v1.Graph().as_default() as graph:
            self._session = tf.compat.v1.Session(graph=graph, config=tf_config)
            with self._session.as_default():
                inputs, outputs = (
                    saved_transform_io.partially_apply_saved_transform_internal(
                        saved_model_dir, {}
                    )
                )
            self._session.run(tf.compat.v1.global_variables_initializer())
            self._session.run(tf.compat.v1.tables_initializer())
            graph.finalize()

            if set(input_tensor_names).difference(inputs.keys()):
                raise ValueError(
                    "Input tensor names contained tensors not in graph: "
                    f"{input_tensor_names}"
                )
            if set(exclude_outputs).difference(outputs.keys()):
                raise ValueError(
                    f"Excluded outputs contained keys not in graph: {exclude_outputs}"
                )
            non_excluded_output_keys = sorted(
                set(outputs.keys()).difference(exclude_outputs)
            )
            fetches = [outputs[key] for key in non_excluded_output_keys]
            tensor_inputs = graph_tools.get_dependent_inputs(graph, inputs, fetches)
            inputs_tensor_keys = sorted(tensor_inputs.keys())
            tensor_inputs_list = [tensor_inputs[key] for key in inputs_tensor_keys]
            callable_get_outputs = fast_callable(
                self._session, fetches, tensor_inputs_list
            )
            _RunMetaGraphDoFn._GraphStateCommon.__init__(  # noqa: SLF001
                self,
                saved_model_dir,
                inputs_tensor_keys,
                non_excluded_output_keys,
                callable_get_outputs,
            )
