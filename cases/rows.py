"""Rows written by hand-built SQL, for the classification workflow's hot path.

The ORM's compilation of a one-image task's few statements cost more CPU than the classification itself
(docs/benchmarks.md, "the task's fixed cost"), so the workflow writes them with statements built once per
process from the models' metadata (hematovision.statements): table and column names quoted from ``_meta``,
every value a parameter. PostgreSQL and SQLite; other databases fall back to the ORM.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from django.db import connections, router

from hematovision.statements import cached_statement, placeholders, supports_returning


def update_rows(model, objects: Sequence, field_names: Sequence[str], *, only_if: dict | None = None) -> set | None:
    """Write `field_names` of each of `objects` (saved rows of `model`), each row its own values, in one UPDATE.

    `only_if` ({field name: value}) restricts the write to the rows that still hold those values; the primary
    keys of the rows written are then returned (None without it).

    PostgreSQL and SQLite (3.33+) join the table to a VALUES list (its columns are column1, column2, ... on
    both). Django's bulk_update writes a CASE per field listing every row, whose compilation costs more
    CPU than the classification it stores; one UPDATE per row costs a query each. No signal is sent and
    auto_now is not applied, as with QuerySet.update(). Other databases get one UPDATE per row.
    """
    if not objects:
        return None if only_if is None else set()
    connection = connections[router.db_for_write(model)]
    fields = [model._meta.get_field(name) for name in field_names]
    conditions = [(model._meta.get_field(name), value) for name, value in (only_if or {}).items()]
    if connection.vendor not in ("postgresql", "sqlite") or (conditions and not supports_returning(connection)):
        written = set()
        for obj in objects:
            if model._default_manager.filter(pk=obj.pk, **(only_if or {})).update(
                **{field.name: getattr(obj, field.attname) for field in fields}
            ):
                written.add(obj.pk)
        return None if only_if is None else written
    quote = connection.ops.quote_name
    table, pk = model._meta.db_table, model._meta.pk
    columns = [pk, *fields]
    if connection.vendor == "postgresql":
        # Parameters in a VALUES list have no type of their own there: each says what its column holds.
        placeholders = ", ".join(f"CAST(%s AS {column.db_type(connection)})" for column in columns)
    else:
        placeholders = ", ".join("%s" for _ in columns)
    assignments = ", ".join(f"{quote(field.column)} = v.column{number}" for number, field in enumerate(fields, start=2))
    # SQLite takes at most 32,766 parameters in one statement.
    rows_per_statement = max(1, 30_000 // len(columns))
    # Names from the model's metadata, quoted; every value is a parameter.
    update = (
        f"UPDATE {quote(table)} SET {assignments} FROM (VALUES {{values}}) AS v "  # noqa: S608
        f"WHERE {quote(table)}.{quote(pk.column)} = v.column1"
    )
    update += "".join(f" AND {quote(table)}.{quote(field.column)} = %s" for field, _ in conditions)
    if conditions:
        update += f" RETURNING {quote(table)}.{quote(pk.column)}"
    condition_values = [field.get_db_prep_save(value, connection) for field, value in conditions]
    written = set()
    with connection.cursor() as cursor:
        for start in range(0, len(objects), rows_per_statement):
            chunk = objects[start : start + rows_per_statement]
            parameters = [
                column.get_db_prep_save(getattr(obj, column.attname), connection) for obj in chunk for column in columns
            ]
            cursor.execute(
                update.format(values=", ".join(f"({placeholders})" for _ in chunk)), parameters + condition_values
            )
            if conditions:
                written.update(pk for (pk,) in cursor.fetchall())
    return None if only_if is None else written


def insert_rows(model, objects: Sequence, *, ignore_conflicts: bool = False) -> None:
    """bulk_create(objects) for new rows of `model` whose primary key the database assigns and the caller does
    not need back, in one INSERT built once per process (the ORM's compilation of a one-row bulk_create cost
    more CPU than the statement). Values are prepared as bulk_create prepares them (pre_save: auto_now_add);
    no signal is sent. Conflicting rows are skipped with `ignore_conflicts`. PostgreSQL and SQLite; elsewhere
    bulk_create."""
    if not objects:
        return
    connection = connections[router.db_for_write(model)]
    if connection.vendor not in ("postgresql", "sqlite"):
        model._default_manager.bulk_create(objects, ignore_conflicts=ignore_conflicts)
        return
    suffix = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    name = f"insert {model._meta.label} {ignore_conflicts}"
    for _written in _inserted_chunks(connection, model, objects, name, suffix):
        pass  # nothing to read back


def create_rows(model, objects: Sequence) -> list:
    """bulk_create(objects) for new rows of `model` whose primary key the database assigns, each object given
    its key back (INSERT ... RETURNING), in one INSERT built once per process: the ORM's compilation of a
    one-row bulk_create cost more CPU than the statement. Values are prepared as bulk_create prepares them
    (pre_save: auto_now_add); no signal is sent. PostgreSQL and SQLite 3.35+; elsewhere bulk_create."""
    if not objects:
        return []
    connection = connections[router.db_for_write(model)]
    if connection.vendor not in ("postgresql", "sqlite") or not supports_returning(connection):
        return model._default_manager.bulk_create(objects)
    returning = f" RETURNING {connection.ops.quote_name(model._meta.pk.column)}"
    for chunk, cursor in _inserted_chunks(connection, model, objects, f"create {model._meta.label}", returning):
        # Rows come back in the order of the VALUES list, as bulk_create relies on.
        for obj, (key,) in zip(chunk, cursor.fetchall(), strict=True):
            obj.pk = key
            obj._state.adding = False
            obj._state.db = connection.alias
    return list(objects)


def _inserted_chunks(connection, model, objects: Sequence, name: str, suffix: str):
    """INSERT `objects` (every concrete field but the database-assigned key) in statements of as many rows as
    the database takes, each built once per process and row count; yields each chunk with its cursor, the
    statement just run (for RETURNING rows)."""
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    rows_per_statement = max(1, 30_000 // len(fields))  # SQLite takes at most 32,766 parameters

    def build(count: int) -> str:
        quote = connection.ops.quote_name
        row = f"({placeholders(len(fields))})"
        return (
            f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(field.column) for field in fields)})"  # noqa: S608
            f" VALUES {', '.join([row] * count)}{suffix}"
        )

    with connection.cursor() as cursor:
        for start in range(0, len(objects), rows_per_statement):
            chunk = objects[start : start + rows_per_statement]
            parameters = [
                field.get_db_prep_save(field.pre_save(obj, True), connection) for obj in chunk for field in fields
            ]
            cursor.execute(cached_statement(connection, name, len(chunk), partial(build, len(chunk))), parameters)
            yield chunk, cursor
