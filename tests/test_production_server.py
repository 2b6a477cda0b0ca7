"""The production path as deployed: collectstatic with production settings, then the documented
production server (the Dockerfile's CMD, which reads gunicorn.conf.py) serving the sign-in page, the
API docs and every static file they reference, with DEBUG off and no CDN.

Runs in subprocesses on a SQLite database of its own in a temporary folder, so it needs neither the
test database nor any service.
"""

import base64
import json
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
BIN = Path(sys.executable).parent
EMAIL = "deployed-technician@example.org"
PASSWORD = "a-long-enough-password-1"  # noqa: S105 - a throw-away account in a temporary database
STATIC_REFERENCE = re.compile(r"""(?:src|href)=["']([^"']+)["']""")

CREATE_USER = f"""
from allauth.account.models import EmailAddress
from accounts.models import User
from accounts.roles import set_role
user = User.objects.create_user("{EMAIL}", "{PASSWORD}")
EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
set_role(user, "technician")
"""


def documented_server_command() -> list[str]:
    """The Dockerfile's CMD: the one place the production server's command is written down."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^CMD\s+(\[.*\])\s*$", dockerfile, re.MULTILINE)
    assert match, "the Dockerfile has no exec-form CMD"
    command = json.loads(match.group(1))
    executable = BIN / command[0]
    assert executable.exists(), f"{command[0]} is not installed in {BIN} (requirements/production.txt)"
    return [str(executable), *command[1:]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    folder = tmp_path_factory.mktemp("production")
    port = free_port()
    dropped = {"DJANGO_ALLOW_ASYNC_UNSAFE", "DEBUG", "CACHE_URL", "CELERY_BROKER_URL", "DEMO_MODE"}
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "hematovision.settings.production",
            "SECRET_KEY": base64.urlsafe_b64encode(os.urandom(48)).decode(),
            "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}",
            "IMAGE_ENCRYPTION_KEYS": base64.b64encode(os.urandom(32)).decode(),
            "EXPORT_PSEUDONYM_KEY": "pseudonym-key-of-the-deploy-test",
            "ALLOWED_HOSTS": "127.0.0.1",
            "STATIC_ROOT": str(folder / "static"),
            "HEMATOVISION_VAR_DIR": str(folder / "var"),
            "PRIVATE_MEDIA_ROOT": str(folder / "var" / "private"),
            "MODEL_STORE_DIR": str(folder / "var" / "models"),
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": "1",
            "GUNICORN_THREADS": "2",
        }
    )

    def manage(*args):
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    manage("collectstatic", "--no-input")
    manage("migrate", "--no-input")
    manage("shell", "-c", CREATE_USER)

    log = (folder / "server.log").open("w")
    server = subprocess.Popen(documented_server_command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (folder / "server.log").read_text()
            try:
                if requests.get(f"{base_url}/healthz", timeout=10).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or a worker still starting on a busy machine
                pass
            assert time.monotonic() < deadline, "the server did not answer /healthz within 120 s"
            time.sleep(0.5)
        yield Browser(base_url)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


class Browser:
    """Speaks to the server as the TLS-terminating reverse proxy would forward a browser's requests.

    The session and CSRF cookies are Secure: the test keeps them itself, since the hop to the
    server is plain HTTP.
    """

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.cookies: dict[str, str] = {}
        origin = "https://" + base_url.removeprefix("http://")
        self.headers = {"X-Forwarded-Proto": "https", "Origin": origin, "Referer": origin + "/"}

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(
            method,
            self.base_url + path,
            headers=self.headers,
            cookies=self.cookies,
            allow_redirects=False,
            timeout=60,
            **kwargs,
        )
        self.cookies.update({cookie.name: cookie.value for cookie in response.cookies})
        return response

    def assert_references_are_served(self, html: str) -> list[str]:
        references = [ref for ref in STATIC_REFERENCE.findall(html) if ref.startswith("/static/") or "?script" in ref]
        for reference in references:
            response = self.request("GET", reference.replace("&amp;", "&"))
            assert response.status_code == 200, f"{reference} answered {response.status_code}"
            assert response.content, f"{reference} is empty"
        external = [ref for ref in STATIC_REFERENCE.findall(html) if re.match(r"(https?:)?//", ref)]
        assert not external, f"the page loads files from elsewhere: {external}"
        return references


def test_the_sign_in_page_and_its_static_files_are_served(production):
    response = production.request("GET", "/accounts/login/")

    assert response.status_code == 200, response.text[:2000]
    references = production.assert_references_are_served(response.text)
    assert any(ref.endswith(".css") for ref in references)
    assert any(ref.endswith(".js") for ref in references)
    # The manifest storage names files by their content, so they can be cached for good.
    assert all(re.search(r"\.[0-9a-f]{12}\.(css|js)$", ref) for ref in references), references


def test_a_signed_in_user_gets_the_api_docs_without_a_cdn(production):
    page = production.request("GET", "/accounts/login/")
    csrf = production.cookies["csrftoken"]
    signed_in = production.request(
        "POST",
        "/accounts/login/",
        data={"login": EMAIL, "password": PASSWORD, "csrfmiddlewaretoken": csrf},
    )
    assert page.status_code == 200
    assert signed_in.status_code == 302, signed_in.text[:2000]

    docs = production.request("GET", "/api/docs/")

    assert docs.status_code == 200, docs.text[:2000]
    references = production.assert_references_are_served(docs.text)
    assert any("swagger-ui-bundle" in ref for ref in references), references
    schema = production.request("GET", "/api/schema/")
    assert schema.status_code == 200


def test_an_unknown_page_gets_the_friendly_not_found_page(production):
    response = production.request("GET", "/no-such-page/")

    assert response.status_code == 404
    assert "Not found" in response.text
    assert "URLconf" not in response.text
