from celery import shared_task

from .import_jobs import run_model_import


@shared_task(acks_late=True)
def import_model_file(import_id: int) -> str:
    """Import one queued model file (loads TensorFlow: this is why it runs in a worker)."""
    return run_model_import(job_id=import_id).status


@shared_task(acks_late=False)
def adapt_to_laboratory(job_id: int) -> str:
    """Adapt the active model to a laboratory's reviewed cells (TensorFlow, minutes of CPU): only workers
    started with `-Q training` take it, so the serving workers stay without TensorFlow."""
    from .adaptation import run_adaptation_job

    return run_adaptation_job(job_id=job_id).status
