"""Settings of the Celery worker subprocesses that fault tests start: the test settings, pointed at the
test process's database, private image store, model store and broker, with timings a test can wait for."""

import os
from pathlib import Path

import dj_database_url

from hematovision.settings.test import *  # noqa: F403

# A new connection per task unless a test keeps them, as production does (CONN_MAX_AGE, health checks on).
DATABASES = {
    "default": dj_database_url.parse(
        os.environ["DATABASE_URL"],
        conn_max_age=int(os.environ.get("HEMATOVISION_TEST_CONN_MAX_AGE", "0")),
        conn_health_checks=True,
    )
}
PRIVATE_MEDIA_ROOT = Path(os.environ["HEMATOVISION_TEST_PRIVATE_MEDIA_ROOT"])
MODEL_STORE_DIR = Path(os.environ["HEMATOVISION_TEST_MODEL_STORE_DIR"])
CELERY_BROKER_URL = os.environ["TEST_CELERY_BROKER_URL"]
CELERY_TASK_ALWAYS_EAGER = False
# A queue of the test's own on a shared broker (test_worker_faults_amqp.py); Celery's "celery" otherwise.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("HEMATOVISION_TEST_QUEUE", "celery")
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,  # noqa: F405 - the deployment's (socket timeout, confirms), with the test's times
    # An unacknowledged task of a dead worker is delivered again after this many seconds.
    "visibility_timeout": float(os.environ.get("HEMATOVISION_TEST_VISIBILITY_TIMEOUT", "600")),
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
CLASSIFICATION_STALE_SECONDS = float(os.environ.get("HEMATOVISION_TEST_STALE_SECONDS", "300"))
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-images": {
        "task": "cases.tasks.requeue_stale_images",
        "schedule": float(os.environ.get("HEMATOVISION_TEST_REQUEUE_EVERY", "60")),
    },
}
