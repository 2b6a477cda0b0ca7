"""The Celery app of fault tests' worker subprocesses (`celery -A tests.ops.worker_app worker`).

It is the project's app; when HEMATOVISION_TEST_SLOW_ONCE_FILE is set, the first prediction in any of
these workers creates that file and then sleeps, so a test can kill the worker in the middle of a task.
Test code only: production never imports this module.
"""

import os
import time
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.ops.worker_settings")
# No warm-up (inference/warmup.py): its prediction would be the slow first one below, not a task's.
os.environ.setdefault("HEMATOVISION_WARM_UP", "0")
django.setup()

from hematovision.celery import app  # noqa: E402
from inference.predictor import Predictor  # noqa: E402

__all__ = ["app"]

SLOW_ONCE_FILE = os.environ.get("HEMATOVISION_TEST_SLOW_ONCE_FILE")
SLOW_SECONDS = float(os.environ.get("HEMATOVISION_TEST_SLOW_SECONDS", "120"))

if SLOW_ONCE_FILE:
    _predict = Predictor.predict

    def _predict_slowly_the_first_time(self, images):
        marker = Path(SLOW_ONCE_FILE)
        if not marker.exists():
            marker.touch()
            time.sleep(SLOW_SECONDS)
        return _predict(self, images)

    Predictor.predict = _predict_slowly_the_first_time
