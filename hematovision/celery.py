import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.local")

app = Celery("hematovision")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def report_model_status(**kwargs):
    """A worker that cannot classify says so at start-up instead of at the first upload."""
    from hematovision.health import log_model_status_at_startup

    log_model_status_at_startup("celery worker")
