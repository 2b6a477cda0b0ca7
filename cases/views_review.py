"""Pages of the pathologist's review: the gallery, confirm/reclassify, sign-off, amendments, the differential
report and the on-demand Grad-CAM overlay."""

from __future__ import annotations

import io
import logging

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.permissions import capability_required, has_capability
from inference.gradcam import GradCamUnavailable, gradcam_overlay

from . import review_selectors, review_services, selectors
from .models import Case, CellImage, Review
from .storage import StoredImageError

logger = logging.getLogger(__name__)

CONFIRM_UNREVIEWED = "confirm_unreviewed"
CONFIRM_SELECTED = "confirm"
RECLASSIFY_SELECTED = "reclassify"


def _case_or_404(pk: int) -> Case:
    try:
        return selectors.get_case(pk=pk)
    except Case.DoesNotExist as exc:
        raise Http404("No such case.") from exc


def _review_context(request, case: Case, **form_state) -> dict:
    progress = review_selectors.review_progress(case=case)
    return {
        "case": case,
        "groups": review_selectors.review_gallery(case=case),
        "progress": progress,
        "label_choices": review_selectors.label_choices(case=case),
        "history": review_selectors.case_reviews(case=case),
        "signed": case.status == Case.Status.SIGNED,
        "can_sign": has_capability(request.user, "sign_case"),
        "selected": {str(image_id) for image_id in form_state.get("selected", [])},
        "to_label": form_state.get("to_label", ""),
        "reason": form_state.get("reason", ""),
        "error": form_state.get("error", ""),
    }


def _refused(request, case: Case, error: str, *, selected, to_label: str, reason: str):
    """Show the page again with the person's selection, class and reason kept, and the error."""
    context = _review_context(request, case, selected=selected, to_label=to_label, reason=reason, error=error)
    return render(request, "cases/review.html", context, status=400)


@require_GET
@capability_required("review_cells")
def review_page(request, pk: int):
    return render(request, "cases/review.html", _review_context(request, _case_or_404(pk)))


@require_POST
@capability_required("review_cells")
def review_submit(request, pk: int):
    case = _case_or_404(pk)
    action = request.POST.get("action", "")
    selected = request.POST.getlist("cells")
    to_label = request.POST.get("to_label", "").strip()
    reason = request.POST.get("reason", "")
    if request.POST.get("confirm_cell"):
        selected = [request.POST["confirm_cell"]]
        target = ""
    elif action == CONFIRM_UNREVIEWED:
        selected = [str(image_id) for image_id in review_selectors.review_progress(case=case).unlabelled_ids]
        target = ""
    elif action == CONFIRM_SELECTED:
        target = ""
    elif action == RECLASSIFY_SELECTED:
        target = to_label
        if not target:
            return _refused(
                request,
                case,
                "Choose the class to give the selected cells.",
                selected=selected,
                to_label="",
                reason=reason,
            )
    else:
        return _refused(request, case, "Unknown review action.", selected=selected, to_label=to_label, reason=reason)
    try:
        reviews = review_services.review_cells(
            case=case, image_ids=selected, reviewer=request.user, to_label=target, reason=reason, request=request
        )
    except review_services.ReviewRefused as exc:
        return _refused(request, case, str(exc), selected=selected, to_label=to_label, reason=reason)
    overrides = sum(1 for review in reviews if review.kind == Review.Kind.OVERRIDE)
    messages.success(request, f"{len(reviews)} cell(s) reviewed ({overrides} reclassified).")
    return redirect("cases:review", pk=case.pk)


@require_POST
@capability_required("sign_case")
def sign(request, pk: int):
    case = _case_or_404(pk)
    try:
        review_services.sign_case(case=case, signer=request.user, request=request)
    except review_services.ReviewRefused as exc:
        messages.error(request, str(exc))
        return redirect("cases:review", pk=case.pk)
    messages.success(request, f"Case {case.accession_id} is signed.")
    return redirect("cases:review", pk=case.pk)


@require_POST
@capability_required("sign_case")
def amend(request, pk: int):
    case = _case_or_404(pk)
    selected = request.POST.getlist("cells")
    to_label = request.POST.get("to_label", "").strip()
    reason = request.POST.get("reason", "")
    try:
        reviews = review_services.amend_cells(
            case=case, image_ids=selected, amender=request.user, to_label=to_label, reason=reason, request=request
        )
    except review_services.ReviewRefused as exc:
        return _refused(request, case, str(exc), selected=selected, to_label=to_label, reason=reason)
    messages.success(request, f"Amendment recorded for {len(reviews)} cell(s).")
    return redirect("cases:review", pk=case.pk)


@require_GET
@capability_required("view_cases", "review_cells")
def differential(request, pk: int):
    case = _case_or_404(pk)
    context = {"case": case, "differential": review_selectors.case_differential(case=case)}
    return render(request, "cases/differential.html", context)


@require_GET
@capability_required("view_cases", "review_cells")
def gradcam(request, pk: int):
    """A PNG of the cell with the Grad-CAM heat map of `class` (default: the predicted class) under the model
    version that classified it."""
    try:
        image = CellImage.objects.get(pk=pk)
    except CellImage.DoesNotExist as exc:
        raise Http404("No such image.") from exc
    cell = review_selectors.cells_for_review(case=image.case, image_ids=[image.pk])[0]
    if cell.prediction is None:
        return _plain(f"Cell {image.pk} has not been classified, so there is no heat map to show.", status=409)
    class_name = request.GET.get("class") or None
    try:
        overlay = gradcam_overlay(selectors.open_cell_image(image=image), class_name, cell.prediction.model_version)
    except ValueError as exc:
        return _plain(str(exc), status=400)
    except GradCamUnavailable as exc:
        return _plain(f"No Grad-CAM for this cell: {exc}.", status=409)
    except StoredImageError as exc:
        logger.error("image %s cannot be read for Grad-CAM: %s", image.pk, exc)
        return _plain(f"This image cannot be read: {exc}.", status=500)
    buffer = io.BytesIO()
    overlay.save(buffer, format="PNG")
    response = HttpResponse(buffer.getvalue(), content_type="image/png")
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _plain(message: str, *, status: int) -> HttpResponse:
    response = HttpResponse(message, content_type="text/plain; charset=utf-8", status=status)
    response["Cache-Control"] = "private, no-store"
    return response
