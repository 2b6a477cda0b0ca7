from __future__ import annotations

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
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or obj.pk
    ip_address = None
    if request is not None:
        ip_address = client_address(request)
        if actor is None and getattr(request, "user", None) is not None and request.user.is_authenticated:
            actor = request.user
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    return AuditEvent.objects.create(
        action=action,
        actor=actor,
        actor_email=getattr(actor, "email", "") or "",
        object_type=object_type,
        object_id=str(object_id) if object_id != "" else "",
        details=details or {},
        ip_address=ip_address,
    )
