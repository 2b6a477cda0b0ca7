"""The review station in Chromium on a 101-cell case: a pathologist reviews every cell without a page reload
(scrolled far down the gallery, reclassifying by key, marking a smudge cell, confirming group by group) until the
100-leukocyte target is reached, signs with re-authentication and downloads the report (PDF and FHIR R4); the
zoom shows a cell's Grad-CAM; the case's pages fit a phone (375 px) and the review page has no serious axe-core
violation. Screenshots go to docs/screenshots/."""

import json
import re
import time
from pathlib import Path

import pytest
from fhir.resources.diagnosticreport import DiagnosticReport
from playwright.sync_api import expect

from cases.models import Case, CellImage, Review
from cases.review_services import review_cells
from cases.services import add_images, create_case
from inference.services import ensure_bundled_model
from tests.e2e.conftest import sign_in
from tests.e2e.seed import seed_review_case
from tests.factories import DEFAULT_PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CLASSES = ("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL", "BASOPHIL", "IG")
CELLS_PER_CLASS = 2
WIDTHS = {"1366": (1366, 900), "375": (375, 812)}


def small_case(pbc_dir: Path, technician) -> Case:
    """Twelve cells uploaded and classified by the bundled model (the accessibility test's case)."""
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


def running_count(page, label: str) -> int:
    return int(page.locator(f'[data-testid=running-row][data-label="{label}"]').get_attribute("data-count"))


def same_document(page) -> bool:
    """True while the page has not been reloaded or left: the marker survives and there was one navigation."""
    return page.evaluate("window.__sameDocument === 'yes' && performance.getEntriesByType('navigation').length === 1")


