"""The pathologist's workflow: confirm or reclassify cells, sign the case, amend it after sign-off.

Every decision is a new Review row (append-only); the final label of a cell is its latest review.
Each step is audited. Role rules are enforced here as well as in the views, so no caller can skip them.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext, ngettext

from accounts.permissions import has_capability
from audit.models import AuditEvent
from audit.services import record

from .models import Case, Review
from .review_labels import REVIEWER_LABELS, is_reviewer_label
from .review_selectors import CellForReview, cells_for_review, label_choices, review_progress

MAX_REASON_LENGTH = 2000


class ReviewRefused(Exception):
    """A review, sign-off or amendment the rules do not allow; the message tells the person why."""


class ReviewConflict(ReviewRefused):
    """Refused because of the case's state (signed, not signed, cells without a final label), not the input."""


def _require(user, capability: str, message: str) -> None:
    if not has_capability(user, capability):
        raise PermissionDenied(message)


def _locked_case(case: Case) -> Case:
    # Serializes reviews and sign-off of one case: a review cannot slip in while the case is being signed.
    return Case.objects.select_for_update().get(pk=case.pk)


def _selected_cells(*, case: Case, image_ids) -> list[CellForReview]:
    try:
        wanted = sorted({int(image_id) for image_id in image_ids})
    except (TypeError, ValueError) as error:
        raise ReviewRefused(gettext("Cell ids must be whole numbers.")) from error
    if not wanted:
        raise ReviewRefused(gettext("Select at least one cell."))
    cells = cells_for_review(case=case, image_ids=wanted)
    missing = sorted(set(wanted) - {cell.image.pk for cell in cells})
    if missing:
        raise ReviewRefused(
            gettext("Case %(accession)s has no cell %(cells)s.")
            % {"accession": case.accession_id, "cells": ", ".join(map(str, missing))}
        )
    return cells


def _clean_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) > MAX_REASON_LENGTH:
        raise ReviewRefused(
            gettext("The reason is too long (%(length)d characters; at most %(limit)d).")
            % {"length": len(reason), "limit": MAX_REASON_LENGTH}
        )
    return reason


def _check_label(*, case: Case, label: str) -> None:
    """A model class of this case, or a reviewer-only label (smudge, artefact, other / abnormal)."""
    if is_reviewer_label(label):
        return
    choices = label_choices(case=case)
    if label not in choices:
        allowed = ", ".join([*choices, *REVIEWER_LABELS])
        raise ReviewRefused(
            gettext("“%(label)s” is not a class of this case's model; choose one of: %(allowed)s.")
            % {"label": label, "allowed": allowed}
        )


def review_cells(
    *, case: Case, image_ids, reviewer, to_label: str = "", reason: str = "", request=None
) -> list[Review]:
    """Confirm the selected cells (no `to_label`: each keeps its current label) or reclassify them all to
    `to_label`. A change of label is an override; its reason is optional while reviewing (an amendment after
    sign-off needs one). Refused once the case is signed."""
    _require(reviewer, "review_cells", gettext("Only pathologists can review cells."))
    to_label = (to_label or "").strip()
    reason = _clean_reason(reason)
    with transaction.atomic():
        case = _locked_case(case)
        if case.status == Case.Status.SIGNED:
            raise ReviewConflict(
                gettext("Case %(accession)s is signed; change a cell with an amendment and a reason instead.")
                % {"accession": case.accession_id}
            )
        if to_label:
            _check_label(case=case, label=to_label)
        cells = _selected_cells(case=case, image_ids=image_ids)
        planned = []
        for cell in cells:
            target = to_label or cell.current_label
            if not target:
                raise ReviewRefused(
                    gettext("Cell %(cell)s has no prediction to confirm; reclassify it to a class.")
                    % {"cell": cell.image.pk}
                )
            kind = Review.Kind.CONFIRM if target == cell.current_label else Review.Kind.OVERRIDE
            planned.append((cell, kind, target))
        reviews = []
        for cell, kind, target in planned:
            review = Review.objects.create(
                image=cell.image,
                reviewer=reviewer,
                kind=kind,
                from_label=cell.current_label,
                to_label=target,
                reason=reason if kind == Review.Kind.OVERRIDE else "",
            )
            record(
                action=AuditEvent.Action.REVIEW,
                actor=reviewer,
                obj=review,
                details={
                    "case": case.accession_id,
                    "cell": cell.image.pk,
                    "kind": kind,
                    "from": review.from_label,
                    "to": target,
                    "reason": review.reason,
                },
                request=request,
            )
            reviews.append(review)
    return reviews


