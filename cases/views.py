"""Pages for cases and cell images: list, creation, the case page with its upload area, the cells fragment
the page polls, the private image view and the retry action."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.permissions import capability_required, has_capability
from audit.models import AuditEvent
from audit.services import record

from . import events, review_selectors, selectors, services
from .forms import CaseFilterForm, CaseForm
from .models import Case, CellImage
from .storage import StoredImageError

logger = logging.getLogger(__name__)

# How long a browser may keep a cell's stored thumbnail (cases:image?variant=thumb): a working day.
THUMBNAIL_MAX_AGE_SECONDS = 8 * 3600


def _case_or_404(pk: int) -> Case:
    try:
        return selectors.get_case(pk=pk)
    except Case.DoesNotExist as exc:
        raise Http404("No such case.") from exc


def _image_or_404(pk: int) -> CellImage:
    try:
        return selectors.get_image(pk=pk)
    except CellImage.DoesNotExist as exc:
        raise Http404("No such image.") from exc


def _wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@require_GET
@capability_required("view_cases")
def case_list(request):
    filters = CaseFilterForm(request.GET or None)
    cleaned = filters.cleaned_data if filters.is_valid() else {}
    cases = selectors.list_cases(status=cleaned.get("status"), accession=cleaned.get("accession"))
    page = Paginator(cases, 50).get_page(request.GET.get("page"))
    critical = review_selectors.critical_case_ids(case_ids=[case.pk for case in page.object_list])
    return render(request, "cases/list.html", {"page": page, "filters": filters, "critical": critical})


@require_http_methods(["GET", "POST"])
@capability_required("create_case")
def case_create(request):
    form = CaseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            case = services.create_case(
                accession_id=form.cleaned_data["accession_id"],
                patient_reference=form.cleaned_data["patient_reference"],
                laboratory=form.cleaned_data.get("laboratory"),
                created_by=request.user,
                request=request,
            )
        except services.CaseError as exc:
            form.add_error("accession_id", str(exc))
        else:
            messages.success(
                request, _("Case %(accession)s created. Add its cell images below.") % {"accession": case.accession_id}
            )
            return redirect("cases:detail", pk=case.pk)
    return render(request, "cases/create.html", {"form": form})


def _cells_context(request, case: Case) -> dict:
    cards = selectors.cell_cards(case=case)
    return {
        "case": case,
        "cards": cards,
        "pending": any(card.pending for card in cards),
        "can_retry": has_capability(request.user, "retry_classification"),
        # The grid listens to pushed events where they can reach this process, else it polls.
        "events_url": reverse("cases:events", args=[case.pk]) if events.push_available() else "",
    }


# The id of the queued card the case page keeps as a <template> (_cells.html); live_grid.js puts each uploaded
# cell's id in its place. No cell has it (ids are positive 64-bit integers far below it in practice).
QUEUED_CARD_PLACEHOLDER_ID = 987654321987


def _queued_card() -> selectors.CellCard:
    """A just-uploaded cell as the grid draws it (queued, no prediction, nothing to retry): what every accepted
    file's card is when the upload's answer leaves, unless the tasks already ran in the request."""
    image = CellImage(
        pk=QUEUED_CARD_PLACEHOLDER_ID, status=CellImage.Status.QUEUED, kind=CellImage.Kind.CELL, original_name=""
    )
    return selectors.CellCard(image=image, prediction=None, retry_allowed=False)


def _tasks_run_in_request() -> bool:
    """Whether classification runs inside the upload request (the embedded default, no broker)."""
    return bool(getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False))


@require_GET
@capability_required("view_cases")
def case_detail(request, pk: int):
    case = _case_or_404(pk)
    context = _cells_context(request, case)
    context["can_upload"] = has_capability(request.user, "create_case") and case.status != Case.Status.SIGNED
    if context["can_upload"]:
        context["queued_card"] = _queued_card()
    return render(request, "cases/detail.html", context)


@require_GET
@capability_required("view_cases")
def case_cells(request, pk: int):
    """The cell grid alone; the case page polls it while anything is queued or classifying."""
    case = _case_or_404(pk)
    return render(request, "cases/_cells.html", {**_cells_context(request, case), "fragment": True})


@require_POST
@capability_required("create_case")
def upload_images(request, pk: int):
    """Several files in field `files`. Answers JSON to the page's script, else redirects with messages."""
    case = _case_or_404(pk)
    files = request.FILES.getlist("files")
    if not files:
        message = _("Choose at least one image file to upload.")
        if _wants_json(request):
            return JsonResponse({"detail": message, "accepted": [], "rejected": []}, status=400)
        messages.error(request, message)
        return redirect("cases:detail", pk=case.pk)
    try:
        accepted, rejected = services.add_images(case=case, files=files, uploaded_by=request.user, request=request)
    except services.UploadRefused as exc:
        if _wants_json(request):
            return JsonResponse({"detail": str(exc), "accepted": [], "rejected": []}, status=409)
        messages.error(request, str(exc))
        return redirect("cases:detail", pk=case.pk)
    if _wants_json(request):
        body = {
            "accepted": [{"id": image.pk, "name": image.original_name, "status": image.status} for image in accepted],
            "rejected": [{"name": item.name, "message": item.message} for item in rejected],
        }
        if accepted and _tasks_run_in_request():
            # The accepted cells' cards as they are now (classified already: the tasks ran in this request), so
            # the page shows them without a cards request of its own (issue 12). With a broker they are all
            # queued: the page draws them from its queued card (_cells.html), and the server renders nothing
            # (~12 ms a render + ~1.5 ms a card: docs/benchmarks.md, hweb).
            body["cards"] = _cards_html(request, case, [image.pk for image in accepted])
        return JsonResponse(body, status=201 if accepted else 400)
    if accepted:
        messages.success(
            request,
            ngettext(
                "%(count)d image uploaded and queued for classification.",
                "%(count)d images uploaded and queued for classification.",
                len(accepted),
            )
            % {"count": len(accepted)},
        )
    for item in rejected:
        messages.error(request, item.message)
    return redirect("cases:detail", pk=case.pk)


