"""hematovision/request_threads.py: the ASGI application's requests run their synchronous code on reused threads.

Each request keeps one thread for all its synchronous code (the view, request_finished's receivers, the
response's close), as with Django's own per-request thread; the next request gets the same thread once the
last one is done with it, and never a thread something still runs on.
"""

import asyncio
import threading

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.http import JsonResponse
from django.test import override_settings
from django.urls import path

from hematovision.request_threads import ReusedRequestThreads
from tests.event_loops import run_in_own_loop


def _thread(request):
    return JsonResponse({"thread": threading.get_ident()})


urlpatterns = [path("probe/thread/", _thread)]


def _scope(path_: str = "/probe/thread/") -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path_,
        "raw_path": path_.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def _request(application, scope: dict) -> tuple[int, bytes]:
    sent: list[dict] = []
    received = False

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)  # the client stays until the answer is sent

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    status = next(message["status"] for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return status, body


@override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"], SECURE_SSL_REDIRECT=False)
def test_django_requests_share_a_thread_that_also_runs_request_finished():
    application = ReusedRequestThreads(ASGIHandler())
    finished_on: list[int] = []

    def on_finished(**kwargs):
        finished_on.append(threading.get_ident())

    request_finished.connect(on_finished)
    try:

        async def two_requests():
            return [await _request(application, _scope()) for _ in range(2)]

        answers = run_in_own_loop(two_requests())
    finally:
        request_finished.disconnect(on_finished)

    (first_status, first_body), (second_status, second_body) = answers
    assert first_status == second_status == 200
    first, second = (int(body.split(b":")[1].rstrip(b"}")) for body in (first_body, second_body))
    assert first == second  # one thread, not a new one per request
    assert first != threading.get_ident()
    assert finished_on == [first, second]  # request_finished (close_old_connections) on the request's thread


def test_a_thread_still_running_a_cancelled_call_is_not_handed_out_again():
    release = threading.Event()
    threads: list[int] = []

    def blocked():
        release.wait(10)

    async def inner(scope, receive, send):
        if scope["path"] == "/abandon/":
            # A view left behind (its client went away): the call keeps running on the request's thread.
            try:
                await asyncio.wait_for(sync_to_async(blocked)(), timeout=0.05)
            except TimeoutError:
                pass
        threads.append(await sync_to_async(threading.get_ident)() if scope["path"] != "/abandon/" else 0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    application = ReusedRequestThreads(inner)

    async def run():
        await _request(application, _scope("/first/"))
        await _request(application, _scope("/abandon/"))
        # Would wait behind blocked() for 10 s if the abandoned request's thread were handed out again.
        await asyncio.wait_for(_request(application, _scope("/after/")), timeout=5)

    try:
        run_in_own_loop(run())
    finally:
        release.set()
    first, _, after = threads
    assert after != first


def test_idle_threads_are_bounded():
    async def inner(scope, receive, send):
        await sync_to_async(threading.get_ident)()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    application = ReusedRequestThreads(inner, idle_max=2)

    async def run():
        await asyncio.gather(*(_request(application, _scope()) for _ in range(5)))

    run_in_own_loop(run())
    assert len(application.idle) == 2


def test_other_scopes_pass_through():
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    run_in_own_loop(ReusedRequestThreads(inner)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]
