"""Cuts four Beam costs that dominate a small run's fixed cost; results unchanged.

What each saved is in bench/RESULTS.md.

1. DoFn state/timer inspection.

`apache_beam.transforms.userstate.get_dofn_specs(dofn)` wraps every bound method of
a DoFn in a `MethodWrapper`, which calls `inspect.signature` on it, and Beam calls it
about five times per ParDo (construction, `to_runner_api` twice, the runner's
visitors, each bundle processor); tf.Transform's graph has ~100 ParDos.
The result depends only on the DoFn's bound methods (their default arguments hold
the state and timer specs; plain functions stored on an instance are skipped by Beam
too), so it is cached per tuple of those methods' functions: exactly Beam's answer,
computed once per DoFn class. Errors (duplicate parameters) are never cached.

2. Options views. `PipelineOptions.view_as(cls)` builds and runs an argparse parser
for `cls` on every call, and `Pipeline.apply` calls it several times per transform.
A view holds no state of its own: it reads and writes the options' shared
`_all_options` dict, and its parser depends only on `cls` and the options' fixed
flags. So one view per (options object, class) is cached, keyed weakly by the
options object and checked against its `_flags` and `_all_options` objects: a later
write through any view is seen through the cached one, exactly as through a new view.

3. Pickled-function compression. Beam pickles every DoFn about eight times per run
(`to_runner_api`, the runner's copies, each bundle processor) and compresses each
pickle with bz2 at level 9, slow even for small payloads, though there are only a
few hundred distinct ones. `install()` gives Beam's pickler a bz2 whose `compress`
and `decompress` remember their last 4,096 results (keyed by the input bytes): the
same bz2 bytes as before, so every worker and runner reads them as usual.

4. The state sampler's sleep. Each bundle starts a thread that samples which step is
running, sleeping between samples for up to 200 ms, and the bundle's end joins it,
waiting out the sleep. `install()` caps the sleep at `STATE_SAMPLING_PERIOD_MS`
(20 ms). The sampler wakes more often, without the GIL, and measures the same
step times.

`install()` is idempotent and is called by the launcher before the graph is built;
nothing happens at import time. The patches reach into Beam's internals, so they
apply only on the Beam version they were tested with (`TESTED_BEAM_VERSION`; on any
other, `install()` logs once and changes nothing), and `SQL2TFRECORD_BEAM_SPEEDUPS=0`
in the environment turns them off. Either way the job's output is the same (a test
compares two runs example by example).
"""

from __future__ import annotations

import bz2
import functools
import logging
import os
import threading
import types
import weakref

import apache_beam
from apache_beam.internal import cloudpickle_pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.worker import statesampler
from apache_beam.transforms import userstate

__all__ = ["install", "enabled", "STATE_SAMPLING_PERIOD_MS", "TESTED_BEAM_VERSION"]

_LOGGER = logging.getLogger(__name__)

TESTED_BEAM_VERSION = "2.77.0"
OFF_SWITCH = "SQL2TFRECORD_BEAM_SPEEDUPS"

STATE_SAMPLING_PERIOD_MS = 20

_LOCK = threading.Lock()
_ORIGINAL = userstate.get_dofn_specs
_CACHE: dict[tuple, tuple[frozenset, frozenset]] = {}
_ORIGINAL_VIEW_AS = PipelineOptions.view_as
_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ORIGINAL_STATE_SAMPLER = statesampler.StateSampler


def _method_functions(dofn) -> tuple:
    functions = []
    for name in dir(dofn):
        method = getattr(dofn, name, None)
        if isinstance(method, types.MethodType):
            functions.append((name, method.__func__))
    return tuple(functions)


def cached_get_dofn_specs(dofn) -> tuple[set, set]:
    """`userstate.get_dofn_specs`, memoized by the DoFn's method functions."""
    key = _method_functions(dofn)
    found = _CACHE.get(key)
    if found is None:
        states, timers = _ORIGINAL(dofn)
        found = (frozenset(states), frozenset(timers))
        with _LOCK:
            _CACHE[key] = found
    return set(found[0]), set(found[1])


def cached_view_as(options: PipelineOptions, cls: type) -> PipelineOptions:
    """`PipelineOptions.view_as`, one view per options object and class."""
    views = _VIEWS.get(options)
    if views is None:
        with _LOCK:
            views = _VIEWS.setdefault(options, {})
    key = (cls, id(options._flags), id(options._all_options))
    view = views.get(key)
    if view is None or view._all_options is not options._all_options:
        view = views[key] = _ORIGINAL_VIEW_AS(options, cls)
    return view


class MemoizedBz2:
    """The `bz2` functions Beam's pickler calls, remembering recent results."""

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def _compress(data: bytes, compresslevel: int) -> bytes:
        return bz2.compress(data, compresslevel)

    @staticmethod
    def compress(data: bytes, compresslevel: int = 9) -> bytes:
        """`bz2.compress`, memoized for bytes input."""
        if not isinstance(data, bytes):
            return bz2.compress(data, compresslevel)
        return MemoizedBz2._compress(data, compresslevel)

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def _decompress(data: bytes) -> bytes:
        return bz2.decompress(data)

    @staticmethod
    def decompress(data: bytes) -> bytes:
        """`bz2.decompress`, memoized for bytes input."""
        if not isinstance(data, bytes):
            return bz2.decompress(data)
        return MemoizedBz2._decompress(data)


class PromptStateSampler(_ORIGINAL_STATE_SAMPLER):
    """Beam's `StateSampler` sleeping at most `STATE_SAMPLING_PERIOD_MS` per sample."""

    def __init__(
        self, prefix, counter_factory, sampling_period_ms=STATE_SAMPLING_PERIOD_MS
    ):
        super().__init__(
            prefix, counter_factory, min(sampling_period_ms, STATE_SAMPLING_PERIOD_MS)
        )


_SKIPS_LOGGED: set[str] = set()


def switched_off(off_switch: str) -> bool:
    """Whether the environment variable `off_switch` says 0, false, off or no."""
    value = os.environ.get(off_switch, "1").strip().lower()
    return value in ("0", "false", "off", "no")


def log_skip_once(name: str, library: str, version: str, tested: str, off_switch: str):
    """Says (once per `name`) that speed-ups `name` were not applied, and why."""
    if name in _SKIPS_LOGGED:
        return
    _SKIPS_LOGGED.add(name)
    _LOGGER.info(
        "%s not applied (%s %s, tested with %s; %s=%s)",
        name,
        library,
        version,
        tested,
        off_switch,
        os.environ.get(off_switch, "unset"),
    )


def enabled() -> bool:
    """Whether `install()` patches Beam: the tested version, and not switched off."""
    return (
        not switched_off(OFF_SWITCH) and apache_beam.__version__ == TESTED_BEAM_VERSION
    )


def install() -> None:
    """Routes the lookups above through their caches, caps the sampler (idempotent).

    Does nothing (and says so once) on another Beam version or when switched off.
    """
    if not enabled():
        log_skip_once(
            "Beam speed-ups",
            "Beam",
            apache_beam.__version__,
            TESTED_BEAM_VERSION,
            OFF_SWITCH,
        )
        return
    userstate.get_dofn_specs = cached_get_dofn_specs
    PipelineOptions.view_as = cached_view_as
    cloudpickle_pickler.bz2 = MemoizedBz2
    statesampler.StateSampler = PromptStateSampler
