"""Friendly error pages: nothing of Django's own (or debug) pages reaches a user."""

import pytest
from django.test import Client


@pytest.mark.django_db
def test_an_unexpected_error_gets_the_friendly_server_error_page(monkeypatch):
    def broken():
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr("hematovision.health.readiness", broken)
    client = Client(raise_request_exception=False)

    response = client.get("/readyz")

    assert response.status_code == 500
    assert b"Something went wrong" in response.content
    assert b"something nobody expected" not in response.content


@pytest.mark.django_db
def test_a_form_sent_without_its_csrf_token_gets_the_friendly_expired_page():
    client = Client(enforce_csrf_checks=True)

    response = client.post("/accounts/login/", {"login": "someone@example.org", "password": "x"})

    assert response.status_code == 403
    assert b"This page has expired" in response.content


@pytest.mark.django_db
def test_an_unknown_page_gets_the_friendly_not_found_page(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert b"There is nothing here." in response.content
