"""The embedded default: works with no configuration at all."""

import os

from .base import *  # noqa: F403
from .base import VAR_DIR, env_bool

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY") or "embedded-default-not-for-production-5b1f0c2e9a"
VAR_DIR.mkdir(parents=True, exist_ok=True)
DEMO_MODE = env_bool("DEMO_MODE", True)
