"""Importing a model file through a worker: queue it from a page or the API, run it in a Celery task.

The web process only stores the upload and a ModelImport row; TensorFlow is loaded by the worker.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from .importing import KERAS_SUFFIXES, ImportFailed, import_keras_model
from .models import ModelImport

logger = logging.getLogger(__name__)

UPLOADS_DIR = "uploads"


def _upload_path(relative: str) -> Path:
    return Path(settings.MODEL_STORE_DIR) / relative


def queue_model_import(*, upload, options: dict, actor) -> ModelImport:
    """Store the uploaded file and queue its import once the transaction commits."""
    suffix = Path(upload.name).suffix.lower()
    if suffix not in KERAS_SUFFIXES:
        raise ImportFailed(
            gettext("%(name)s is not a Keras model file (%(suffixes)s)")
            % {"name": upload.name, "suffixes": ", ".join(KERAS_SUFFIXES)}
        )
    relative = f"{UPLOADS_DIR}/{uuid.uuid4().hex}{suffix}"
    path = _upload_path(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        for chunk in upload.chunks():
            stream.write(chunk)
    job = ModelImport.objects.create(
        original_name=upload.name[:255], stored_file=relative, options=options, requested_by=actor
    )
    transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from .tasks import import_model_file

    try:
        import_model_file.delay(job_id)
    except Exception as error:  # noqa: BLE001 - a broker that is down must not lose the upload
        logger.error("model import %s could not be queued (%s); it stays queued", job_id, error)
        ModelImport.objects.filter(pk=job_id).update(message=f"Waiting for the task queue: {error}")


def run_model_import(*, job_id: int) -> ModelImport:
    """Import the stored file of one job (called by the worker). Failures are recorded, not raised."""
    job = ModelImport.objects.select_related("requested_by").get(pk=job_id)
    if job.status in (ModelImport.Status.DONE, ModelImport.Status.FAILED):
        return job  # a redelivered task: the import already ran to an end
    ModelImport.objects.filter(pk=job.pk).update(status=ModelImport.Status.RUNNING, message="")
    path = _upload_path(job.stored_file)
    options = job.options
    try:
        version = import_keras_model(
            path=path,
            name=options.get("name"),
            classes=options.get("classes"),
            input_size=options.get("input_size"),
            scale=options["scale"],
            # The page and the API never activate an import: a version needs a recorded evaluation first.
            activate=False,
            actor=job.requested_by,
        )
    except ImportFailed as error:
        job.status, job.message, job.version = ModelImport.Status.FAILED, f"Not imported: {error}", None
    except Exception as error:  # noqa: BLE001 - anything else is still this file's failure, said plainly
        logger.exception("model import %s failed", job.pk)
        job.status, job.message, job.version = ModelImport.Status.FAILED, f"Not imported: {error}", None
    else:
        job.status, job.version = ModelImport.Status.DONE, version
        job.message = (
            f"Imported as {version.name} (not active). To activate it, record an evaluation first: "
            f"manage.py evaluate --model {version.name} --data DIR --record."
        )
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "message", "version", "finished_at"])
    path.unlink(missing_ok=True)
    return job
