"""Readiness: can this process do its job? Checks the database, the broker and the model.

Every check is bounded by a short timeout so that a load balancer's probe answers quickly even
when a dependency hangs, and nothing here imports TensorFlow or loads the model: the model check
reads the registry row and the artifact file's size, modification time and checksum.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from django.conf import settings
from django.db import connection

CHECK_TIMEOUT_SECONDS = float(os.environ.get("READINESS_CHECK_TIMEOUT", "1.5"))

_checksum_cache: dict[tuple[str, int, int], str] = {}
_checksum_lock = threading.Lock()


def check_database() -> tuple[bool, str]:
    """The connect timeout comes from DATABASES OPTIONS (DB_CONNECT_TIMEOUT)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, "ok"
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        return False, f"{type(error).__name__}: {error}"


def check_broker() -> tuple[bool, str]:
    broker_url = settings.CELERY_BROKER_URL
    if not broker_url:
        return True, "in-process (no broker configured)"
    from kombu import Connection

    timeout = CHECK_TIMEOUT_SECONDS
    transport_options = {"socket_connect_timeout": timeout, "socket_timeout": timeout, "max_retries": 0}
    try:
        with Connection(broker_url, connect_timeout=timeout, transport_options=transport_options) as broker:
            broker.ensure_connection(max_retries=0)
            if broker.transport.driver_type == "redis":
                # Redis connects lazily; a PING proves the server answers, not just that the port is open.
                broker.default_channel.client.ping()
        return True, "ok"
    except Exception as error:  # noqa: BLE001
        return False, f"{type(error).__name__}: {error}"


def _sha256_of(path: Path) -> str:
    """Cached by (path, size, mtime) so probes do not re-read an unchanged model file."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _checksum_lock:
        cached = _checksum_cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _checksum_lock:
        _checksum_cache[key] = value
    return value


def _bundled_model_status() -> tuple[bool, str]:
    """With no active version, the first classification registers the bundled model (if enabled)."""
    if not getattr(settings, "INFERENCE_AUTO_BUNDLED_MODEL", True):
        return False, "no active model version: an administrator must activate one"
    from inference.services import read_model_metadata

    directory = Path(settings.BUNDLED_MODEL_DIR)
    try:
        metadata = read_model_metadata(directory)
    except FileNotFoundError as error:
        return False, f"no active model version, and the bundled model is not installed ({error})"
    serving_file = directory / metadata.get("serving_artifact", "")
    if not serving_file.is_file():
        return False, f"no active model version, and the bundled model file is missing: {serving_file}"
    return True, f"no active version yet; bundled model {metadata.get('name')} will be activated on first use"


def check_model() -> tuple[bool, str]:
    from inference.registry import artifact_path, get_active_version

    try:
        version = get_active_version()
        if version is None:
            return _bundled_model_status()
        path = artifact_path(version, version.serving_artifact)
        if not path.is_file():
            return False, f"model file missing: {path} (model version {version.name})"
        expected = (version.checksums or {}).get(version.serving_artifact)
        if expected and _sha256_of(path) != expected:
            return False, f"model file corrupt (checksum mismatch): {path} (model version {version.name})"
        return True, f"{version.name} ({path.name})"
    except Exception as error:  # noqa: BLE001
        return False, f"{type(error).__name__}: {error}"


CHECKS = (("database", check_database), ("broker", check_broker), ("model", check_model))


def readiness() -> dict:
    checks = {}
    for name, check in CHECKS:
        ok, detail = check()
        checks[name] = {"ok": ok, "detail": detail}
    return {"ready": all(check["ok"] for check in checks.values()), "checks": checks}


def log_model_status_at_startup(component: str) -> bool:
    """Say loudly, once at start-up, when the model cannot serve: uploads are still accepted and
    stay queued, but nothing will be classified until an administrator fixes the model."""
    import logging

    from django.db import connections

    logger = logging.getLogger("hematovision.startup")
    ok, detail = check_model()
    if ok:
        logger.info("%s start-up: model ready: %s", component, detail)
    else:
        logger.error(
            "%s start-up: MODEL UNAVAILABLE: %s. Uploads will be kept as queued until an administrator "
            "activates a working model (Models page or manage.py), then re-queued automatically.",
            component,
            detail,
        )
    # Opened outside a request, this connection would otherwise outlive its purpose.
    connections.close_all()
    return ok
