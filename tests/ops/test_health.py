import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from tests.ops.faults import free_port

PROJECT_DIR = Path(django_settings.BASE_DIR)


def test_healthz_answers_without_touching_the_database(client):
    # No db fixture: pytest-django turns any query into an error.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ready_with_database_in_process_tasks_and_a_sound_model(client, settings, active_model_file):
    settings.CELERY_BROKER_URL = ""
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "broker": True,
        "model": True,
    }


def test_readyz_reports_a_missing_model_file(client, settings, active_model_file):
    settings.CELERY_BROKER_URL = ""
    active_model_file.unlink()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "model file missing" in response.json()["checks"]["model"]["detail"]


def test_readyz_reports_a_corrupt_model_file(client, settings, active_model_file):
    settings.CELERY_BROKER_URL = ""
    active_model_file.write_bytes(b"truncated")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "corrupt" in response.json()["checks"]["model"]["detail"]


def test_readyz_without_an_active_version_relies_on_the_bundled_model(client, settings, db, tmp_path):
    settings.CELERY_BROKER_URL = ""
    settings.BUNDLED_MODEL_DIR = tmp_path / "no-bundled-model"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "bundled model is not installed" in response.json()["checks"]["model"]["detail"]


def test_readyz_reports_a_refused_broker_quickly(client, settings, active_model_file):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["ok"] is False


def test_readyz_gives_up_on_a_broker_that_never_answers(client, settings, active_model_file):
    silent_server = socket.create_server(("127.0.0.1", 0))
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{silent_server.getsockname()[1]}/0"
    try:
        started = time.monotonic()
        response = client.get("/readyz")
        elapsed = time.monotonic() - started
    finally:
        silent_server.close()
    assert elapsed < 5
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["ok"] is False


@pytest.mark.broker
def test_readyz_reaches_the_real_redis_broker(client, settings, active_model_file, shared_redis_url):
    settings.CELERY_BROKER_URL = shared_redis_url
    response = client.get("/readyz")
    assert response.json()["checks"]["broker"] == {"ok": True, "detail": "ok"}


def test_readyz_never_imports_tensorflow(tmp_path):
    """The web process must stay light: probing readiness loads every URL module but no ML framework."""
    script = (
        "import django, json, sys\n"
        "django.setup()\n"
        "from django.test import Client\n"
        "from django.urls import get_resolver\n"
        "get_resolver().url_patterns\n"
        "response = Client().get('/readyz', HTTP_HOST='localhost')\n"
        "print(json.dumps({'status': response.status_code,"
        " 'heavy': sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)}))\n"
    )
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hematovision.settings.test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
    }
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_DIR, env=environment, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    assert outcome["status"] == 503  # empty database: no tables, so not ready, but it answered
    assert outcome["heavy"] == []
