"""A worker killed in the middle of a task, and a broker down or silent at upload time, against real services."""

import pytest

from tests.ops.faults import (
    classified_by_the_requeue,
    upload_one,
    worker_killed_mid_task_is_delivered_again,
)

pytestmark = pytest.mark.broker

RECOVERY_TIMEOUT_SECONDS = 60


def test_task_of_a_worker_killed_mid_task_is_delivered_again_and_stored_once(
    tiny_model,
    technician,
    technician_api,
    cell_upload,
    private_redis_broker,
    project_celery_sends_to,
    start_worker,
    tmp_path,
):
    project_celery_sends_to(private_redis_broker)
    worker_killed_mid_task_is_delivered_again(
        start_worker=start_worker,
        broker_url=private_redis_broker,
        environment={"HEMATOVISION_TEST_VISIBILITY_TIMEOUT": "3"},
        upload=lambda: upload_one(technician_api, technician, cell_upload),
        slow_once=tmp_path / "first-prediction-started",
        timeout=RECOVERY_TIMEOUT_SECONDS,
    )


def test_upload_while_the_broker_is_down_is_kept_queued_and_classified_when_it_returns(
    tiny_model, technician, technician_api, cell_upload, throwaway_redis, project_celery_sends_to, start_worker
):
    project_celery_sends_to(throwaway_redis.url)
    throwaway_redis.stop()

    image_id = upload_one(technician_api, technician, cell_upload)
    assert technician_api.get(f"/api/v1/images/{image_id}/").json()["status"] == "queued"

    throwaway_redis.start()
    classified_by_the_requeue(
        start_worker=start_worker, broker_url=throwaway_redis.url, image_id=image_id, timeout=RECOVERY_TIMEOUT_SECONDS
    )


def test_upload_while_the_broker_never_answers_is_kept_queued_within_the_socket_timeout(
    transactional_db, tiny_model, technician, technician_api, cell_upload, project_celery_sends_to, settings
):
    """A Redis broker that accepts the connection but never replies (a hung server, a half-open connection after
    a failover): the publish gives up after the socket timeout, and its one retry after another, instead of holding
    the upload for minutes; the image waits for the periodic re-queue as when the broker is down."""
    import socket
    import time

    silent_server = socket.create_server(("127.0.0.1", 0))
    try:
        project_celery_sends_to(f"redis://127.0.0.1:{silent_server.getsockname()[1]}/0")
        started = time.monotonic()
        image_id = upload_one(technician_api, technician, cell_upload)
        elapsed = time.monotonic() - started
    finally:
        silent_server.close()
    socket_timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS["socket_timeout"]
    assert elapsed < 2 * socket_timeout + 5, elapsed
    assert technician_api.get(f"/api/v1/images/{image_id}/").json()["status"] == "queued"
