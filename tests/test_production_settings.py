"""Production settings: required secrets are enforced and `check --deploy` is clean."""

import base64
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "hematovision.settings.production",
    "SECRET_KEY": base64.urlsafe_b64encode(os.urandom(48)).decode(),
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/hematovision",
    "IMAGE_ENCRYPTION_KEYS": base64.b64encode(os.urandom(32)).decode(),
    "EXPORT_PSEUDONYM_KEY": "pseudonym-key-for-the-check",
    "ALLOWED_HOSTS": "hematovision.example.org",
}


def run_manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    # Test-only switches of this process (e.g. the browser tests' async guard) are not production's.
    dropped = {*PRODUCTION_ENV, "DJANGO_ALLOW_ASYNC_UNSAFE"}
    inherited = {key: value for key, value in os.environ.items() if key not in dropped}
    command = [sys.executable, "manage.py", *args]
    return subprocess.run(command, cwd=ROOT, env={**inherited, **env}, capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_production_settings():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = {**PRODUCTION_ENV, "SECRET_KEY": ""}

    result = run_manage("check", env=env)

    assert result.returncode != 0
    assert "SECRET_KEY must be set in production" in result.stderr


def test_production_trusts_one_reverse_proxy_and_tokens_expire_by_default():
    script = (
        "from django.conf import settings; print(settings.ALLAUTH_TRUSTED_PROXY_COUNT, settings.API_TOKEN_TTL_DAYS)"
    )

    result = run_manage("shell", "-c", script, env=PRODUCTION_ENV)

    assert result.returncode == 0, result.stderr
    # The last line: Django's shell may first say what it imported.
    assert result.stdout.strip().splitlines()[-1].split() == ["1", "30"]
