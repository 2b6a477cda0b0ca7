"""Provider HTTP mocked the way allauth's own tests do it: patch requests.Session.request.

Each request goes to a handler chosen by URL; a request nobody expected fails the test, so no
test can reach the network.
"""

import json
import time
from contextlib import contextmanager
from unittest import mock

import jwt
import requests


class MockedResponse:
    def __init__(self, status_code: int, content: str | dict, headers: dict | None = None):
        self.status_code = status_code
        self.text = content if isinstance(content, str) else json.dumps(content)
        self.content = self.text.encode()
        self.headers = headers or {"content-type": "application/json"}
        self.ok = 200 <= status_code < 300

    def json(self):
        return json.loads(self.text)

    def raise_for_status(self):
        if not self.ok:
            raise requests.HTTPError(f"{self.status_code} from mocked provider", response=self)


@contextmanager
def mocked_provider(routes: dict[tuple[str, str], MockedResponse]):
    """routes: (HTTP method, URL) -> response. Yields the list of (method, url, kwargs) requested."""
    calls = []

    def respond(method, url, *args, **kwargs):
        calls.append((method.upper(), url, kwargs))
        try:
            return routes[(method.upper(), url)]
        except KeyError:
            raise AssertionError(f"unexpected provider request {method} {url}") from None

    with mock.patch.object(requests.Session, "request", side_effect=respond):
        yield calls


def id_token(*, issuer: str, audience: str, subject: str, email: str, **claims) -> str:
    """An ID token as the provider would return it from the token endpoint. allauth does not check
    its signature there (it came straight from the provider over TLS), only issuer, audience, expiry."""
    now = int(time.time())
    payload = {"iss": issuer, "aud": audience, "sub": subject, "email": email, "iat": now, "exp": now + 300}
    payload.update(claims)
    return jwt.encode(payload, "provider-signing-key-not-checked-here", algorithm="HS256")
