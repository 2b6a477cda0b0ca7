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
