from __future__ import annotations

from collections.abc import Iterable

from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_http_methods

from accounts.permissions import capability_required
from cases.differential import display_name
from hematovision.csv_safety import csv_text_chunks

from . import selectors, services, shadow
from .forms import AuditFilterForm, DashboardForm, ExportForm

PAGE_SIZE = 50


def csv_response(
    *, rows: Iterable[list] | None = None, chunks: Iterable[str | bytes] | None = None, filename: str
) -> StreamingHttpResponse:
    """Streams the rows as CSV, a chunk of rows at a time, with formulas neutralised (hematovision.csv_safety);
    or CSV chunks already written that way (the research export, which PostgreSQL writes itself)."""
    body = csv_text_chunks(rows) if chunks is None else chunks
    response = StreamingHttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def _dashboard_request(request):
    """The version and period chosen in the query string, or the defaults."""
    form = DashboardForm(request.GET or None)
    if form.is_bound and form.is_valid():
        version = form.cleaned_data.get("model_version") or selectors.default_dashboard_version()
        return form, version, form.period(required=True)
    if not form.is_bound:
        version = selectors.default_dashboard_version()
        period = selectors.default_period()
        form = DashboardForm(
            initial={"model_version": version.pk if version else None, "start": period.start, "end": period.end}
        )
        return form, version, period
    return form, None, None


def _shown(label: str) -> str:
    """A class or final label as the chart's reader says it ("lymphocyte" -> "Linfocito" in Spanish)."""
    return gettext("not reviewed yet") if label == selectors.NOT_REVIEWED else display_name(label)


def chart_data(metrics: selectors.DashboardMetrics) -> dict:
    return {
        "labels": metrics.labels,
        "perClass": {
            "labels": [_shown(row.label) for row in metrics.per_class],
            "precision": [row.precision for row in metrics.per_class],
            "recall": [row.recall for row in metrics.per_class],
            "f1": [row.f1 for row in metrics.per_class],
        },
        "roc": [
            {"label": _shown(curve.label), "fpr": curve.fpr, "tpr": curve.tpr, "auc": curve.auc}
            for curve in metrics.roc
        ],
        "cellsPerDay": {
            # Shown under the chart: in the reader's date format.
            "labels": [date_format(day, "SHORT_DATE_FORMAT") for day, _ in metrics.cells_per_day],
            "counts": [count for _, count in metrics.cells_per_day],
        },
        "flaggedOutcomes": {
            "labels": [_shown(label) for label in metrics.flagged_outcomes],
            "counts": list(metrics.flagged_outcomes.values()),
        },
    }


def confusion_rows(metrics: selectors.DashboardMetrics) -> list[dict]:
    """Each confusion-matrix cell with its share of the row (the true class), which sets its heat-map colour."""
    rows = []
    if not metrics.confusion:
        return rows
    for row_index, (label, counts) in enumerate(zip(metrics.labels, metrics.confusion, strict=True)):
        total = sum(counts)
        cells = []
        for column, count in enumerate(counts):
            share = count / total if total else 0.0
            cells.append(
                {"count": count, "alpha": f"{share:.2f}", "dark": share > 0.5, "diagonal": column == row_index}
            )
        rows.append({"label": label, "total": total, "cells": cells})
    return rows


@require_GET
@capability_required("view_dashboard")
def dashboard(request):
    form, version, period = _dashboard_request(request)
    metrics = selectors.dashboard_metrics(model_version=version, period=period) if version and period else None
    context = {"form": form, "metrics": metrics}
    if period is not None:
        context["shadow"] = shadow.shadow_comparison(period=period)
    if metrics is not None:
        context["charts"] = chart_data(metrics)
        context["confusion"] = confusion_rows(metrics)
        context["csv_query"] = request.GET.urlencode() or (
            f"model_version={version.pk}&start={period.start.isoformat()}&end={period.end.isoformat()}"
        )
    return render(request, "reports/dashboard.html", context, status=400 if form.errors else 200)


@require_GET
@capability_required("view_dashboard")
def dashboard_csv(request):
    form, version, period = _dashboard_request(request)
    if version is None or period is None:
        return render(request, "reports/dashboard.html", {"form": form, "metrics": None}, status=400)
    metrics = selectors.dashboard_metrics(model_version=version, period=period)
    filename = f"hematovision-metrics-{version.name}-{period.start:%Y%m%d}-{period.end:%Y%m%d}.csv"
    return csv_response(rows=selectors.dashboard_csv_rows(metrics=metrics), filename=filename)


@require_http_methods(["GET", "POST"])
@capability_required("export_data")
def exports(request):
    form = ExportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        chunks = services.export_cells_csv(actor=request.user, export_filter=form.export_filter(), request=request)
        return csv_response(chunks=chunks, filename=f"hematovision-cells-{timezone.localdate():%Y%m%d}.csv")
    context = {"form": form, "columns": services.EXPORT_COLUMNS, "trailing": services.EXPORT_TRAILING_COLUMNS}
    return render(request, "reports/exports.html", context, status=400 if form.errors else 200)


@require_GET
@capability_required("view_audit")
def audit(request):
    form = AuditFilterForm(request.GET or None)
    events = None
    if not form.is_bound or form.is_valid():
        audit_filter = form.audit_filter() if form.is_bound else selectors.AuditFilter()
        events = Paginator(selectors.audit_events(audit_filter=audit_filter), PAGE_SIZE).get_page(
            request.GET.get("page")
        )
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "events": events, "query": query.urlencode()}
    return render(request, "reports/audit.html", context, status=400 if form.errors else 200)


@require_GET
@capability_required("view_audit")
def audit_csv(request):
    form = AuditFilterForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        return render(request, "reports/audit.html", {"form": form, "events": None, "query": ""}, status=400)
    audit_filter = form.audit_filter() if form.is_bound else selectors.AuditFilter()
    rows = services.export_audit_trail(actor=request.user, audit_filter=audit_filter, request=request)
    return csv_response(rows=rows, filename=f"hematovision-audit-{timezone.localdate():%Y%m%d}.csv")


@require_GET
@capability_required("view_errors")
def errors(request):
    failed = Paginator(selectors.failed_classifications(), PAGE_SIZE).get_page(request.GET.get("failed_page"))
    overridden = Paginator(selectors.overridden_predictions(), PAGE_SIZE).get_page(request.GET.get("overridden_page"))
    return render(request, "reports/errors.html", {"failed": failed, "overridden": overridden})
