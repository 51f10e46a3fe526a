"""Keeps Python's cyclic garbage collector off the objects a job holds throughout.

With TensorFlow, Beam and tf.Transform loaded a process holds ~470,000 objects
(~520,000 once a wide table's pipeline is built), and each full collection walks
all of them: 0.2-0.4 s here, several times per run, for almost no garbage (a full
collection after the imports frees 3 objects, after `build_pipeline` none). So:

- `long_lived()`: no collection inside, then what is alive is frozen; for the
  imports.
- `collection_paused()`: no collection inside; for building large acyclic values
  (JSON), whose allocations would trigger full collections.
- `freeze()`: the objects alive now are skipped by later collections (`gc.freeze`);
  called after the imports, after the pipeline is built and before the statistics
  are published, points where what is alive stays alive to the end of the run.
- `thaw()`: gives them all back to the collector (`gc.unfreeze`), so a process that
  runs more jobs (tests, a notebook) collects a finished job's cycles as usual;
  `run_job` thaws when it ends, however it ends.

Frozen objects are not freed while frozen, so nothing is frozen that a run could
want to free early; what the run allocates later is collected as usual. Python has
one frozen set: `thaw()` also gives back anything a caller froze before the job.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["collection_paused", "freeze", "long_lived", "thaw"]


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (restores the previous setting)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def long_lived() -> Iterator[None]:
    """No collection inside, then every object alive is frozen (for imports).

    Frozen before the collector is back on: its first collection would otherwise
    walk all the objects allocated inside, counted as new.
    """
    with collection_paused():
        yield
        gc.freeze()


def freeze() -> None:
    """Moves every object alive now out of the collector's reach until `thaw()`."""
    gc.freeze()


def thaw() -> None:
    """Gives the frozen objects back to the collector (its oldest generation)."""
    gc.unfreeze()