def test_pathologist_reviews_a_hundred_cells_without_reload_reclassifies_by_key_and_signs_again(
    live_server, page, screenshot, technician, pathologist, pbc_dir
):
    started = time.monotonic()
    case = seed_review_case(pbc_dir=pbc_dir, technician=technician, accession_id="E2E-REVIEW-100")
    total = case.images.count()
    assert total == 101  # one becomes a smudge cell: 100 leukocytes, the first target count
    sign_in(page, live_server, pathologist.email, DEFAULT_PASSWORD)
    page.set_viewport_size({"width": 1366, "height": 700})
    page.goto(f"{live_server.url}/cases/{case.pk}/review/")
    cells = page.get_by_test_id("review-cell")
    expect(cells).to_have_count(total)
    page.evaluate("window.__sameDocument = 'yes'")
    expect(page.get_by_test_id("target-count")).to_have_value("100")
    expect(page.get_by_test_id("target-progress")).to_have_text("0 / 100 leukocytes counted")
    keys = {
        button.get_attribute("data-label"): button.get_attribute("data-class-key")
        for button in page.get_by_test_id("class-key").all()
    }

    # Far down the gallery (the 80th cell, a neutrophil), the key of a class reclassifies the focused cell at
    # once: it moves to its new group, no reason asked, and the reviewer's place on the page is kept.
    acted = cells.nth(79)
    image_id = acted.get_attribute("data-image-id")
    following = cells.nth(80).get_attribute("data-image-id")  # gets the focus next
    predicted = acted.get_attribute("data-predicted")
    new_label = "LYMPHOCYTE"
    assert predicted == "NEUTROPHIL"
    neutrophils, lymphocytes = running_count(page, "NEUTROPHIL"), running_count(page, "LYMPHOCYTE")
    acted.scroll_into_view_if_needed()
    acted.focus()
    scrolled = page.evaluate("window.scrollY")
    assert scrolled > 2000, scrolled
    # Their lazy thumbnails have finished their first load, so any request from here on is a re-fetch.
    for cell in (image_id, following):
        page.wait_for_function(
            "(el) => { const img = el.querySelector('img'); return !img || (img.complete && img.naturalWidth > 0); }",
            arg=card(page, cell).element_handle(),
        )
    top_before = card(page, following).bounding_box()["y"]
    image_requests = []
    page.on("request", lambda request: image_requests.append(request.url) if "/cases/images/" in request.url else None)
    page.keyboard.press(keys[new_label])
    moved = page.locator(f'[data-testid=cell-group][data-group="{new_label}"] [data-image-id="{image_id}"]')
    expect(moved).to_have_attribute("data-final", new_label)
    expect(page.get_by_test_id("review-notice")).to_contain_text("reclassified")
    expect(card(page, following)).to_be_focused()
    assert abs(card(page, following).bounding_box()["y"] - top_before) <= 2
    assert page.evaluate("window.scrollY") > scrolled / 2  # not back at the top
    # The running differential and the target's progress follow at once.
    expect(page.get_by_test_id("review-progress")).to_have_attribute("data-reviewed", "1")
    expect(page.get_by_test_id("target-progress")).to_have_text("1 / 100 leukocytes counted")
    assert (running_count(page, "NEUTROPHIL"), running_count(page, "LYMPHOCYTE")) == (neutrophils - 1, lymphocytes + 1)
    # The moved cell and its neighbour keep their thumbnails (lazy thumbnails further down may load meanwhile).
    again = [url for url in image_requests if any(f"/images/{cell}/" in url for cell in (image_id, following))]
    assert again == []
    assert same_document(page)
    screenshot("review-station-1366", full_page=False)  # far down the gallery, where the reviewer is

    # The sticky toolbar hides nothing the reviewer works with: the running differential beside the gallery
    # starts below it, and a row reached by arrow keys is brought out from under it.
    toolbar = page.get_by_test_id("review-toolbar").bounding_box()
    toolbar_bottom = toolbar["y"] + toolbar["height"]
    assert page.get_by_test_id("running-differential").bounding_box()["y"] >= toolbar_bottom
    for _ in range(3):
        page.keyboard.press("ArrowUp")
    page.wait_for_function(
        "bottom => document.activeElement.getBoundingClientRect().top >= bottom", arg=toolbar_bottom, timeout=5_000
    )

    # Select another cell by click and mark it a smudge cell with its key: counted apart, not a leukocyte.
    smudge = page.locator("[data-testid=review-cell][data-reviewed=false]").nth(60)
    smudge_id = smudge.get_attribute("data-image-id")
    smudge.get_by_test_id("review-thumbnail").click()
    expect(page.get_by_test_id("selection-count")).to_have_text("1")
    page.keyboard.press(keys["smudge"])
    expect(page.locator(f'[data-testid=cell-group][data-group="smudge"] [data-image-id="{smudge_id}"]')).to_be_visible()
    expect(page.locator('[data-testid=running-row][data-label="smudge"]')).to_have_attribute("data-count", "1")
    expect(page.get_by_test_id("review-progress")).to_have_attribute("data-reviewed", "2")
    expect(page.get_by_test_id("target-progress")).to_have_text("1 / 100 leukocytes counted")
    expect(card(page, smudge_id).get_by_test_id("cell-select")).to_be_checked()  # the selection is kept

    # "c" confirms the focused cell and moves on to the next unreviewed one.
    page.keyboard.press("Escape")
    first = page.locator("[data-testid=review-cell][data-reviewed=false]").first
    first.focus()
    for reviewed in (3, 4, 5):
        page.keyboard.press("c")
        expect(page.get_by_test_id("review-progress")).to_have_attribute("data-reviewed", str(reviewed))
    expect(page.get_by_test_id("target-progress")).to_have_text("4 / 100 leukocytes counted")

    # The rest, group by group: click the cells that look right, confirm the selection with "c".
    groups = [group.get_attribute("data-group") for group in page.get_by_test_id("cell-group").all()]
    for group in groups:
        waiting = page.locator(
            f'[data-testid=cell-group][data-group="{group}"] [data-testid=review-cell][data-reviewed=false]'
        )
        count = waiting.count()
        if not count:
            continue
        for index in range(count):
            waiting.nth(index).get_by_test_id("review-thumbnail").click()
        expect(page.get_by_test_id("selection-count")).to_have_text(str(count))
        page.keyboard.press("c")
        expect(waiting).to_have_count(0)
        page.keyboard.press("Escape")
    expect(page.get_by_test_id("review-progress")).to_have_attribute("data-reviewed", str(total))
    expect(page.get_by_test_id("target-progress")).to_have_text("100 / 100 leukocytes counted — target reached")
    expect(page.locator('[data-testid=running-row][data-label="smudge"]')).to_have_attribute("data-count", "1")
    assert same_document(page), "the review reloaded the page"
    review_seconds = time.monotonic() - started

    # Signing asks for the password again; a wrong one signs nothing.
    page.get_by_test_id("sign-case").click()
    expect(page.get_by_test_id("sign-summary")).to_contain_text(re.compile(r"\b100 leukocytes? counted"))
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
    assert pdf.startswith(b"%PDF-") and pdf_download.value.suggested_filename == "report-E2E-REVIEW-100.pdf"
    assert b"E2E-REVIEW-100" in pdf  # the document names the case (its title; the page text is compressed)
    with page.expect_download() as fhir_download:
        page.get_by_test_id("report-fhir").click()
    document = json.loads(Path(fhir_download.value.path()).read_text())
    assert document["resourceType"] == "DiagnosticReport"
    fhir = DiagnosticReport.parse_obj(document)
    assert (fhir.status, fhir.identifier[0].value) == ("final", "E2E-REVIEW-100")
    assert {observation.code.coding[0].code for observation in fhir.contained if observation.code.coding} >= {
        "26511-6",
        "26478-8",
    }

    case.refresh_from_db()
    assert (case.status, case.signed_by) == (Case.Status.SIGNED, pathologist)
    # Every cell was reviewed exactly once: the group confirmations left the reclassified and smudge cells alone.
    assert Review.objects.filter(image__case=case).count() == total
    override = Review.objects.get(image_id=image_id)
    assert (override.kind, override.from_label, override.to_label, override.reason) == (
        "override",
        predicted,
        new_label,
        "",
    )
    assert Review.objects.get(image_id=smudge_id).to_label == "smudge"
    print(f"\n100-cell review walk: {review_seconds:.1f} s to the target, {time.monotonic() - started:.1f} s in all")


