"""A newcomer whose browser speaks Spanish: the home page explains HematoVision in Spanish, sign-up asks name,
laboratory and requested role, the emailed code lands them on the pending page, and a supervisor is told (in the
app and by email) who signed up, from which laboratory, asking for which role. Screenshots of the home page,
sign-up and guide at 1366 and 375 px go to docs/screenshots/."""

import pytest
from django.conf import settings
from django.core import mail
from django.test import Client
from playwright.sync_api import expect

from accounts.models import User
from notifications.models import Notification
from tests.accounts.helpers import code_from_email
from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.test_accessibility import axe_violations

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WIDTHS = {"1366": (1366, 900), "375": (375, 812)}
EMAIL = "ana.garcia@clinic.example"
LABORATORY = "Hospital Clínic — Hematología"


@pytest.fixture
def spanish_page(browser):
    context = browser.new_context(locale="es-ES", viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def sideways_overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def at_both_widths(page, live_server, name: str) -> dict[str, dict]:
    """Screenshot at 1366 and 375 px; returns, per width, the sideways overflow (px) and any serious or critical
    axe-core violation (contrast included) — empty when the page is fine."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems = {}
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(150)
        overflow, violations = sideways_overflow(page), axe_violations(page, live_server)
        if overflow > 0 or violations:
            problems[label] = {"overflow_px": overflow, "violations": violations}
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size({"width": 1366, "height": 900})
    return problems


def use_session_of(page, live_server, user) -> None:
    """Hand the browser a signed-in session (a supervisor's sign-in needs a TOTP code)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])


def test_a_spanish_newcomer_signs_up_and_the_supervisor_is_told(live_server, spanish_page, supervisor):
    page = spanish_page

    # The home page, in Spanish, says what HematoVision is and offers sign-in and sign-up.
    page.goto(f"{live_server.url}/")
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.get_by_test_id("home-visitor")).to_be_visible()
    expect(page.get_by_test_id("home-disclaimer")).to_contain_text("no un dispositivo de diagnóstico")
    expect(page.get_by_test_id("home-sign-up")).to_have_text("Crear una cuenta")
    assert not (problems := at_both_widths(page, live_server, "home")), problems

    # Sign-up asks name, laboratory and requested role (a request: the account will wait).
    page.get_by_test_id("home-sign-up").click()
    page.wait_for_url("**/accounts/signup/")
    expect(page.get_by_label("Rol solicitado")).to_be_visible()
    assert not (problems := at_both_widths(page, live_server, "signup")), problems
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=first_name]", "Ana")
    page.fill("input[name=last_name]", "García Pérez")
    page.fill("input[name=laboratory]", LABORATORY)
    page.select_option("select[name=requested_role]", "pathologist")
    page.fill("input[name=password1]", "un-Frotis-bien-teñido-42")
    page.fill("input[name=password2]", "un-Frotis-bien-teñido-42")
    # Enter in the form: the language switcher in the header has submit buttons of its own.
    page.press("input[name=password2]", "Enter")

    # The emailed confirmation code, entered on the page allauth shows, lands them on the pending page.
    page.wait_for_url("**/accounts/confirm-email/**")
    (verification,) = [message for message in mail.outbox if message.to == [EMAIL]]
    page.fill("input[name=code]", code_from_email(verification))
    page.press("input[name=code]", "Enter")
    page.wait_for_url("**/people/pending/")
    expect(page.get_by_test_id("pending-request")).to_contain_text(LABORATORY)
    expect(page.locator("html")).to_have_attribute("lang", "es")

    newcomer = User.objects.get(email=EMAIL)
    assert newcomer.role is None and newcomer.requested_role == "pathologist"

    # The supervisor's notification, in the app and by email, names the person, laboratory and role.
    notice = Notification.objects.get(recipient=supervisor, kind=Notification.Kind.SIGNUP_PENDING)
    assert "Ana García Pérez" in notice.title and EMAIL in notice.title
    (email,) = [message for message in mail.outbox if message.to == [supervisor.email]]
    assert "Ana García Pérez" in email.subject
    assert LABORATORY in email.body and "Pathologist" in email.body

    page.context.clear_cookies()
    use_session_of(page, live_server, supervisor)
    page.goto(f"{live_server.url}/notifications/")
    inbox = page.locator("main")
    expect(inbox).to_contain_text("Ana García Pérez")
    expect(inbox).to_contain_text(LABORATORY)
    page.goto(f"{live_server.url}/people/")
    expect(page.locator(f"#role-{newcomer.pk}")).to_have_value("pathologist")

    # The guide, the reader's own role first.
    page.goto(f"{live_server.url}/guide/")
    expect(page.get_by_test_id("guide-section").first).to_have_attribute("data-role", "supervisor")
    expect(page.locator("h1")).to_have_text("Guía")
    assert not (problems := at_both_widths(page, live_server, "guide")), problems
