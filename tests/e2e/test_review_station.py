"""The review station in Chromium: a pathologist reviews a small case without a page reload, reclassifies by key,
adds a smudge cell, signs with re-authentication and downloads the report (PDF and FHIR R4)."""

import json
from pathlib import Path

import pytest
from fhir.resources.diagnosticreport import DiagnosticReport
from playwright.sync_api import expect

from cases.models import Case, CellImage, Review
from cases.services import add_images, create_case
from inference.services import ensure_bundled_model
from tests.e2e.conftest import sign_in
from tests.factories import DEFAULT_PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CLASSES = ("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL", "BASOPHIL", "IG")
CELLS_PER_CLASS = 2


def small_case(pbc_dir: Path, technician) -> Case:
    ensure_bundled_model()
    case = create_case(accession_id="E2E-REVIEW", created_by=technician, patient_reference="MRN-E2E-R")
    paths = [path for label in CLASSES for path in sorted((pbc_dir / "test" / label).glob("*.jpg"))[:CELLS_PER_CLASS]]
    handles = [path.open("rb") for path in paths]
    try:
        accepted, rejected = add_images(case=case, files=handles, uploaded_by=technician)
    finally:
        for handle in handles:
            handle.close()
    assert len(accepted) == len(paths) and not rejected
    assert case.images.filter(status=CellImage.Status.CLASSIFIED).count() == len(paths)
    return case


def card(page, image_id):
    return page.locator(f'[data-testid=review-cell][data-image-id="{image_id}"]')