def test_zoom_shows_the_cell_with_its_grad_cam_at_an_adjustable_opacity(
    live_server, page, screenshot, technician, pathologist, pbc_dir
):
    # Apart from the walk: the first heat map loads the Keras model (~20 s on a busy machine).
    case = seed_review_case(
        pbc_dir=pbc_dir, technician=technician, accession_id="E2E-ZOOM", proportions={"LYMPHOCYTE": 2, "MONOCYTE": 2}
    )
    image_id = case.images.order_by("pk").values_list("pk", flat=True).first()
    sign_in(page, live_server, pathologist.email, DEFAULT_PASSWORD)
    page.goto(f"{live_server.url}/cases/{case.pk}/review/")
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


def test_hundred_cell_case_pages_fit_a_phone_and_the_review_has_no_serious_axe_violation(
    live_server, page, screenshot, technician, pathologist, pbc_dir
):
    from tests.e2e.test_accessibility import axe_violations  # (that module imports small_case from this one)

    case = seed_review_case(pbc_dir=pbc_dir, technician=technician, accession_id="E2E-PHONE-100")
    ids = list(case.images.order_by("pk").values_list("pk", flat=True))
    review_cells(case=case, image_ids=ids[:1], reviewer=pathologist, to_label="smudge")
    review_cells(case=case, image_ids=ids[1:2], reviewer=pathologist, to_label="MONOCYTE")
    review_cells(case=case, image_ids=ids[2:60], reviewer=pathologist)
    sign_in(page, live_server, pathologist.email, DEFAULT_PASSWORD)
    pages = {
        "case-list": "/cases/",
        "case": f"/cases/{case.pk}/",
        "review": f"/cases/{case.pk}/review/",
        "differential": f"/cases/{case.pk}/differential/",
    }
    problems = {}
    for width_name, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        for name, path in pages.items():
            page.goto(f"{live_server.url}{path}")
            page.wait_for_load_state("networkidle")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            if overflow > 0:
                problems[f"{name}@{width}"] = {"overflow_px": overflow}
            if name == "review":
                expect(page.get_by_test_id("review-cell")).to_have_count(len(ids))
                violations = axe_violations(page, live_server)
                if violations:
                    problems.setdefault(f"{name}@{width}", {})["violations"] = violations
            screenshot(f"{name}-100-cells-{width_name}", full_page=False)
    assert not problems, json.dumps(problems, indent=1)
