"""The case report a laboratory files: one read of everything the page, the PDF and the FHIR DiagnosticReport show.

Header (the laboratory, from settings), patient reference, accession, dates, the model version(s) that proposed
the labels, the differential with adult reference ranges and flags, cells reported apart (smudge, artefact,
other / abnormal), the critical finding, a cell gallery by final class, comments, amendments and the signer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from accounts.permissions import has_capability
from audit.models import AuditEvent
from audit.services import record

from .differential import Differential, display_name
from .models import Case, CaseComment, Prediction, Review
from .review_labels import is_reviewer_label
from .review_selectors import case_differential, cells_for_review, label_choices

MAX_COMMENT_LENGTH = 4000
GALLERY_CELLS_PER_CLASS = 12


class CommentRefused(Exception):
    """The comment cannot be added; the message says why."""


@dataclass(frozen=True)
class LabHeader:
    name: str
    address_lines: tuple[str, ...]
    contact: str
    accreditation: str


@dataclass(frozen=True)
class ReportCell:
    image_id: int
    label: str
    predicted: str
    confidence: float | None
    reviewed: bool


@dataclass
class GalleryClass:
    label: str
    name: str
    count: int
    cells: list[ReportCell] = field(default_factory=list)


@dataclass(frozen=True)
class Amendment:
    at: datetime
    by: str
    cell_id: int
    from_name: str
    to_name: str
    reason: str


@dataclass
class CaseReport:
    case: Case
    header: LabHeader
    status: str  # FHIR DiagnosticReport.status: preliminary, final or amended
    differential: Differential
    model_versions: list[str]
    gallery: list[GalleryClass]
    comments: list[CaseComment]
    amendments: list[Amendment]
    generated_at: datetime

    @property
    def signed(self) -> bool:
        return self.case.status == Case.Status.SIGNED

    @property
    def critical(self) -> bool:
        return self.differential.critical

    @property
    def status_text(self) -> str:
        return {
            "preliminary": gettext("Preliminary — not signed"),
            "final": gettext("Final"),
            "amended": gettext("Final, amended after signing"),
        }[self.status]


def lab_header() -> LabHeader:
    address = tuple(line.strip() for line in settings.REPORT_LAB_ADDRESS.split("|") if line.strip())
    return LabHeader(
        name=settings.REPORT_LAB_NAME,
        address_lines=address,
        contact=settings.REPORT_LAB_CONTACT,
        accreditation=settings.REPORT_LAB_ACCREDITATION,
    )


def build_report(*, case: Case, cells_per_class: int = GALLERY_CELLS_PER_CLASS) -> CaseReport:
    cells = cells_for_review(case=case)
    order = {label: index for index, label in enumerate(label_choices(case=case))}
    by_label: dict[str, GalleryClass] = {}
    for cell in cells:
        label = cell.current_label
        if not label:
            continue
        group = by_label.setdefault(label, GalleryClass(label=label, name=display_name(label), count=0))
        group.count += 1
        if len(group.cells) < cells_per_class:
            group.cells.append(
                ReportCell(
                    image_id=cell.image.pk,
                    label=label,
                    predicted=cell.predicted_label,
                    confidence=cell.prediction.confidence if cell.prediction else None,
                    reviewed=cell.is_reviewed,
                )
            )
    gallery = sorted(
        by_label.values(),
        key=lambda group: (is_reviewer_label(group.label), order.get(group.label, len(order)), group.label),
    )
    amendments = [
        Amendment(
            at=review.created_at,
            by=review.reviewer.email,
            cell_id=review.image_id,
            from_name=display_name(review.from_label) if review.from_label else "—",
            to_name=display_name(review.to_label),
            reason=review.reason,
        )
        for review in Review.objects.filter(image__case=case, kind=Review.Kind.AMENDMENT)
        .select_related("reviewer")
        .order_by("created_at", "id")
    ]
    versions = list(
        Prediction.objects.filter(image__case=case)
        .order_by("model_version__name")
        .values_list("model_version__name", flat=True)
        .distinct()
    )
    signed = case.status == Case.Status.SIGNED
    status = ("amended" if amendments else "final") if signed else "preliminary"
    return CaseReport(
        case=case,
        header=lab_header(),
        status=status,
        differential=case_differential(case=case),
        model_versions=versions,
        gallery=gallery,
        comments=list(case.comments.select_related("author").order_by("created_at", "id")),
        amendments=amendments,
        generated_at=timezone.now(),
    )


def add_comment(*, case: Case, author, text: str, request=None) -> CaseComment:
    """A pathologist's comment for the report; after sign-off it is an addendum. Audited."""
    if not has_capability(author, "review_cells"):
        raise PermissionDenied(gettext("Only pathologists can comment on a report."))
    text = (text or "").strip()
    if not text:
        raise CommentRefused(gettext("Write the comment first."))
    if len(text) > MAX_COMMENT_LENGTH:
        raise CommentRefused(
            gettext("The comment is too long (%(length)d characters; at most %(limit)d).")
            % {"length": len(text), "limit": MAX_COMMENT_LENGTH}
        )
    with transaction.atomic():
        case = Case.objects.select_for_update().get(pk=case.pk)
        comment = CaseComment.objects.create(
            case=case, author=author, text=text, after_signing=case.status == Case.Status.SIGNED
        )
        record(
            action=AuditEvent.Action.REVIEW,
            actor=author,
            obj=comment,
            details={"case": case.accession_id, "kind": "comment", "after_signing": comment.after_signing},
            request=request,
        )
    return comment
