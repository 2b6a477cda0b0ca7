"""End-to-end flows in Debian's Chromium, against a live server with the bundled model."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import expect

from cases.models import Case, CellImage
from cases.services import add_images, create_case
from inference.services import ensure_bundled_model
from tests.e2e.conftest import sign_in
from tests.factories import DEFAULT_PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def first_image(pbc_dir: Path, label: str, index: int = 0) -> Path:
    return sorted((pbc_dir / "test" / label).glob("*.jpg"))[index]


def use_session_of(page, live_server, user) -> None:
    """Hand the browser a signed-in session (for users whose sign-in needs a TOTP code)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])


def test_technician_creates_case_uploads_two_images_and_sees_two_predictions(
    live_server, page, screenshot, technician, pbc_dir
):
    ensure_bundled_model()
    files = [first_image(pbc_dir, "NEUTROPHIL"), first_image(pbc_dir, "LYMPHOCYTE")]

    sign_in(page, live_server, technician.email, DEFAULT_PASSWORD)
    page.goto(f"{live_server.url}/cases/")
    page.get_by_test_id("new-case-button").click()
    page.get_by_test_id("case-accession-input").fill("E2E-0001")
    page.get_by_test_id("case-patient-input").fill("MRN-E2E-1")
    page.get_by_test_id("case-create-submit").click()
    # upload.js hides the no-script submit button once it has bound the file input: wait for that,
    # or the files could be chosen before anything listens for them.
    expect(page.get_by_test_id("upload-submit")).to_be_hidden()

    page.get_by_test_id("upload-input").set_input_files([str(path) for path in files])

    labels = page.get_by_test_id("prediction-label")
    expect(labels).to_have_count(2, timeout=60_000)
    expect(page.get_by_test_id("upload-progress")).to_have_count(2)
    for index in range(2):
        expect(labels.nth(index)).to_have_text(re.compile(r"\S+"))
    screenshot("case-with-predictions")

    case = Case.objects.get(accession_id="E2E-0001")
    assert case.images.filter(status=CellImage.Status.CLASSIFIED).count() == 2
    assert sorted(case.images.values_list("predictions__label", flat=True)) == ["LYMPHOCYTE", "NEUTROPHIL"]


def test_pathologist_overrides_one_cell_signs_and_supervisor_opens_dashboard(
    live_server, page, screenshot, technician, pathologist, supervisor, pbc_dir
):
    ensure_bundled_model()
    case = create_case(accession_id="E2E-0002", created_by=technician, patient_reference="MRN-E2E-2")
    paths = [first_image(pbc_dir, label) for label in ("EOSINOPHIL", "MONOCYTE", "PLATELET")]
    handles = [path.open("rb") for path in paths]
    try:
        accepted, rejected = add_images(case=case, files=handles, uploaded_by=technician)
    finally:
        for handle in handles:
            handle.close()
    assert len(accepted) == 3 and not rejected
    assert CellImage.objects.filter(case=case, status=CellImage.Status.CLASSIFIED).count() == 3

    sign_in(page, live_server, pathologist.email, DEFAULT_PASSWORD)
    page.goto(f"{live_server.url}/cases/{case.pk}/review/")
    cells = page.get_by_test_id("review-cell")
    expect(cells).to_have_count(3)
    screenshot("review-before")

    overridden = cells.first
    image_id = overridden.get_attribute("data-image-id")
    predicted = overridden.get_attribute("data-predicted")
    new_label = "BASOPHIL" if predicted != "BASOPHIL" else "IG"
    overridden.get_by_test_id("cell-select").check()
    page.get_by_test_id("class-select").select_option(new_label)
    page.get_by_test_id("reason-input").fill("Granules obscure the nucleus; basophil on re-inspection")
    page.get_by_test_id("override-selected").click()
    expect(page.locator(f'[data-testid=review-cell][data-image-id="{image_id}"]')).to_have_attribute(
        "data-final", new_label
    )

    page.get_by_test_id("confirm-unreviewed").click()
    page.get_by_test_id("confirm-yes").check()
    page.get_by_test_id("confirm-unreviewed-submit").click()
    expect(page.locator('[data-testid=review-cell][data-reviewed="false"]')).to_have_count(0)
    page.get_by_test_id("sign-case").click()
    page.get_by_test_id("sign-password").fill(DEFAULT_PASSWORD)
    page.get_by_test_id("sign-submit").click()
    expect(page.get_by_test_id("review-status")).to_have_attribute("data-status", "signed")
    screenshot("review-signed")

    case.refresh_from_db()
    assert case.status == Case.Status.SIGNED
    assert case.signed_by == pathologist
    override = CellImage.objects.get(pk=image_id).reviews.get()
    assert (override.kind, override.from_label, override.to_label) == ("override", predicted, new_label)

    page.context.clear_cookies()
    use_session_of(page, live_server, supervisor)
    page.goto(f"{live_server.url}/reports/dashboard/")
    expect(page.get_by_test_id("chart-confusion")).to_be_visible()
    screenshot("supervisor-dashboard")
