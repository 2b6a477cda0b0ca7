"""Readiness: can this process do its job? Checks the database, the broker and the model."""

from __future__ import annotations

from django.conf import settings
from django.db import connection


def _check_database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, "ok"
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        return False, f"{type(error).__name__}: {error}"


def _check_broker() -> tuple[bool, str]:
    if not settings.CELERY_BROKER_URL:
        return True, "in-process (no broker configured)"
    from hematovision.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True, "ok"
    except Exception as error:  # noqa: BLE001
        return False, f"{type(error).__name__}: {error}"


def _check_model() -> tuple[bool, str]:
    from inference.registry import active_model_status

    return active_model_status()


def readiness() -> dict:
    checks = {}
    for name, check in (("database", _check_database), ("broker", _check_broker), ("model", _check_model)):
        ok, detail = check()
        checks[name] = {"ok": ok, "detail": detail}
    return {"ready": all(check["ok"] for check in checks.values()), "checks": checks}
