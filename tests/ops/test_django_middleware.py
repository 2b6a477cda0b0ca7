"""hematovision/django_middleware.py: Django's middlewares with their hooks on the event loop under ASGI.

Each hook's effect is checked through both chains: Django's test client (WSGI, synchronous) and its
AsyncClient (ASGIHandler, the asynchronous chain uvicorn runs), on a few probe views of this module. A
wrapper that dropped a hook, or ran one that touches the database on the loop (Django refuses that with
SynchronousOnlyOperation), fails here. AsyncClient is driven from synchronous tests so that the hooks that
keep their thread hand-off, and the views, run in the test's own thread and transaction.
"""

import asyncio

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.conf import settings
from django.contrib import messages
from django.contrib.sessions.models import Session
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.test import AsyncClient, Client, RequestFactory, override_settings
from django.urls import include, path
from django.utils import translation
from django.utils.deprecation import MiddlewareMixin
from django.utils.module_loading import import_string

from hematovision import django_middleware


def _set_session(request):
    request.session["probe"] = request.GET["value"]
    return HttpResponse("set")


def _read_session(request):
    return JsonResponse({"probe": request.session.get("probe"), "user": request.user.is_authenticated})


def _add_message(request):
    messages.success(request, request.GET["text"])
    return HttpResponse("added")


def _read_messages(request):
    return JsonResponse({"messages": [str(message) for message in messages.get_messages(request)]})


def _language(request):
    return JsonResponse({"language": translation.get_language()})


def _form(request):
    if request.method == "POST":
        return HttpResponse("accepted")
    return HttpResponse(f"token={get_token(request)}")


urlpatterns = [
    path("probe/session/set/", _set_session),
    path("probe/session/", _read_session),
    path("probe/messages/add/", _add_message),
    path("probe/messages/", _read_messages),
    path("probe/language/", _language),
    path("probe/form/", _form),
    path("", include("hematovision.urls")),  # the URLs the project's own middlewares reverse
]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


class SyncChain:
    """The test client, with the same call shape as AsyncChain."""

    def __init__(self, **options):
        self.client = Client(**options)

    def get(self, url, **extra):
        return self.client.get(url, **extra)

    def post(self, url, data=None, **extra):
        return self.client.post(url, data or {}, **extra)


class AsyncChain(SyncChain):
    def __init__(self, **options):
        self.client = AsyncClient(**options)

    def get(self, url, **extra):
        return async_to_sync(self.client.get)(url, **extra)

    def post(self, url, data=None, **extra):
        return async_to_sync(self.client.post)(url, data or {}, **extra)


@pytest.fixture(params=[SyncChain, AsyncChain], ids=["wsgi", "asgi"])
def chain(request):
    return request.param


DJANGO_HOOK_MIDDLEWARE = (
    "hematovision.django_middleware.SecurityMiddleware",
    "hematovision.django_middleware.WhiteNoiseMiddleware",
    "hematovision.django_middleware.SessionMiddleware",
    "hematovision.django_middleware.LocaleMiddleware",
    "hematovision.django_middleware.CommonMiddleware",
    "hematovision.django_middleware.CsrfViewMiddleware",
    "hematovision.django_middleware.AuthenticationMiddleware",
    "hematovision.django_middleware.MessageMiddleware",
    "hematovision.django_middleware.XFrameOptionsMiddleware",
)


@pytest.fixture(autouse=True)
def loop_middleware(settings):
    """The chain the ASGI application runs (hematovision.asgi): settings name Django's classes."""
    settings.MIDDLEWARE = django_middleware.on_the_loop(settings.MIDDLEWARE)


def test_the_asgi_application_runs_the_loop_versions_and_no_middleware_hops_per_hook(monkeypatch):
    loaded = []
    monkeypatch.setattr(
        ASGIHandler, "load_middleware", lambda self, is_async=False: loaded.append(list(settings.MIDDLEWARE))
    )
    configured = list(settings.MIDDLEWARE)

    django_middleware.get_loop_asgi_application()

    assert loaded == [django_middleware.on_the_loop(configured)]
    assert settings.MIDDLEWARE == configured  # every other reader keeps the configured names
    for dotted in DJANGO_HOOK_MIDDLEWARE:
        assert dotted in loaded[0]
    for dotted in loaded[0]:
        middleware = import_string(dotted)
        assert getattr(middleware, "async_capable", False), f"{dotted} is synchronous only"
        if isinstance(middleware, type) and issubclass(middleware, MiddlewareMixin):
            assert middleware.__acall__ is not MiddlewareMixin.__acall__, f"{dotted} hands every hook to a thread"


def test_settings_name_djangos_own_classes_for_its_deploy_checks():
    from hematovision.settings import base

    for django_path, loop_path in django_middleware.LOOP_VERSIONS.items():
        assert django_path in base.MIDDLEWARE
        assert loop_path not in base.MIDDLEWARE
        assert issubclass(import_string(loop_path), import_string(django_path))


def test_session_is_saved_read_back_and_varied(chain):
    client = chain()
    stored = client.get("/probe/session/set/", query_params={"value": "seven"})
    assert stored.status_code == 200
    assert settings.SESSION_COOKIE_NAME in stored.cookies
    session_key = stored.cookies[settings.SESSION_COOKIE_NAME].value
    assert Session.objects.get(session_key=session_key).get_decoded()["probe"] == "seven"

    read = client.get("/probe/session/")
    assert read.json()["probe"] == "seven"
    assert "Cookie" in read["Vary"]


