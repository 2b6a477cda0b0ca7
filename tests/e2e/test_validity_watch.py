"""The review page's and the differential's "not validated for images like these" banner in Chromium (issue 9):
shown without a reload once the case is escalated, by push (the event's case.model_warning) and by the polling
fallback (a pending image's card comes flagged unvalidated_case); validity_watch.js."""

import pytest
from playwright.sync_api import expect

from cases import events, storage
from cases.models import CellImage
from cases.services import create_case
from tests.cases.images import cell_png
from tests.e2e.conftest import sign_in
from tests.e2e.test_live_grid import READY_SCRIPT
from tests.factories import DEFAULT_PASSWORD, CellImageFactory, ModelVersionFactory, PredictionFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=["push", "polling"])
def transport(request, settings, monkeypatch):
    """push: the in-process channel. polling: push unavailable, as in a multi-process deployment without Redis."""
    settings.EVENTS_REDIS_URL = ""
    if request.param == "polling":
        monkeypatch.setattr(events, "push_available", lambda: False)
    return request.param


@pytest.mark.parametrize("view", ["review", "differential"])
def test_the_banner_shows_once_the_case_is_escalated_without_a_reload(
    live_server, page, technician, pathologist, transport, view
):
    version = ModelVersionFactory(is_active=True)
    case = create_case(accession_id=f"WATCH-{view}-{transport}", created_by=technician)
    classified = CellImageFactory(case=case, storage_key=storage.save(cell_png(0, seed=0)))
    PredictionFactory(image=classified, model_version=version, label="lymphocyte")
    queued = CellImageFactory(case=case, status=CellImage.Status.QUEUED, storage_key=storage.save(cell_png(1, seed=1)))
    if transport == "push":
        page.add_init_script(READY_SCRIPT)
    sign_in(page, live_server, pathologist.email, DEFAULT_PASSWORD)
    page.goto(f"{live_server.url}/cases/{case.pk}/{view}/")
    waiting = page.locator("template[data-validity-warning-template]")
    expect(waiting).to_have_attribute("data-transport", transport)
    if transport == "push":
        page.wait_for_function("() => window.__streamReady === true")
    banner = page.get_by_test_id("model-not-validated")
    expect(banner).to_have_count(0)

    # The task escalates the case: push says so in the event (the cell's own reasons do not name the escalation
    # here, so only the event can); polling finds the pending cell's card flagged for it.
    reasons = ["out_of_distribution"] if transport == "push" else ["out_of_distribution", "unvalidated_case"]
    PredictionFactory(image=queued, model_version=version, label="eosinophil", flagged=True, flag_reasons=reasons)
    queued.status = CellImage.Status.CLASSIFIED
    queued.save(update_fields=["status"])
    events.publish_image_updates(case_id=case.pk, image_ids=[queued.pk], model_warning=True)

    expect(banner).to_have_count(1, timeout=15_000)
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("This model is not validated for images like these.")
    expect(waiting).to_have_count(0)


def test_a_signed_case_is_not_watched(live_server, page, pathologist, technician):
    case = create_case(accession_id="WATCH-SIGNED", created_by=technician)
    case.status = case.Status.SIGNED
    case.save(update_fields=["status"])
    sign_in(page, live_server, pathologist.email, DEFAULT_PASSWORD)
    page.goto(f"{live_server.url}/cases/{case.pk}/differential/")
    expect(page.get_by_test_id("differential-report")).to_be_visible()
    expect(page.locator("template[data-validity-warning-template]")).to_have_count(0)