def _cards_html(request, case: Case, image_ids: list[int]) -> str:
    """Cards as cases:cards renders them (without the page's context processors)."""
    cards = selectors.cell_cards(case=case, image_ids=image_ids)
    context = {
        "case": case,
        "cards": cards,
        "pending": any(card.pending for card in cards),
        "can_retry": has_capability(request.user, "retry_classification"),
        "csrf_token": get_token(request),
    }
    return render_to_string("cases/_cell_cards.html", context)


@require_GET
@capability_required("view_cases")
def image_file(request, pk: int):
    """The decrypted image, only to users who may see cases, never cached by shared caches."""
    image = _image_or_404(pk)
    # Every rendition is audited like the full image (one INSERT each; the hash chain is sealed later, in batches).
    variant = request.GET.get("variant") if request.GET.get("variant") in ("thumb", "preview") else "full"
    try:
        data, content_type = selectors.image_rendition(image=image, variant=variant)
    except StoredImageError as exc:
        logger.error("image %s cannot be served: %s", image.pk, exc)
        response = HttpResponse(f"This image cannot be shown: {exc}.", content_type="text/plain", status=500)
        response["Cache-Control"] = "private, no-store"
        return response
    record(
        action=AuditEvent.Action.IMAGE_VIEWED,
        obj=image,
        details={"case": image.case_id, "variant": variant},
        request=request,
    )
    response = HttpResponse(data, content_type=content_type)
    extension = {"image/jpeg": "jpg", "image/png": "png"}.get(content_type, "bin")
    response["Content-Disposition"] = f'inline; filename="cell-{image.pk}.{extension}"'
    if variant == "thumb" and image.thumbnail_key:
        # A stored thumbnail never changes: the user's own browser may keep it (never a shared cache), so the
        # case page, the review gallery and the report show it again without a request, a decryption and
        # an audit event each time. Full images and previews are not kept.
        response["Cache-Control"] = f"private, max-age={THUMBNAIL_MAX_AGE_SECONDS}"
    else:
        response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_POST
@capability_required("retry_classification")
def retry_image(request, pk: int):
    image = _image_or_404(pk)
    try:
        services.retry_classification(image=image, actor=request.user, request=request)
    except services.RetryRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("%(name)s is queued for classification again.") % {"name": image.original_name})
    return redirect("cases:detail", pk=image.case_id)
