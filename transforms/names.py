r"""Feature names: each source column mapped to a name valid wherever TF uses one.

A column's feature name is its raw feature key (raw schema, tf.Example key, the
`serve_raw` signature input), the default name of its transformed feature, a TF
name scope, a tf.Transform vocabulary file name, an Arrow field and a JSON key.
The alphabet valid in all of these is ASCII letters and digits in words joined by
single underscores, starting with a letter (`SAFE_NAME`). tf.Transform's
vocabulary file sanitisation (`[^\w\s-]` -> `_`, then runs of `-` and blanks ->
`-`) is the identity on it, so distinct names stay distinct files, and a double
underscore stays free for our own suffixes (`<key>__is_null`,
`__sql2tfrecord_split__`).

The rule, a pure function of the *set* of the source's column names (their order
does not matter; the same table gives the same names in every run):

* a column name matching `SAFE_NAME` that no other column name equals
  case-insensitively is its own feature name (vocabulary files `Cat` and `cat`
  would be one file on a case-insensitive filesystem);
* any other name is sanitised — accents dropped (NFKD), each run of other
  characters becomes `_`, cut to 40 characters, `f_` put before a leading digit,
  `f` used for an empty result — and suffixed `_` + the first 8 hex digits of
  the SHA-256 of its UTF-8 bytes: `a/b` -> `a_b_c14cddc0`, `ünïcødé_列` ->
  `unic_de_090ccd5f`, `1st` -> `f_1st_…`;
* should a suffixed name still equal another feature name (case-insensitively:
  e.g. a real column literally named `a_b_<its hash>`), the suffixed names in the
  clash take 16, then 32, then 64 hex digits, until all names differ.

The original name stays what users see: errors, logs and the manifest's
`names` (original -> feature name) use it.
"""

from __future__ import annotations

import collections
import hashlib
import re
import unicodedata
from collections.abc import Iterable

__all__ = [
    "SAFE_NAME",
    "FeatureNameError",
    "is_safe",
    "suggest",
    "feature_names",
    "derived_name",
]

SAFE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*")
_MAX_BASE = 40
_DIGITS = (8, 16, 32, 64)


class FeatureNameError(ValueError):
    """Feature names that cannot be made distinct (practically impossible)."""


def is_safe(name: str) -> bool:
    """Whether `name` is valid as a feature name everywhere (see module docstring)."""
    return SAFE_NAME.fullmatch(name) is not None


def _base(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    base = re.sub(r"[^A-Za-z0-9]+", "_", plain).strip("_")[:_MAX_BASE].rstrip("_")
    if not base:
        return "f"
    return base if base[0].isalpha() else f"f_{base}"


def suggest(name: str, digits: int = 8) -> str:
    """The sanitised, hash-suffixed name of `name` (see module docstring)."""
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:digits]
    return f"{_base(name)}_{digest}"


def feature_names(columns: Iterable[str]) -> dict[str, str]:
    """Maps each column name to its feature name (see module docstring).

    Raises:
        FeatureNameError: two names still clash with 64 hex digits of SHA-256.
    """
    names = sorted(set(columns))
    folded = collections.Counter(n.lower() for n in names)
    result = {n: n for n in names if is_safe(n) and folded[n.lower()] == 1}
    taken = {n.lower() for n in result}
    pending = [n for n in names if n not in result]
    for digits in _DIGITS:
        if not pending:
            break
        candidates = {n: suggest(n, digits) for n in pending}
        counts = collections.Counter(c.lower() for c in candidates.values())
        for name, candidate in candidates.items():
            if candidate.lower() not in taken and counts[candidate.lower()] == 1:
                result[name] = candidate
        taken |= {result[n].lower() for n in pending if n in result}
        pending = [n for n in pending if n not in result]
    if pending:
        raise FeatureNameError(f"columns {pending} get clashing feature names")
    return result


def derived_name(base: str, suffix: str, taken: Iterable[str]) -> str:
    """`<base>_<suffix>` (an is-missing indicator, a time part), unless it clashes.

    When it equals a name in `taken` case-insensitively (a real column called
    `x_is_missing` next to a nullable `x`), it gets `_` + 8 (then 16, 32, 64) hex
    digits of the SHA-256 of `<base>_<suffix>`: deterministic, never the clash.
    """
    folded = {t.lower() for t in taken}
    name = f"{base}_{suffix}"
    if name.lower() not in folded:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
    for digits in _DIGITS:
        candidate = f"{name}_{digest[:digits]}"
        if candidate.lower() not in folded:
            return candidate
    raise FeatureNameError(f"feature name {name!r} clashes with {sorted(taken)}")
