"""The project's middleware under ASGI (uvicorn): async-capable, and doing there what it does under WSGI.

Driven through Django's AsyncClient (ASGIHandler, the async middleware chain) from synchronous tests, so
the views' database work runs in the test's own thread and transaction.
"""

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.conf import settings
from django.test import AsyncClient
from django.urls import reverse
from django.utils.module_loading import import_string

from accounts.roles import Role
from accounts.services import create_api_token

PROJECT_MIDDLEWARE = (
    "hematovision.security_headers.SecurityHeadersMiddleware",
    "hematovision.uploads.UploadLimitsMiddleware",
    "accounts.middleware.MFARequiredMiddleware",
    "hematovision.api_errors.ApiErrorMiddleware",
    "hematovision.middleware.DatabaseUnavailableMiddleware",
    "hematovision.bad_input.BadInputMiddleware",
)


@pytest.mark.parametrize("path", PROJECT_MIDDLEWARE)
def test_project_middleware_is_sync_and_async_capable(path):
    assert path in settings.MIDDLEWARE
    middleware = import_string(path)
    assert middleware.sync_capable and middleware.async_capable

    async def get_response(request):
        return None

    assert iscoroutinefunction(middleware(get_response))
    assert not iscoroutinefunction(middleware(lambda request: None))


def _get(client, path, token=None, **extra):
    # Headers per request: AsyncClient(headers=...) of Django 5.2 puts them in the scope under other names.
    headers = {"Authorization": f"Token {token}"} if token else None
    return async_to_sync(client.get)(path, headers=headers, **extra)


@pytest.mark.django_db
def test_api_request_under_asgi_keeps_headers_permissions_and_error_shape(make_user):
    technician = make_user(Role.TECHNICIAN)
    token = create_api_token(user=technician, second_factor=False)[1]
    client = AsyncClient()

    me = _get(client, "/api/v1/me/", token)
    assert me.status_code == 200, me.content
    assert me.json()["email"] == technician.email
    assert "camera=()" in me["Permissions-Policy"]
    assert "no-store" in me["Cache-Control"]

    missing = _get(client, "/api/v1/images/987654321/", token)
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"

    # A researcher has no case capability: the role-based check refuses, in the API's error shape.
    researcher_token = create_api_token(user=make_user(Role.RESEARCHER), second_factor=False)[1]
    refused = _get(client, "/api/v1/cases/", researcher_token)
    assert refused.status_code == 403
    assert refused.json()["code"] == "permission_denied"


@pytest.mark.django_db
def test_mfa_rule_under_asgi_for_a_signed_in_supervisor_without_authenticator(make_user):
    client = AsyncClient()
    client.force_login(make_user(Role.SUPERVISOR))

    page = _get(client, reverse("accounts:people"))
    assert page.status_code == 302
    assert page["Location"] == reverse("mfa_activate_totp")

    api = _get(client, "/api/v1/me/")
    assert api.status_code == 403
    assert "two-factor" in api.json()["detail"]


@pytest.mark.django_db
def test_pages_under_asgi_keep_csp_frame_options_csrf_cookie_and_language():
    page = async_to_sync(AsyncClient().get)(reverse("account_login"), headers={"Accept-Language": "es"})

    assert page.status_code == 200
    assert "script-src 'self'" in page["Content-Security-Policy"]
    assert page["X-Frame-Options"] == "DENY"
    assert page["Content-Language"] == "es"
    assert settings.CSRF_COOKIE_NAME in page.cookies


@pytest.mark.django_db
def test_oversized_upload_under_asgi_is_refused_before_the_view(technician, settings):
    settings.MAX_UPLOAD_REQUEST_BYTES = 1000
    token = create_api_token(user=technician, second_factor=False)[1]
    response = async_to_sync(AsyncClient().post)(
        "/api/v1/cases/1/images/",
        data=b"x" * 5000,
        content_type="application/octet-stream",
        headers={"Authorization": f"Token {token}"},
    )

    assert response.status_code == 413
    assert response.json()["accepted"] == [] and "at most" in response.json()["detail"]
