"""Model management pages for admins: the versions with their metrics, importing a model file, activation."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.permissions import capability_required

from . import services
from .forms import ModelImportForm
from .importing import ImportFailed
from .models import ModelImport, ModelVersion

HEADLINE_METRICS = ("n", "accuracy", "macro_f1", "macro_roc_auc", "ece", "flagged_fraction")


def headline_metrics(metrics: dict) -> list[tuple[str, dict]]:
    """The headline numbers of each evaluation stored on a version: either one flat evaluation or one per
    data split (e.g. {"validation": {...}, "test": {...}})."""
    if not isinstance(metrics, dict):
        return []
    if "accuracy" in metrics:
        evaluations = [("evaluation", metrics)]
    else:
        evaluations = [(split, values) for split, values in metrics.items() if isinstance(values, dict)]
    return [
        (split, {key: values[key] for key in HEADLINE_METRICS if values.get(key) is not None})
        for split, values in evaluations
        if any(values.get(key) is not None for key in HEADLINE_METRICS)
    ]


@require_GET
@capability_required("manage_models")
def model_list(request):
    versions = ModelVersion.objects.select_related("created_by").order_by("-is_active", "-created_at")
    rows = [{"version": version, "evaluations": headline_metrics(version.metrics)} for version in versions]
    imports = ModelImport.objects.select_related("version")[:10]
    return render(request, "inference/list.html", {"rows": rows, "imports": imports})


@require_http_methods(["GET", "POST"])
@capability_required("manage_models")
def model_import(request):
    form = ModelImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            job = form.save(actor=request.user)
        except ImportFailed as exc:
            form.add_error(None, str(exc))
        else:
            job.refresh_from_db()  # in the embedded default the import has already run in-process
            if job.status == ModelImport.Status.FAILED:
                messages.error(request, f"{job.original_name}: {job.message}")
            elif job.status == ModelImport.Status.DONE:
                messages.success(request, f"{job.original_name}: {job.message}")
            else:
                messages.info(request, f"{job.original_name} is queued for import; its progress shows below.")
            return redirect("inference:list")
    status = 400 if form.errors else 200
    return render(request, "inference/import.html", {"form": form}, status=status)


@require_POST
@capability_required("manage_models")
def model_activate(request, pk: int):
    try:
        version = ModelVersion.objects.get(pk=pk)
    except ModelVersion.DoesNotExist as exc:
        raise Http404("No such model version.") from exc
    if version.is_active:
        messages.info(request, f"{version.name} is already the active model version.")
    else:
        services.activate_version(version, request.user, request=request)
        messages.success(request, f"{version.name} is now the active model version; new cells are classified with it.")
    return redirect("inference:list")
