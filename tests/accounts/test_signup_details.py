"""Sign-up asks name, laboratory and requested role; the role is a request the people managers see, not a grant."""

import pytest
from django.core import mail
from django.urls import reverse

from accounts.models import User
from accounts.roles import Role
from notifications.models import Notification
from tests.accounts.helpers import code_from_email

NEW_PASSWORD = "a-Strong-passphrase-42"
DETAILS = {
    "first_name": "Ana",
    "last_name": "García",
    "laboratory": "Hospital Clínic Haematology",
    "requested_role": "pathologist",
}


def sign_up(client, **overrides):
    data = {"email": "ana@lab.example", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD, **DETAILS, **overrides}
    return client.post(reverse("account_signup"), data)


def row_of(page: str, email: str) -> str:
    start = page.rindex("<tr", 0, page.index(email))
    return page[start : page.index("</tr>", start)]


@pytest.mark.django_db
def test_sign_up_page_asks_name_laboratory_and_requested_role(client):
    page = client.get(reverse("account_signup")).content.decode()

    for name in ("first_name", "last_name", "laboratory", "requested_role"):
        assert f'name="{name}"' in page
    assert '<select name="requested_role" class="form-select"' in page
    assert '<option value="pathologist">Pathologist</option>' in page
    assert "reviews your request and grants the role" in page


@pytest.mark.django_db
def test_sign_up_stores_the_details_and_grants_no_role(client):
    sign_up(client)

    user = User.objects.get(email="ana@lab.example")
    assert (user.first_name, user.last_name, user.laboratory) == ("Ana", "García", "Hospital Clínic Haematology")
    assert user.requested_role == Role.PATHOLOGIST
    assert user.role is None

    client.post(reverse("account_email_verification_sent"), {"code": code_from_email(mail.outbox[0])})
    page = client.get(reverse("accounts:pending"))
    assert page.status_code == 200
    assert "Hospital Clínic Haematology" in page.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("missing", ["first_name", "laboratory", "requested_role"])
def test_sign_up_without_a_detail_is_refused(client, missing):
    response = sign_up(client, **{missing: ""})

    assert response.status_code == 200
    assert missing in response.context["form"].errors
    assert not User.objects.filter(email="ana@lab.example").exists()


@pytest.mark.django_db
def test_a_requested_role_outside_the_roles_is_refused(client):
    response = sign_up(client, requested_role="superuser")

    assert "requested_role" in response.context["form"].errors


@pytest.mark.django_db
def test_people_managers_are_notified_with_name_laboratory_and_role(client, supervisor):
    sign_up(client, requested_role="researcher")

    notice = Notification.objects.get(recipient=supervisor, kind=Notification.Kind.SIGNUP_PENDING)
    assert "Ana García" in notice.title and "ana@lab.example" in notice.title
    assert "Hospital Clínic Haematology" in notice.body and "Researcher" in notice.body


@pytest.mark.django_db
def test_people_page_shows_the_request_and_preselects_the_role(client, supervisor, make_user):
    make_user(None, email="ana@lab.example", first_name="Ana", last_name="García",
              laboratory="Hospital Clínic Haematology", requested_role=Role.PATHOLOGIST)  # fmt: skip
    client.force_login(supervisor)

    page = client.get(reverse("accounts:people")).content.decode()

    row = row_of(page, "ana@lab.example")
    assert "Ana García" in row and "Hospital Clínic Haematology" in row
    assert "Requested: Pathologist" in row
    assert '<option value="pathologist" selected>' in row
    assert row.count(" selected>") == 1


@pytest.mark.django_db
def test_a_supervisor_is_not_offered_the_admin_role_someone_requested(client, supervisor, make_user):
    make_user(None, email="ana@lab.example", requested_role=Role.ADMIN)
    client.force_login(supervisor)

    page = client.get(reverse("accounts:people")).content.decode()

    row = row_of(page, "ana@lab.example")
    assert "Requested: Administrator" in row
    assert 'value="admin"' not in row and " selected>" not in row


@pytest.mark.django_db
def test_pending_page_asks_a_social_sign_up_for_the_missing_details(client, pending_user):
    client.force_login(pending_user)
    assert 'data-testid="signup-details"' in client.get(reverse("accounts:pending")).content.decode()

    response = client.post(reverse("accounts:pending"), {**DETAILS, "requested_role": "technician"})

    assert response["Location"] == reverse("accounts:pending")
    pending_user.refresh_from_db()
    assert (pending_user.laboratory, pending_user.requested_role) == ("Hospital Clínic Haematology", "technician")
    assert pending_user.role is None
    assert 'data-testid="signup-details"' not in client.get(reverse("accounts:pending")).content.decode()


@pytest.mark.django_db
def test_pending_page_form_cannot_grant_a_role_or_touch_other_fields(client, pending_user):
    client.force_login(pending_user)

    client.post(reverse("accounts:pending"), {**DETAILS, "is_staff": "on", "email": "other@lab.example"})

    pending_user.refresh_from_db()
    assert pending_user.role is None and not pending_user.is_staff
    assert pending_user.email != "other@lab.example"
