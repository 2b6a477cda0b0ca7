"""Exports: the researchers' anonymized cell table and the supervisors' audit trail, each one audited.

The research export replaces the case with a keyed pseudonym, HMAC-SHA256(key, "case:<id>"), so the same
case gets the same pseudonym in every export, while nobody without the key can link it back. The key is
settings.EXPORT_PSEUDONYM_KEY; when it is empty (the embedded default) a key is derived from SECRET_KEY,
so pseudonyms are stable for one installation and change if its SECRET_KEY changes. The export carries no
patient reference, accession number, user name or email, file name or free text (review reasons), and
its dates are coarsened to the month.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from accounts.permissions import has_capability
from audit.models import AuditEvent
from audit.services import record
from cases.models import Review

from .selectors import AuditFilter, ExportFilter, audit_events, export_classes, export_predictions

PSEUDONYM_KEY_DERIVATION_LABEL = b"hematovision.reports.export-pseudonym-key"
PROBABILITY_PREFIX = "prob_"


def pseudonym_key() -> bytes:
    configured = settings.EXPORT_PSEUDONYM_KEY
    if configured:
        return configured.encode()
    return hmac.new(settings.SECRET_KEY.encode(), PSEUDONYM_KEY_DERIVATION_LABEL, hashlib.sha256).digest()


def case_pseudonym(*, case_id: int, key: bytes) -> str:
    return hmac.new(key, f"case:{case_id}".encode(), hashlib.sha256).hexdigest()[:32]


def month_of(moment) -> str:
    return timezone.localtime(moment).strftime("%Y-%m") if moment else ""


def _describe(export_filter: ExportFilter) -> dict:
    return {
        "model_version": export_filter.model_version.name if export_filter.model_version else "",
        "period_start": export_filter.period.start.isoformat() if export_filter.period else "",
        "period_end": export_filter.period.end.isoformat() if export_filter.period else "",
        "reviewed_only": export_filter.reviewed_only,
    }


def export_cells(*, actor, export_filter: ExportFilter, request=None) -> Iterator[list]:
    """Record the export, then return its rows (a header first): one row per prediction of a cell."""
    if not has_capability(actor, "export_data"):
        raise PermissionDenied("Only researchers and administrators can download exports.")
    predictions = export_predictions(export_filter=export_filter)
    classes = export_classes(predictions=predictions)
    row_count = predictions.count()
    record(
        action=AuditEvent.Action.EXPORT,
        actor=actor,
        object_type="reports.cell_export",
        details={"kind": "cells", "rows": row_count, **_describe(export_filter)},
        request=request,
    )
    return _cell_rows(predictions=predictions, classes=classes, key=pseudonym_key())


EXPORT_COLUMNS = [
    "case_pseudonym",
    "cell_id",
    "model_version",
    "predicted_label",
    "confidence",
    "flagged",
]
EXPORT_TRAILING_COLUMNS = [
    "final_label",
    "reviewed",
    "reclassified",
    "uploaded_month",
    "predicted_month",
    "reviewed_month",
]


def _cell_rows(*, predictions, classes: list[str], key: bytes) -> Iterator[list]:
    yield EXPORT_COLUMNS + [f"{PROBABILITY_PREFIX}{name}" for name in classes] + EXPORT_TRAILING_COLUMNS
    final: dict[int, Review] = {}
    reclassified: set[int] = set()
    reviews = Review.objects.filter(image_id__in=predictions.values("image_id")).order_by("created_at", "id")
    for review in reviews.only("image_id", "kind", "to_label", "created_at").iterator():
        final[review.image_id] = review
        if review.kind != Review.Kind.CONFIRM:
            reclassified.add(review.image_id)
    for prediction in predictions.iterator(chunk_size=500):
        image = prediction.image
        review = final.get(image.pk)
        yield [
            case_pseudonym(case_id=image.case_id, key=key),
            image.pk,
            prediction.model_version.name,
            prediction.label,
            round(prediction.confidence, 6),
            int(prediction.flagged),
            *[round(float(prediction.probabilities.get(name, 0.0)), 6) for name in classes],
            review.to_label if review else "",
            int(review is not None),
            int(image.pk in reclassified),
            month_of(image.uploaded_at),
            month_of(prediction.created_at),
            month_of(review.created_at) if review else "",
        ]


AUDIT_COLUMNS = ["time", "actor_email", "action", "object_type", "object_id", "ip_address", "details"]


def export_audit_trail(*, actor, audit_filter: AuditFilter, request=None) -> Iterator[list]:
    """Record the download, then return the filtered audit events as rows (a header first)."""
    if not has_capability(actor, "view_audit"):
        raise PermissionDenied("Only supervisors and administrators can download the audit trail.")
    events = audit_events(audit_filter=audit_filter)
    record(
        action=AuditEvent.Action.EXPORT,
        actor=actor,
        object_type="audit.auditevent",
        details={
            "kind": "audit_trail",
            "rows": events.count(),
            "filter": {
                "action": audit_filter.action,
                "actor": audit_filter.actor,
                "object_type": audit_filter.object_type,
                "object_id": audit_filter.object_id,
                "period_start": audit_filter.period.start.isoformat() if audit_filter.period else "",
                "period_end": audit_filter.period.end.isoformat() if audit_filter.period else "",
            },
        },
        request=request,
    )
    return _audit_rows(events)


def _audit_rows(events) -> Iterator[list]:
    yield AUDIT_COLUMNS
    for event in events.iterator(chunk_size=1000):
        yield [
            timezone.localtime(event.created_at).isoformat(),
            event.actor_email,
            event.action,
            event.object_type,
            event.object_id,
            event.ip_address or "",
            json.dumps(event.details, sort_keys=True, ensure_ascii=False),
        ]
