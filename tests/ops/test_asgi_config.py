"""The production web process serves the ASGI application with uvicorn workers (long-lived event streams),
and its request threads share a PostgreSQL connection pool."""

import json
import os
import runpy
from pathlib import Path

from tests.test_production_settings import PRODUCTION_ENV, run_manage

ROOT = Path(__file__).resolve().parents[2]


def load_gunicorn_conf(monkeypatch, **env) -> dict:
    for name in ("GUNICORN_WORKER_CLASS", "DB_POOL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_gunicorn_runs_uvicorn_workers_on_the_asgi_application(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch)

    assert conf["worker_class"] == "uvicorn_worker.UvicornWorker"
    assert conf["wsgi_app"] == "hematovision.asgi:application"
    assert os.environ["DB_POOL"] == "true"


def test_gthread_remains_possible_with_the_wsgi_application(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch, GUNICORN_WORKER_CLASS="gthread")

    assert conf["wsgi_app"] == "hematovision.wsgi:application"
    assert "DB_POOL" not in os.environ


def test_the_asgi_application_loads():
    from hematovision.asgi import application

    assert callable(application)


SHOW_DATABASE = "from django.conf import settings; import json; d = settings.DATABASES['default']; " + (
    "print(json.dumps({'age': d['CONN_MAX_AGE'], 'pool': d.get('OPTIONS', {}).get('pool')}))"
)


def test_web_processes_pool_their_postgresql_connections():
    pooled = run_manage("shell", "-c", SHOW_DATABASE, env={**PRODUCTION_ENV, "DB_POOL": "true"})
    plain = run_manage("shell", "-c", SHOW_DATABASE, env={**PRODUCTION_ENV, "DB_POOL": "false"})

    assert pooled.returncode == 0, pooled.stderr
    assert json.loads(pooled.stdout.strip().splitlines()[-1]) == {
        "age": 0,
        "pool": {"min_size": 2, "max_size": 16, "timeout": 10.0},
    }
    assert json.loads(plain.stdout.strip().splitlines()[-1])["pool"] is None
