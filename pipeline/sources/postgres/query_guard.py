"""`--query` is exactly one read-only statement, decided by PostgreSQL's own grammar.

`check_query` parses the text with pglast, which embeds the server's parser
(libpg_query), before anything is sent to a server. It accepts one SELECT, VALUES
or TABLE statement, also with WITH, and refuses everything else in one line:
several statements (`…; COMMIT; BEGIN READ WRITE; DELETE …`), DML, DDL,
transaction control, SET, COPY, DO, CALL, EXPLAIN, a data-modifying CTE at any
depth, SELECT INTO and row-locking clauses (FOR UPDATE/SHARE). Wrapping the text
as a subquery is no defence on its own: PostgreSQL's simple query protocol runs
every statement of a string.

A read-only transaction stops writes, but not the built-in functions that act
outside it: signalling other sessions (`pg_terminate_backend`), configuration and
replication (`pg_reload_conf`, `pg_switch_wal`, replication slots), statements run
over another connection (`dblink*`), server files (`lo_import`, `lo_export`),
session settings (`set_config`) and sequences. A call of any of them
(`SIDE_EFFECT_FUNCTIONS`, matched by name in any schema) is refused too. What the
grammar cannot see is what a user-defined function or a view calls with the
role's rights: a role with SELECT rights only is the strongest guarantee.

The relations the statement names (CTE names excluded) are returned so the
launcher can lock them, as pg_dump does. Pure module: no database, no Beam.
"""

from __future__ import annotations

import dataclasses

import pglast
from pglast import ast
from pglast.visitors import Visitor

__all__ = ["CheckedQuery", "QueryRefusedError", "SIDE_EFFECT_FUNCTIONS", "check_query"]

ACCEPTED = (
    "it takes exactly one read-only SELECT, VALUES or TABLE statement "
    "(WITH … SELECT included; no data-modifying WITH, SELECT INTO, FOR UPDATE/SHARE "
    "or functions with side effects)"
)

_STATEMENT_NAMES = {
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
    "TransactionStmt": "transaction control",
    "VariableSetStmt": "SET",
    "VariableShowStmt": "SHOW",
    "CopyStmt": "COPY",
    "DoStmt": "DO",
    "CallStmt": "CALL",
    "ExplainStmt": "EXPLAIN",
    "CreateTableAsStmt": "CREATE TABLE AS",
    "LockStmt": "LOCK",
    "TruncateStmt": "TRUNCATE",
    "DropStmt": "DROP",
}


# Built-in functions whose effects a read-only transaction does not stop (or that
# fail only once running), by what they do.
SIDE_EFFECT_FUNCTIONS = {
    **dict.fromkeys(
        ("pg_terminate_backend", "pg_cancel_backend"), "signals other sessions"
    ),
    **dict.fromkeys(
        (
            "pg_reload_conf",
            "pg_rotate_logfile",
            "pg_promote",
            "pg_switch_wal",
            "pg_create_restore_point",
            "pg_backup_start",
            "pg_backup_stop",
            "pg_start_backup",
            "pg_stop_backup",
            "pg_wal_replay_pause",
            "pg_wal_replay_resume",
            "pg_create_physical_replication_slot",
            "pg_create_logical_replication_slot",
            "pg_copy_physical_replication_slot",
            "pg_copy_logical_replication_slot",
            "pg_drop_replication_slot",
            "pg_replication_slot_advance",
            "pg_logical_emit_message",
            "pg_stat_reset",
            "pg_stat_reset_shared",
            "pg_stat_reset_single_table_counters",
            "pg_stat_reset_single_function_counters",
            "pg_stat_reset_slru",
            "pg_stat_reset_replication_slot",
            "pg_stat_reset_subscription_stats",
        ),
        "acts on the server",
    ),
    **dict.fromkeys(
        (
            "dblink",
            "dblink_exec",
            "dblink_connect",
            "dblink_connect_u",
            "dblink_send_query",
            "dblink_open",
        ),
        "runs statements over another connection",
    ),
    **dict.fromkeys(
        ("lo_import", "lo_export", "lo_unlink", "lo_create", "lo_creat", "lo_put"),
        "reads or writes server files or large objects",
    ),
    "lo_from_bytea": "reads or writes server files or large objects",
    "set_config": "changes session settings",
    "nextval": "advances a sequence",
    "setval": "sets a sequence",
    "pg_notify": "notifies listeners",
}


