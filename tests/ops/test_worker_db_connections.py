"""Celery workers keep their database connection between tasks, under Django's own rules
(hematovision/celery_connections.py), instead of Celery's default of a new connection for every task."""

import time
from types import SimpleNamespace

import psycopg
import pytest
from celery.fixups.django import DjangoWorkerFixup
from celery.signals import task_postrun, task_prerun
from django.conf import settings
from django.db import connection, connections

from hematovision.celery import app
from tests.ops.faults import database_url_of, require_postgresql, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class WorkerTask:
    """What the signals carry: a task whose request says whether it runs eagerly (signal senders must hash)."""

    name = "cases.tasks.classify_images"

    def __init__(self, *, eager: bool):
        self.request = SimpleNamespace(is_eager=eager)


def worker_task(*, eager: bool = False) -> WorkerTask:
    return WorkerTask(eager=eager)


def open_connection():
    connection.ensure_connection()
    return connection.connection


def send(signal, task) -> None:
    signal.send(sender=task, task=task, task_id="task-id", args=(), kwargs={})


def test_every_worker_loads_the_connection_handlers():
    assert "hematovision.celery_connections" in settings.CELERY_IMPORTS


def test_celerys_django_fixup_leaves_the_connection_open_between_tasks():
    fixup = DjangoWorkerFixup(app)
    opened = open_connection()
    for _ in range(50):
        fixup.on_task_prerun(sender=worker_task())
        fixup.on_task_postrun(sender=worker_task())
    assert connection.connection is opened


def test_a_connection_within_its_age_is_used_by_the_next_task():
    import hematovision.celery_connections  # noqa: F401 - what CELERY_IMPORTS loads in a worker

    opened = open_connection()
    connection.close_at = time.monotonic() + 60
    send(task_postrun, worker_task())
    send(task_prerun, worker_task())
    assert connection.connection is opened


def test_a_connection_past_its_age_is_closed_at_the_next_task_boundary():
    import hematovision.celery_connections  # noqa: F401

    open_connection()
    connection.close_at = time.monotonic() - 1
    send(task_prerun, worker_task())
    assert connection.connection is None


def test_a_connection_left_with_an_error_is_checked_and_replaced_when_unusable(monkeypatch):
    import hematovision.celery_connections  # noqa: F401

    open_connection()
    connection.close_at = time.monotonic() + 60
    connection.errors_occurred = True
    monkeypatch.setattr(connection, "is_usable", lambda: False)
    send(task_postrun, worker_task())
    assert connection.connection is None


def test_an_eager_task_leaves_the_connection_to_the_request_it_runs_in():
    import hematovision.celery_connections  # noqa: F401

    opened = open_connection()
    connection.close_at = time.monotonic() - 1
    send(task_prerun, worker_task(eager=True))
    assert connection.connection is opened


def _backend_gone(pid: int) -> bool:
    with psycopg.connect(database_url_of(connection.settings_dict), autocommit=True) as other:
        return other.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0] == 0


