"""Google and LinkedIn (OpenID Connect) sign-in through allauth's real login and callback views.

The providers' HTTP answers are mocked (tests/accounts/social_mocks.py); the configuration is the
one hematovision.settings.base builds from the environment.
"""

from urllib.parse import parse_qs, urlparse

import pytest
from allauth.socialaccount.models import SocialAccount
from django.urls import reverse

from accounts.models import User
from hematovision.settings.base import _social_providers
from tests.accounts.social_mocks import MockedResponse, id_token, mocked_provider

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
LINKEDIN_ISSUER = "https://www.linkedin.com/oauth"
LINKEDIN_DISCOVERY_URL = "https://www.linkedin.com/oauth/.well-known/openid-configuration"
LINKEDIN_DISCOVERY = {
    "issuer": LINKEDIN_ISSUER,
    "authorization_endpoint": "https://www.linkedin.com/oauth/v2/authorization",
    "token_endpoint": "https://www.linkedin.com/oauth/v2/accessToken",
    "userinfo_endpoint": "https://api.linkedin.com/v2/userinfo",
    "jwks_uri": "https://www.linkedin.com/oauth/openid/jwks",
    "token_endpoint_auth_methods_supported": ["client_secret_post"],
}


def state_from(redirect_url: str) -> str:
    return parse_qs(urlparse(redirect_url).query)["state"][0]


def google_token_response(email="dr.who@gmail.example", verified=True):
    token = id_token(
        issuer="https://accounts.google.com",
        audience="google-client-id",
        subject="108204268033311374519",
        email=email,
        email_verified=verified,
        name="Dr Who",
    )
    return MockedResponse(
        200, {"access_token": "google-access", "token_type": "Bearer", "expires_in": 3599, "id_token": token}
    )


def sign_in_with_google(client, token_response):
    start = client.post(reverse("google_login"))
    with mocked_provider({("POST", GOOGLE_TOKEN_URL): token_response}):
        return client.get(reverse("google_callback"), {"code": "google-code", "state": state_from(start["Location"])})


def sign_in_with_linkedin(client, email="ada@linkedin.example"):
    login_url = reverse("openid_connect_login", kwargs={"provider_id": "linkedin"})
    callback_url = reverse("openid_connect_callback", kwargs={"provider_id": "linkedin"})
    discovery = MockedResponse(200, LINKEDIN_DISCOVERY)
    with mocked_provider({("GET", LINKEDIN_DISCOVERY_URL): discovery}):
        start = client.post(login_url)
    token = id_token(issuer=LINKEDIN_ISSUER, audience="linkedin-client-id", subject="li-782bbtaQ", email=email)
    routes = {
        ("GET", LINKEDIN_DISCOVERY_URL): discovery,
        ("POST", LINKEDIN_DISCOVERY["token_endpoint"]): MockedResponse(
            200, {"access_token": "linkedin-access", "expires_in": 5183999, "id_token": token}
        ),
        ("GET", LINKEDIN_DISCOVERY["userinfo_endpoint"]): MockedResponse(
            200, {"sub": "li-782bbtaQ", "email": email, "email_verified": True, "name": "Ada Lovelace"}
        ),
    }
    with mocked_provider(routes) as calls:
        response = client.get(callback_url, {"code": "linkedin-code", "state": state_from(start["Location"])})
    return response, calls


def signed_in_user(client):
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id) if user_id else None


@pytest.mark.django_db
def test_google_starts_at_googles_authorization_page(client, google_configured):
    response = client.post(reverse("google_login"))

    assert response["Location"].startswith("https://accounts.google.com/o/oauth2/v2/auth?")
    assert parse_qs(urlparse(response["Location"]).query)["client_id"] == ["google-client-id"]


@pytest.mark.django_db
def test_google_callback_signs_in_a_new_user_who_is_pending_approval(client, google_configured):
    response = sign_in_with_google(client, google_token_response())

    user = signed_in_user(client)
    assert user.email == "dr.who@gmail.example"
    assert user.role is None
    assert SocialAccount.objects.get(user=user).provider == "google"
    assert client.get(response["Location"])["Location"] == reverse("accounts:pending")


@pytest.mark.django_db
def test_google_sign_in_reaches_the_existing_account_with_that_verified_email(client, google_configured, technician):
    sign_in_with_google(client, google_token_response(email=technician.email))

    assert signed_in_user(client) == technician


@pytest.mark.django_db
def test_google_sign_in_still_asks_for_the_totp_code_of_an_account_that_has_one(client, google_configured, supervisor):
    response = sign_in_with_google(client, google_token_response(email=supervisor.email))

    assert response["Location"] == reverse("mfa_authenticate")
    assert signed_in_user(client) is None


@pytest.mark.django_db
def test_google_with_an_invalid_id_token_signs_nobody_in(client, google_configured):
    bad_token = MockedResponse(200, {"access_token": "google-access", "id_token": "not-a-jwt"})

    response = sign_in_with_google(client, bad_token)

    assert signed_in_user(client) is None
    assert response.status_code == 401
    assert "socialaccount/authentication_error.html" in [t.name for t in response.templates]


@pytest.mark.django_db
def test_linkedin_callback_signs_in_a_new_user_who_is_pending_approval(client, linkedin_configured):
    response, _ = sign_in_with_linkedin(client)

    user = signed_in_user(client)
    assert user.email == "ada@linkedin.example"
    assert user.role is None
    assert SocialAccount.objects.get(user=user).provider == "linkedin"
    assert client.get(response["Location"])["Location"] == reverse("accounts:pending")


@pytest.mark.django_db
def test_linkedin_cannot_take_over_an_existing_account_by_its_email(client, linkedin_configured, technician):
    sign_in_with_linkedin(client, email=technician.email)

    assert signed_in_user(client) is None
    assert not SocialAccount.objects.filter(user=technician).exists()


@pytest.mark.django_db
def test_linkedin_receives_the_client_secret_in_the_post_body(client, linkedin_configured):
    _, calls = sign_in_with_linkedin(client)

    method, _, kwargs = next(call for call in calls if call[1] == LINKEDIN_DISCOVERY["token_endpoint"])
    assert method == "POST"
    assert kwargs["data"]["client_secret"] == "linkedin-client-secret"
    assert kwargs.get("auth") is None


@pytest.mark.django_db
def test_sign_in_page_offers_only_configured_providers(client, google_configured):
    content = client.get(reverse("account_login")).content

    assert b"Google" in content
    assert b"LinkedIn" not in content


@pytest.mark.django_db
def test_sign_in_page_offers_no_provider_when_none_is_configured(client, monkeypatch, settings):
    monkeypatch.delenv("GOOGLE_CLIENT_ID", raising=False)
    monkeypatch.delenv("LINKEDIN_CLIENT_ID", raising=False)
    settings.SOCIALACCOUNT_PROVIDERS = _social_providers()

    content = client.get(reverse("account_login")).content

    assert b"Google" not in content
    assert b"LinkedIn" not in content


@pytest.mark.django_db
def test_unconfigured_linkedin_login_is_not_found(client, google_configured):
    response = client.post(reverse("openid_connect_login", kwargs={"provider_id": "linkedin"}))

    assert response.status_code == 404
