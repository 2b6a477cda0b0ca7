"""gunicorn for HematoVision's web process. Every value can be overridden from the environment.

    gunicorn -c gunicorn.conf.py

uvicorn workers serving Django's ASGI application (hematovision/asgi.py): one event loop per process holds
the case pages' server-sent event streams (cases:events) without a thread each, while ordinary views run
in Django's per-request threads. GUNICORN_WORKER_CLASS=gthread serves the WSGI application instead
(threads, no long-lived streams: the pages then poll). The web process never imports TensorFlow.
"""

import multiprocessing
import os

worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "uvicorn_worker.UvicornWorker")
ASGI = worker_class != "gthread"
wsgi_app = "hematovision.asgi:application" if ASGI else "hematovision.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",")
workers = int(os.environ.get("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count() + 1, 8)))
# gthread only: threads per process. Under uvicorn, Django runs each request's synchronous code in a
# thread of its own and the event loop serves the streams.
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
if ASGI:
    # Each request's thread would otherwise open (and leave) its own PostgreSQL connection: the web
    # processes use a connection pool instead (hematovision/settings/production.py).
    os.environ.setdefault("DB_POOL", "true")
# An upload of a few hundred cells over a slow link must not be killed; anything longer is stuck.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# Recycle workers now and then so that slow leaks cannot grow without bound.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "200"))
# The reverse proxy terminates TLS and sets X-Forwarded-Proto; trust only its address.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# The workers' heartbeat files on a RAM disk: a slow or full disk must not make workers look dead.
RAM_DISK = "/dev/shm"  # noqa: S108 - holds only gunicorn's heartbeat files, no data
if os.path.isdir(RAM_DISK):
    worker_tmp_dir = RAM_DISK

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.production")


def post_worker_init(worker):
    from hematovision.health import log_model_status_at_startup

    log_model_status_at_startup(f"web worker pid={worker.pid}")
    warm_up_web_process(worker)


# The templates a case page and its live grid render first; compiled once per process (cached loader).
WARM_TEMPLATES = ("cases/detail.html", "cases/_cell_cards.html", "cases/_cell_card.html", "cases/_field_card.html")


def warm_up_web_process(worker):
    """Import every view module and the upload's publishing code, compile the case page's templates and load
    every language's translations before the first request, which otherwise pays for them. No model: these
    processes never classify (the Celery workers do)."""
    import logging
    import time

    started = time.perf_counter()
    try:
        from django.conf import settings
        from django.template.loader import get_template
        from django.urls import get_resolver
        from django.utils import translation

        get_resolver().url_patterns  # noqa: B018 - importing the URL configuration imports the views
        for name in WARM_TEMPLATES:
            get_template(name)
        # Each language's catalogues are read from disk on its first use; LocaleMiddleware activates the
        # request's language on the event loop (hematovision/django_middleware.py), which must not wait on it.
        for code, _name in settings.LANGUAGES:
            with translation.override(code):
                translation.gettext("Cases")
        # The first upload's Celery publish finalized the app and imported kombu's Redis transport, and the first
        # event stream imported redis.asyncio: ~0.1-0.7 s of CPU inside those requests (docs/benchmarks.md, hweb).
        # Nothing connects here.
        import redis.asyncio  # noqa: F401

        from hematovision.celery import app

        app.finalize(auto=True)
        if settings.CELERY_BROKER_URL:
            app.connection_for_write().release()
    except Exception:  # noqa: BLE001 - a warm-up never keeps a worker from serving
        logging.getLogger("hematovision.startup").exception("web worker pid=%s: warm-up failed", worker.pid)
        return
    logging.getLogger("hematovision.startup").info(
        "web worker pid=%s: views and templates ready in %.2f s", worker.pid, time.perf_counter() - started
    )
