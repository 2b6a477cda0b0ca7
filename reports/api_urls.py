from django.urls import path

from . import api

urlpatterns = [
    path("reports/metrics/", api.DashboardMetricsAPI.as_view(), name="api-report-metrics"),
    path("exports/cells/", api.CellExportAPI.as_view(), name="api-export-cells"),
    path("audit-events/", api.AuditEventListAPI.as_view(), name="api-audit-events"),
]
