"""Browser hardening: a Content-Security-Policy without inline scripts, a Permissions-Policy, and pages that
show a patient reference are never stored by a browser or proxy cache."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from tests.factories import CaseFactory

TEMPLATES = Path(settings.BASE_DIR) / "templates"


def directives(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


def test_the_sign_in_page_has_a_strict_content_security_policy(client, db):
    response = client.get(reverse("account_login"))

    csp = directives(response)
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"]


def test_pages_have_a_permissions_policy(client, db):
    policy = client.get(reverse("account_login"))["Permissions-Policy"]

    for feature in ("camera", "microphone", "geolocation"):
        assert f"{feature}=()" in policy


def test_the_case_page_with_its_patient_reference_is_never_cached(client, technician):
    case = CaseFactory(created_by=technician, patient_reference="MRN-SECRET-1")
    client.force_login(technician)

    response = client.get(reverse("cases:detail", args=[case.pk]))

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert "Content-Security-Policy" in response


def test_the_api_case_detail_is_never_cached(technician):
    from tests.api.conftest import token_client

    case = CaseFactory(created_by=technician, patient_reference="MRN-SECRET-2")

    response = token_client(technician).get(reverse("api-case-detail", args=[case.pk]))

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


# A data block (<script type="application/json">) is not executed, so the policy allows it.
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\b(src=|type=\"application/json\"))[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=\s*[\"']", re.IGNORECASE)
JAVASCRIPT_URL = re.compile(r"(href|src|action)\s*=\s*[\"']\s*javascript:", re.IGNORECASE)


@pytest.mark.parametrize("template", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_templates_have_no_inline_script_the_policy_would_block(template):
    """script-src 'self': inline <script> blocks, on*="..." handlers and javascript: URLs would not run."""
    text = template.read_text()
    problems = [pattern.pattern for pattern in (INLINE_SCRIPT, INLINE_HANDLER, JAVASCRIPT_URL) if pattern.search(text)]
    assert not problems, f"{template}: move the script to static/js (found {problems})"
