from __future__ import annotations

from typing import Any

from .models import AuditEvent


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
        ip_address = request.META.get("REMOTE_ADDR") or None
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
