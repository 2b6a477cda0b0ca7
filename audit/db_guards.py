"""Append-only in the database itself: triggers that refuse to rewrite the record, on PostgreSQL and SQLite.

The model's save()/delete() refuse edits of single objects, but a queryset `.update()`/`.delete()` (or any
SQL) bypasses them. These triggers make the database refuse it:

- audit events: no DELETE; no UPDATE except sealing (audit.chain), which may only fill `chain_seq` and
  `chain_hash` of an unsealed event and change nothing else.

Other apps (cases) install their own guards with the helpers here. Triggers are installed by a migration
and re-installed after every `migrate` (post_migrate), and dropped before it (pre_migrate): SQLite rebuilds a
table for many schema changes, which silently drops its triggers, and a trigger naming a table being rebuilt
can make the rebuild fail. So migrations run without guards and the guards are always there afterwards.

The one exception is `manage.py flush` (wiping the whole database; tests use it between transactional
tests): PostgreSQL empties tables with TRUNCATE, which row triggers do not see, and on SQLite the DELETE
triggers ask `hv_guard_bypass()`, a function this process registers on its connections and turns on only
inside `guards_bypassed()`. Another SQLite client has no such function, so its DELETE fails too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextlib import contextmanager

_state = threading.local()

BYPASS_FUNCTION = "hv_guard_bypass"
ERRCODE = "integrity_constraint_violation"  # PostgreSQL SQLSTATE 23000: Django raises IntegrityError


@contextmanager
def guards_bypassed():
    """Let this thread's SQLite DELETEs through the guards (only `manage.py flush` uses it)."""
    previous = getattr(_state, "bypass", False)
    _state.bypass = True
    try:
        yield
    finally:
        _state.bypass = previous


def _bypass_active() -> int:
    return 1 if getattr(_state, "bypass", False) else 0


def register_sqlite_functions(sender=None, connection=None, **kwargs) -> None:
    """connection_created receiver: the function the SQLite DELETE triggers consult."""
    if connection is not None and connection.vendor == "sqlite":
        connection.connection.create_function(BYPASS_FUNCTION, 0, _bypass_active)


def quote(connection, name: str) -> str:
    return connection.ops.quote_name(name)


def changed_any(connection, columns: Iterable[str]) -> str:
    """SQL true when NEW differs from OLD in any of `columns` (NULL-safe, both vendors)."""
    operator = "IS DISTINCT FROM" if connection.vendor == "postgresql" else "IS NOT"
    return "(" + " OR ".join(f"NEW.{quote(connection, c)} {operator} OLD.{quote(connection, c)}" for c in columns) + ")"


def sqlite_trigger(name: str, *, timing: str, table: str, when: str, message: str) -> str:
    escaped = message.replace("'", "''")
    return (
        f"CREATE TRIGGER {name} {timing} ON {table} FOR EACH ROW WHEN {when} "
        f"BEGIN SELECT RAISE(ABORT, '{escaped}'); END"
    )


def sqlite_bypass_condition() -> str:
    return f"NOT {BYPASS_FUNCTION}()"


def pg_function(name: str, body: str) -> str:
    return f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $hv$\nBEGIN\n{body}\nEND\n$hv$"


def pg_raise(message: str, *args: str) -> str:
    escaped = message.replace("'", "''")
    arguments = "".join(f", {arg}" for arg in args)
    return f"RAISE EXCEPTION '{escaped}'{arguments} USING ERRCODE = '{ERRCODE}';"


def pg_trigger(name: str, *, timing: str, table: str, function: str) -> str:
    return f"CREATE TRIGGER {name} {timing} ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()"


def existing_tables(connection) -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


def drop_triggers(connection, triggers: Iterable[tuple[str, str]]) -> None:
    """Drop (trigger name, table) pairs that exist; missing ones are fine."""
    tables = existing_tables(connection)
    with connection.cursor() as cursor:
        for name, table in triggers:
            if connection.vendor == "postgresql":
                if table in tables:
                    cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {quote(connection, table)}")
            elif connection.vendor == "sqlite":
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")


def execute(connection, statements: Iterable[str]) -> None:
    if connection.vendor == "sqlite":
        register_sqlite_functions(connection=connection)
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


# The audit trail's own guards.

AUDIT_TABLE = "audit_auditevent"
SEAL_COLUMNS = ("chain_seq", "chain_hash")
AUDIT_TRIGGERS = (
    ("hv_audit_event_guard", AUDIT_TABLE),  # PostgreSQL: UPDATE and DELETE
    ("hv_audit_event_no_update", AUDIT_TABLE),  # SQLite
    ("hv_audit_event_no_delete", AUDIT_TABLE),  # SQLite
)


def _audit_statements(connection, columns: list[str]) -> list[str]:
    table = quote(connection, AUDIT_TABLE)
    message = "audit events are append-only"
    if connection.vendor == "postgresql":
        body = (
            "IF TG_OP = 'UPDATE' AND OLD.chain_seq IS NULL AND NEW.chain_seq IS NOT NULL AND NEW.chain_hash <> ''\n"
            "   AND (to_jsonb(NEW) - 'chain_seq' - 'chain_hash') = (to_jsonb(OLD) - 'chain_seq' - 'chain_hash') THEN\n"
            "  RETURN NEW;\n"
            "END IF;\n" + pg_raise(message + ": % of audit event % refused", "TG_OP", "OLD.id")
        )
        return [
            pg_function("hv_audit_event_guard", body),
            pg_trigger(
                "hv_audit_event_guard", timing="BEFORE UPDATE OR DELETE", table=table, function="hv_audit_event_guard"
            ),
        ]
    if connection.vendor == "sqlite":
        others = [column for column in columns if column not in SEAL_COLUMNS]
        sealing_only = (
            "OLD.chain_seq IS NULL AND NEW.chain_seq IS NOT NULL AND NEW.chain_hash <> '' AND NOT "
            + changed_any(connection, others)
        )
        return [
            sqlite_trigger(
                "hv_audit_event_no_update",
                timing="BEFORE UPDATE",
                table=table,
                when=f"NOT ({sealing_only})",
                message=message + ": UPDATE refused",
            ),
            sqlite_trigger(
                "hv_audit_event_no_delete",
                timing="BEFORE DELETE",
                table=table,
                when=sqlite_bypass_condition(),
                message=message + ": DELETE refused",
            ),
        ]
    return []


def install_audit_guards(connection, model) -> None:
    """(Re)create the audit table's triggers; `model` is AuditEvent (or its historical version in a migration)."""
    if AUDIT_TABLE not in existing_tables(connection):
        return
    columns = [field.column for field in model._meta.concrete_fields]
    drop_triggers(connection, AUDIT_TRIGGERS)
    execute(connection, _audit_statements(connection, columns))


def drop_audit_guards(connection) -> None:
    drop_triggers(connection, AUDIT_TRIGGERS)
