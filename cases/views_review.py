"""Pages of the pathologist's review: the gallery, confirm/reclassify, sign-off, amendments, the differential
report and the on-demand Grad-CAM overlay."""

from __future__ import annotations

import io
import logging

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.permissions import capability_required, has_capability
from audit.models import AuditEvent
from audit.services import record
from inference.gradcam import GradCamUnavailable, gradcam_map, heatmap_image, overlay_heatmap

from . import review_selectors, review_services, selectors
from .differential import display_name
from .models import Case, CellImage, Review
from .review_labels import REVIEWER_LABELS
from .review_reauth import ReauthenticationFailed, reauthenticate, reauthentication_methods
from .storage import StoredImageError

logger = logging.getLogger(__name__)

CONFIRM_UNREVIEWED = "confirm_unreviewed"
CONFIRM_SELECTED = "confirm"
RECLASSIFY_SELECTED = "reclassify"
TARGET_COUNTS = (100, 200)
PARTIAL_HEADER = "HTTP_X_REVIEW_PARTIAL"
# Keys of the model's classes in their order; reviewer-only labels have letter keys (review_labels).
CLASS_KEYS = "1234567890"


def _case_or_404(pk: int) -> Case:
    try:
        return selectors.get_case(pk=pk)
    except Case.DoesNotExist as exc:
        raise Http404("No such case.") from exc


def _target(value) -> int:
    try:
        target = int(value)
    except (TypeError, ValueError):
        return TARGET_COUNTS[0]
    return target if target in TARGET_COUNTS else TARGET_COUNTS[0]


def _class_buttons(labels: list[str]) -> list[dict]:
    buttons = [
        {"label": label, "name": display_name(label), "key": CLASS_KEYS[index] if index < len(CLASS_KEYS) else ""}
        for index, label in enumerate(labels)
    ]
    buttons += [
        {"label": label, "name": str(name), "key": key, "reviewer_only": True}
        for label, (name, key) in REVIEWER_LABELS.items()
    ]
    return buttons


def _review_context(request, case: Case, **form_state) -> dict:
    # One load of the cells for the gallery, the progress and the running differential.
    cells = review_selectors.cells_for_review(case=case)
    labels = review_selectors.label_choices(case=case)
    progress = review_selectors.review_progress(case=case, cells=cells)
    differential = review_selectors.case_differential(case=case, cells=cells, labels=labels)
    target = _target(form_state.get("target") or request.GET.get("target"))
    return {
        "case": case,
        "groups": review_selectors.review_gallery(case=case, cells=cells, labels=labels),
        "progress": progress,
        "differential": differential,
        "target": target,
        "target_counts": TARGET_COUNTS,
        "target_percent": min(100, round(100 * differential.reviewed_leukocytes / target)),
        "label_choices": labels,
        "class_buttons": _class_buttons(labels),
        "signed": case.status == Case.Status.SIGNED,
        "can_sign": has_capability(request.user, "sign_case"),
        "selected": {str(image_id) for image_id in form_state.get("selected", [])},
        "to_label": form_state.get("to_label", ""),
        "reason": form_state.get("reason", ""),
        "error": form_state.get("error", ""),
        "notice": form_state.get("notice", ""),
    }


def _partial(request) -> bool:
    """The review page's script asks for the changed parts only (no reload, scroll and selection kept)."""
    return request.META.get(PARTIAL_HEADER) == "1"


def _render_review(request, case: Case, *, status: int = 200, **form_state):
    template = "cases/_review_partials.html" if _partial(request) else "cases/review.html"
    return render(request, template, _review_context(request, case, **form_state), status=status)


def _refused(request, case: Case, error: str, *, selected, to_label: str, reason: str):
    """Show the page (or its changed parts) again with the selection, class and reason kept, and the error."""
    return _render_review(
        request,
        case,
        status=400,
        selected=selected,
        to_label=to_label,
        reason=reason,
        error=error,
        target=request.POST.get("target"),
    )


def _done(request, case: Case, notice: str, *, selected):
    if _partial(request):
        return _render_review(request, case, selected=selected, notice=notice, target=request.POST.get("target"))
    messages.success(request, notice)
    return redirect("cases:review", pk=case.pk)


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
    if request.POST.get("quick_label"):
        # One button (or key) per class: reclassify the selected cells to it at once.
        action, to_label = RECLASSIFY_SELECTED, request.POST["quick_label"].strip()
    if request.POST.get("confirm_cell"):
        cells = [request.POST["confirm_cell"]]
        target = ""
    elif action == CONFIRM_UNREVIEWED:
        # Confirming every unreviewed cell at once is asked first, on its own page.
        return redirect("cases:review_confirm_unreviewed", pk=case.pk)
    elif action == CONFIRM_SELECTED:
        cells, target = selected, ""
    elif action == RECLASSIFY_SELECTED:
        cells, target = selected, to_label
        if not target:
            return _refused(
                request,
                case,
                _("Choose the class to give the selected cells."),
                selected=selected,
                to_label="",
                reason=reason,
            )
    else:
        return _refused(request, case, _("Unknown review action."), selected=selected, to_label=to_label, reason=reason)
    try:
        reviews = review_services.review_cells(
            case=case, image_ids=cells, reviewer=request.user, to_label=target, reason=reason, request=request
        )
    except review_services.ReviewRefused as exc:
        return _refused(request, case, str(exc), selected=selected, to_label=to_label, reason=reason)
    overrides = sum(1 for review in reviews if review.kind == Review.Kind.OVERRIDE)
    if target:
        notice = ngettext(
            "%(count)d cell → %(name)s (%(overrides)d reclassified).",
            "%(count)d cells → %(name)s (%(overrides)d reclassified).",
            len(reviews),
        ) % {"count": len(reviews), "name": display_name(target), "overrides": overrides}
    else:
        notice = ngettext("%(count)d cell confirmed.", "%(count)d cells confirmed.", len(reviews)) % {
            "count": len(reviews)
        }
    return _done(request, case, notice, selected=selected)


