import os

from celery import Celery
from celery.signals import task_postrun, worker_init, worker_process_init, worker_ready

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


def _glibc_malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


_malloc_trim = _glibc_malloc_trim()
# A task of this many images grows a pool process's heap by tens of MB (cases.tasks.IMAGES_PER_TASK is 16).
TRIM_AFTER_IMAGES = 12


def release_freed_memory(sender=None, task=None, **kwargs):
    """After each task of a pool process, hand the heap's free pages back to the system (glibc malloc_trim).

    A 16-image task decodes and locates all its images at once (the model takes them a few at a time:
    Predictor._images_per_call); glibc keeps the freed memory in its heap, so a pool process stayed tens of
    MB above its resting size for the rest of its life (bench/worker_memory.py, docs/operations.md "Worker
    memory"). An eager task (the embedded default) runs in the web process and is left alone."""
    if _malloc_trim is None or getattr(getattr(task or sender, "request", None), "is_eager", False):
        return
    # Only after a large task: trimming after every one-image task made the next task fault its pages back in
    # (100 cells in Chromium, production path: about 0.5 s more server CPU with a trim after every task).
    image_ids = (kwargs.get("kwargs") or {}).get("image_ids") or next(iter(kwargs.get("args") or ()), None)
    if not isinstance(image_ids, list | tuple) or len(image_ids) < TRIM_AFTER_IMAGES:
        return
    _malloc_trim(0)


def pool_inference_threads(*, concurrency: int, cores: int) -> int:
    """LiteRT threads for each pool process: the worker's cores shared out, at least one."""
    return max(1, cores // max(1, concurrency))


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def share_cores_between_pool_processes(worker) -> None:
    """Give each prefork pool process its share of the cores for the model (INFERENCE_NUM_THREADS), unless
    the deployment set it. By default every process runs LiteRT on 2 threads, so 2 pool processes on 2 cores
    ran 4 threads, whose waits for each other cost CPU for nothing: the model with its mirror image took
    12.3-12.6 ms of CPU per cell on 1 thread against 12.8-13.6 ms on 2, two processes at once, bit-identical
    outputs (docs/benchmarks.md "hwork"). Pool processes inherit the environment when they are forked."""
    from django.conf import settings

    if "INFERENCE_NUM_THREADS" in os.environ or hasattr(settings, "INFERENCE_NUM_THREADS"):
        return
    pool = getattr(worker, "pool_cls", "")
    pool_name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    concurrency = getattr(worker, "concurrency", None)
    if "prefork" not in pool_name or not isinstance(concurrency, int) or concurrency < 1:
        return  # another pool, or concurrency "auto" (resolved later): the runtime keeps its default
    threads = pool_inference_threads(concurrency=concurrency, cores=_available_cores())
    os.environ["INFERENCE_NUM_THREADS"] = str(threads)


@worker_init.connect
def connect_warm_up(sender=None, **kwargs):
    # Connected here rather than at import: Celery's Django fixup connects its own worker_process_init
    # receiver during worker_init, and it must run first, to drop the database connections the pool
    # process inherited from its parent before the warm-up opens one of its own.
    worker_process_init.connect(warm_up_pool_process, dispatch_uid="hematovision-warm-up", weak=False)
    task_postrun.connect(release_freed_memory, dispatch_uid="hematovision-malloc-trim", weak=False)
    share_cores_between_pool_processes(sender)


def drop_broker_connections() -> None:
    """Closes this process's pooled broker connections and forgets the pools, so that the next publish connects
    anew (to a broker URL just changed, in tests and benches)."""
    from kombu import pools

    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    # kombu keeps its pools per broker URL for the process: the closed one would be handed back to the next
    # publish to the same URL ("Acquire on closed pool").
    pools.reset()
