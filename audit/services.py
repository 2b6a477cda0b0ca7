from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from allauth.core.internal.httpkit import get_client_ip
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router

from hematovision.statements import MAX_CACHED_ROW_COUNT, cached_statement, placeholders, supports_returning

from .models import AuditEvent


def client_address(request) -> str | None:
    """The client's address as the sign-in lockout sees it: behind TRUSTED_PROXY_COUNT proxies, the entry
    of X-Forwarded-For the outermost one appended (allauth's reading, ALLAUTH_TRUSTED_PROXY_COUNT), else
    the TCP peer. A header that does not fit the setting falls back to the peer: an event is always kept."""
    try:
        address = get_client_ip(request)
    except ImproperlyConfigured:
        address = None
    return address or request.META.get("REMOTE_ADDR") or None


def record(
    *,
    action: str,
    actor=None,
    obj: Any = None,
    object_type: str = "",
    object_id: str | int = "",
    details: dict | None = None,
    request=None,
) -> AuditEvent:
    """Append one event to the audit trail. Every app calls this; nothing edits or deletes events."""
    actor, ip_address = _actor_and_address(actor, request)
    event = _event(action, actor, ip_address, obj, object_type, object_id, details)
    event.save(force_insert=True)
    return event


def record_many(
    *, action: str, actor=None, events: Iterable[tuple[Any, dict | None]], request=None
) -> list[AuditEvent]:
    """Append one event per (object, details) pair, all in one INSERT: the same trail as calling `record`
    for each (one event per object, found by its object type and id), for the cost of one statement."""
    actor, ip_address = _actor_and_address(actor, request)
    rows = [_event(action, actor, ip_address, obj, "", "", details) for obj, details in events]
    return _insert(rows) if rows else []


def _insert(rows: list[AuditEvent]) -> list[AuditEvent]:
    """AuditEvent.objects.bulk_create(rows): the same values, prepared as bulk_create prepares them (created_at
    set by pre_save), each event given its id back; no signal (bulk_create sends none). PostgreSQL and SQLite
    3.35+ (RETURNING); elsewhere, and for more events than statements are kept for, bulk_create. The ORM compiled
    an upload's bulk_create on every request (docs/benchmarks.md, "hweb")."""
    connection = connections[router.db_for_write(AuditEvent)]
    if not supports_returning(connection) or len(rows) > MAX_CACHED_ROW_COUNT:
        return AuditEvent.objects.bulk_create(rows)
    fields = [field for field in AuditEvent._meta.concrete_fields if not field.primary_key]
    sql = cached_statement(
        connection, "audit insert events", len(rows), partial(_insert_sql, connection, fields, len(rows))
    )
    parameters = [field.get_db_prep_save(field.pre_save(event, True), connection) for event in rows for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        keys = cursor.fetchall()
    # Rows come back in the order of the VALUES list, as bulk_create relies on.
    for event, (pk,) in zip(rows, keys, strict=True):
        event.pk = pk
        event._state.adding = False
        event._state.db = connection.alias
    return rows


def _insert_sql(connection, fields, count: int) -> str:
    quote = connection.ops.quote_name
    row = f"({placeholders(len(fields))})"
    return (
        f"INSERT INTO {quote(AuditEvent._meta.db_table)} ({', '.join(quote(field.column) for field in fields)})"  # noqa: S608 - names from _meta
        f" VALUES {', '.join([row] * count)} RETURNING {quote(AuditEvent._meta.pk.column)}"
    )


def _actor_and_address(actor, request) -> tuple[Any, str | None]:
    ip_address = None
    if request is not None:
        ip_address = client_address(request)
        if actor is None and getattr(request, "user", None) is not None and request.user.is_authenticated:
            actor = request.user
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    return actor, ip_address


def _event(action, actor, ip_address, obj, object_type, object_id, details) -> AuditEvent:
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or obj.pk
    return AuditEvent(
        action=action,
        actor=actor,
        actor_email=getattr(actor, "email", "") or "",
        object_type=object_type,
        object_id=str(object_id) if object_id != "" else "",
        details=details or {},
        ip_address=ip_address,
    )
