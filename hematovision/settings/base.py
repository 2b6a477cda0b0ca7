"""Settings shared by every environment. Everything configurable comes from the environment.

With nothing set, the platform runs embedded: SQLite, Celery tasks in-process, email to the
console, private media in ./var. See docs/operations.md for the production variables.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("HEMATOVISION_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


SECRET_KEY = os.environ.get("SECRET_KEY", "")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    # django.contrib.admin, reached only through allauth's sign-in with a second factor.
    "accounts.admin_apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    # Swagger UI served from our own static files: the API docs work on a lab network without internet.
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.google",
    "allauth.socialaccount.providers.openid_connect",
    "audit",
    "accounts",
    "inference",
    "cases",
    "reports",
    "notifications",
]

# Django's own classes by their own names: its deploy checks recognise them by dotted path (security.W001-W003,
# and the HSTS, SSL-redirect and CSRF-cookie checks run only when they are named). The ASGI application
# (hematovision/asgi.py) loads their versions whose hooks run on the event loop (hematovision/django_middleware.py).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "hematovision.security_headers.SecurityHeadersMiddleware",
    "hematovision.uploads.UploadLimitsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language of each request: the switcher's cookie if set, else the browser's Accept-Language, else
    # LANGUAGE_CODE. URLs carry no language prefix (no i18n_patterns), so every existing link keeps working.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "accounts.middleware.MFARequiredMiddleware",
    # Above the two below: process_exception runs bottom-up, so it answers (JSON 500 under /api/) only what
    # a lost database (503) or hostile input (400) did not explain (hematovision/api_errors.py).
    "hematovision.api_errors.ApiErrorMiddleware",
    "hematovision.middleware.DatabaseUnavailableMiddleware",
    "hematovision.bad_input.BadInputMiddleware",
]

ROOT_URLCONF = "hematovision.urls"
WSGI_APPLICATION = "hematovision.wsgi.application"
ASGI_APPLICATION = "hematovision.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.roles",
                "notifications.context_processors.notifications",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Several threads (dev server, eager tasks) write at once. IMMEDIATE transactions take the write
    # lock up front, so a writer waits (timeout) instead of failing at once with "database is locked"
    # when a read transaction tries to upgrade; WAL lets readers go on while one writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
elif DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # Fail fast (a 503 page, a not-ready probe) instead of holding a worker while the database is unreachable.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", int(os.environ.get("DB_CONNECT_TIMEOUT", "3"))
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
# English is the source language (British formats, as before); Spanish from locale/es. A browser asking for
# any English ("en-us") gets en-gb, any Spanish ("es-mx") gets es. Names in their own language for the switcher.
LANGUAGES = [("en-gb", "English"), ("es", "Español")]
LOCALE_PATHS = [BASE_DIR / "locale"]
# Dates and numbers follow the language (Django's formats of each locale), with 24-hour times in English too.
FORMAT_MODULE_PATH = ["hematovision.formats"]
# The switcher's choice (django.views.i18n.set_language) lives in this cookie for a year, also signed out.
LANGUAGE_COOKIE_NAME = "hv_language"
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
LANGUAGE_COOKIE_SAMESITE = "Lax"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))

# Cell images are medical data: kept outside any URL-mapped folder, encrypted at rest, and
# served only through a view that checks the user's role. There is deliberately no MEDIA_URL.
PRIVATE_MEDIA_ROOT = Path(os.environ.get("PRIVATE_MEDIA_ROOT", VAR_DIR / "private"))
# Base64 of 32 random bytes (AES-256-GCM). Several keys, comma-separated, allow rotation:
# the first encrypts, all decrypt. In the embedded default a key is derived from SECRET_KEY.
IMAGE_ENCRYPTION_KEYS = env_list("IMAGE_ENCRYPTION_KEYS")

MAX_UPLOAD_BYTES = int(os.environ.get("MAX_UPLOAD_BYTES", 20 * 1024 * 1024))
MAX_UPLOAD_PIXELS = int(os.environ.get("MAX_UPLOAD_PIXELS", 40_000_000))
# Decoded pixels per image, in bytes (width x height x bands x bytes per sample, at least RGB): a small
# 16-bit PNG can declare hundreds of MB. 120 MB = 40 megapixels of 8-bit RGB, 20 of 16-bit RGB.
MAX_DECODED_BYTES = int(os.environ.get("MAX_DECODED_BYTES", 120 * 1024 * 1024))
# Uploads stay in memory and are never spooled to the temp folder in clear (hematovision/uploads.py); a
# request body over MAX_UPLOAD_REQUEST_BYTES is refused (413) before it is read. Files beyond the first
# MAX_UPLOAD_FILES of a request are rejected one by one, the others kept.
FILE_UPLOAD_HANDLERS = ["hematovision.uploads.InMemoryUploadHandler"]
MAX_UPLOAD_REQUEST_BYTES = int(os.environ.get("MAX_UPLOAD_REQUEST_BYTES", 128 * 1024 * 1024))
MAX_UPLOAD_FILES = int(os.environ.get("MAX_UPLOAD_FILES", 500))
# Model files (import page and API) are no patient images: Django's handlers, up to 1 GB (inference/forms.py).
MODEL_UPLOAD_URL_NAMES = ("inference:import", "api-model-versions")
MAX_MODEL_UPLOAD_REQUEST_BYTES = int(os.environ.get("MAX_MODEL_UPLOAD_REQUEST_BYTES", 1025 * 1024 * 1024))
DATA_UPLOAD_MAX_MEMORY_SIZE = 25 * 1024 * 1024
# Only Django's own handlers (model files) use this; image uploads never leave memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# Django's own count refuses a whole request with an HTML page: only an outer bound here.
DATA_UPLOAD_MAX_NUMBER_FILES = 10_000

# Keyed pseudonyms in research exports (HMAC-SHA256).
EXPORT_PSEUDONYM_KEY = os.environ.get("EXPORT_PSEUDONYM_KEY", "")

# The laboratory named at the top of every signed report (page, PDF, FHIR DiagnosticReport.performer).
REPORT_LAB_NAME = os.environ.get("REPORT_LAB_NAME", "HematoVision laboratory")
REPORT_LAB_ADDRESS = os.environ.get("REPORT_LAB_ADDRESS", "")  # lines separated by "|"
REPORT_LAB_CONTACT = os.environ.get("REPORT_LAB_CONTACT", "")  # phone, email
REPORT_LAB_ACCREDITATION = os.environ.get("REPORT_LAB_ACCREDITATION", "")  # e.g. "ISO 15189 No. 1234"
# Identifier system of accession numbers in FHIR (the laboratory's own URI; a placeholder by default).
REPORT_FHIR_ACCESSION_SYSTEM = os.environ.get("REPORT_FHIR_ACCESSION_SYSTEM", "urn:hematovision:accession")
REPORT_FHIR_PATIENT_SYSTEM = os.environ.get("REPORT_FHIR_PATIENT_SYSTEM", "urn:hematovision:patient-reference")

# Models: the bundled model ships in inference/bundled; trained and imported ones go here.
MODEL_STORE_DIR = Path(os.environ.get("MODEL_STORE_DIR", VAR_DIR / "models"))
BUNDLED_MODEL_DIR = Path(os.environ.get("BUNDLED_MODEL_DIR", BASE_DIR / "inference" / "bundled"))
SHARED_DATA_DIR = Path(os.environ.get("HEMATOVISION_SHARED_DIR", BASE_DIR.parent / "shared"))

# Celery: with no broker configured, tasks run in-process (the embedded default).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# confirm_publish (RabbitMQ; Redis ignores it): a publish waits for the broker's acknowledgement, so one written into
# a connection the broker has already dropped raises (and is sent again: cases.tasks.PUBLISH_RETRY_POLICY) instead of
# being lost without a word. Redis answers every command anyway.
# socket_timeout (Redis; py-amqp does not read it): a Redis broker that accepts the connection but never replies (a
# hung server, a half-open connection after a failover) held an upload's publish for minutes; now the publish and its
# one retry give up after this many seconds each and the images wait for the re-queue, as with a broker that is down.
# The workers' BRPOP polls every second, well inside it.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 600,
    "confirm_publish": True,
    "socket_timeout": float(os.environ.get("CELERY_BROKER_SOCKET_TIMEOUT", "5")),
}
CELERY_BROKER_CONNECTION_TIMEOUT = float(os.environ.get("CELERY_BROKER_CONNECTION_TIMEOUT", "2"))
# Workers keep their database connection between tasks (CONN_MAX_AGE and health checks decide, as for
# requests) instead of Celery's default of closing it before and after every task: see
# hematovision/celery_connections.py, which CELERY_IMPORTS loads in every worker.
CELERY_DB_REUSE_MAX = 2**62
CELERY_IMPORTS = ["hematovision.celery_connections"]
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-images": {"task": "cases.tasks.requeue_stale_images", "schedule": 60.0},
    "seal-audit-trail": {"task": "audit.tasks.seal_audit_trail", "schedule": 60.0},
}
# Key of the audit trail's hash chain (audit/chain.py). Empty: derived from SECRET_KEY. Keep it stable:
# events sealed with another key no longer verify.
AUDIT_CHAIN_KEY = os.environ.get("AUDIT_CHAIN_KEY", "")
# Seal after responses at most this often (0: off; beat seals instead). The embedded default sets 60.
AUDIT_SEAL_INTERVAL_SECONDS = int(os.environ.get("AUDIT_SEAL_INTERVAL_SECONDS", "0"))
# `manage.py recover` removes files of the private store that no row refers to once they are this old.
ORPHAN_FILE_GRACE_SECONDS = int(os.environ.get("ORPHAN_FILE_GRACE_SECONDS", "3600"))
# Images queued or classifying longer than this are sent again by cases.tasks.requeue_stale_images.
CLASSIFICATION_STALE_SECONDS = int(os.environ.get("CLASSIFICATION_STALE_SECONDS", "300"))
# A running adaptation job whose heartbeat is older than this is taken for dead (its worker stopped) and ended
# as failed (inference.adaptation.fail_dead_jobs: on the adaptation pages and in `manage.py recover`). While a
# job runs, a timer thread writes its heartbeat every ADAPTATION_STALE_SECONDS / 5 (at most every minute),
# however long one step stays silent, so keep it well above a minute; the default is 15 minutes.
ADAPTATION_STALE_SECONDS = int(os.environ.get("ADAPTATION_STALE_SECONDS", "900"))
# `manage.py train --include-confirmed` also trains on the cells pathologists labelled (one folder per class).
CONFIRMED_LABELS_EXPORTER = "cases.services.write_confirmed_training_folder"

# Rate limits, one-time codes and used TOTP codes live in the cache: with several web processes
# it must be shared (CACHE_URL=redis://...), else each process keeps its own.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["CACHE_URL"]}
        if os.environ.get("CACHE_URL")
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}


def _events_redis_url() -> str:
    """Redis carrying the push events (cases/events.py): its own variable, else a redis:// cache or broker."""
    for name in ("EVENTS_REDIS_URL", "CACHE_URL", "CELERY_BROKER_URL"):
        value = os.environ.get(name, "").strip()
        if value.startswith(("redis://", "rediss://", "unix://")):
            return value
    return ""


