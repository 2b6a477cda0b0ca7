"""test_worker_faults.py's faults with RabbitMQ as the broker (CELERY_BROKER_URL=amqp://...), against a real server.

The machine's RabbitMQ (TEST_RABBITMQ_URL, default guest on 127.0.0.1:5672, virtual host /), each test on a queue
of its own that it deletes at the end. .ci/run starts RabbitMQ with PostgreSQL and Redis: where it does not answer
these tests are skipped, and fail under CI=true.
"""

import logging
import os
import time
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.ops.faults import (
    TcpProxy,
    classified_by_the_requeue,
    port_answers,
    skip_or_fail,
    upload_one,
    worker_killed_mid_task_is_delivered_again,
)

pytestmark = pytest.mark.broker

RECOVERY_TIMEOUT_SECONDS = 60
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _through(proxy: TcpProxy, url: str) -> str:
    """The broker URL with the proxy's loopback port in place of the server's."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}"))


@pytest.fixture
def rabbitmq(project_celery_sends_to):
    """The machine's RabbitMQ; `send_to(url)` points this process's Celery app at it (or at a proxy in front of it)
    with the test's own queue, which workers started with `worker_environment` consume."""
    from kombu import Connection

    from hematovision.celery import app

    url = os.environ.get("TEST_RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
    parts = urlsplit(url)
    if not port_answers(parts.port or 5672, host=parts.hostname or "127.0.0.1"):
        skip_or_fail(f"RabbitMQ is not reachable at {parts.hostname}:{parts.port or 5672} (set TEST_RABBITMQ_URL)")
    queue = f"hematovision-faulttest-{os.getpid()}-{time.monotonic_ns()}"
    saved_queue = app.conf.task_default_queue

    def send_to(broker_url: str) -> None:
        app.conf.update(task_default_queue=queue)
        app.__dict__.pop("amqp", None)  # its queues and router were built for the default queue
        project_celery_sends_to(broker_url)

    yield SimpleNamespace(
        url=url,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5672,
        send_to=send_to,
        worker_environment={"HEMATOVISION_TEST_QUEUE": queue},
    )
    app.conf.update(task_default_queue=saved_queue)
    app.__dict__.pop("amqp", None)
    with Connection(url, connect_timeout=5) as connection:
        connection.default_channel.queue_delete(queue)


def test_task_of_a_worker_killed_mid_task_is_delivered_again_at_once_and_stored_once(
    tiny_model, technician, technician_api, cell_upload, rabbitmq, start_worker, tmp_path
):
    rabbitmq.send_to(rabbitmq.url)
    # Redis's visibility timeout stays at its production 600 s: RabbitMQ does not use it.
    worker_killed_mid_task_is_delivered_again(
        start_worker=start_worker,
        broker_url=rabbitmq.url,
        environment=rabbitmq.worker_environment,
        upload=lambda: upload_one(technician_api, technician, cell_upload),
        slow_once=tmp_path / "first-prediction-started",
        timeout=RECOVERY_TIMEOUT_SECONDS,
    )


def test_upload_while_rabbitmq_is_unreachable_is_kept_queued_and_classified_when_it_returns(
    tiny_model, technician, technician_api, cell_upload, rabbitmq, start_worker, caplog
):
    proxy = TcpProxy(rabbitmq.host, rabbitmq.port)
    try:
        proxied = _through(proxy, rabbitmq.url)
        rabbitmq.send_to(proxied)
        proxy.cut()

        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="cases.tasks"):
            image_id = upload_one(technician_api, technician, cell_upload)
        assert time.monotonic() - started < 10  # refused at once: no retries inside the request
        assert "broker unavailable" in caplog.text
        assert technician_api.get(f"/api/v1/images/{image_id}/").json()["status"] == "queued"

        proxy.restore()
        classified_by_the_requeue(
            start_worker=start_worker,
            broker_url=proxied,
            image_id=image_id,
            timeout=RECOVERY_TIMEOUT_SECONDS,
            **rabbitmq.worker_environment,
        )
    finally:
        proxy.close()


def test_a_broker_connection_dropped_since_the_last_upload_does_not_fail_the_next_publish(
    transactional_db, technician, technician_api, cell_upload, rabbitmq, caplog
):
    """A RabbitMQ restart or an idle connection dropped by the network leaves the web process's pooled connection
    dead; the next publish reconnects (cases.tasks.PUBLISH_RETRY_POLICY) instead of leaving its images queued for
    requeue_stale_images (minutes)."""
    from kombu import Connection

    proxy = TcpProxy(rabbitmq.host, rabbitmq.port)
    try:
        rabbitmq.send_to(_through(proxy, rabbitmq.url))
        upload_one(technician_api, technician, cell_upload)
        proxy.cut()
        proxy.restore()

        with caplog.at_level(logging.ERROR, logger="cases.tasks"):
            upload_one(technician_api, technician, cell_upload)

        assert "broker unavailable" not in caplog.text
        with Connection(rabbitmq.url, connect_timeout=5) as connection:
            queue = rabbitmq.worker_environment["HEMATOVISION_TEST_QUEUE"]
            assert connection.default_channel.queue_declare(queue, passive=True).message_count == 2
    finally:
        proxy.close()
