import hashlib
import io
import os
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.test import APIClient

from tests.factories import ModelVersionFactory
from tests.ops.faults import (
    CeleryWorker,
    TcpProxy,
    ThrowAwayRedis,
    database_url_of,
    port_answers,
    require_postgresql,
    skip_or_fail,
)

SHARED_REDIS_PORT = 6379


@pytest.fixture
def shared_redis_url():
    """The machine's Redis, for checks that only read (tests that queue or flush use private_redis_broker)."""
    if not port_answers(SHARED_REDIS_PORT):
        skip_or_fail(f"Redis is not reachable on 127.0.0.1:{SHARED_REDIS_PORT}")
    return f"redis://127.0.0.1:{SHARED_REDIS_PORT}/14"


@pytest.fixture
def throwaway_redis():
    redis = ThrowAwayRedis().start()
    yield redis
    redis.cleanup()


@pytest.fixture
def database_proxy(transactional_db):
    """Routes this test's database connection through a proxy the test can cut."""
    require_postgresql()
    settings_dict = connection.settings_dict
    original = settings_dict["HOST"], settings_dict["PORT"]
    proxy = TcpProxy(settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432))
    connection.close()
    settings_dict["HOST"], settings_dict["PORT"] = "127.0.0.1", proxy.port
    yield proxy
    proxy.restore()
    connection.close()
    settings_dict["HOST"], settings_dict["PORT"] = original
    proxy.close()


@pytest.fixture
def active_model_file(db, settings, tmp_path):
    """An active model version whose serving file exists and matches its recorded checksum."""
    settings.MODEL_STORE_DIR = tmp_path / "models"
    version = ModelVersionFactory(is_active=True)
    path = settings.MODEL_STORE_DIR / version.artifact_dir / version.serving_artifact
    path.parent.mkdir(parents=True)
    path.write_bytes(b"serving model bytes")
    version.checksums = {version.serving_artifact: hashlib.sha256(b"serving model bytes").hexdigest()}
    version.save(update_fields=["checksums"])
    return path


@pytest.fixture
def private_redis_broker(throwaway_redis):
    """A redis-server of this test's own: no other test run on the machine (another checkout's, a colleague's)
    shares its queue or empties it, as they could a database number of the machine's Redis."""
    return throwaway_redis.url


@pytest.fixture
def project_celery_sends_to():
    """Makes the project's Celery app publish to a real broker (tests otherwise run tasks in-process)."""
    from hematovision.celery import app, drop_broker_connections

    saved = {name: app.conf[name] for name in ("broker_url", "task_always_eager")}

    def point_at(broker_url: str) -> None:
        app.conf.update(broker_url=broker_url, task_always_eager=False)
        drop_broker_connections()

    yield point_at
    app.conf.update(saved)
    drop_broker_connections()


@pytest.fixture
def start_worker(transactional_db, settings, tmp_path):
    """Starts real `celery worker` subprocesses on this test's database, image store and model store."""
    require_postgresql()
    workers: list[CeleryWorker] = []

    def start(*, broker_url: str, beat: bool = False, **environment: str) -> CeleryWorker:
        worker = CeleryWorker(
            project_dir=Path(settings.BASE_DIR),
            environment={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "tests.ops.worker_settings",
                "DATABASE_URL": database_url_of(connection.settings_dict),
                "HEMATOVISION_TEST_PRIVATE_MEDIA_ROOT": str(settings.PRIVATE_MEDIA_ROOT),
                "HEMATOVISION_TEST_MODEL_STORE_DIR": str(settings.MODEL_STORE_DIR),
                "TEST_CELERY_BROKER_URL": broker_url,
                **environment,
            },
            log_path=tmp_path / f"worker-{len(workers) + 1}.log",
            beat=beat,
        )
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def technician_api(technician):
    # As in production: an exception raised in middleware becomes a response instead of reaching the test.
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(technician)
    return client


@pytest.fixture
def cell_upload():
    """Returns a new small PNG of a synthetic cell the tiny model can classify, as an uploaded file."""
    from inference.testing import synthetic_cell_image

    counter = iter(range(1_000_000))

    def make() -> SimpleUploadedFile:
        index = next(counter)
        buffer = io.BytesIO()
        synthetic_cell_image(index % 3, 3, size=64, seed=index).save(buffer, format="PNG")
        return SimpleUploadedFile(f"cell-{index}.png", buffer.getvalue(), content_type="image/png")

    return make
