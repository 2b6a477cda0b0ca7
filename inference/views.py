"""Model management pages for admins: the versions with their metrics, importing a model file, activation."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.permissions import capability_required, has_capability

from . import adaptation, selectors, services
from .forms import AdaptationForm, ModelImportForm
from .importing import ImportFailed
from .models import AdaptationJob, ModelEvaluation, ModelImport, ModelVersion

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
    versions = list(
        ModelVersion.objects.select_related("created_by", "previous_version").order_by("-is_active", "-created_at")
    )
    evaluated = set(ModelEvaluation.objects.values_list("version_id", flat=True).distinct())
    rows = [
        {"version": version, "evaluations": headline_metrics(version.metrics), "evaluated": version.pk in evaluated}
        for version in versions
    ]
    imports = ModelImport.objects.select_related("version")[:10]
    active = next((version for version in versions if version.is_active), None)
    rollback_to = active.previous_version if active is not None else None
    shadow = next((version for version in versions if version.is_shadow), None)
    return render(
        request,
        "inference/list.html",
        {"rows": rows, "imports": imports, "rollback_to": rollback_to, "shadow": shadow},
    )


@require_POST
@capability_required("manage_models")
def model_shadow_start(request, pk: int):
    """Run an inactive, evaluated version in shadow beside the active one (its predictions are stored for
    the dashboard and never shown)."""
    version = get_object_or_404(ModelVersion, pk=pk)
    try:
        services.start_shadow(version, request.user, request=request)
    except services.ShadowRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            gettext(
                "%(name)s now runs in shadow: new cells are also classified by it; only the dashboard shows "
                "what it says."
            )
            % {"name": version.name},
        )
    return redirect("inference:list")


@require_POST
@capability_required("manage_models")
def model_shadow_stop(request):
    version = services.stop_shadow(request.user, request=request)
    if version is None:
        messages.info(request, gettext("No version runs in shadow."))
    else:
        messages.success(
            request,
            gettext("%(name)s no longer runs in shadow; what it said stays on the dashboard.") % {"name": version.name},
        )
    return redirect("inference:list")


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
                messages.info(
                    request,
                    gettext("%(name)s is queued for import; its progress shows below.") % {"name": job.original_name},
                )
            return redirect("inference:list")
    status = 400 if form.errors else 200
    return render(request, "inference/import.html", {"form": form}, status=status)


@require_POST
@capability_required("manage_models")
def model_activate(request, pk: int):
    """Activation through the gate: only a version with a recorded evaluation, and only once the admin
    confirmed on the comparison page (a bare POST goes to that page)."""
    try:
        version = ModelVersion.objects.get(pk=pk)
    except ModelVersion.DoesNotExist as exc:
        raise Http404("No such model version.") from exc
    if version.is_active:
        messages.info(request, gettext("%(name)s is already the active model version.") % {"name": version.name})
        return redirect("inference:list")
    if request.POST.get("confirm") != "yes":
        return redirect("inference:compare", pk=version.pk)
    try:
        services.activate_version(version, request.user, request=request, require_evaluation=True)
    except services.ActivationRefused as exc:
        messages.error(request, str(exc))
        return redirect("inference:compare", pk=version.pk)
    messages.success(
        request,
        gettext("%(name)s is now the active model version; new cells are classified with it.") % {"name": version.name},
    )
    return redirect("inference:list")


@require_POST
@capability_required("manage_models")
def model_rollback(request):
    try:
        version = services.rollback_version(request.user, request=request)
    except services.ActivationRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, gettext("Rolled back: %(name)s is the active model version again.") % {"name": version.name}
        )
    return redirect("inference:list")


@require_GET
@capability_required("manage_laboratories", "manage_models")
def model_compare(request, pk: int):
    version = get_object_or_404(ModelVersion, pk=pk)
    active = ModelVersion.objects.filter(is_active=True).first()
    comparisons = [selectors.comparison_rows(evaluation) for evaluation in selectors.evaluations_of(version)]
    return render(
        request,
        "inference/compare.html",
        {
            "version": version,
            "active": active,
            "comparisons": comparisons,
            "evaluated": bool(comparisons),
            "can_activate": has_capability(request.user, "manage_models"),
        },
    )


@require_http_methods(["GET", "POST"])
@capability_required("manage_laboratories")
def adaptation_start(request):
    form = AdaptationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            job = adaptation.queue_adaptation(
                name=form.cleaned_data["name"],
                laboratory_id=form.cleaned_data["laboratory_id"],
                source_label=form.source_label(),
                actor=request.user,
                request=request,
            )
        except adaptation.AdaptationRefused as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("inference:adaptation", pk=job.pk)
    adaptation.fail_dead_jobs()  # a job whose worker died must not show "running" for ever
    jobs = AdaptationJob.objects.select_related("version", "requested_by")[:10]
    status = 400 if form.errors else 200
    return render(
        request,
        "inference/adapt.html",
        {"form": form, "jobs": jobs, "active": ModelVersion.objects.filter(is_active=True).first()},
        status=status,
    )


@require_GET
@capability_required("manage_laboratories")
def adaptation_detail(request, pk: int):
    adaptation.fail_dead_jobs()
    job = get_object_or_404(AdaptationJob.objects.select_related("version", "base_version", "requested_by"), pk=pk)
    return render(request, "inference/adaptation.html", {"job": job, "percent": round(job.progress * 100)})


@require_POST
@capability_required("manage_laboratories")
def adaptation_cancel(request, pk: int):
    job = get_object_or_404(AdaptationJob, pk=pk)
    job = adaptation.cancel_adaptation(job=job, actor=request.user, request=request)
    if job.status == AdaptationJob.Status.CANCELLED:
        messages.info(request, gettext("The adaptation was cancelled."))
    elif job.finished:
        messages.info(
            request,
            gettext("The adaptation had already ended (%(status)s).") % {"status": job.get_status_display().lower()},
        )
    else:
        messages.info(request, gettext("Cancelling: the adaptation stops at its next step and registers nothing."))
    return redirect("inference:adaptation", pk=job.pk)
