"""A whole microscope field dropped on the case page in Chromium: the field shows with a box per cell found,
and each found cell gets its own card with its label, by push and by the polling fallback."""

from pathlib import Path

import pytest
from django.conf import settings as django_settings
from PIL import Image
from playwright.sync_api import expect

from cases import events
from cases.models import CellImage
from cases.services import create_case
from inference.locate import locate_cells
from inference.services import ensure_bundled_model
from tests.conftest import skip_or_fail
from tests.e2e.conftest import sign_in
from tests.factories import DEFAULT_PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def olympus_field_with_cells() -> tuple[Path, int]:
    folder = Path(django_settings.SHARED_DATA_DIR) / "datasets" / "olympus" / "images" / "test"
    if not folder.is_dir():
        skip_or_fail(f"olympus test fields not found at {folder}")
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as opened:
            location = locate_cells(opened.convert("RGB"))
        if location.layout == "field" and len(location.cells) >= 2:
            return path, len(location.cells)
    pytest.fail("no olympus test field holds two cells the finder sees")


@pytest.mark.parametrize("transport", ["push", "polling"])
def test_a_dropped_field_shows_its_boxes_and_a_card_per_cell(
    live_server, page, technician, settings, monkeypatch, transport
):
    settings.EVENTS_REDIS_URL = ""
    if transport == "polling":
        monkeypatch.setattr(events, "push_available", lambda: False)
    ensure_bundled_model()
    path, expected = olympus_field_with_cells()
    case = create_case(accession_id=f"FIELD-{transport}", created_by=technician)
    sign_in(page, live_server, technician.email, DEFAULT_PASSWORD)
    page.goto(f"{live_server.url}/cases/{case.pk}/")
    expect(page.get_by_test_id("upload-submit")).to_be_hidden()

    page.get_by_test_id("upload-input").set_input_files([str(path)])

    field_card = page.get_by_test_id("field-card")
    expect(field_card).to_have_count(1, timeout=30_000)
    expect(field_card.get_by_test_id("field-box")).to_have_count(expected)
    grid = page.get_by_test_id("cell-grid")
    expect(grid.get_by_test_id("cell-card")).to_have_count(expected, timeout=20_000)
    expect(grid.get_by_test_id("prediction-label")).to_have_count(expected)
    expect(page.get_by_test_id("case-status")).to_have_text("Awaiting review")
    preview = field_card.get_by_test_id("field-preview")
    expect(preview).to_be_visible()
    assert preview.evaluate("img => img.complete && img.naturalWidth > 0")
    assert CellImage.objects.cells().filter(case=case).count() == expected