def sign_case(*, case: Case, signer, request=None) -> Case:
    """Lock the case once every cell has a final label."""
    _require(signer, "sign_case", gettext("Only pathologists can sign cases."))
    with transaction.atomic():
        case = _locked_case(case)
        if case.status == Case.Status.SIGNED:
            raise ReviewConflict(gettext("Case %(accession)s is already signed.") % {"accession": case.accession_id})
        progress = review_progress(case=case)
        if progress.total == 0:
            raise ReviewConflict(gettext("Case %(accession)s has no cells to sign.") % {"accession": case.accession_id})
        if progress.unlabelled_ids:
            count = len(progress.unlabelled_ids)
            listed = ", ".join(map(str, progress.unlabelled_ids[:20])) + (" …" if count > 20 else "")
            raise ReviewConflict(
                ngettext(
                    "Case %(accession)s cannot be signed: %(count)d cell has no final label yet (%(cells)s).",
                    "Case %(accession)s cannot be signed: %(count)d cells have no final label yet (%(cells)s).",
                    count,
                )
                % {"accession": case.accession_id, "count": count, "cells": listed}
            )
        case.status = Case.Status.SIGNED
        case.signed_by = signer
        case.signed_at = timezone.now()
        case.save(update_fields=["status", "signed_by", "signed_at", "updated_at"])
        record(
            action=AuditEvent.Action.SIGN_OFF,
            actor=signer,
            obj=case,
            details={"case": case.accession_id, "cells": progress.total},
            request=request,
        )
    return case


def amend_cells(*, case: Case, image_ids, amender, to_label: str, reason: str, request=None) -> list[Review]:
    """Change the final label of cells of a signed case. The case stays signed; the amendment and its
    reason are recorded next to the original decisions."""
    _require(amender, "sign_case", gettext("Only pathologists can amend signed cases."))
    to_label = (to_label or "").strip()
    reason = _clean_reason(reason)
    with transaction.atomic():
        case = _locked_case(case)
        if case.status != Case.Status.SIGNED:
            raise ReviewConflict(
                gettext("Case %(accession)s is not signed yet; review its cells instead.")
                % {"accession": case.accession_id}
            )
        if not to_label:
            raise ReviewRefused(gettext("Choose the class the cells should have."))
        if not reason:
            raise ReviewRefused(gettext("An amendment needs a reason."))
        _check_label(case=case, label=to_label)
        cells = _selected_cells(case=case, image_ids=image_ids)
        unchanged = [cell.image.pk for cell in cells if cell.current_label == to_label]
        if unchanged:
            raise ReviewRefused(
                ngettext(
                    "Cell %(cells)s already has the label “%(label)s”.",
                    "Cells %(cells)s already have the label “%(label)s”.",
                    len(unchanged),
                )
                % {"cells": ", ".join(map(str, unchanged)), "label": to_label}
            )
        reviews = []
        for cell in cells:
            review = Review.objects.create(
                image=cell.image,
                reviewer=amender,
                kind=Review.Kind.AMENDMENT,
                from_label=cell.current_label,
                to_label=to_label,
                reason=reason,
            )
            record(
                action=AuditEvent.Action.AMENDMENT,
                actor=amender,
                obj=review,
                details={
                    "case": case.accession_id,
                    "cell": cell.image.pk,
                    "from": review.from_label,
                    "to": to_label,
                    "reason": reason,
                },
                request=request,
            )
            reviews.append(review)
    return reviews
