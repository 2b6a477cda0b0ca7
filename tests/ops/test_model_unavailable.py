"""A model file missing or corrupt: start-up says so clearly and uploads are kept as queued."""

import logging
import shutil

import pytest
from django.conf import settings

from cases.models import CellImage
from hematovision.health import log_model_status_at_startup
from inference.predictor import reset_predictor
from inference.registry import artifact_path
from tests.factories import CaseFactory
from tests.ops.faults import wait_until


@pytest.fixture
def model_file_of_own(tiny_model):
    """The active version served from a private copy of its files, which a test may damage freely."""
    copy = f"{tiny_model.artifact_dir}-damaged-copy"
    shutil.copytree(settings.MODEL_STORE_DIR / tiny_model.artifact_dir, settings.MODEL_STORE_DIR / copy)
    tiny_model.artifact_dir = copy
    tiny_model.save(update_fields=["artifact_dir"])
    reset_predictor()
    yield artifact_path(tiny_model, tiny_model.serving_artifact)
    shutil.rmtree(settings.MODEL_STORE_DIR / copy)
    reset_predictor()


def _upload(technician_api, technician, cell_upload, capture_on_commit) -> dict:
    case = CaseFactory(created_by=technician)
    with capture_on_commit(execute=True):
        response = technician_api.post(
            f"/api/v1/cases/{case.pk}/images/", {"files": [cell_upload()]}, format="multipart"
        )
    assert response.status_code == 201, response.content
    return response.json()["accepted"][0]


def test_upload_with_the_model_file_missing_is_kept_queued_with_the_reason(
    model_file_of_own, technician, technician_api, cell_upload, django_capture_on_commit_callbacks
):
    model_file_of_own.unlink()
    accepted = _upload(technician_api, technician, cell_upload, django_capture_on_commit_callbacks)
    image = CellImage.objects.get(pk=accepted["id"])
    assert image.status == CellImage.Status.QUEUED
    assert "model file missing" in image.status_message


def test_upload_with_a_corrupt_model_file_is_kept_queued_with_the_reason(
    model_file_of_own, technician, technician_api, cell_upload, django_capture_on_commit_callbacks
):
    model_file_of_own.write_bytes(b"not a model any more")
    accepted = _upload(technician_api, technician, cell_upload, django_capture_on_commit_callbacks)
    image = CellImage.objects.get(pk=accepted["id"])
    assert image.status == CellImage.Status.QUEUED
    assert "checksum mismatch" in image.status_message


@pytest.mark.django_db(transaction=True)
def test_start_up_names_the_missing_model_file(active_model_file, caplog):
    active_model_file.unlink()
    with caplog.at_level(logging.ERROR, logger="hematovision.startup"):
        assert log_model_status_at_startup("web worker") is False
    assert "MODEL UNAVAILABLE" in caplog.text
    assert str(active_model_file) in caplog.text


@pytest.mark.broker
def test_a_celery_worker_says_at_start_up_that_the_model_is_corrupt(
    active_model_file, private_redis_broker, start_worker
):
    active_model_file.write_bytes(b"damaged")
    worker = start_worker(broker_url=private_redis_broker)
    wait_until(
        lambda: "MODEL UNAVAILABLE" in worker.log_tail(20000),
        timeout=60,
        what=f"the worker's start-up message\n{worker.log_tail()}",
    )
    assert "corrupt" in worker.log_tail(20000)