class QueryRefusedError(ValueError):
    """The `--query` text is not exactly one read-only statement."""


@dataclasses.dataclass(frozen=True)
class CheckedQuery:
    """A `--query` that passed `check_query`.

    Attributes:
        statement: the single statement's text, without a trailing `;`.
        relations: (schema or None, name) of every relation it names, in first-use
            the parser's order, without duplicates; CTE names are not relations.
    """

    statement: str
    relations: tuple[tuple[str | None, str], ...]

    @property
    def subquery(self) -> str:
        """The statement as a parenthesised FROM item.

        The newline before `)` keeps a trailing `-- comment` from swallowing it.
        """
        return f"(\n{self.statement}\n)"


def _kind(node: ast.Node) -> str:
    name = type(node).__name__
    return _STATEMENT_NAMES.get(name, name.removesuffix("Stmt").upper())


class _Inspector(Visitor):
    """Collects relations and CTE names, and the first forbidden construct."""

    def __init__(self):
        super().__init__()
        self.relations: list[tuple[str | None, str]] = []
        self.ctes: set[str] = set()
        self.problem: str | None = None

    def _refuse(self, problem: str) -> None:
        if self.problem is None:
            self.problem = problem

    def visit_RangeVar(self, ancestors, node):  # noqa: N802 - pglast's naming
        relation = (node.schemaname, node.relname)
        if relation not in self.relations:
            self.relations.append(relation)

    def visit_CommonTableExpr(self, ancestors, node):  # noqa: N802
        self.ctes.add(node.ctename)
        if not isinstance(node.ctequery, ast.SelectStmt):
            self._refuse(f"a data-modifying WITH ({_kind(node.ctequery)})")

    def visit_SelectStmt(self, ancestors, node):  # noqa: N802
        if node.intoClause is not None:
            self._refuse("SELECT INTO")
        if node.lockingClause:
            self._refuse("a row-locking clause (FOR UPDATE/SHARE)")

    def visit_FuncCall(self, ancestors, node):  # noqa: N802
        name = node.funcname[-1].sval.lower()
        if name in SIDE_EFFECT_FUNCTIONS:
            self._refuse(f"a call of {name}(), which {SIDE_EFFECT_FUNCTIONS[name]}")

    def visit(self, ancestors, node):  # any other node
        if type(node).__name__.endswith("Stmt") and not isinstance(
            node, ast.SelectStmt
        ):
            self._refuse(_kind(node))


def check_query(text: str) -> CheckedQuery:
    """Returns the checked query, or raises QueryRefusedError (one line).

    Nothing is sent to any server: the decision is the parser's alone.
    """
    try:
        statements = pglast.parse_sql(text)
    except pglast.parser.ParseError as err:
        raise QueryRefusedError(f"`--query` is not valid SQL: {err}") from None
    if not statements:
        raise QueryRefusedError(f"`--query` holds no statement; {ACCEPTED}")
    if len(statements) > 1:
        kinds = ", ".join(_kind(s.stmt) for s in statements)
        raise QueryRefusedError(
            f"`--query` holds {len(statements)} statements ({kinds}); {ACCEPTED}"
        )
    raw = statements[0]
    if not isinstance(raw.stmt, ast.SelectStmt):
        raise QueryRefusedError(f"`--query` is {_kind(raw.stmt)}; {ACCEPTED}")
    inspector = _Inspector()
    inspector(raw.stmt)
    if inspector.problem is not None:
        raise QueryRefusedError(f"`--query` has {inspector.problem}; {ACCEPTED}")
    start = raw.stmt_location or 0
    statement = text[start : start + raw.stmt_len] if raw.stmt_len else text[start:]
    statement = statement.strip()
    checked = CheckedQuery(
        statement=statement,
        relations=tuple(
            (schema, name)
            for schema, name in inspector.relations
            if schema is not None or name not in inspector.ctes
        ),
    )
    # Belt and braces: the wrapped form must still be one plain SELECT.
    wrapped = pglast.parse_sql(f"SELECT * FROM {checked.subquery} AS q")
    if len(wrapped) != 1 or not isinstance(wrapped[0].stmt, ast.SelectStmt):
        raise QueryRefusedError(f"`--query` cannot be read as a subquery; {ACCEPTED}")
    return checked
