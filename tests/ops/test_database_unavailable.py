import pytest
from django.db import OperationalError, close_old_connections
from django.test import Client

from hematovision.views import server_error


@pytest.fixture
def signed_in_client(database_proxy, technician):
    # As in production: a failure raised in middleware becomes a response instead of propagating to the test.
    client = Client(raise_request_exception=False)
    client.force_login(technician)
    return client


def test_database_outage_shows_a_clear_503_page(signed_in_client, database_proxy):
    database_proxy.cut()
    response = signed_in_client.get("/")
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert "temporarily unavailable" in response.content.decode()


def test_pages_work_again_once_the_database_is_back(signed_in_client, database_proxy):
    database_proxy.cut()
    assert signed_in_client.get("/").status_code == 503
    database_proxy.restore()
    # What every production request starts with; Django's test client skips it.
    close_old_connections()
    response = signed_in_client.get("/")
    assert response.status_code == 302  # home sends the technician to the case list


def test_database_outage_outside_a_view_is_also_a_503(rf):
    try:
        raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")
    except OperationalError:
        response = server_error(rf.get("/"))
    assert response.status_code == 503


def test_other_server_errors_stay_500(rf):
    try:
        raise ValueError("a bug, not an outage")
    except ValueError:
        response = server_error(rf.get("/"))
    assert response.status_code == 500
