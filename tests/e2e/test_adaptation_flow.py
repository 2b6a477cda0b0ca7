"""The adaptation walk in Chromium: a supervisor adapts the model to a laboratory and compares; an admin
activates the candidate through the gate and rolls back in one click; the audit trail has every step.

A tiny model and a few tiny reviewed cases keep the job to seconds; it runs in a thread of the test process
(the training worker's part, `run_adaptation_job`), so the page shows it queued, running and done."""

from __future__ import annotations

import re
import threading

import pytest
from django.db import connection
from playwright.sync_api import expect

from audit.models import AuditEvent
from cases.models import ShadowPrediction
from cases.review_services import review_cells
from inference import adaptation
from inference.models import AdaptationJob, ModelVersion
from inference.predictor import reset_predictor
from inference.testing import build_tiny_model_version
from tests.e2e.test_browser_flows import use_session_of
from tests.factories import LaboratoryFactory
from tests.inference.test_adaptation import TINY, reviewed_case

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1366, "height": 900}


def run_in_a_thread(job_id: int) -> None:
    """ADAPTATION_RUNNER's part for the test: the job in a thread of this process, with the tiny config."""

    def work():
        try:
            adaptation.run_adaptation_job(job_id=job_id, config=TINY)
        finally:
            connection.close()

    threading.Thread(target=work, name=f"adaptation-{job_id}", daemon=True).start()


def shots(page, screenshot, name: str) -> None:
    """The page at 1366 px, then at 375 px (a phone), back to 1366."""
    screenshot(f"{name}-1366")
    page.set_viewport_size(PHONE)
    screenshot(f"{name}-375")
    page.set_viewport_size(DESKTOP)


def test_supervisor_adapts_and_compares_admin_activates_and_rolls_back_then_runs_it_in_shadow(
    live_server, page, screenshot, technician, pathologist, supervisor, admin_user, monkeypatch
):
    reset_predictor()
    base = build_tiny_model_version(name="tiny-base")
    lab = LaboratoryFactory(name="Lab North")
    for seed in range(4):
        reviewed_case(technician, pathologist, laboratory=lab, cells_per_class=3, seed=seed)
    monkeypatch.setattr(adaptation, "dispatch_adaptation", run_in_a_thread)

    # A supervisor starts the adaptation from the page and watches it.
    use_session_of(page, live_server, supervisor)
    page.goto(f"{live_server.url}/models/adapt/")
    form = page.get_by_test_id("adapt-form")
    form.locator("input[name=name]").fill("north-e2e")
    form.locator("select[name=laboratory]").select_option(value=str(lab.pk))
    page.get_by_test_id("adapt-start").click()
    progress = page.get_by_test_id("adaptation-progress")
    expect(progress).to_be_visible()
    assert progress.get_attribute("data-status") in {"queued", "running", "done"}
    # The page refreshes itself every few seconds until the job ends.
    expect(progress).to_have_attribute("data-status", "done", timeout=180_000)
    expect(progress).to_have_attribute("aria-valuenow", "100")
    job = AdaptationJob.objects.get(name="north-e2e")
    candidate = job.version
    assert candidate is not None and not candidate.is_active
    shots(page, screenshot, "adaptation-done")

    page.get_by_test_id("adaptation-compare").click()
    expect(page.get_by_test_id("comparison-table").first).to_be_visible()
    expect(page.get_by_test_id("recall-table").first).to_be_visible()
    expect(page.get_by_test_id("confirm-activate")).to_have_count(0)  # supervisors compare; admins activate

    # An admin opens the comparison, activates with the confirmation, and rolls back.
    page.context.clear_cookies()
    use_session_of(page, live_server, admin_user)
    page.goto(f"{live_server.url}/models/{candidate.pk}/compare/")
    expect(page.get_by_test_id("comparison-table").first).to_be_visible()
    shots(page, screenshot, "adaptation-compare")
    page.get_by_test_id("confirm-activate").click()
    candidate_row = page.locator(f'[data-testid="model-row"][data-name="{candidate.name}"]')
    expect(candidate_row).to_have_attribute("data-active", "true")
    expect(page.get_by_test_id("model-rollback")).to_contain_text(base.name)
    shots(page, screenshot, "models-after-activation")
    assert ModelVersion.objects.get(is_active=True) == candidate

    page.get_by_test_id("model-rollback").click()
    expect(page.locator(f'[data-testid="model-row"][data-name="{base.name}"]')).to_have_attribute("data-active", "true")
    expect(candidate_row).to_have_attribute("data-active", "false")
    assert ModelVersion.objects.get(is_active=True) == base

    # Each step is in the audit trail, with who did it.
    steps = list(AuditEvent.objects.order_by("id").values_list("action", "details__step", "actor_id"))
    assert ("model_adaptation", "queued", supervisor.pk) in steps
    assert ("model_adaptation", "finished", None) in steps
    assert AuditEvent.objects.filter(action="model_evaluated", object_id=str(candidate.pk)).exists()
    assert AuditEvent.objects.get(action="model_activated", object_id=str(candidate.pk)).actor == admin_user
    assert AuditEvent.objects.get(action="model_rolled_back", object_id=str(base.pk)).actor == admin_user
    page.goto(f"{live_server.url}/reports/audit/")
    table = page.get_by_test_id("audit-table")
    for action in ("model.adaptation", "model.evaluated", "model.activated", "model.rolled.back"):
        expect(table.get_by_text(re.compile(action, re.IGNORECASE)).first).to_be_visible()

    # The admin runs the candidate in shadow; new cells are classified by both, the technician sees one.
    page.goto(f"{live_server.url}/models/")
    candidate_row.get_by_test_id("shadow-start").click()
    expect(page.get_by_test_id("shadow-banner")).to_contain_text(candidate.name)
    expect(candidate_row).to_have_attribute("data-shadow", "true")
    shots(page, screenshot, "models-shadow")
    case = reviewed_case(technician, pathologist, laboratory=lab, cells_per_class=2, seed=7, sign=False)
    cells = list(case.images.order_by("pk"))
    assert ShadowPrediction.objects.filter(image__in=cells, model_version=candidate).count() == len(cells)
    for cell in cells:  # the final labels the dashboard compares both versions with
        review_cells(case=case, image_ids=[cell.pk], reviewer=pathologist, to_label=cell.reviews.latest("pk").to_label)

    page.context.clear_cookies()
    use_session_of(page, live_server, supervisor)
    page.goto(f"{live_server.url}/reports/dashboard/")
    comparison = page.get_by_test_id("shadow-comparison")
    expect(comparison).to_have_attribute("data-shadow", candidate.name)
    expect(comparison).to_have_attribute("data-active", base.name)
    expect(page.get_by_test_id("shadow-n")).to_have_text(str(len(cells)))
    comparison.scroll_into_view_if_needed()
    shots(page, screenshot, "dashboard-shadow")
