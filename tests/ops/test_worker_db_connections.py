"""Celery workers keep their database connection between tasks, under Django's own rules
(hematovision/celery_connections.py), instead of Celery's default of a new connection for every task."""

import time
from types import SimpleNamespace

import pytest
from celery.fixups.django import DjangoWorkerFixup
from celery.signals import task_postrun, task_prerun
from django.conf import settings
from django.db import connection

from hematovision.celery import app

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
