"""Every error under /api/ is JSON of one shape, {"detail", "code"}; an unexpected one is logged with its
traceback and its text never reaches the client."""

import json
import logging

import pytest
from django.db import OperationalError
from django.test import Client
from rest_framework.test import APIClient

from tests.api.conftest import token_client

ME_URL = "/api/v1/me/"
SECRET_TEXT = "password=hunter2 in SELECT * FROM patients"


def broken_capabilities(**kwargs):
    raise RuntimeError(SECRET_TEXT)


@pytest.fixture
def failing_me(monkeypatch):
    monkeypatch.setattr("accounts.api_views.capabilities_of", broken_capabilities)


def test_an_unexpected_error_in_an_api_view_is_a_json_500_without_its_text(failing_me, technician, caplog):
    client = token_client(technician)
    client.raise_request_exception = False

    with caplog.at_level(logging.ERROR, logger="hematovision.api_errors"):
        response = client.get(ME_URL)

    assert response.status_code == 500
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == "server_error"
    assert set(response.json()) == {"detail", "code"}
    assert b"hunter2" not in response.content
    (logged,) = [record for record in caplog.records if record.name == "hematovision.api_errors"]
    assert logged.exc_info[0] is RuntimeError
    assert ME_URL in logged.getMessage()


def test_a_pages_unexpected_error_keeps_the_friendly_html_page(monkeypatch, technician):
    monkeypatch.setattr("hematovision.health.readiness", broken_capabilities)

    response = Client(raise_request_exception=False).get("/readyz")

    assert response.status_code == 500
    assert b"Something went wrong" in response.content


def test_a_lost_database_in_an_api_view_is_a_json_503(monkeypatch, technician):
    def lost(**kwargs):
        raise OperationalError("connection to server at 10.0.0.5 failed: Connection refused")

    monkeypatch.setattr("accounts.api_views.capabilities_of", lost)
    client = token_client(technician)
    client.raise_request_exception = False

    response = client.get(ME_URL)

    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"
    assert b"10.0.0.5" not in response.content


def test_an_error_raised_outside_any_view_is_json_under_the_api(rf):
    from hematovision.views import server_error

    try:
        raise ValueError(SECRET_TEXT)
    except ValueError:
        response = server_error(rf.get(ME_URL))

    assert response.status_code == 500
    assert json.loads(response.content)["code"] == "server_error"
    assert b"hunter2" not in response.content


def test_an_unknown_api_url_is_a_json_404(db):
    response = APIClient().get("/api/v1/no-such-endpoint/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_an_unknown_page_keeps_the_friendly_html_404(db):
    response = Client().get("/no-such-page/")

    assert response.status_code == 404
    assert b"There is nothing here." in response.content


def test_drf_errors_carry_their_code(db):
    response = APIClient().get(ME_URL)

    assert response.status_code in (401, 403)
    assert response.json()["code"] == "not_authenticated"
    assert response.json()["detail"]


def test_a_validation_error_names_its_fields_under_errors_and_at_the_top_level(supervisor):
    response = token_client(supervisor).get("/api/v1/reports/metrics/", {"start": "2025-03-03", "end": "2025-03-01"})

    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["errors"]) == ("invalid", {"end": ["The end date is before the start date."]})
    # Where clients written against DRF's own shape read it.
    assert body["end"] == ["The end date is before the start date."]


def test_an_error_a_view_answers_itself_gets_the_code_of_its_status(db):
    response = APIClient().post("/api/v1/auth/token/", {"email": "nobody@example.org", "password": "x"}, format="json")

    assert response.status_code in (400, 401, 403)
    assert response.json()["code"] in ("bad_request", "not_authenticated", "permission_denied")
    assert response.json()["detail"]
