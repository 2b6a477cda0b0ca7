"""Pages where supervisors and admins keep the list of laboratories (name, instrument, scale)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from accounts.permissions import capability_required

from . import selectors, services
from .forms import LaboratoryForm
from .models import Laboratory


def _save(request, form: LaboratoryForm, laboratory: Laboratory | None) -> Laboratory | None:
    """Create or update through the service; a refusal becomes a form error."""
    values = {field: form.cleaned_data[field] for field in services.LABORATORY_FIELDS}
    try:
        if laboratory is None:
            return services.create_laboratory(**values, actor=request.user, request=request)
        return services.update_laboratory(laboratory=laboratory, **values, actor=request.user, request=request)
    except services.CaseError as exc:
        form.add_error("name", str(exc))
        return None


@require_http_methods(["GET", "POST"])
@capability_required("manage_laboratories")
def laboratory_list(request):
    """The laboratories, and a form to add one."""
    form = LaboratoryForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        laboratory = _save(request, form, None)
        if laboratory is not None:
            messages.success(request, _("Laboratory %(name)s added.") % {"name": laboratory.name})
            return redirect("cases:laboratories")
    return render(request, "cases/laboratories.html", {"laboratories": selectors.list_laboratories(), "form": form})


@require_http_methods(["GET", "POST"])
@capability_required("manage_laboratories")
def laboratory_edit(request, pk: int):
    try:
        laboratory = selectors.get_laboratory(pk=pk)
    except Laboratory.DoesNotExist as exc:
        raise Http404("No such laboratory.") from exc
    title = str(laboratory)
    # The form validates a copy, so a refused change leaves `laboratory` as stored.
    form = LaboratoryForm(request.POST or None, instance=selectors.get_laboratory(pk=pk))
    if request.method == "POST" and form.is_valid():
        saved = _save(request, form, laboratory)
        if saved is not None:
            messages.success(request, _("Laboratory %(name)s saved.") % {"name": saved.name})
            return redirect("cases:laboratories")
    return render(request, "cases/laboratory_edit.html", {"laboratory": laboratory, "title": title, "form": form})
