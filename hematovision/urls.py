from django.contrib import admin
from django.urls import include, path
from django.views.decorators.cache import cache_control
from django.views.i18n import JavaScriptCatalog
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import views

api_v1 = [
    path("", include("cases.api_urls")),
    path("", include("inference.api_urls")),
    path("", include("reports.api_urls")),
    path("", include("accounts.api_urls")),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("guide/", views.guide, name="guide"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("accounts/", include("allauth.urls")),
    path("people/", include("accounts.urls")),
    path("cases/", include("cases.urls")),
    path("models/", include("inference.urls")),
    path("reports/", include("reports.urls")),
    path("notifications/", include("notifications.urls")),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI from the sidecar's static files, its start-up script from a URL of ours (no inline script).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    # The language switcher posts to set_language (i18n/setlang/); URLs carry no language prefix.
    path("i18n/", include("django.conf.urls.i18n")),
    # Strings of static/js in the visitor's language (djangojs domain). base.html adds the language to the
    # URL, so the browser may keep it for an hour: it holds no patient data, only the translation catalogue.
    path(
        "jsi18n/",
        cache_control(public=True, max_age=3600)(JavaScriptCatalog.as_view()),
        name="javascript-catalog",
    ),
]

handler400 = "hematovision.views.bad_request"
handler403 = "hematovision.views.permission_denied"
handler404 = "hematovision.views.page_not_found"
handler500 = "hematovision.views.server_error"
