from celery import shared_task

from .chain import seal


@shared_task(name="audit.tasks.seal_audit_trail")
def seal_audit_trail() -> int:
    """Periodic (beat): chain the audit events recorded since the last run."""
    return seal()
