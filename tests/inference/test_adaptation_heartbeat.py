"""A running adaptation job's heartbeat is written by a timer thread, so a long step that reports no progress
is not taken for a dead worker (ADAPTATION_STALE_SECONDS)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.utils import timezone

from inference import adaptation
from inference.models import AdaptationJob

SILENT_STEP_SECONDS = 3.0
STALE_SECONDS = 2  # the heartbeat comes every second (heartbeat_interval's floor): never two seconds old
seen_while_silent: dict[str, list] = {}


def silent_exporter(**kwargs):
    """LABORATORY_CELLS_EXPORTER for these tests: a long step without a word, then nothing to adapt on."""
    time.sleep(SILENT_STEP_SECONDS)
    seen_while_silent["dead"] = [job.pk for job in adaptation.dead_jobs()]
    return {"counts": {}, "cases": {}}


def queued_job() -> AdaptationJob:
    return AdaptationJob.objects.create(name="north-adapted", source_label="Lab North")


def heartbeat_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.endswith("-heartbeat")]


@pytest.fixture
def silent_step(settings):
    settings.ADAPTATION_STALE_SECONDS = STALE_SECONDS
    settings.LABORATORY_CELLS_EXPORTER = f"{__name__}.silent_exporter"
    seen_while_silent.clear()


@pytest.mark.django_db(transaction=True)
def test_a_long_silent_step_is_not_taken_for_a_dead_worker(silent_step):
    job = queued_job()

    ended = adaptation.run_adaptation_job(job_id=job.pk)

    assert seen_while_silent["dead"] == []
    assert ended.status == AdaptationJob.Status.FAILED
    assert "no reviewed cells" in ended.message  # its own failure, not "the worker stopped"
    assert heartbeat_threads() == []


@pytest.mark.django_db(transaction=True)
def test_without_the_heartbeat_thread_the_same_step_would_look_dead(silent_step, monkeypatch):
    monkeypatch.setattr(adaptation.JobHeartbeat, "start", lambda heartbeat: heartbeat)
    job = queued_job()

    adaptation.run_adaptation_job(job_id=job.pk)

    assert seen_while_silent["dead"] == [job.pk]


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_leaves_an_ended_job_alone():
    finished_at = timezone.now() - dt.timedelta(hours=1)
    job = AdaptationJob.objects.create(
        name="done", source_label="Lab North", status=AdaptationJob.Status.FAILED, heartbeat_at=finished_at
    )

    assert adaptation.JobHeartbeat(job.pk).beat() is False

    job.refresh_from_db()
    assert job.heartbeat_at == finished_at


@pytest.mark.parametrize(("stale", "interval"), [(900, 60.0), (100, 20.0), (2, 1.0)])
def test_the_heartbeat_comes_well_within_the_stale_time(settings, stale, interval):
    settings.ADAPTATION_STALE_SECONDS = stale

    assert adaptation.heartbeat_interval() == interval
