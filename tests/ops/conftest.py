import hashlib

import pytest
from django.db import connection

from tests.factories import ModelVersionFactory
from tests.ops.faults import TcpProxy, ThrowAwayRedis, port_answers, require_postgresql, skip_or_fail

SHARED_REDIS_PORT = 6379


@pytest.fixture
def shared_redis_url():
    """The machine's Redis, on a database number no other test uses."""
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
