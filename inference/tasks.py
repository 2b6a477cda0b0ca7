from celery import shared_task

from .import_jobs import run_model_import


@shared_task(acks_late=True)
def import_model_file(import_id: int) -> str:
    """Import one queued model file (loads TensorFlow: this is why it runs in a worker)."""
    return run_model_import(job_id=import_id).status
