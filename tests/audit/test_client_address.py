"""The audit trail records the client's address, not the reverse proxy's."""

import pytest
from django.test import RequestFactory

from audit.models import AuditEvent
from audit.services import record


def request(**meta):
    return RequestFactory().get("/", **meta)


@pytest.mark.django_db
def test_behind_the_proxy_the_address_the_proxy_appended_is_recorded(settings):
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1

    event = record(
        action=AuditEvent.Action.SIGN_OUT,
        request=request(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.7, 10.0.0.5"),
    )

    assert event.ip_address == "10.0.0.5"


@pytest.mark.django_db
def test_without_a_proxy_the_peer_is_recorded_and_the_header_ignored(settings):
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 0

    event = record(
        action=AuditEvent.Action.SIGN_OUT, request=request(REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR="192.0.2.7")
    )

    assert event.ip_address == "10.0.0.9"


@pytest.mark.django_db
def test_a_header_that_does_not_fit_the_proxy_count_still_records_the_event(settings):
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 2

    event = record(
        action=AuditEvent.Action.SIGN_OUT, request=request(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="not-an-ip")
    )

    assert event.ip_address == "127.0.0.1"
