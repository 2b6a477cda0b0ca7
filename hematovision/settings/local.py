"""The embedded default: works with no configuration at all."""

import os

from hematovision.paths import make_private_dir

from .base import *  # noqa: F403
from .base import MODEL_STORE_DIR, PRIVATE_MEDIA_ROOT, VAR_DIR, env_bool

# DEBUG stays off unless asked for (`make dev`): Django's debug pages list every URL of the site and
# show settings and local variables to whoever hits an error.
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY") or "embedded-default-not-for-production-5b1f0c2e9a"
# The database, the encrypted images and the models: readable by the owner only (mode 700).
for _folder in (VAR_DIR, PRIVATE_MEDIA_ROOT, MODEL_STORE_DIR):
    make_private_dir(_folder)
DEMO_MODE = env_bool("DEMO_MODE", True)
# No Celery beat here: the audit trail is sealed after responses, at most once a minute (audit/chain.py).
AUDIT_SEAL_INTERVAL_SECONDS = 60
# Static files straight from static/ and the apps (no collectstatic), with DEBUG off as on.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
