"""The `--query` rule for MySQL/MariaDB: exactly one plain, read-only SELECT.

Checked before anything is sent, on the query's tokens outside string literals,
quoted identifiers and comments: one statement (a trailing `;` is allowed, the
client's multi-statement mode is off besides), starting with SELECT, WITH or `(`;
no `INTO` (OUTFILE, DUMPFILE, @variables), no locking reads (`FOR UPDATE`,
`FOR SHARE`, `LOCK IN SHARE MODE`), no data-changing keywords, no executable
comments (`/*! … */`, `/*M! … */`, whose text the server runs), and no call of a
built-in function whose effect a read-only transaction does not stop
(`SIDE_EFFECT_FUNCTIONS`: named locks other sessions wait on, server files,
sequences, also as `NEXT VALUE FOR`). The server-side guarantee is the read-only
transaction every read runs in; this check makes the refusal one clear line
before the run.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["QueryRefusedError", "CheckedQuery", "SIDE_EFFECT_FUNCTIONS", "check_query"]

_REFUSED_WORDS = {
    "INTO": "SELECT … INTO (OUTFILE, DUMPFILE, variables)",
    "OUTFILE": "INTO OUTFILE",
    "DUMPFILE": "INTO DUMPFILE",
    "UPDATE": "FOR UPDATE or UPDATE",
    "SHARE": "FOR SHARE / LOCK IN SHARE MODE",
    "LOCK": "LOCK",
    "UNLOCK": "UNLOCK",
    "INSERT": "INSERT",
    "DELETE": "DELETE",
    "REPLACE": "REPLACE",
    "CREATE": "CREATE",
    "DROP": "DROP",
    "ALTER": "ALTER",
    "TRUNCATE": "TRUNCATE",
    "RENAME": "RENAME",
    "GRANT": "GRANT",
    "REVOKE": "REVOKE",
    "CALL": "CALL",
    "LOAD": "LOAD",
    "HANDLER": "HANDLER",
    "PROCEDURE": "PROCEDURE",
}
SIDE_EFFECT_FUNCTIONS = {
    "GET_LOCK": "takes a named lock other sessions wait on",
    "RELEASE_LOCK": "releases a named lock",
    "RELEASE_ALL_LOCKS": "releases named locks",
    "LOAD_FILE": "reads a file on the server",
    "NEXTVAL": "advances a sequence",
    "SETVAL": "sets a sequence",
}
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_$]*)\s*\(")
_NEXT_VALUE = re.compile(r"\bNEXT\s+VALUE\s+FOR\b", re.IGNORECASE)
_FIRST_WORDS = ("SELECT", "WITH")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


class QueryRefusedError(ValueError):
    """A `--query` that is not exactly one plain read-only SELECT."""


@dataclasses.dataclass(frozen=True)
class CheckedQuery:
    """A checked query: its text without a trailing `;`, and as a FROM item."""

    text: str

    @property
    def subquery(self) -> str:
        """`(<query>) AS src`-ready: the query in parentheses."""
        return f"(\n{self.text}\n)"


def _code(query: str) -> str:
    """The query with literals, quoted names and comments blanked out.

    Length-preserving (offsets match the query's). Raises on an executable
    comment or an unterminated literal or comment.
    """
    out: list[str] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        two = query[i : i + 2]
        if ch in ("'", '"', "`"):
            j = i + 1
            while True:
                if j >= n:
                    raise QueryRefusedError(
                        "--query has an unterminated quoted string or name"
                    )
                if query[j] == "\\" and ch != "`":
                    j += 2
                    continue
                if query[j] == ch:
                    if query[j + 1 : j + 2] == ch:
                        j += 2
                        continue
                    break
                j += 1
            out.append("0" * (j + 1 - i))  # not a word, not blank
            i = j + 1
        elif two == "/*":
            if query[i + 2 : i + 3] in ("!", "+") or query[i + 2 : i + 4] == "M!":
                raise QueryRefusedError(
                    "--query has an executable comment (/*! … */ or /*M! … */, "
                    "which the server runs); write the SQL plainly"
                )
            end = query.find("*/", i + 2)
            if end < 0:
                raise QueryRefusedError("--query has an unterminated /* comment")
            out.append(" " * (end + 2 - i))
            i = end + 2
        elif ch == "#" or (
            two == "--" and query[i + 2 : i + 3] in (" ", "\t", "\n", "\r", "")
        ):
            end = query.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def check_query(query: str) -> CheckedQuery:
    """Checks `query` (see the module docstring); raises QueryRefusedError."""
    if not query or not query.strip():
        raise QueryRefusedError("--query is empty")
    code = _code(query)
    stripped = code.rstrip()
    while stripped.endswith(";"):
        stripped = stripped[:-1].rstrip()
    text = query[: len(stripped)]
    if ";" in stripped:
        raise QueryRefusedError(
            "--query must be exactly one statement; it has a ';' between statements"
        )
    words = [w.upper() for w in _WORD.findall(stripped)]
    first = stripped.lstrip().lstrip("(").lstrip()
    first_word = _WORD.match(first)
    if first_word is None or first_word.group(0).upper() not in _FIRST_WORDS:
        raise QueryRefusedError(
            "--query must be one read-only SELECT (or WITH … SELECT) statement"
        )
    for word in words:
        if word in _REFUSED_WORDS:
            raise QueryRefusedError(
                f"--query must be one plain read-only SELECT; it has "
                f"{_REFUSED_WORDS[word]} ({word} outside quotes)"
            )
    calls = [c.upper() for c in _CALL.findall(stripped)]
    for name in calls:
        if name in SIDE_EFFECT_FUNCTIONS:
            raise QueryRefusedError(
                f"--query must be one plain read-only SELECT; it calls {name}(), "
                f"which {SIDE_EFFECT_FUNCTIONS[name]}"
            )
    if _NEXT_VALUE.search(stripped):
        raise QueryRefusedError(
            "--query must be one plain read-only SELECT; it has NEXT VALUE FOR, "
            "which advances a sequence"
        )
    return CheckedQuery(text)
