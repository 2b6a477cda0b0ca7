"""/api/v1/me/ and /api/v1/auth/token/."""

import pytest
from rest_framework.test import APIClient

from accounts.authentication import hash_key
from accounts.models import ApiToken
from accounts.roles import ROLE_CAPABILITIES, Role
from audit.models import AuditEvent
from tests.accounts.helpers import current_totp_code
from tests.factories import DEFAULT_PASSWORD

TOKEN_URL = "/api/v1/auth/token/"
ME_URL = "/api/v1/me/"


@pytest.fixture
def api():
    return APIClient()


@pytest.mark.django_db
def test_me_describes_the_caller(api, pathologist):
    api.force_authenticate(pathologist)

    body = api.get(ME_URL).json()

    assert body == {
        "email": pathologist.email,
        "role": "pathologist",
        "capabilities": sorted(ROLE_CAPABILITIES[Role.PATHOLOGIST]),
    }


@pytest.mark.django_db
def test_me_tells_a_pending_user_they_have_no_role(api, pending_user):
    api.force_authenticate(pending_user)

    assert api.get(ME_URL).json()["role"] is None


@pytest.mark.django_db
def test_me_refuses_anonymous_callers(api):
    assert api.get(ME_URL).status_code in (401, 403)


@pytest.mark.django_db
def test_token_for_email_and_password(api, technician):
    response = api.post(TOKEN_URL, {"email": technician.email, "password": DEFAULT_PASSWORD}, format="json")

    assert response.status_code == 200
    stored = ApiToken.objects.get(user=technician)
    assert stored.key_hash == hash_key(response.json()["token"])


@pytest.mark.django_db
def test_token_authenticates_later_requests(api, technician):
    token = api.post(TOKEN_URL, {"email": technician.email, "password": DEFAULT_PASSWORD}, format="json").json()

    api.credentials(HTTP_AUTHORIZATION=f"Token {token['token']}")

    assert api.get(ME_URL).json()["email"] == technician.email


@pytest.mark.django_db
def test_token_issue_is_audited_as_a_sign_in(api, technician):
    api.post(TOKEN_URL, {"email": technician.email, "password": DEFAULT_PASSWORD}, format="json")

    assert AuditEvent.objects.get(action=AuditEvent.Action.SIGN_IN).details == {"via": "api_token"}


@pytest.mark.django_db
def test_token_refused_for_a_wrong_password(api, technician):
    response = api.post(TOKEN_URL, {"email": technician.email, "password": "nope"}, format="json")

    assert response.status_code == 400
    assert response.json()["detail"] == "The email address or password is not correct."


@pytest.mark.django_db
def test_token_refused_for_a_pending_user_with_a_clear_message(api, pending_user):
    response = api.post(TOKEN_URL, {"email": pending_user.email, "password": DEFAULT_PASSWORD}, format="json")

    assert response.status_code == 403
    assert "awaiting approval" in response.json()["detail"]
    assert not ApiToken.objects.filter(user=pending_user).exists()


@pytest.mark.django_db
def test_token_refused_for_an_unverified_email(api, technician):
    technician.emailaddress_set.update(verified=False)

    response = api.post(TOKEN_URL, {"email": technician.email, "password": DEFAULT_PASSWORD}, format="json")

    assert response.status_code == 403
    assert "Verify your email" in response.json()["detail"]


@pytest.mark.django_db
def test_token_for_a_totp_account_needs_the_code(api, supervisor):
    response = api.post(TOKEN_URL, {"email": supervisor.email, "password": DEFAULT_PASSWORD}, format="json")

    assert response.status_code == 400
    assert "authenticator app" in response.json()["detail"]


@pytest.mark.django_db
def test_token_for_a_totp_account_with_the_current_code(api, supervisor):
    payload = {"email": supervisor.email, "password": DEFAULT_PASSWORD, "code": current_totp_code()}

    assert api.post(TOKEN_URL, payload, format="json").status_code == 200


@pytest.mark.django_db
def test_token_refused_to_a_supervisor_without_totp(api, make_user):
    user = make_user(Role.SUPERVISOR)

    response = api.post(TOKEN_URL, {"email": user.email, "password": DEFAULT_PASSWORD}, format="json")

    assert response.status_code == 403
    assert "two-factor" in response.json()["detail"]


@pytest.mark.django_db
def test_token_requests_are_rate_limited_after_failures(api, technician, settings):
    settings.ACCOUNT_RATE_LIMITS = {"password_failed": "2/m/key"}
    for _ in range(2):
        api.post(TOKEN_URL, {"email": technician.email, "password": "nope"}, format="json")

    response = api.post(TOKEN_URL, {"email": technician.email, "password": DEFAULT_PASSWORD}, format="json")

    assert response.status_code == 429


@pytest.mark.django_db
def test_token_request_without_email_names_the_missing_field(api):
    response = api.post(TOKEN_URL, {"password": "x"}, format="json")

    assert response.status_code == 400
    assert "email" in response.json()["errors"]


@pytest.mark.django_db
def test_openapi_schema_describes_the_accounts_endpoints(client, technician):
    client.force_login(technician)

    schema = client.get("/api/schema/", {"format": "json"}).json()

    assert "/api/v1/me/" in schema["paths"]
    assert "requestBody" in schema["paths"]["/api/v1/auth/token/"]["post"]
