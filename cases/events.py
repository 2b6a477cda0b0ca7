"""Push: tell the pages and API clients watching a case that some of its cell images changed.

    publish_image_updates(case_id=..., image_ids=[...])   # after the change is committed
    with subscribe(case_id=...) as subscription:         # the server-sent events view
        message = subscription.get(timeout=15)            # or: await subscription.aget(timeout=15)

A message is `{"case": <case id>, "images": [<image id>, ...]}`, with `"model_warning": true` added when the
classification task found the case imaged unlike the training data (its cells escalated for review: a case
escalated stays escalated, so the page may show its "not validated" banner at once). The subscriber reads
the images' current state from the database (selectors.image_updates), so a message carries no medical data
and a late or repeated one is harmless.

Two channels:
- Redis pub/sub when Redis is configured (settings.EVENTS_REDIS_URL: EVENTS_REDIS_URL, else a redis://
  CACHE_URL or CELERY_BROKER_URL). Every web process hears every worker.
- An in-process channel otherwise. It reaches subscribers of the same process only, which is exactly the
  embedded default (tasks run in the web process). `push_available()` says whether the pages may rely
  on push; where it says no (several processes and no Redis), they poll.

Publishing never raises into the caller: a lost message costs a page a refresh on its next safety poll,
never a prediction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Iterable

from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "hematovision:case-images:"
# A subscriber that does not keep up loses the oldest messages beyond this (it then resynchronises).
MAX_QUEUED_MESSAGES = 1000
SUBSCRIBE_TIMEOUT_SECONDS = 5.0


def channel_name(case_id: int) -> str:
    return f"{CHANNEL_PREFIX}{int(case_id)}"


def redis_url() -> str:
    return getattr(settings, "EVENTS_REDIS_URL", "") or ""


def push_available() -> bool:
    """True when a prediction stored anywhere reaches the web process that serves the page."""
    return bool(redis_url()) or bool(getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False))


def publish_image_updates(*, case_id: int, image_ids: Iterable[int], model_warning: bool = False) -> None:
    """Announce that these images of the case changed (status, prediction). Call after the commit.
    `model_warning`: the case is escalated as imaged unlike the training data (cases.classification)."""
    ids = sorted({int(pk) for pk in image_ids})
    if not ids:
        return
    message = {"case": int(case_id), "images": ids}
    if model_warning:
        message["model_warning"] = True
    url = redis_url()
    if url:
        try:
            _redis_client(url).publish(channel_name(case_id), json.dumps(message))
        except Exception as exc:  # noqa: BLE001 - a lost event must not fail the classification
            logger.warning("could not publish image updates %s of case %s: %s", ids, case_id, exc)
        return
    _local_hub.publish(channel_name(case_id), message)


def subscribe(*, case_id: int):
    """A subscription to the case's image updates; use it as a context manager (or call close())."""
    url = redis_url()
    if url:
        return RedisSubscription(url, channel_name(case_id))
    return LocalSubscription(_local_hub, channel_name(case_id))


# The in-process channel.


class _LocalHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[LocalSubscription]] = {}

    def add(self, channel: str, subscription: LocalSubscription) -> None:
        with self._lock:
            self._subscribers.setdefault(channel, set()).add(subscription)

    def remove(self, channel: str, subscription: LocalSubscription) -> None:
        with self._lock:
            subscribers = self._subscribers.get(channel)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[channel]

    def subscriber_count(self, channel: str) -> int:
        with self._lock:
            return len(self._subscribers.get(channel, ()))

    def publish(self, channel: str, message: dict) -> int:
        with self._lock:
            subscribers = list(self._subscribers.get(channel, ()))
        for subscription in subscribers:
            subscription._deliver(message)
        return len(subscribers)


_local_hub = _LocalHub()