# Push of new predictions to the case page: Redis pub/sub when set, else an in-process channel
# (enough for the embedded default, where the tasks run in the web process).
EVENTS_REDIS_URL = _events_redis_url()

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "HematoVision <no-reply@hematovision.local>")
# Emails name the product, not the host they were sent from ("[HematoVision] ...", "Hello from HematoVision").
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[HematoVision] "
# The address people open HematoVision at: links in notification emails point there.
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000")

# django-allauth
SITE_NAME = "HematoVision"
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
# Sign-up also asks name, laboratory and the role the person requests (a request: they stay pending).
ACCOUNT_SIGNUP_FORM_CLASS = "accounts.forms.SignupForm"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_EMAIL_VERIFICATION_BY_CODE_ENABLED = True
ACCOUNT_LOGIN_BY_CODE_ENABLED = True
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_EMAIL_NOTIFICATIONS = True
# Merged over allauth's defaults. Verification codes keep allauth's own short resend limit: a
# three-minute one left a person who mistyped their address unable to get a new code.
# Sign-in lockout. "password_failed" (accounts.adapters; the website and the token endpoint): 10 wrong
# passwords a minute per client address, 5 per 5 minutes per account. "login_failed": allauth's own,
# here only the TOTP step's, per user. Client addresses come from X-Forwarded-For as appended by the
# proxies in front (TRUSTED_PROXY_COUNT below), else every user behind the proxy would share one.
ACCOUNT_RATE_LIMITS = {
    "password_failed": "10/m/ip,5/5m/key",
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/m/ip",
    "request_login_code": "20/m/ip,3/m/key",
}
# How many reverse proxies stand in front of the web process, each appending to X-Forwarded-For: the
# client address is the one the outermost trusted proxy appended. 0 = use the TCP peer (no proxy).
# Set it to exactly the number of proxies: a larger number lets clients pick their address.
TRUSTED_PROXY_COUNT = int(os.environ.get("TRUSTED_PROXY_COUNT", "0"))
ALLAUTH_TRUSTED_PROXY_COUNT = TRUSTED_PROXY_COUNT
ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapters.SocialAccountAdapter"
# Signing in to an existing account because a provider vouches for its email address is
# trusted for Google only (set per provider below), not for any OpenID Connect server.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
SOCIALACCOUNT_ONLY = False
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "HematoVision"


