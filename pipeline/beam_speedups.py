"""Memoizes two Beam lookups that dominate graph construction.

1. DoFn state/timer inspection.

`apache_beam.transforms.userstate.get_dofn_specs(dofn)` wraps every bound method of
a DoFn in a `MethodWrapper`, which calls `inspect.signature` on it, and Beam calls it
about five times per ParDo (construction, `to_runner_api` twice, the runner's
visitors, each bundle processor). tf.Transform's graph has ~100 ParDos: on this
2-core machine that was 2.5 s of a 20,000-row run (py-spy; bench/RESULTS.md).

The result depends only on the DoFn's bound methods (their default arguments hold
the state and timer specs; plain functions stored on an instance are skipped by Beam
too), so it is cached per tuple of those methods' functions: exactly Beam's answer,
computed once per DoFn class. Errors (duplicate parameters) are never cached.

2. Options views. `PipelineOptions.view_as(cls)` builds and runs an argparse parser
for `cls` on every call, and `Pipeline.apply` calls it several times per transform
(~0.6 s of a 20,000-row run's 1.5 s of graph construction, py-spy). A view holds no
state of its own: it reads and writes the options' shared `_all_options` dict, and
its parser depends only on `cls` and the options' fixed flags. So one view per
(options object, class) is cached, keyed weakly by the options object and
checked against its `_flags` and `_all_options` objects: a later write through any
view is seen through the cached one, exactly as through a new view.

`install()` is idempotent and is called by the launcher before the graph is built;
nothing happens at import time.
"""

from __future__ import annotations

import threading
import types
import weakref

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import userstate

__all__ = ["install"]

_LOCK = threading.Lock()
_ORIGINAL = userstate.get_dofn_specs
_CACHE: dict[tuple, tuple[frozenset, frozenset]] = {}
_ORIGINAL_VIEW_AS = PipelineOptions.view_as
_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


def install() -> None:
    """Routes `get_dofn_specs` and `view_as` through the caches (idempotent)."""
    userstate.get_dofn_specs = cached_get_dofn_specs
    PipelineOptions.view_as = cached_view_as
