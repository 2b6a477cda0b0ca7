"""Adaptation jobs whose worker died end as failed with a clear message, when their pages are viewed and
through `manage.py recover`; a job whose worker is alive and reporting is left alone."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from inference import adaptation
from inference.models import AdaptationJob

MESSAGE = "the worker stopped before the job ended"


def a_dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def running_job(name: str, *, worker: str, heartbeat_age: dt.timedelta = dt.timedelta(0)) -> AdaptationJob:
    now = timezone.now()
    return AdaptationJob.objects.create(
        name=name,
        source_label="Lab North",
        status=AdaptationJob.Status.RUNNING,
        progress=0.4,
        started_at=now - heartbeat_age,
        heartbeat_at=now - heartbeat_age,
        worker=worker,
    )


@pytest.fixture
def here():
    return adaptation.this_worker().rpartition(":")[0]


def test_a_job_whose_process_is_gone_fails_when_its_page_is_viewed(db, here, supervisor, client):
    job = running_job("north-dead", worker=f"{here}:{a_dead_pid()}")
    client.force_login(supervisor)

    page = client.get(reverse("inference:adaptation", args=[job.pk])).content.decode()

    job.refresh_from_db()
    assert job.status == AdaptationJob.Status.FAILED and MESSAGE in job.message and job.finished_at
    assert 'data-status="failed"' in page and MESSAGE in page
    event = AuditEvent.objects.get(action="model_adaptation", object_id=str(job.pk))
    assert event.details["step"] == "finished" and event.details["status"] == "failed"


def test_a_job_that_stopped_reporting_fails_through_recover(db, settings):
    settings.ADAPTATION_STALE_SECONDS = 600
    silent = running_job("elsewhere-silent", worker="another-host:4242", heartbeat_age=dt.timedelta(minutes=11))
    out = StringIO()

    call_command("recover", stdout=out)

    silent.refresh_from_db()
    assert silent.status == AdaptationJob.Status.FAILED and MESSAGE in silent.message
    assert "1 adaptation job(s) whose worker stopped marked failed" in out.getvalue()


def test_a_live_reporting_job_and_finished_jobs_are_left_alone(db, here, supervisor, client, settings):
    settings.ADAPTATION_STALE_SECONDS = 600
    alive = running_job("north-alive", worker=f"{here}:{os.getpid()}", heartbeat_age=dt.timedelta(minutes=2))
    elsewhere = running_job("elsewhere-busy", worker="another-host:4242", heartbeat_age=dt.timedelta(minutes=9))
    done = AdaptationJob.objects.create(
        name="north-done", source_label="Lab North", status=AdaptationJob.Status.DONE, worker=f"{here}:{a_dead_pid()}"
    )
    client.force_login(supervisor)
    assert client.get(reverse("inference:adapt")).status_code == 200
    assert adaptation.fail_dead_jobs() == []
    statuses = dict(AdaptationJob.objects.values_list("name", "status"))
    assert statuses == {alive.name: "running", elsewhere.name: "running", done.name: "done"}


def test_a_job_records_its_worker_and_heartbeat_when_it_starts(tiny_model, supervisor, monkeypatch):
    monkeypatch.setattr(adaptation, "dispatch_adaptation", lambda job_id: None)
    job = adaptation.queue_adaptation(name="beats-1", laboratory_id=None, source_label="all", actor=supervisor)
    seen = {}

    def exporter(**kwargs):
        seen.update(AdaptationJob.objects.filter(pk=job.pk).values("worker", "heartbeat_at", "status").get())
        return {"counts": {"adapt": {}}}

    monkeypatch.setattr(adaptation, "import_string", lambda path: exporter)
    adaptation.run_adaptation_job(job_id=job.pk)
    assert seen["status"] == "running" and seen["worker"] == adaptation.this_worker() and seen["heartbeat_at"]
