"""Loading a TFX-style module file that defines `preprocessing_fn(inputs)`.

The module is used unchanged: it receives the raw inputs as TFX's Transform component
gives them (dense tensors for NOT NULL columns, SparseTensors for nullable ones),
keyed by the columns' feature names (`transforms.names`: the column name itself for
plain ASCII names; the manifest's `names` lists them).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

__all__ = ["load_preprocessing_fn"]


def load_preprocessing_fn(path: str) -> Callable:
    """Imports `path` and returns its `preprocessing_fn`.

    Raises:
        ValueError: naming the problem.
    """
    name = "sql2tfrecord_user_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--preprocessing_module: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise ValueError(
            f"--preprocessing_module: importing {path} failed: "
            f"{type(err).__name__}: {err}"
        ) from err
    fn = getattr(module, "preprocessing_fn", None)
    if not callable(fn):
        raise ValueError(f"--preprocessing_module: {path} defines no preprocessing_fn")
    return fn
