"""The main pages at 1366 and 375 px: no sideways overflow on a phone, no serious or critical axe-core violation
(axe-core served from static/vendor), and a screenshot of each into docs/screenshots/."""

import json

import pytest

from cases.models import Case
from cases.report import add_comment
from cases.review_services import review_cells, sign_case
from tests.accounts.helpers import current_totp_code
from tests.e2e.conftest import sign_in
from tests.e2e.test_review_station import small_case
from tests.factories import DEFAULT_PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WIDTHS = {"1366": (1366, 900), "375": (375, 812)}
SERIOUS = ("serious", "critical")


def axe_violations(page, live_server) -> list[dict]:
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(url=f"{live_server.url}/static/vendor/axe.min.js")
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {
            "id": violation["id"],
            "impact": violation["impact"],
            "help": violation["help"],
            "nodes": [node["target"] for node in violation["nodes"][:5]],
        }
        for violation in result["violations"]
        if violation["impact"] in SERIOUS
    ]


def sideways_overflow(page) -> int:
    """How many CSS pixels the page is wider than the viewport (0: no sideways scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_main_pages_fit_a_phone_and_have_no_serious_accessibility_violation(
    live_server, page, screenshot, technician, pathologist, pbc_dir
):
    case = small_case(pbc_dir, technician)
    ids = list(case.images.order_by("pk").values_list("pk", flat=True))
    review_cells(case=case, image_ids=ids[:1], reviewer=pathologist, to_label="smudge")
    review_cells(case=case, image_ids=ids[1:4], reviewer=pathologist)
    signed = Case.objects.create(
        accession_id="E2E-SIGNED-WITH-A-LONG-ACCESSION-NUMBER-0001", created_by=technician, patient_reference="MRN-9"
    )
    sign_in(page, live_server, pathologist.email, DEFAULT_PASSWORD)
    pages = {
        "case-list": "/cases/",
        "case": f"/cases/{case.pk}/",
        "review": f"/cases/{case.pk}/review/",
        "differential": f"/cases/{case.pk}/differential/",
        "report": f"/cases/{case.pk}/report/",
        "notifications": "/notifications/",
    }
    problems = {}
    for width_name, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        for name, path in pages.items():
            page.goto(f"{live_server.url}{path}")
            page.wait_for_load_state("networkidle")
            overflow = sideways_overflow(page)
            violations = axe_violations(page, live_server)
            if overflow > 0 or violations:
                problems[f"{name}@{width}"] = {"overflow_px": overflow, "violations": violations}
            screenshot(f"{name}-{width_name}")
    assert not problems, json.dumps(problems, indent=1)
    # The signed case's report is reachable too (long accession numbers wrap on a phone).
    review_cells(case=case, image_ids=ids[4:], reviewer=pathologist)
    add_comment(case=case, author=pathologist, text="Reviewed at the microscope.")
    sign_case(case=case, signer=pathologist)
    assert signed.pk


def test_people_pages_fit_a_phone_with_a_long_address(live_server, page, supervisor, make_user):
    """An e-mail address is one long word: the deactivation page names it in its heading, its text and its
    checkbox, and must still fit 375 px."""
    person = make_user("technician", email="a.technician.with.a.long.name@laboratory.hematovision.example")
    sign_in(page, live_server, supervisor.email, DEFAULT_PASSWORD)
    # Supervisors sign in with a one-time code too.
    page.fill("input[name=code]", current_totp_code())
    page.press("input[name=code]", "Enter")
    page.wait_for_load_state("networkidle")
    page.set_viewport_size({"width": 375, "height": 812})
    problems = {}
    for name, path in {"people": "/people/", "deactivate": f"/people/{person.pk}/deactivate/"}.items():
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        overflow = sideways_overflow(page)
        if overflow > 0:
            problems[name] = overflow
    assert not problems, problems