@require_http_methods(["GET", "POST"])
@capability_required("review_cells")
def confirm_unreviewed(request, pk: int):
    """Ask before confirming every cell nobody has reviewed with the model's label; then do it."""
    case = _case_or_404(pk)
    progress = review_selectors.review_progress(case=case)
    unreviewed = [cell for cell in review_selectors.cells_for_review(case=case) if not cell.is_reviewed]
    context = {
        "case": case,
        "unreviewed": len(unreviewed),
        "flagged": sum(1 for cell in unreviewed if cell.flagged),
        "unclassified": sum(1 for cell in unreviewed if cell.prediction is None),
        "by_label": review_selectors.count_by_label([cell.predicted_label for cell in unreviewed if cell.prediction]),
        "signed": case.status == Case.Status.SIGNED,
    }
    if request.method == "GET":
        return render(request, "cases/review_confirm_unreviewed.html", context)
    if not progress.unlabelled_ids:
        messages.info(
            request,
            _("Every cell of case %(accession)s already has a final label.") % {"accession": case.accession_id},
        )
        return redirect("cases:review", pk=case.pk)
    if request.POST.get("confirm") != "yes":
        context["error"] = _("Tick the box to confirm you have looked at these cells.")
        return render(request, "cases/review_confirm_unreviewed.html", context, status=400)
    try:
        reviews = review_services.review_cells(
            case=case, image_ids=progress.unlabelled_ids, reviewer=request.user, request=request
        )
    except review_services.ReviewRefused as exc:
        context["error"] = str(exc)
        return render(request, "cases/review_confirm_unreviewed.html", context, status=400)
    messages.success(
        request,
        ngettext(
            "%(count)d cell confirmed with the model's label.",
            "%(count)d cells confirmed with the model's label.",
            len(reviews),
        )
        % {"count": len(reviews)},
    )
    return redirect("cases:review", pk=case.pk)


@require_http_methods(["GET", "POST"])
@capability_required("sign_case")
def sign(request, pk: int):
    """Signing asks for the password (or a TOTP code) again, beside a summary of what is being signed."""
    case = _case_or_404(pk)
    context = {
        "case": case,
        "progress": review_selectors.review_progress(case=case),
        "differential": review_selectors.case_differential(case=case),
        "methods": reauthentication_methods(request.user),
        "signed": case.status == Case.Status.SIGNED,
    }
    if request.method == "GET":
        return render(request, "cases/review_sign.html", context)
    try:
        reauthenticate(
            user=request.user,
            password=request.POST.get("password", ""),
            code=request.POST.get("code", ""),
            purpose=f"sign case {case.accession_id}",
            request=request,
        )
        review_services.sign_case(case=case, signer=request.user, request=request)
    except (ReauthenticationFailed, review_services.ReviewRefused) as exc:
        context["error"] = str(exc)
        return render(request, "cases/review_sign.html", context, status=400)
    messages.success(request, _("Case %(accession)s is signed.") % {"accession": case.accession_id})
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
    notice = ngettext(
        "Amendment recorded for %(count)d cell.", "Amendment recorded for %(count)d cells.", len(reviews)
    ) % {"count": len(reviews)}
    return _done(request, case, notice, selected=selected)


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
    version that classified it; with `mode=heatmap`, the colour map alone (RGBA, the cell's size)."""
    try:
        image = CellImage.objects.get(pk=pk)
    except CellImage.DoesNotExist as exc:
        raise Http404("No such image.") from exc
    cell = review_selectors.cells_for_review(case=image.case, image_ids=[image.pk])[0]
    if cell.prediction is None:
        return _plain(f"Cell {image.pk} has not been classified, so there is no heat map to show.", status=409)
    class_name = request.GET.get("class") or None
    try:
        version = cell.prediction.model_version
        rgb, heatmap, box = gradcam_map(selectors.open_cell_image(image=image), class_name, version)
        if request.GET.get("mode") == "heatmap":
            # The colour map alone, for the review's zoom to lay over the cell at the reader's opacity.
            overlay = heatmap_image(rgb.size, heatmap, box=box)
        else:
            overlay = overlay_heatmap(rgb, heatmap, box=box)
    except ValueError as exc:
        return _plain(str(exc), status=400)
    except GradCamUnavailable as exc:
        return _plain(f"No Grad-CAM for this cell: {exc}.", status=409)
    except StoredImageError as exc:
        logger.error("image %s cannot be read for Grad-CAM: %s", image.pk, exc)
        return _plain(f"This image cannot be read: {exc}.", status=500)
    buffer = io.BytesIO()
    overlay.save(buffer, format="PNG")
    # The overlay shows the cell's pixels: audited like the image itself.
    record(
        action=AuditEvent.Action.IMAGE_VIEWED,
        obj=image,
        details={"case": image.case_id, "variant": "gradcam", "class": class_name or cell.prediction.label},
        request=request,
    )
    response = HttpResponse(buffer.getvalue(), content_type="image/png")
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _plain(message: str, *, status: int) -> HttpResponse:
    response = HttpResponse(message, content_type="text/plain; charset=utf-8", status=status)
    response["Cache-Control"] = "private, no-store"
    return response
