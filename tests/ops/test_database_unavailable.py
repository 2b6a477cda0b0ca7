import pytest
from django.db import OperationalError, close_old_connections
from django.test import Client

from cases import storage
from cases.models import Case, CellImage
from hematovision.views import server_error
from tests.factories import CaseFactory


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


def test_upload_cut_off_by_a_database_outage_leaves_nothing_half_written(
    database_proxy, technician, technician_api, cell_upload, monkeypatch, settings, tmp_path
):
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"
    case = CaseFactory(created_by=technician)
    store_file = storage.save

    def store_file_then_lose_the_database(data: bytes) -> str:
        storage_key = store_file(data)
        database_proxy.cut()
        return storage_key

    monkeypatch.setattr(storage, "save", store_file_then_lose_the_database)
    response = technician_api.post(
        f"/api/v1/cases/{case.pk}/images/", {"files": [cell_upload(), cell_upload()]}, format="multipart"
    )
    assert response.status_code == 503

    database_proxy.restore()
    close_old_connections()
    assert not CellImage.objects.filter(case=case).exists()
    assert Case.objects.get(pk=case.pk).status == Case.Status.DRAFT
    assert [path for path in settings.PRIVATE_MEDIA_ROOT.rglob("*") if path.is_file()] == []
