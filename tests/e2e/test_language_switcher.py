"""The language switcher in Chromium at 375 px: visible signed out and signed in (outside the collapsed menu),
it turns the page and the scripts' strings (Django's JavaScript catalogue) to Spanish and back, and the choice
outlives signing in."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import sign_in
from tests.factories import DEFAULT_PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def phone(browser):
    context = browser.new_context(viewport={"width": 375, "height": 812})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def sideways_overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_the_switcher_turns_pages_and_scripts_to_spanish_and_back_at_375_px(live_server, phone, technician):
    page = phone
    page.goto(f"{live_server.url}/accounts/login/")
    expect(page.locator("html")).to_have_attribute("lang", "en-gb")
    expect(page.get_by_test_id("language-en")).to_have_attribute("aria-pressed", "true")

    page.get_by_test_id("language-es").click()
    expect(page.locator("html")).to_have_attribute("lang", "es")
    page.wait_for_load_state("load")
    expect(page.locator("h1")).to_contain_text("Iniciar sesión")
    expect(page.get_by_test_id("language-es")).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("window.gettext('Waiting…')") == "En espera…"
    assert sideways_overflow(page) <= 0

    # The choice is a cookie: it stays through signing in, and the switcher stays outside the collapsed menu.
    sign_in(page, live_server, technician.email, DEFAULT_PASSWORD)
    page.goto(f"{live_server.url}/cases/")
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.get_by_role("group", name="Idioma")).to_be_visible()
    expect(page.get_by_role("button", name="Menú")).to_be_visible()
    assert sideways_overflow(page) <= 0

    page.get_by_test_id("language-en").click()
    page.wait_for_url("**/cases/")
    expect(page.locator("html")).to_have_attribute("lang", "en-gb")
    page.wait_for_load_state("load")
    expect(page.get_by_role("button", name="Menu")).to_be_visible()
    assert page.evaluate("window.gettext('Waiting…')") == "Waiting…"


def test_the_main_pages_in_spanish_fit_a_phone_with_no_serious_accessibility_violation(
    live_server, browser, technician, pathologist, pbc_dir
):
    """Spanish words run longer than English ones: the case pages must still fit 375 px."""
    from cases.review_services import review_cells
    from tests.e2e.conftest import SCREENSHOTS
    from tests.e2e.test_accessibility import axe_violations
    from tests.e2e.test_review_station import small_case

    case = small_case(pbc_dir, technician)
    ids = list(case.images.order_by("pk").values_list("pk", flat=True))
    review_cells(case=case, image_ids=ids[:1], reviewer=pathologist, to_label="smudge")
    review_cells(case=case, image_ids=ids[1:4], reviewer=pathologist)
    context = browser.new_context(locale="es-ES", viewport={"width": 375, "height": 812})
    page = context.new_page()
    page.set_default_timeout(30_000)
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
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, path in pages.items():
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        assert page.locator("html").get_attribute("lang") == "es", path
        overflow, violations = sideways_overflow(page), axe_violations(page, live_server)
        if overflow > 0 or violations:
            problems[name] = {"overflow_px": overflow, "violations": violations}
        page.screenshot(path=str(SCREENSHOTS / f"{name}-es-375.png"), full_page=name != "review")
    context.close()
    assert not problems, problems
