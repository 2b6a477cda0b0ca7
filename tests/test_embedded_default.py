"""The embedded default as `make run` serves it (local settings, runserver): DEBUG is off, so an
unknown address gets the friendly not-found page, not Django's debug page with the site's URL list,
and the static files are still served."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embedded")
    port = free_port()
    dropped = {"DJANGO_ALLOW_ASYNC_UNSAFE", "DEBUG", "DATABASE_URL", "CACHE_URL", "CELERY_BROKER_URL", "SECRET_KEY"}
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update({"DJANGO_SETTINGS_MODULE": "hematovision.settings.local", "HEMATOVISION_VAR_DIR": str(folder / "var")})
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (folder / "server.log").read_text()
            try:
                requests.get(f"{base_url}/healthz", timeout=10)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, "the embedded default did not answer within 120 s"
                time.sleep(0.5)
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_an_unknown_page_is_the_friendly_not_found_page(embedded):
    response = requests.get(f"{embedded}/no-such-page/", timeout=10)

    assert response.status_code == 404
    assert "There is nothing here." in response.text
    assert "URLconf" not in response.text
    assert "DEBUG = True" not in response.text


def test_static_files_are_served_with_debug_off(embedded):
    page = requests.get(f"{embedded}/accounts/login/", timeout=10)
    references = re.findall(r"""(?:src|href)=["'](/static/[^"']+)["']""", page.text)

    assert page.status_code == 200
    assert references
    for reference in references:
        assert requests.get(embedded + reference, timeout=60).status_code == 200, reference