def test_pathologist_reviews_without_reload_reclassifies_by_key_and_signs_again(
    live_server, page, screenshot, technician, pathologist, pbc_dir
):
    case = small_case(pbc_dir, technician)
    total = case.images.count()
    sign_in(page, live_server, pathologist.email, DEFAULT_PASSWORD)
    page.set_viewport_size({"width": 1366, "height": 700})
    page.goto(f"{live_server.url}/cases/{case.pk}/review/")
    cells = page.get_by_test_id("review-cell")
    expect(cells).to_have_count(total)
    # A marker that survives only as long as the page is not reloaded.
    page.evaluate("window.__sameDocument = 'yes'")

    # The key of a class reclassifies the focused cell at once; it moves to its new group; no reason needed.
    keys = {
        button.get_attribute("data-label"): button.get_attribute("data-class-key")
        for button in page.get_by_test_id("class-key").all()
    }
    acted = cells.nth(total - 4)
    image_id = acted.get_attribute("data-image-id")
    following = cells.nth(total - 3).get_attribute("data-image-id")  # gets the focus next
    predicted = acted.get_attribute("data-predicted")
    new_label = "BASOPHIL" if predicted != "BASOPHIL" else "IG"
    acted.scroll_into_view_if_needed()
    acted.focus()
    assert page.evaluate("window.scrollY") > 0
    top_before = card(page, following).bounding_box()["y"]
    image_requests = []
    page.on("request", lambda request: image_requests.append(request.url) if "/cases/images/" in request.url else None)
    page.keyboard.press(keys[new_label])
    moved = page.locator(f'[data-testid=cell-group][data-group="{new_label}"] [data-image-id="{image_id}"]')
    expect(moved).to_have_attribute("data-final", new_label)
    expect(page.get_by_test_id("review-notice")).to_contain_text("reclassified")
    # What the reviewer looks at stays in place: the next cell is where it was and has the focus.
    expect(card(page, following)).to_be_focused()
    assert abs(card(page, following).bounding_box()["y"] - top_before) <= 2
    # The moved cell and its neighbour keep their thumbnails (lazy thumbnails further down may load meanwhile).
    again = [url for url in image_requests if any(f"/images/{cell}/" in url for cell in (image_id, following))]
    assert again == []
    screenshot("review-station-1366")

    # Select another cell by click and mark it a smudge cell with its key: counted apart, in its own group.
    smudge = page.locator("[data-testid=review-cell][data-reviewed=false]").first
    smudge_id = smudge.get_attribute("data-image-id")
    smudge.get_by_test_id("review-thumbnail").click()
    expect(page.get_by_test_id("selection-count")).to_have_text("1")
    page.keyboard.press(keys["smudge"])
    expect(page.locator(f'[data-testid=cell-group][data-group="smudge"] [data-image-id="{smudge_id}"]')).to_be_visible()
    expect(page.locator('[data-testid=running-row][data-label="smudge"]')).to_have_attribute("data-count", "1")
    expect(card(page, smudge_id).get_by_test_id("cell-select")).to_be_checked()  # the selection is kept

    # Confirm one cell with "c"; the running differential and the progress follow without a reload.
    page.keyboard.press("Escape")
    first_unreviewed = page.locator("[data-testid=review-cell][data-reviewed=false]").first
    first_unreviewed.focus()
    page.keyboard.press("c")
    expect(page.get_by_test_id("review-progress")).to_have_attribute("data-reviewed", "3")
    assert page.evaluate("window.__sameDocument") == "yes"

    # Zoom shows the cell large, with its Grad-CAM heat map at an adjustable opacity and a colour scale.
    card(page, image_id).get_by_test_id("zoom-cell").click()
    expect(page.get_by_test_id("zoom-dialog")).to_be_visible()
    page.get_by_test_id("gradcam-toggle").click()
    expect(page.get_by_test_id("zoom-heatmap")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("gradcam-legend")).to_be_visible()
    page.get_by_test_id("gradcam-opacity").fill("80")
    assert page.get_by_test_id("zoom-heatmap").evaluate("img => img.style.opacity") == "0.8"
    page.get_by_test_id("gradcam-opacity").fill("50")
    screenshot("review-zoom-gradcam-1366")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("zoom-dialog")).to_be_hidden()

    # "Confirm all unreviewed" asks first.
    page.get_by_test_id("confirm-unreviewed").click()
    expect(page.get_by_test_id("confirm-summary")).to_contain_text(f"{total - 3} cell(s)")
    page.get_by_test_id("confirm-yes").check()
    page.get_by_test_id("confirm-unreviewed-submit").click()
    expect(page.locator('[data-testid=review-cell][data-reviewed="false"]')).to_have_count(0)

    # Signing asks for the password again; a wrong one signs nothing.
    page.get_by_test_id("sign-case").click()
    page.get_by_test_id("sign-password").fill("not the password")
    page.get_by_test_id("sign-submit").click()
    expect(page.get_by_test_id("sign-error")).to_contain_text("password is not right")
    case.refresh_from_db()
    assert case.status != Case.Status.SIGNED
    page.get_by_test_id("sign-password").fill(DEFAULT_PASSWORD)
    page.get_by_test_id("sign-submit").click()
    expect(page.get_by_test_id("review-status")).to_have_attribute("data-status", "signed")

    # The signed report: the page, then its PDF and its FHIR R4 DiagnosticReport as downloads.
    page.get_by_test_id("open-report").click()
    expect(page.get_by_test_id("report-status")).to_have_text("Final")
    expect(page.get_by_test_id("report-apart")).to_contain_text("Smudge cell 1")
    screenshot("report-1366")
    with page.expect_download() as pdf_download:
        page.get_by_test_id("report-pdf").click()
    pdf = Path(pdf_download.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf_download.value.suggested_filename == "report-E2E-REVIEW.pdf"
    with page.expect_download() as fhir_download:
        page.get_by_test_id("report-fhir").click()
    fhir = DiagnosticReport.parse_obj(json.loads(Path(fhir_download.value.path()).read_text()))
    assert (fhir.status, fhir.identifier[0].value) == ("final", "E2E-REVIEW")
    assert {observation.code.coding[0].code for observation in fhir.contained if observation.code.coding} >= {
        "26511-6",
        "26478-8",
    }

    case.refresh_from_db()
    assert (case.status, case.signed_by) == (Case.Status.SIGNED, pathologist)
    override = Review.objects.filter(image_id=image_id).get()
    assert (override.kind, override.from_label, override.to_label, override.reason) == (
        "override",
        predicted,
        new_label,
        "",
    )
    assert Review.objects.get(image_id=smudge_id).to_label == "smudge"
