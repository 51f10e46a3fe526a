"""Loading a TFX-style module file that defines `preprocessing_fn(inputs)`.

The module is used unchanged: it receives the raw inputs as TFX's Transform component
gives them (dense tensors for NOT NULL columns, SparseTensors for nullable ones),
keyed by the columns' feature names (`transforms.names`: the column name itself for
plain ASCII names; the manifest's `names` lists them).
Every way a module can be wrong — a syntax error, an import that raises, no
`preprocessing_fn`, a `preprocessing_fn` that raises, returns no dict or drops the
label — is a `UserModuleError` naming the file (and the line, where Python knows it),
raised while the graph is built, before any row is read.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import traceback
from collections.abc import Callable

__all__ = ["UserModuleError", "load_preprocessing_fn"]


class UserModuleError(ValueError):
    """A `--preprocessing_module` that cannot be used; the message names the file."""


def _where(err: BaseException, path: str) -> str:
    """`line N` of the deepest frame in `path`, or of a SyntaxError; else ''."""
    if isinstance(err, SyntaxError) and err.lineno:
        return f" (line {err.lineno})"
    real = os.path.realpath(path)
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(err.__traceback__)
        if os.path.realpath(frame.filename) == real
    ]
    return f" (line {lines[-1]})" if lines else ""


def _describe(err: BaseException) -> str:
    if isinstance(err, SyntaxError):
        return f"SyntaxError: {err.msg}"
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@functools.lru_cache(maxsize=8)
def load_preprocessing_fn(path: str, label: str | None = None) -> Callable:
    """Imports `path` (once) and returns its `preprocessing_fn`, checked on each call.

    Args:
        path: the module file.
        label: the transformed label key the outputs must hold, if known.

    Raises:
        UserModuleError: naming the file and the problem (also from the returned
            function, when the user's function raises or returns a wrong value).
    """
    flag = "--preprocessing_module"
    name = "sql2tfrecord_user_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserModuleError(f"{flag}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise UserModuleError(
            f"{flag}: importing {path} failed{_where(err, path)}: {_describe(err)}"
        ) from err
    fn = getattr(module, "preprocessing_fn", None)
    if not callable(fn):
        raise UserModuleError(f"{flag}: {path} defines no preprocessing_fn(inputs)")

    @functools.wraps(fn)
    def checked(inputs):
        try:
            outputs = fn(inputs)
        except Exception as err:
            raise UserModuleError(
                f"{flag}: preprocessing_fn in {path} raised{_where(err, path)}: "
                f"{_describe(err)}"
            ) from err
        if not isinstance(outputs, dict):
            raise UserModuleError(
                f"{flag}: preprocessing_fn in {path} must return a dict of tensors, "
                f"returned {type(outputs).__name__}"
            )
        if label is not None and label not in outputs:
            raise UserModuleError(
                f"{flag}: preprocessing_fn in {path} returns no {label!r} (the "
                f"--label); it returns {sorted(map(str, outputs))}"
            )
        return outputs

    return checked
