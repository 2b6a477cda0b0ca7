"""Django in this process for the in-process benches (profile_upload, task_cpu, api_request_cpu): embedded
settings in a fresh var folder, no broker, cache or event server, on a freshly (re)created PostgreSQL
database when one is given (SQLite in the var folder otherwise)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def recreate_database(database_url: str) -> None:
    import psycopg

    base, name = database_url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")


def setup_django(*, prefix: str, database_url: str = "") -> Path:
    """Configure and set up Django; returns the var folder. Call before importing any project module."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["DJANGO_SETTINGS_MODULE"] = "hematovision.settings.local"
    os.environ["HEMATOVISION_VAR_DIR"] = str(folder)
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    for name in ("CELERY_BROKER_URL", "CACHE_URL", "EVENTS_REDIS_URL"):
        os.environ.pop(name, None)
    if database_url:
        recreate_database(database_url)
        os.environ["DATABASE_URL"] = database_url
    else:
        os.environ.pop("DATABASE_URL", None)
    sys.path.insert(0, str(PROJECT_DIR))

    import django

    django.setup()
    return folder
