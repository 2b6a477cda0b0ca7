"""The classification pipeline against a real broker: a real Celery worker on Redis, and a broker that is down."""

import socket
import time
import uuid
from contextlib import contextmanager

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from cases import services
from cases.models import CellImage, Prediction
from hematovision.celery import app as project_app
from tests.cases import images
from tests.conftest import skip_or_fail
from tests.factories import CaseFactory

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
TEST_REDIS_DB = 11


def redis_reachable() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def celery_app_on(broker_url: str):
    """A Celery app configured like the project's, but on `broker_url`, non-eager, with its own queue."""
    app = Celery("hematovision-test", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(
        broker_url=broker_url,
        task_always_eager=False,
        task_default_queue=f"hematovision-test-{uuid.uuid4().hex[:8]}",
        result_backend=None,
    )
    app.set_current()
    try:
        yield app
    finally:
        # start_worker also makes its app the process-wide default (seen by every other thread, such as
        # live_server's); hand both roles back to the project's app.
        project_app.set_current()
        project_app.set_default()
        app.close()


def upload_cell(case, user, class_index: int):
    files = [images.upload("cell.png", images.cell_png(class_index, seed=class_index))]
    (image,), _ = services.add_images(case=case, files=files, uploaded_by=user)
    return image


def wait_for_status(image, status: str, *, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image.refresh_from_db()
        if image.status == status:
            return
        time.sleep(0.2)
    pytest.fail(f"image {image.pk} still {image.status} ({image.status_message!r}) after {timeout:.0f} s")


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_real_worker_on_redis_classifies_an_upload(tiny_model, technician):
    if not redis_reachable():
        skip_or_fail(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}")
    case = CaseFactory(created_by=technician)
    with celery_app_on(f"redis://{REDIS_HOST}:{REDIS_PORT}/{TEST_REDIS_DB}") as app:
        with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="WARNING"):
            image = upload_cell(case, technician, 2)
            wait_for_status(image, CellImage.Status.CLASSIFIED)

    prediction = Prediction.objects.get(image=image)
    assert (prediction.label, prediction.model_version) == ("PLATELET", tiny_model)


def test_upload_with_the_broker_down_is_kept_queued_quickly(technician, django_capture_on_commit_callbacks, caplog):
    case = CaseFactory(created_by=technician)
    # Nothing listens on port 1: the connection is refused, as when the broker is down.
    with celery_app_on("redis://127.0.0.1:1/0"):
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            image = upload_cell(case, technician, 0)
        elapsed = time.monotonic() - started

    image.refresh_from_db()
    assert image.status == CellImage.Status.QUEUED
    assert "broker unavailable" in caplog.text
    assert elapsed < 10
