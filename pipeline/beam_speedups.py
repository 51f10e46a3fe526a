"""Memoizes Beam's DoFn state/timer inspection, which dominates graph construction.

`apache_beam.transforms.userstate.get_dofn_specs(dofn)` wraps every bound method of
a DoFn in a `MethodWrapper`, which calls `inspect.signature` on it, and Beam calls it
about five times per ParDo (construction, `to_runner_api` twice, the runner's
visitors, each bundle processor). tf.Transform's graph has ~100 ParDos: on this
2-core machine that was 2.5 s of a 20,000-row run (py-spy; bench/RESULTS.md).

The result depends only on the DoFn's bound methods (their default arguments hold
the state and timer specs; plain functions stored on an instance are skipped by Beam
too), so it is cached per tuple of those methods' functions: exactly Beam's answer,
computed once per DoFn class. Errors (duplicate parameters) are never cached.
`install()` is idempotent and is called by the launcher before the graph is built;
nothing happens at import time.
"""

from __future__ import annotations

import threading
import types

from apache_beam.transforms import userstate

__all__ = ["install"]

_LOCK = threading.Lock()
_ORIGINAL = userstate.get_dofn_specs
_CACHE: dict[tuple, tuple[frozenset, frozenset]] = {}


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


def install() -> None:
    """Routes Beam's `get_dofn_specs` through the cache (idempotent)."""
    userstate.get_dofn_specs = cached_get_dofn_specs