def _social_providers() -> dict:
    """Providers appear only when their credentials are in the environment."""
    providers: dict = {}
    if os.environ.get("GOOGLE_CLIENT_ID"):
        providers["google"] = {
            "APPS": [
                {
                    "client_id": os.environ["GOOGLE_CLIENT_ID"],
                    "secret": os.environ.get("GOOGLE_CLIENT_SECRET", ""),
                }
            ],
            "SCOPE": ["profile", "email"],
            "AUTH_PARAMS": {"access_type": "online"},
            "EMAIL_AUTHENTICATION": True,
        }
    if os.environ.get("LINKEDIN_CLIENT_ID"):
        providers["openid_connect"] = {
            "APPS": [
                {
                    "provider_id": "linkedin",
                    "name": "LinkedIn",
                    "client_id": os.environ["LINKEDIN_CLIENT_ID"],
                    "secret": os.environ.get("LINKEDIN_CLIENT_SECRET", ""),
                    # LinkedIn accepts the client secret only in the POST body.
                    "settings": {
                        "server_url": "https://www.linkedin.com/oauth",
                        "token_auth_method": "client_secret_post",
                    },
                }
            ]
        }
    return providers


SOCIALACCOUNT_PROVIDERS = _social_providers()

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        # `Authorization: Token <key>`: hashed, expiring keys under the second-factor rule (accounts/authentication.py).
        "accounts.authentication.ApiTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON nested too deeply for Python's parser is a 400 (hematovision/bad_input.py), not a server error.
    "DEFAULT_PARSER_CLASSES": [
        "hematovision.bad_input.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Every API error as {"detail", "code"} (+ "errors" per field for validation): hematovision/api_errors.py.
    "EXCEPTION_HANDLER": "hematovision.api_errors.api_exception_handler",
}
# API tokens (POST /api/v1/auth/token/) expire after this many days; a password or role change revokes them.
API_TOKEN_TTL_DAYS = int(os.environ.get("API_TOKEN_TTL_DAYS", "30"))

SPECTACULAR_SETTINGS = {
    "TITLE": "HematoVision API",
    "DESCRIPTION": "White-blood-cell classification with a human in the loop.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Case and CellImage both have a `status` field; give their choice lists distinct schema names.
    "ENUM_NAME_OVERRIDES": {
        "CaseStatusEnum": "cases.models.Case.Status",
        "CellImageStatusEnum": "cases.models.CellImage.Status",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "kv": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "kv"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
    },
}

# Demo users exist only in the embedded default (local settings); there the demo supervisor and
# admin may skip the otherwise mandatory TOTP (accounts.middleware.MFARequiredMiddleware).
DEMO_MODE = False
