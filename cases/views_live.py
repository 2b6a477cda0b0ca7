"""The case page's live grid: server-sent events when a cell changes (cases:events) and the changed cards
alone (cases:cards). The event stream is documented in docs/events.md.

The stream is served both ways: an async iterator under ASGI (uvicorn workers in production: one event
loop holds many open streams), a plain iterator under WSGI (the embedded default's runserver, the test
client), where each open stream holds a thread.
"""

from __future__ import annotations

import json
import logging
import time
from functools import wraps

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.utils.translation import gettext
from django.views.decorators.http import require_GET
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.settings import api_settings

from accounts.permissions import capability_required, has_capability

from . import events, selectors
from .views import _case_or_404

logger = logging.getLogger(__name__)

# A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
# Streams end after this; the browser's EventSource reconnects on its own (and the page resynchronises).
STREAM_SECONDS = 300.0
# Messages arriving within this window after one are sent as one event. 0: only those already waiting when
# the stream wakes (those that came while it read and sent the previous event), without a timed wait, which
# cost each event its 20 ms and ~1 ms of CPU (docs/benchmarks.md, hpush).
COALESCE_SECONDS = 0.0
RECONNECT_MS = 2000
MAX_IDS_PER_REQUEST = 500


def _parse_ids(raw: str) -> list[int] | None:
    try:
        ids = sorted({int(part) for part in raw.split(",") if part.strip()})
    except ValueError:
        return None
    return ids if len(ids) <= MAX_IDS_PER_REQUEST else None


@require_GET
@capability_required("view_cases")
def case_cards(request, pk: int):
    """The cards of the cells named in `ids` (comma-separated; all cells without it), and the case status
    out of band: what live_grid.js puts in place of the cards it has."""
    case = _case_or_404(pk)
    image_ids = None
    if "ids" in request.GET:
        image_ids = _parse_ids(request.GET["ids"])
        if image_ids is None:
            return HttpResponseBadRequest(f"ids must be at most {MAX_IDS_PER_REQUEST} comma-separated numbers.")
    cards = selectors.cell_cards(case=case, image_ids=image_ids)
    context = {
        "case": case,
        "cards": cards,
        "pending": any(card.pending for card in cards),
        "can_retry": has_capability(request.user, "retry_classification"),
        "csrf_token": get_token(request),  # the retry buttons' forms
    }
    # Rendered without the request: the cards need none of the page's context processors (the unread
    # notifications count, roles, messages), which cost queries on every refresh of a filling grid.
    response = HttpResponse(render_to_string("cases/_cell_cards.html", context))
    response["Cache-Control"] = "private, no-store"
    return response


def _token_or_session(view):
    """API clients may use their token (`Authorization: Token ...`) instead of a session."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated and request.headers.get("Authorization"):
            # The API's own authentication classes (accounts.authentication: hashed, expiring tokens).
            for authentication in api_settings.DEFAULT_AUTHENTICATION_CLASSES:
                if issubclass(authentication, SessionAuthentication):
                    continue
                try:
                    found = authentication().authenticate(request)
                except AuthenticationFailed as exc:
                    return JsonResponse({"detail": str(exc.detail)}, status=401)
                except PermissionDenied as exc:
                    return JsonResponse({"detail": str(exc.detail)}, status=403)
                if found is not None:
                    request.user = found[0]
                    break
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
@_token_or_session
@capability_required("view_cases")
def case_events(request, pk: int):
    """text/event-stream of the case's cell updates (docs/events.md)."""
    case = _case_or_404(pk)
    if not events.push_available():
        # Several processes and no Redis: a prediction stored by a worker would never reach this stream.
        return JsonResponse(
            {"detail": gettext("Push is not available on this deployment (no Redis configured); poll instead.")},
            status=503,
        )
    subscription = events.subscribe(case_id=case.pk)
    # In the request's language: the stream's events are sent after the response has left the middlewares.
    warning = str(selectors.NOT_VALIDATED_MESSAGE)
    if isinstance(request, ASGIRequest):
        stream = _async_stream(case, subscription, warning)
    else:
        subscription.open()  # subscribed before the first byte goes out: nothing published after is missed
        stream = _sync_stream(case, subscription, warning)
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache, no-store, private"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _ready(case) -> bytes:
    return f"retry: {RECONNECT_MS}\n\n".encode() + _event("ready", {"case": case.pk})


def _updates(case, image_ids: set[int], model_warning: str = "") -> bytes:
    """The `images` event; `model_warning` (the "not validated" text) goes in its case when a message said
    the case is escalated (docs/events.md): from the task's own result, not read again here."""
    try:
        payload = selectors.image_updates(case=case, image_ids=image_ids)
        if model_warning:
            payload["case"]["model_warning"] = model_warning
        return _event("images", payload)
    finally:
        # Between events the stream holds no database connection (a stream lives for minutes).
        if not connection.in_atomic_block:
            connection.close()


def _sync_stream(case, subscription, warning: str):
    try:
        yield _ready(case)
        deadline = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline:
            message = subscription.get(timeout=min(KEEPALIVE_SECONDS, max(0.0, deadline - time.monotonic())))
            if message is None:
                yield b": keepalive\n\n"
                continue
            image_ids = set(message["images"])
            escalated = bool(message.get("model_warning"))
            while (more := subscription.get(timeout=COALESCE_SECONDS)) is not None:
                image_ids.update(more["images"])
                escalated = escalated or bool(more.get("model_warning"))
            yield _updates(case, image_ids, warning if escalated else "")
    finally:
        subscription.close()


async def _async_stream(case, subscription, warning: str):
    updates = sync_to_async(_updates)
    try:
        await subscription.aopen()
        yield _ready(case)
        deadline = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline:
            message = await subscription.aget(timeout=min(KEEPALIVE_SECONDS, max(0.0, deadline - time.monotonic())))
            if message is None:
                yield b": keepalive\n\n"
                continue
            image_ids = set(message["images"])
            escalated = bool(message.get("model_warning"))
            while (more := await subscription.aget(timeout=COALESCE_SECONDS)) is not None:
                image_ids.update(more["images"])
                escalated = escalated or bool(more.get("model_warning"))
            yield await updates(case, image_ids, warning if escalated else "")
    finally:
        await subscription.aclose()