class LocalSubscription:
    """Delivery from any thread; read with get() from a thread or aget() from an event loop."""

    def __init__(self, hub: _LocalHub, channel: str) -> None:
        self._hub = hub
        self._channel = channel
        self._messages: queue.SimpleQueue[dict] = queue.SimpleQueue()
        self._size = 0
        self._size_lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.closed = False
        hub.add(channel, self)

    def _deliver(self, message: dict) -> None:
        with self._size_lock:
            if self._size >= MAX_QUEUED_MESSAGES:
                try:
                    self._messages.get_nowait()
                    self._size -= 1
                except queue.Empty:
                    pass
            self._messages.put(message)
            self._size += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop is closed: that reader is gone
                pass

    def _take(self) -> dict | None:
        try:
            message = self._messages.get_nowait()
        except queue.Empty:
            return None
        with self._size_lock:
            self._size -= 1
        return message

    def get(self, timeout: float) -> dict | None:
        """The next message, or None after `timeout` seconds."""
        try:
            message = self._messages.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        with self._size_lock:
            self._size -= 1
        return message

    async def aget(self, timeout: float) -> dict | None:
        message = self._take()
        if message is not None:
            return message
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._size_lock:
            self._waiters.append(waiter)
        try:
            message = self._take()  # delivered between the first look and the registration
            if message is not None:
                return message
            try:
                await asyncio.wait_for(event.wait(), timeout=max(0.0, timeout))
            except TimeoutError:
                return None
            return self._take()
        finally:
            with self._size_lock:
                self._waiters.remove(waiter)

    def open(self) -> None:
        """Subscribed since construction; here for symmetry with RedisSubscription."""

    async def aopen(self) -> None:
        """Subscribed since construction."""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub.remove(self._channel, self)

    async def aclose(self) -> None:
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.close()


# Redis pub/sub.

_redis_clients: dict[str, object] = {}
_redis_clients_lock = threading.Lock()


def _redis_client(url: str):
    """One connection pool per process for publishing (redis-py clients are thread-safe)."""
    with _redis_clients_lock:
        client = _redis_clients.get(url)
        if client is None:
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
            _redis_clients[url] = client
        return client


class RedisSubscription:
    """One pub/sub connection per subscriber: sync (get) or asyncio (aget), opened on first use."""

    def __init__(self, url: str, channel: str) -> None:
        self._url = url
        self._channel = channel
        self._sync = None
        self._sync_client = None
        self._async = None
        self._async_client = None
        self._early: list[dict] = []
        self.closed = False

    def _sync_pubsub(self):
        if self._sync is None:
            import redis

            # Keep the client: when it is garbage-collected it closes its pool, pub/sub connection included.
            self._sync_client = redis.Redis.from_url(self._url, socket_connect_timeout=2)
            pubsub = self._sync_client.pubsub()
            pubsub.subscribe(self._channel)
            # Wait for Redis to confirm: only then is a message published elsewhere sure to reach us.
            deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_SECONDS
            while time.monotonic() < deadline:
                raw = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if raw and raw.get("type") == "subscribe":
                    break
                self._early.extend(filter(None, [_decode(raw)]))
            self._sync = pubsub
        return self._sync

    async def _async_pubsub(self):
        if self._async is None:
            import redis.asyncio

            self._async_client = redis.asyncio.Redis.from_url(self._url, socket_connect_timeout=2)
            pubsub = self._async_client.pubsub()
            await pubsub.subscribe(self._channel)
            deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_SECONDS
            while time.monotonic() < deadline:
                raw = await pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if raw and raw.get("type") == "subscribe":
                    break
                self._early.extend(filter(None, [_decode(raw)]))
            self._async = pubsub
        return self._async

    def open(self) -> None:
        """Subscribe now (synchronously), so nothing published from here on is missed."""
        self._sync_pubsub()

    async def aopen(self) -> None:
        await self._async_pubsub()

    def get(self, timeout: float) -> dict | None:
        pubsub = self._sync_pubsub()
        if self._early:
            return self._early.pop(0)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            remaining = deadline - time.monotonic()
            raw = pubsub.get_message(timeout=max(0.0, remaining))
            message = _decode(raw)
            if message is not None:
                return message
            if time.monotonic() >= deadline:
                return None

    async def aget(self, timeout: float) -> dict | None:
        pubsub = await self._async_pubsub()
        if self._early:
            return self._early.pop(0)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            remaining = deadline - time.monotonic()
            raw = await pubsub.get_message(timeout=max(0.0, remaining))
            message = _decode(raw)
            if message is not None:
                return message
            if time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        self.closed = True
        if self._sync is not None:
            try:
                self._sync.close()
                self._sync_client.close()
            finally:
                self._sync = None
                self._sync_client = None

    async def aclose(self) -> None:
        self.close()
        if self._async is not None:
            try:
                await self._async.aclose()
                await self._async_client.aclose()
            finally:
                self._async = None
                self._async_client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()


def _decode(raw) -> dict | None:
    if not raw or raw.get("type") != "message":
        return None
    try:
        message = json.loads(raw["data"])
    except (TypeError, ValueError):
        logger.warning("ignored a malformed image-update message: %r", raw.get("data"))
        return None
    if not isinstance(message, dict) or not isinstance(message.get("images"), list):
        return None
    return message