def _terminate_backend(pid: int) -> None:
    """Ends a server process as a DBA or a server restart would, and waits until it is gone."""
    with psycopg.connect(database_url_of(connection.settings_dict), autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
    wait_until(lambda: _backend_gone(pid), timeout=10, what=f"backend {pid} to end")


@pytest.fixture
def kept_connection(monkeypatch):
    """The test's PostgreSQL connection kept between tasks (within its age, health checks on, as in a
    worker), and a list of the health checks Django runs on it."""
    import hematovision.celery_connections  # noqa: F401

    require_postgresql()
    opened = open_connection()
    connection.close_at = time.monotonic() + 60
    # On the wrapper itself: monkeypatch would delete through django.db.connection (a proxy) on undo.
    wrapper = connections["default"]
    monkeypatch.setattr(wrapper, "health_check_enabled", True)
    checks = []
    is_usable = wrapper.is_usable

    def counted_is_usable():
        checks.append(wrapper.connection)
        return is_usable()

    monkeypatch.setattr(wrapper, "is_usable", counted_is_usable)
    return opened, checks


def _first_query_of_next_task() -> int:
    send(task_postrun, worker_task())
    send(task_prerun, worker_task())
    with connection.cursor() as cursor:
        cursor.execute("SELECT 2")
        return cursor.fetchone()[0]


def test_a_kept_connection_serves_the_next_task_without_a_health_check_round_trip(kept_connection):
    opened, checks = kept_connection
    for _ in range(3):
        assert _first_query_of_next_task() == 2
    assert checks == []
    assert connection.connection is opened


def test_a_backend_terminated_between_tasks_is_replaced_before_the_next_tasks_first_query(kept_connection):
    opened, checks = kept_connection
    send(task_postrun, worker_task())
    _terminate_backend(opened.info.backend_pid)
    send(task_prerun, worker_task())
    with connection.cursor() as cursor:
        cursor.execute("SELECT 2")
        assert cursor.fetchone()[0] == 2
    assert checks == [opened]
    assert connection.connection is not opened


def test_a_connection_cut_between_tasks_is_replaced_before_the_next_tasks_first_query(database_proxy, monkeypatch):
    import hematovision.celery_connections  # noqa: F401

    opened = open_connection()
    connection.close_at = time.monotonic() + 60
    monkeypatch.setattr(connections["default"], "health_check_enabled", True)
    send(task_postrun, worker_task())
    database_proxy.cut()
    database_proxy.restore()
    send(task_prerun, worker_task())
    with connection.cursor() as cursor:
        cursor.execute("SELECT 2")
        assert cursor.fetchone()[0] == 2
    assert connection.connection is not opened


def test_a_connection_with_a_message_waiting_keeps_djangos_health_check(kept_connection):
    """Something to read that is not the end of the connection (here a notification): the check runs and
    the connection, still usable, is kept."""
    from hematovision.celery_connections import socket_says_intact

    opened, checks = kept_connection
    with connection.cursor() as cursor:
        cursor.execute("LISTEN hworker2_test")
    with psycopg.connect(database_url_of(connection.settings_dict), autocommit=True) as other:
        other.execute("NOTIFY hworker2_test")
    wait_until(lambda: not socket_says_intact(connection), timeout=10, what="the notification to arrive")
    assert _first_query_of_next_task() == 2
    assert checks == [opened]
    assert connection.connection is opened
    with connection.cursor() as cursor:
        cursor.execute("UNLISTEN *")


def _other_backends_of_this_database() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.broker
def test_a_worker_whose_database_backend_ended_between_tasks_classifies_the_next_upload(
    tiny_model, technician, technician_api, cell_upload, private_redis_broker, project_celery_sends_to, start_worker
):
    from cases.models import CellImage
    from tests.factories import CaseFactory

    project_celery_sends_to(private_redis_broker)
    worker = start_worker(broker_url=private_redis_broker, HEMATOVISION_TEST_CONN_MAX_AGE="600")
    case = CaseFactory(created_by=technician)

    def classified_upload() -> CellImage:
        response = technician_api.post(
            f"/api/v1/cases/{case.pk}/images/", {"files": [cell_upload()]}, format="multipart"
        )
        assert response.status_code == 201, response.content
        image_id = response.json()["accepted"][0]["id"]
        return wait_until(
            lambda: CellImage.objects.filter(pk=image_id, status=CellImage.Status.CLASSIFIED).first(),
            timeout=60,
            what=f"image {image_id} to be classified\n{worker.log_tail()}",
        )

    assert classified_upload().attempts == 1
    kept = _other_backends_of_this_database()
    assert kept, "the worker kept no database connection after its task"
    for pid in kept:
        _terminate_backend(pid)
    assert classified_upload().attempts == 1  # the first attempt succeeded: no database error, no retry
    assert "database error" not in worker.log_path.read_text(errors="replace")
