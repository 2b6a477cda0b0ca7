"""A worker killed in the middle of a task, and a broker down at upload time, against real services."""

import pytest

from cases.models import CellImage, Prediction
from tests.factories import CaseFactory
from tests.ops.faults import wait_until

pytestmark = pytest.mark.broker

RECOVERY_TIMEOUT_SECONDS = 60


def _upload_one(technician_api, technician, cell_upload) -> int:
    case = CaseFactory(created_by=technician)
    response = technician_api.post(f"/api/v1/cases/{case.pk}/images/", {"files": [cell_upload()]}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()["accepted"][0]["id"]


def _classified(image_id: int) -> CellImage | None:
    image = CellImage.objects.get(pk=image_id)
    return image if image.status == CellImage.Status.CLASSIFIED else None


def test_task_of_a_worker_killed_mid_task_is_delivered_again_and_stored_once(
    tiny_model,
    technician,
    technician_api,
    cell_upload,
    shared_redis_broker,
    project_celery_sends_to,
    start_worker,
    tmp_path,
):
    slow_once = tmp_path / "first-prediction-started"
    worker_environment = {
        "HEMATOVISION_TEST_SLOW_ONCE_FILE": str(slow_once),
        "HEMATOVISION_TEST_VISIBILITY_TIMEOUT": "3",
    }
    project_celery_sends_to(shared_redis_broker)
    first = start_worker(broker_url=shared_redis_broker, **worker_environment)
    image_id = _upload_one(technician_api, technician, cell_upload)

    wait_until(
        slow_once.exists,
        timeout=RECOVERY_TIMEOUT_SECONDS,
        what=f"the first worker to start predicting\n{first.log_tail()}",
    )
    assert CellImage.objects.get(pk=image_id).status == CellImage.Status.CLASSIFYING
    first.kill()

    second = start_worker(broker_url=shared_redis_broker, **worker_environment)
    image = wait_until(
        lambda: _classified(image_id),
        timeout=RECOVERY_TIMEOUT_SECONDS,
        what=f"the task to be delivered again to the second worker\n{second.log_tail()}",
    )
    assert image.attempts == 2
    assert Prediction.objects.filter(image_id=image_id).count() == 1


def test_upload_while_the_broker_is_down_is_kept_queued_and_classified_when_it_returns(
    tiny_model, technician, technician_api, cell_upload, throwaway_redis, project_celery_sends_to, start_worker
):
    project_celery_sends_to(throwaway_redis.url)
    throwaway_redis.stop()

    image_id = _upload_one(technician_api, technician, cell_upload)
    assert technician_api.get(f"/api/v1/images/{image_id}/").json()["status"] == "queued"

    throwaway_redis.start()
    worker = start_worker(
        broker_url=throwaway_redis.url,
        beat=True,
        HEMATOVISION_TEST_STALE_SECONDS="1",
        HEMATOVISION_TEST_REQUEUE_EVERY="1",
    )
    wait_until(
        lambda: _classified(image_id),
        timeout=RECOVERY_TIMEOUT_SECONDS,
        what=f"the periodic re-queue to classify the image\n{worker.log_tail()}",
    )
    assert Prediction.objects.filter(image_id=image_id).count() == 1