def test_an_emptied_session_loses_its_cookie(chain, make_user):
    client = chain()
    client.client.force_login(make_user())
    assert client.get("/probe/session/").json()["user"] is True

    client.client.cookies[settings.SESSION_COOKIE_NAME] = "no-such-session"
    response = client.get("/probe/session/")
    assert response.json()["user"] is False
    assert response.cookies[settings.SESSION_COOKIE_NAME].value == ""  # deleted


def test_messages_are_stored_shown_once_then_gone(chain):
    client = chain()
    client.get("/probe/messages/add/", query_params={"text": "saved"})
    assert client.get("/probe/messages/").json()["messages"] == ["saved"]
    assert client.get("/probe/messages/").json()["messages"] == []


def test_language_reaches_the_view_and_the_response(chain):
    client = chain()
    spanish = client.get("/probe/language/", headers={"Accept-Language": "es"})
    assert spanish.json()["language"] == "es"
    assert spanish["Content-Language"] == "es"
    assert "Accept-Language" in spanish["Vary"]

    client.client.cookies[settings.LANGUAGE_COOKIE_NAME] = "es"
    assert client.get("/probe/language/", headers={"Accept-Language": "en"}).json()["language"] == "es"
    assert chain().get("/probe/language/").json()["language"] == settings.LANGUAGE_CODE


def test_csrf_refuses_a_post_without_the_token_and_accepts_it_with(chain):
    client = chain(enforce_csrf_checks=True)
    assert client.post("/probe/form/").status_code == 403

    form = client.get("/probe/form/")
    assert settings.CSRF_COOKIE_NAME in form.cookies
    token = form.content.decode().removeprefix("token=")
    accepted = client.post("/probe/form/", {"csrfmiddlewaretoken": token})
    assert accepted.status_code == 200 and accepted.content == b"accepted"


def test_append_slash_content_length_and_security_headers(chain):
    client = chain()
    redirected = client.get("/probe/language")
    assert redirected.status_code == 301 and redirected["Location"] == "/probe/language/"

    page = client.get("/probe/language/")
    assert int(page["Content-Length"]) == len(page.content)
    assert page["X-Frame-Options"] == "DENY"
    assert page["X-Content-Type-Options"] == "nosniff"
    assert page["Referrer-Policy"] == settings.SECURE_REFERRER_POLICY
    assert page["Cross-Origin-Opener-Policy"] == "same-origin"


@override_settings(SECURE_SSL_REDIRECT=True)
def test_plain_http_is_sent_to_https(chain):
    response = chain().get("/probe/language/")
    assert response.status_code == 301
    assert response["Location"] == "https://testserver/probe/language/"


def _run_on_loop(middleware_class, request, monkeypatch, on_view=None):
    """Calls the middleware in async mode with the thread hand-off made to fail."""

    def no_thread(*args, **kwargs):
        raise AssertionError("handed to a thread")

    monkeypatch.setattr(django_middleware, "sync_to_async", no_thread)

    async def view(request):
        if on_view:
            on_view(request)
        return HttpResponse("view")

    middleware = middleware_class(view)
    assert iscoroutinefunction(middleware)
    return asyncio.run(middleware(request))


@pytest.mark.parametrize(
    "name",
    [
        "SecurityMiddleware",
        "SessionMiddleware",
        "LocaleMiddleware",
        "CommonMiddleware",
        "CsrfViewMiddleware",
        "AuthenticationMiddleware",
        "MessageMiddleware",
        "XFrameOptionsMiddleware",
        "WhiteNoiseMiddleware",
    ],
)
def test_a_plain_request_stays_on_the_loop(name, monkeypatch):
    request = RequestFactory().get("/api/v1/me/")
    # The hooks above the one under test, as in the chain.
    django_middleware.SessionMiddleware(lambda request: None).process_request(request)
    django_middleware.AuthenticationMiddleware(lambda request: None).process_request(request)
    assert _run_on_loop(getattr(django_middleware, name), request, monkeypatch).content == b"view"


def test_a_modified_session_is_saved_in_a_thread(monkeypatch):
    def modify(request):
        request.session["probe"] = 1

    with pytest.raises(AssertionError, match="handed to a thread"):
        _run_on_loop(django_middleware.SessionMiddleware, RequestFactory().get("/"), monkeypatch, modify)


def test_messages_added_are_stored_in_a_thread(monkeypatch):
    def add(request):
        messages.info(request, "stored")

    request = RequestFactory().get("/")
    django_middleware.SessionMiddleware(lambda request: None).process_request(request)
    with pytest.raises(AssertionError, match="handed to a thread"):
        _run_on_loop(django_middleware.MessageMiddleware, request, monkeypatch, add)


def test_a_static_file_is_served_under_asgi(tmp_path):
    (tmp_path / "probe.css").write_text("body{}")

    async def view(request):
        return HttpResponse("view")

    with override_settings(STATIC_ROOT=tmp_path, STATIC_URL="/static/", WHITENOISE_AUTOREFRESH=False):
        middleware = django_middleware.WhiteNoiseMiddleware(view)

        async def fetch(url):
            return await middleware(RequestFactory().get(url))

        static = async_to_sync(fetch)("/static/probe.css")
        assert static.getvalue() == b"body{}"
        static.close()
        assert async_to_sync(fetch)("/other/").content == b"view"
