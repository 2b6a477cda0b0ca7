"""cases/events.py: the in-process channel, Redis pub/sub, and the classification task announcing its results."""

import asyncio
import threading
import uuid

import pytest

from cases import events, tasks
from tests.cases.images import cell_png, upload
from tests.cases.test_broker import REDIS_HOST, REDIS_PORT, redis_reachable
from tests.conftest import skip_or_fail
from tests.factories import CaseFactory


@pytest.fixture
def in_process(settings):
    settings.EVENTS_REDIS_URL = ""


@pytest.fixture
def on_redis(settings):
    if not redis_reachable():
        skip_or_fail(f"Redis not reachable on {REDIS_HOST}:{REDIS_PORT}")
    settings.EVENTS_REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/11"
    events._redis_clients.clear()
    yield
    events._redis_clients.clear()


def unique_case_id() -> int:
    return 10_000_000 + uuid.uuid4().int % 1_000_000


def run_async(make_coroutine):
    """asyncio.run in a thread of its own: a browser test earlier in the session may leave an event loop
    running in the main thread, where asyncio.run refuses to start."""
    outcome = {}

    def target():
        try:
            outcome["value"] = asyncio.run(make_coroutine())
        except BaseException as exc:  # noqa: BLE001 - handed back to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_in_process_subscriber_gets_only_its_case(in_process):
    with events.subscribe(case_id=1) as mine, events.subscribe(case_id=2) as other:
        events.publish_image_updates(case_id=1, image_ids=[5, 3, 5])

        assert mine.get(timeout=1) == {"case": 1, "images": [3, 5]}
        assert mine.get(timeout=0.05) is None
        assert other.get(timeout=0.05) is None


def test_a_message_says_the_case_is_escalated_only_when_told(in_process):
    with events.subscribe(case_id=4) as subscription:
        events.publish_image_updates(case_id=4, image_ids=[2], model_warning=True)
        events.publish_image_updates(case_id=4, image_ids=[3], model_warning=False)

        assert subscription.get(timeout=1) == {"case": 4, "images": [2], "model_warning": True}
        assert subscription.get(timeout=1) == {"case": 4, "images": [3]}


def test_in_process_publish_from_another_thread_wakes_an_async_reader(in_process):
    async def read():
        async with events.subscribe(case_id=7) as subscription:
            threading.Timer(0.05, events.publish_image_updates, kwargs={"case_id": 7, "image_ids": [1]}).start()
            return await subscription.aget(timeout=5)

    assert run_async(read) == {"case": 7, "images": [1]}


def test_in_process_async_reader_times_out_with_none(in_process):
    async def read():
        async with events.subscribe(case_id=8) as subscription:
            return await subscription.aget(timeout=0.05)

    assert run_async(read) is None


def test_closed_subscription_is_forgotten_and_empty_publish_is_nothing(in_process):
    subscription = events.subscribe(case_id=9)
    channel = events.channel_name(9)
    assert events._local_hub.subscriber_count(channel) == 1
    subscription.close()
    assert events._local_hub.subscriber_count(channel) == 0
    events.publish_image_updates(case_id=9, image_ids=[])  # nothing to say, nothing raised


def test_a_slow_subscriber_keeps_the_newest_messages(in_process, monkeypatch):
    monkeypatch.setattr(events, "MAX_QUEUED_MESSAGES", 3)
    with events.subscribe(case_id=3) as subscription:
        for pk in range(1, 6):
            events.publish_image_updates(case_id=3, image_ids=[pk])
        received = [subscription.get(timeout=0.1) for _ in range(4)]
    assert received == [{"case": 3, "images": [3]}, {"case": 3, "images": [4]}, {"case": 3, "images": [5]}, None]


def test_push_is_available_embedded_or_with_redis(settings):
    settings.EVENTS_REDIS_URL = ""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert events.push_available()
    settings.CELERY_TASK_ALWAYS_EAGER = False
    assert not events.push_available()  # separate workers and no Redis: the pages poll
    settings.EVENTS_REDIS_URL = "redis://127.0.0.1:6379/0"
    assert events.push_available()


def test_events_url_comes_from_a_redis_cache_or_broker(monkeypatch):
    from hematovision.settings import base

    for name in ("EVENTS_REDIS_URL", "CACHE_URL", "CELERY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    assert base._events_redis_url() == ""
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://rabbit//")
    assert base._events_redis_url() == ""
    monkeypatch.setenv("CACHE_URL", "redis://cache:6379/1")
    assert base._events_redis_url() == "redis://cache:6379/1"
    monkeypatch.setenv("EVENTS_REDIS_URL", "redis://events:6379/2")
    assert base._events_redis_url() == "redis://events:6379/2"


def test_redis_subscribers_sync_and_async_hear_a_publish(on_redis):
    case_id = unique_case_id()
    with events.subscribe(case_id=case_id) as sync_subscription:
        sync_subscription.open()

        async def read():
            async with events.subscribe(case_id=case_id) as subscription:
                await subscription.aopen()
                await asyncio.to_thread(events.publish_image_updates, case_id=case_id, image_ids=[4, 2])
                return await subscription.aget(timeout=5)

        assert run_async(read) == {"case": case_id, "images": [2, 4]}
        assert sync_subscription.get(timeout=5) == {"case": case_id, "images": [2, 4]}
        assert sync_subscription.get(timeout=0.1) is None


def test_redis_down_loses_the_event_not_the_caller(settings, caplog):
    settings.EVENTS_REDIS_URL = "redis://127.0.0.1:1/0"
    events._redis_clients.clear()
    events.publish_image_updates(case_id=1, image_ids=[1])
    assert "could not publish image updates" in caplog.text
    events._redis_clients.clear()


@pytest.mark.django_db(transaction=True)
def test_classification_announces_each_batch_after_commit(tiny_model, technician, in_process):
    from cases import services

    case = CaseFactory(created_by=technician)
    with events.subscribe(case_id=case.pk) as subscription:
        files = [upload(f"cell{i}.png", cell_png(i % 3, seed=i)) for i in range(3)]
        accepted, _ = services.add_images(case=case, files=files, uploaded_by=technician)
        seen: set[int] = set()
        while (message := subscription.get(timeout=5)) is not None:
            assert message["case"] == case.pk
            seen.update(message["images"])
            if seen == {image.pk for image in accepted}:
                break
    assert seen == {image.pk for image in accepted}


@pytest.mark.django_db(transaction=True)
def test_a_failed_image_is_announced_too(tiny_model, technician, in_process, monkeypatch):
    from cases import services

    case = CaseFactory(created_by=technician)
    monkeypatch.setattr(services, "schedule_classification", lambda **kwargs: None)
    files = [upload("cell.png", cell_png(0, seed=1))]
    (image,), _ = services.add_images(case=case, files=files, uploaded_by=technician)
    monkeypatch.setattr(tasks.selectors, "open_cell_image", lambda **kwargs: (_ for _ in ()).throw(OSError("gone")))
    with events.subscribe(case_id=case.pk) as subscription:
        tasks.classify_images.apply(args=[[image.pk]])
        assert subscription.get(timeout=2) == {"case": case.pk, "images": [image.pk]}
