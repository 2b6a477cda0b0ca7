from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from allauth.core.internal.httpkit import get_client_ip
from django.core.exceptions import ImproperlyConfigured

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
    return AuditEvent.objects.bulk_create(rows) if rows else []


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
