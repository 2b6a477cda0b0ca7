import os

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.local")
# Every process of the project imports this module first (hematovision/__init__.py), before NumPy: one
# OpenBLAS thread per process. The out-of-distribution score multiplies a few feature rows by a 1280 x 1280
# matrix per task; OpenBLAS's own threads spun for it on cores the pool processes already fill, ~10x the
# CPU of one thread (24 ms instead of 2 ms per task), with bit-identical scores. Override to train on a big box.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

app = Celery("hematovision")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# A pool process reports for work only once its start-up hooks have run, and the warm-up below (model
# load, first analysis) takes about a second on a quiet machine, several on a busy one: past Celery's
# default of 4 s the pool would kill the process and start another, which would warm up again, forever.
app.conf.worker_proc_alive_timeout = float(os.environ.get("CELERY_WORKER_PROC_ALIVE_TIMEOUT", "60"))


@worker_ready.connect
def report_model_status(**kwargs):
    """A worker that cannot classify says so at start-up instead of at the first upload."""
    from hematovision.health import log_model_status_at_startup

    log_model_status_at_startup("celery worker")


def warm_up_pool_process(**kwargs):
    """Each pool process loads the model and analyses one synthetic cell before it takes a task, so that the
    first upload's cells do not wait for the model load and first-call costs (inference.warmup)."""
    from inference.warmup import warm_up

    warm_up(process=f"celery pool process pid={os.getpid()}")


@worker_init.connect
def connect_warm_up(sender=None, **kwargs):
    # Connected here rather than at import: Celery's Django fixup connects its own worker_process_init
    # receiver during worker_init, and it must run first, to drop the database connections the pool
    # process inherited from its parent before the warm-up opens one of its own.
    worker_process_init.connect(warm_up_pool_process, dispatch_uid="hematovision-warm-up", weak=False)
