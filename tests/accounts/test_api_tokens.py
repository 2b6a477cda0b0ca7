"""API tokens: hashed at rest, shown once, expiring, revoked by password and role changes, and under
the same second-factor rule as the website."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.roles import Role
from accounts.services import change_role, create_api_token, deactivate_user
from audit.models import AuditEvent
from tests.accounts.helpers import current_totp_code
from tests.factories import DEFAULT_PASSWORD

TOKEN_URL = "/api/v1/auth/token/"
ME_URL = "/api/v1/me/"
METRICS_URL = "/api/v1/reports/metrics/"


def issue(user, code: str = "") -> str:
    response = APIClient().post(
        TOKEN_URL, {"email": user.email, "password": DEFAULT_PASSWORD, "code": code}, format="json"
    )
    assert response.status_code == 200, response.json()
    return response.json()["token"]


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.mark.django_db
def test_only_a_hash_of_the_key_is_stored(technician):
    key = issue(technician)

    stored = ApiToken.objects.get(user=technician)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")  # noqa: S608 - a fixed table name
        rows = cursor.fetchall()
    assert key not in repr(rows)
    assert stored.prefix == key[:8]
    assert with_token(key).get(ME_URL).status_code == 200


@pytest.mark.django_db
def test_each_issue_is_a_new_key_and_the_response_says_when_it_expires(technician, settings):
    settings.API_TOKEN_TTL_DAYS = 30
    first = APIClient().post(TOKEN_URL, {"email": technician.email, "password": DEFAULT_PASSWORD}, format="json")
    second = issue(technician)

    assert first.json()["token"] != second
    expires_at = ApiToken.objects.get(prefix=second[:8]).expires_at
    assert timedelta(days=29, hours=23) < expires_at - timezone.now() <= timedelta(days=30)
    assert first.json()["expires_at"]


@pytest.mark.django_db
def test_an_expired_token_is_refused_with_a_clear_message(technician):
    key = issue(technician)
    ApiToken.objects.filter(user=technician).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = with_token(key).get(ME_URL)

    # 403 rather than 401: the first authentication class (the session) sends no WWW-Authenticate challenge.
    assert response.status_code == 403
    assert "expired" in response.json()["detail"]


@pytest.mark.django_db
def test_a_token_stops_working_when_the_password_changes(technician):
    key = issue(technician)

    technician.set_password("a-brand-new-password-9")
    technician.save()

    assert with_token(key).get(ME_URL).json()["detail"] == "Invalid token."
    assert not ApiToken.objects.filter(user=technician).exists()


@pytest.mark.django_db
def test_a_password_reset_through_the_website_revokes_tokens(client, technician):
    key = issue(technician)
    client.force_login(technician)

    response = client.post(
        reverse("account_change_password"),
        {"oldpassword": DEFAULT_PASSWORD, "password1": "a-brand-new-password-9", "password2": "a-brand-new-password-9"},
    )

    assert response.status_code == 302
    assert with_token(key).get(ME_URL).json()["detail"] == "Invalid token."


@pytest.mark.django_db
def test_other_saves_of_the_user_keep_the_token(technician):
    key = issue(technician)

    technician.first_name = "Ada"
    technician.save()

    assert with_token(key).get(ME_URL).status_code == 200


@pytest.mark.django_db
def test_a_role_change_revokes_the_token(technician, admin_user):
    key = issue(technician)

    change_role(actor=admin_user, user=technician, role=Role.PATHOLOGIST)

    assert with_token(key).get(ME_URL).json()["detail"] == "Invalid token."
    assert AuditEvent.objects.get(action=AuditEvent.Action.ROLE_CHANGED).details["api_tokens_revoked"] == 1


@pytest.mark.django_db
def test_deactivation_revokes_the_token(technician, admin_user):
    key = issue(technician)

    deactivate_user(actor=admin_user, user=technician)

    assert with_token(key).get(ME_URL).json()["detail"] == "Invalid token."


@pytest.mark.django_db
def test_a_role_change_anywhere_revokes_the_token(technician):
    """E.g. the groups edited in Django's admin, not through the people page."""
    key = issue(technician)

    technician.groups.set([Group.objects.get(name=Role.SUPERVISOR)])

    assert with_token(key).get(ME_URL).json()["detail"] == "Invalid token."


@pytest.mark.django_db
def test_a_role_change_from_the_groups_side_revokes_the_token(technician):
    key = issue(technician)

    Group.objects.get(name=Role.TECHNICIAN).user_set.remove(technician)

    assert with_token(key).get(ME_URL).json()["detail"] == "Invalid token."


@pytest.mark.django_db
def test_other_groups_leave_the_token_alone(technician):
    key = issue(technician)

    technician.groups.add(Group.objects.create(name="night shift"))

    assert with_token(key).get(ME_URL).status_code == 200


@pytest.mark.django_db
def test_a_supervisor_token_without_totp_set_up_is_refused_with_a_json_error(make_user):
    """A token that outlived the rules (issued before them, or restored from a backup)."""
    user = make_user(Role.SUPERVISOR)
    _, key = create_api_token(user=user, second_factor=False)

    response = with_token(key).get(METRICS_URL)

    assert response.status_code == 403
    assert "two-factor" in response.json()["detail"]


@pytest.mark.django_db
def test_a_token_issued_without_the_code_is_refused_to_a_role_that_requires_it(make_user):
    user = make_user(Role.ADMIN, mfa=True)
    _, key = create_api_token(user=user, second_factor=False)

    response = with_token(key).get(METRICS_URL)

    assert response.status_code == 403
    assert "issued without it" in response.json()["detail"]


@pytest.mark.django_db
def test_a_supervisor_token_issued_with_the_code_works(supervisor):
    key = issue(supervisor, code=current_totp_code())

    assert with_token(key).get(ME_URL).json()["role"] == Role.SUPERVISOR
    assert ApiToken.objects.get(user=supervisor).second_factor


@pytest.mark.django_db
def test_a_superuser_without_totp_is_refused_by_token(make_user):
    superuser = make_user(None, is_superuser=True, is_staff=True)
    _, key = create_api_token(user=superuser, second_factor=False)

    response = with_token(key).get(ME_URL)

    assert response.status_code == 403
    assert "two-factor" in response.json()["detail"]


@pytest.mark.django_db
def test_an_unknown_token_is_refused(technician):
    assert with_token("not-a-token").get(ME_URL).json()["detail"] == "Invalid token."


@pytest.mark.django_db
def test_a_deactivated_users_token_is_refused_even_if_left_over(technician):
    _, key = create_api_token(user=technician, second_factor=False)
    type(technician).objects.filter(pk=technician.pk).update(is_active=False)

    assert with_token(key).get(ME_URL).json()["detail"] == "User inactive or deleted."
