"""SQL statements built once per process and database alias, for the reads and writes of hot paths.

The ORM compiles a queryset anew each time it runs; for the few statements of every API request and of the
classification task that compilation cost more CPU than the query itself (docs/benchmarks.md: "the task's
fixed cost", "hweb", "hweb2"). Such a statement is built here the first time it is needed, either compiled
by the ORM from a queryset (`values_statement`) or written from the models' metadata (table and column
names quoted from ``_meta``, every value a parameter), and kept with the names of the columns it selects and
the converters that turn their database values into what a queryset returns. PostgreSQL and SQLite; callers
take the ORM's path on other databases.

A leaf module (Django only), so that every app may import it (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Statement:
    """SQL (for `model_columns`, a select list), the names of the columns it selects (none for a write) and
    the converters of their values: [(column index, functions, expression)], as the ORM's compiler gives them."""

    sql: str
    columns: tuple[str, ...] = ()
    converters: tuple[tuple[int, Sequence[Callable], Any], ...] = ()

    def converted_rows(self, rows, connection) -> list[list]:
        """The first len(columns) values of each row, converted as a queryset converts them (e.g. SQLite's
        datetimes); values after them are left to the caller."""
        width = len(self.columns)
        converted = []
        for row in rows:
            values = list(row[:width])
            for index, functions, expression in self.converters:
                for function in functions:
                    values[index] = function(values[index], expression, connection)
            converted.append(values)
        return converted


# One per database alias and key, for the life of the process. Converters a backend binds to its operations
# (SQLite's) read only what every connection of the alias shares (its time zone), so the first connection's
# serve every thread's.
_built: dict[tuple[str, Hashable], Statement] = {}

# Statements written for a number of rows are kept up to this many rows (tasks and uploads hold at most a few
# dozen images): larger ones are built each time, so the cache stays bounded.
MAX_CACHED_ROW_COUNT = 64


def built_once(connection, key: Hashable, build: Callable[[], Statement | None]) -> Statement | None:
    """The statement kept under `key` for the connection's database, `build()` the first time. A key names one
    statement across the project (start it with the model's label or the function's purpose). `build` returns
    None when the statement cannot be built as expected: nothing is kept and the caller takes the ORM's path."""
    cache_key = (connection.alias, key)
    statement = _built.get(cache_key)
    if statement is None:
        statement = build()
        if statement is not None:
            _built[cache_key] = statement
    return statement


def cached_statement(connection, name: str, count: int, build: Callable[[], str]) -> str:
    """The SQL `build()` writes for `count` rows (or values), built once per database alias, name and count."""
    if count > MAX_CACHED_ROW_COUNT:
        return build()
    return built_once(connection, (name, count), lambda: Statement(build())).sql


def values_statement(queryset, connection, parameters: Sequence) -> Statement | None:
    """A values() queryset's SELECT as the ORM compiles it for `connection`, with its column names and
    converters; run it with other values in place of `parameters` (those the queryset was built with). None
    if the compiled statement takes other parameters or selects extra or annotated columns."""
    compiler = queryset.query.get_compiler(connection=connection)
    sql, compiled_parameters = compiler.as_sql()
    query = compiler.query
    if list(compiled_parameters) != list(parameters) or query.extra_select or query.annotation_select:
        return None
    selected = [column for column, _, _ in compiler.select[: compiler.col_count]]
    converters = tuple((index, *pair) for index, pair in compiler.get_converters(selected).items())
    return Statement(sql, tuple(query.values_select), converters)


def model_columns(connection, model) -> Statement:
    """The model's concrete columns, table-qualified and quoted, in field order, with their attribute names
    and converters: what `instances_from_rows` reads. Built once per database alias and model."""
    return built_once(connection, ("model columns", model._meta.label), lambda: _model_columns(connection, model))


def _model_columns(connection, model) -> Statement:
    quote = connection.ops.quote_name
    table = model._meta.db_table
    fields = model._meta.concrete_fields
    converters = []
    for index, field in enumerate(fields):
        column = field.get_col(table)
        functions = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if functions:
            converters.append((index, functions, column))
    return Statement(
        ", ".join(f"{quote(table)}.{quote(field.column)}" for field in fields),
        tuple(field.attname for field in fields),
        tuple(converters),
    )


def qualified_columns(connection, model) -> str:
    """The select list of `model_columns`, for statements whose rows `instances_from_rows` reads."""
    return model_columns(connection, model).sql


def instances_from_rows(model, connection, rows) -> list:
    """Model instances from rows holding the model's concrete columns in order (extra columns after them are
    left to the caller), the database values converted as a queryset would."""
    columns = model_columns(connection, model)
    return [
        model.from_db(connection.alias, columns.columns, values) for values in columns.converted_rows(rows, connection)
    ]


def supports_returning(connection) -> bool:
    """Whether INSERT/UPDATE ... RETURNING (with correlated subqueries) can be used: PostgreSQL, SQLite 3.35+."""
    if connection.vendor == "postgresql":
        return True
    return connection.vendor == "sqlite" and connection.Database.sqlite_version_info >= (3, 35)


def placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)
