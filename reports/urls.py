from django.urls import path

from . import views

app_name = "reports"
urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/metrics.csv", views.dashboard_csv, name="dashboard_csv"),
    path("exports/", views.exports, name="exports"),
    path("audit/", views.audit, name="audit"),
    path("audit/audit.csv", views.audit_csv, name="audit_csv"),
    path("errors/", views.errors, name="errors"),
]
