r"""Text tokens made safe for tf.Transform's vocabulary files, reversibly.

tf.Transform drops the empty token and tokens containing newlines from vocabulary
files. `escape_token` escapes `\\`, `\\n` and `\\r` first, so multi-line values
keep their own ids; `label_token` also writes the empty string as `EMPTY_TOKEN`,
so every class of a text label gets an id; `unescape_token` inverts both (a
vocabulary entry back to the value). `escaped` escapes several columns' tokens
with one escape of them all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import tensorflow as tf

__all__ = ["EMPTY_TOKEN", "escape_token", "escaped", "label_token", "unescape_token"]


def escape_token(x: tf.Tensor) -> tf.Tensor:
    """Escapes backslash, newline and carriage return (reversible, vocabulary-safe).

    The three rewrites run only when some value of the batch needs them, which
    one match over the joined batch tells (clean batches, the usual case, skip
    them).
    """

    def escape():
        y = tf.strings.regex_replace(x, r"\\", r"\\\\")
        y = tf.strings.regex_replace(y, "\n", r"\\n")
        return tf.strings.regex_replace(y, "\r", r"\\r")

    clean = tf.strings.regex_full_match(tf.strings.reduce_join(x), "[^\\\\\n\r]*")
    return tf.cond(clean, lambda: tf.identity(x), escape)


EMPTY_TOKEN = b"\\e"  # the empty string in a label vocabulary


_UNESCAPE = {b"\\": b"\\", b"n": b"\n", b"r": b"\r"}


def label_token(x: tf.Tensor) -> tf.Tensor:
    """`escape_token`, and the empty string as `EMPTY_TOKEN` (both reversible)."""
    y = escape_token(x)
    return tf.where(tf.equal(y, b""), tf.constant(EMPTY_TOKEN), y)


def escaped(values: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """`escape_token` of each 1-D string tensor, by one escape of them all.

    Escaping is element-wise (whether a batch skips it changes no value), so the
    values of all are concatenated, escaped once and split back: one match and
    one `cond` in the graph instead of one per tensor. Each result then needs all
    the tensors: pass feature columns only (serving feeds every feature column,
    never the label).
    """
    if len(values) < 2:
        return [escape_token(x) for x in values]
    sizes = tf.concat(tf.shape_n(values, out_type=tf.int64), axis=0)
    return tf.split(escape_token(tf.concat(values, axis=0)), sizes, num=len(values))


def unescape_token(token: bytes) -> bytes:
    """Inverts `label_token` (and `escape_token`): a vocabulary entry -> the value."""
    if token == EMPTY_TOKEN:
        return b""
    return re.sub(rb"\\(.)", lambda m: _UNESCAPE[m.group(1)], token, flags=re.S)
