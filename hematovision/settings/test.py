"""Tests: PostgreSQL when DATABASE_URL points at it (CI always does), else SQLite."""

import os
import tempfile
from pathlib import Path

from .base import *  # noqa: F403

SECRET_KEY = "test-secret-key-not-for-production"  # noqa: S105
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
_TMP = Path(tempfile.mkdtemp(prefix="hematovision-test-"))
PRIVATE_MEDIA_ROOT = _TMP / "private"
MODEL_STORE_DIR = _TMP / "models"
IMAGE_ENCRYPTION_KEYS = ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]
EXPORT_PSEUDONYM_KEY = "test-pseudonym-key"
CELERY_BROKER_URL = os.environ.get("TEST_CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = True
ACCOUNT_RATE_LIMITS = False
DEMO_MODE = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
