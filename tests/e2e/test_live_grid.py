"""The case page's live cell grid in Chromium: every uploaded cell shows up with its label, by push and by
the polling fallback, also when the grid's own requests are slow (issue 13: after 5 cells, 25 more at once
left 30 "queued" bars, 29 cards and no more refreshes)."""

import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from cases import events, selectors, storage
from cases.models import CellImage
from cases.services import create_case
from inference.services import ensure_bundled_model
from tests.cases.images import cell_png
from tests.e2e.conftest import sign_in
from tests.factories import DEFAULT_PASSWORD, CellImageFactory, ModelVersionFactory, PredictionFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def pbc_files(pbc_dir: Path, count: int) -> list[Path]:
    files = sorted((pbc_dir / "test").rglob("*.jpg"))
    # Spread over the classes, distinct images (a case refuses a duplicate).
    return files[:: max(1, len(files) // count)][:count]


@pytest.fixture
def slow_grid(monkeypatch):
    """Every read of the grid's cells answers 0.6 s late with what was true when it was asked, as on a
    busy server: refreshes overlap the uploads that trigger them."""
    original = selectors.cell_cards

    def slow_cell_cards(*args, **kwargs):
        cards = original(*args, **kwargs)
        time.sleep(0.6)
        return cards

    monkeypatch.setattr(selectors, "cell_cards", slow_cell_cards)


@pytest.fixture(params=["push", "polling"])
def transport(request, settings, monkeypatch):
    """push: the in-process channel (tasks run in the server's threads). polling: push unavailable, as in a
    multi-process deployment without Redis."""
    settings.EVENTS_REDIS_URL = ""
    if request.param == "polling":
        monkeypatch.setattr(events, "push_available", lambda: False)
    return request.param


def open_case(page, live_server, technician, accession: str):
    case = create_case(accession_id=accession, created_by=technician)
    sign_in(page, live_server, technician.email, DEFAULT_PASSWORD)
    page.goto(f"{live_server.url}/cases/{case.pk}/")
    expect(page.get_by_test_id("upload-submit")).to_be_hidden()
    return case


def test_five_then_twenty_five_at_once_all_thirty_show_with_labels(
    live_server, page, technician, pbc_dir, slow_grid, transport
):
    ensure_bundled_model()
    files = pbc_files(pbc_dir, 30)
    case = open_case(page, live_server, technician, f"LIVE-{transport}")
    grid = page.get_by_test_id("cell-grid")
    expect(grid).to_have_attribute("data-transport", transport)

    page.get_by_test_id("upload-input").set_input_files([str(path) for path in files[:5]])
    expect(grid.get_by_test_id("prediction-label")).to_have_count(5, timeout=30_000)

    page.get_by_test_id("upload-input").set_input_files([str(path) for path in files[5:]])

    expect(page.locator('[data-testid=upload-progress][data-state="done"]')).to_have_count(30, timeout=60_000)
    expect(grid.get_by_test_id("cell-card")).to_have_count(30, timeout=20_000)
    expect(grid.get_by_test_id("prediction-label")).to_have_count(30, timeout=20_000)
    expect(grid.locator('[data-testid=cell-card][data-status="classified"]')).to_have_count(30)
    expect(page.get_by_test_id("case-status")).to_have_text("Awaiting review")
    assert CellImage.objects.filter(case=case, status=CellImage.Status.CLASSIFIED).count() == 30


# Records the stream's "ready" event: the page then gets every event published after it.
READY_SCRIPT = """
(() => {
  const Original = window.EventSource;
  window.EventSource = function (url, options) {
    const source = new Original(url, options);
    source.addEventListener("ready", () => { window.__streamReady = true; });
    return source;
  };
  window.EventSource.prototype = Original.prototype;
})();
"""


def test_a_pushed_classified_cell_gets_its_label_from_the_event_without_a_cards_request(
    live_server, page, technician, settings
):
    """Issue 12: a plain classified cell shown as queued is labelled from its event (the active model's class
    names, in the page's language); a flagged one, which shows more than the event's words, is fetched."""
    settings.EVENTS_REDIS_URL = ""  # the in-process channel
    version = ModelVersionFactory(is_active=True)
    page.add_init_script(READY_SCRIPT)
    case = open_case(page, live_server, technician, "LIVE-FILL")
    page.wait_for_function("() => window.__streamReady === true")
    plain, flagged = (
        CellImageFactory(case=case, status=CellImage.Status.QUEUED, storage_key=storage.save(cell_png(n, seed=n)))
        for n in range(2)
    )
    events.publish_image_updates(case_id=case.pk, image_ids=[plain.pk, flagged.pk])
    grid = page.get_by_test_id("cell-grid")
    expect(grid.locator('[data-testid=cell-card][data-status="queued"]')).to_have_count(2)

    cards_requests: list[str] = []
    page.on("request", lambda request: cards_requests.append(request.url) if "/cards/" in request.url else None)
    for image, is_flagged in ((plain, False), (flagged, True)):
        PredictionFactory(image=image, model_version=version, label="eosinophil", confidence=0.873, flagged=is_flagged)
        image.status = CellImage.Status.CLASSIFIED
        image.save(update_fields=["status"])
    events.publish_image_updates(case_id=case.pk, image_ids=[plain.pk, flagged.pk])

    plain_card = grid.locator(f'[data-testid=cell-card][data-image-id="{plain.pk}"]')
    expect(plain_card.get_by_test_id("prediction-label")).to_have_text("Eosinophil")
    expect(plain_card.get_by_test_id("prediction-label")).to_have_attribute("data-label", "eosinophil")
    expect(plain_card.get_by_test_id("prediction-confidence")).to_have_text("87%")
    expect(plain_card.get_by_test_id("cell-status")).to_have_text("Classified")
    expect(plain_card).to_have_attribute("data-status", "classified")
    flagged_card = grid.locator(f'[data-testid=cell-card][data-image-id="{flagged.pk}"]')
    expect(flagged_card.get_by_test_id("cell-flagged")).to_be_visible()
    expect(grid).to_have_attribute("data-pending", "false")
    fetched = [url.split("ids=", 1)[1].split("&")[0].split(",") for url in cards_requests if "ids=" in url]
    assert any(str(flagged.pk) in ids for ids in fetched)
    assert all(str(plain.pk) not in ids for ids in fetched)


def test_an_escalated_case_shows_its_not_validated_banner_without_a_reload(live_server, page, technician, transport):
    """Issue 9: push, the event's case.model_warning shows the banner (the cell's own reasons do not name the
    escalation here, so only the event can); polling, a fetched card flagged unvalidated_case does."""
    version = ModelVersionFactory(is_active=True)
    if transport == "push":
        page.add_init_script(READY_SCRIPT)
    case = open_case(page, live_server, technician, f"LIVE-BANNER-{transport}")
    if transport == "push":
        page.wait_for_function("() => window.__streamReady === true")
    banner = page.get_by_test_id("model-not-validated")
    expect(banner).to_have_count(0)
    image = CellImageFactory(case=case, status=CellImage.Status.QUEUED, storage_key=storage.save(cell_png(1, seed=1)))
    events.publish_image_updates(case_id=case.pk, image_ids=[image.pk])
    if transport == "polling":
        page.evaluate(f"window.HematoVisionGrid.track([{image.pk}])")  # as the upload script does
    card = page.get_by_test_id("cell-grid").locator(f'[data-testid=cell-card][data-image-id="{image.pk}"]')
    expect(card).to_have_attribute("data-status", "queued")

    reasons = ["out_of_distribution"] if transport == "push" else ["out_of_distribution", "unvalidated_case"]
    PredictionFactory(
        image=image, model_version=version, label="eosinophil", confidence=0.9, flagged=True, flag_reasons=reasons
    )
    image.status = CellImage.Status.CLASSIFIED
    image.save(update_fields=["status"])
    events.publish_image_updates(case_id=case.pk, image_ids=[image.pk], model_warning=True)

    expect(card).to_have_attribute("data-status", "classified")
    expect(banner).to_have_count(1)
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("This model is not validated for images like these.")


def test_with_a_broker_the_page_draws_the_queued_cards_as_the_server_renders_them(
    live_server, page, technician, pbc_dir, transport, settings, monkeypatch
):
    """With a broker the upload's answer carries no cards (the server renders none per upload): the page draws
    each accepted cell from its queued card. Drawn cards equal the server's own (cases:cards), name and id
    included; here nothing classifies them, so they stay queued."""
    import cases.services

    settings.CELERY_TASK_ALWAYS_EAGER = False  # the answer as with a broker
    sent: list[list[int]] = []
    monkeypatch.setattr(cases.services, "enqueue_classification", lambda *, image_ids: sent.append(list(image_ids)))
    files = pbc_files(pbc_dir, 3)
    case = open_case(page, live_server, technician, f"LIVE-QUEUED-{transport}")
    grid = page.get_by_test_id("cell-grid")
    uploads = []
    page.on("response", lambda response: uploads.append(response) if response.request.method == "POST" else None)

    page.get_by_test_id("upload-input").set_input_files([str(path) for path in files])

    expect(page.locator('[data-testid=upload-progress][data-state="done"]')).to_have_count(3, timeout=30_000)
    expect(grid.locator('[data-testid=cell-card][data-status="queued"]')).to_have_count(3)
    answers = [response.json() for response in uploads if response.url.endswith(f"/cases/{case.pk}/images/")]
    assert answers and all(answer["accepted"] and "cards" not in answer for answer in answers)
    ids = sorted(image.pk for image in CellImage.objects.filter(case=case))
    assert sorted(pk for batch in sent for pk in batch) == ids
    same = page.evaluate(
        """async ([url, ids]) => {
          const drawn = ids.map((id) => document.querySelector(`[data-cell-col="${id}"]`).outerHTML);
          const answer = await (await fetch(`${url}?ids=${ids.join(",")}`)).text();
          const template = document.createElement("template");
          template.innerHTML = answer;
          const served = ids.map((id) => template.content.querySelector(`[data-cell-col="${id}"]`).outerHTML);
          return drawn.map((html, index) => html === served[index]);
        }""",
        [grid.get_attribute("data-cards-url"), ids],
    )
    assert same == [True, True, True]
    names = grid.locator("[data-cell-name]").all_inner_texts()
    assert sorted(names) == sorted(path.name for path in files)


def test_a_pushed_case_status_sets_the_badge_without_a_cards_request(live_server, page, technician, settings):
    """The badge follows the event's case status in the page's words; no card is fetched for it."""
    from cases.models import Case

    settings.EVENTS_REDIS_URL = ""  # the in-process channel
    page.add_init_script(READY_SCRIPT)
    case = open_case(page, live_server, technician, "LIVE-BADGE")
    cell = CellImageFactory(case=case, status=CellImage.Status.QUEUED, storage_key=storage.save(cell_png(0, seed=0)))
    page.wait_for_function("() => window.__streamReady === true")
    events.publish_image_updates(case_id=case.pk, image_ids=[cell.pk])
    grid = page.get_by_test_id("cell-grid")
    expect(grid.locator(f'[data-testid=cell-card][data-image-id="{cell.pk}"]')).to_have_count(1)

    cards_requests: list[str] = []
    page.on("request", lambda request: cards_requests.append(request.url) if "/cards/" in request.url else None)
    Case.objects.filter(pk=case.pk).update(status=Case.Status.CLASSIFYING)
    events.publish_image_updates(case_id=case.pk, image_ids=[cell.pk])

    badge = page.get_by_test_id("case-status")
    expect(badge).to_have_text("Classifying")
    expect(badge).to_have_attribute("data-status", "classifying")
    page.wait_for_timeout(500)
    assert cards_requests == []
