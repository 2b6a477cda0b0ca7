"""Sign-in lockout behind the reverse proxy: per client (the address the proxy saw) and per account,
with wrong TOTP codes in a bucket of their own, on the website and the token endpoint alike."""

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from tests.accounts.helpers import current_totp_code
from tests.factories import DEFAULT_PASSWORD

PROXY = "127.0.0.1"  # every request reaches the web process from the reverse proxy


@pytest.fixture(autouse=True)
def production_limits(settings):
    settings.ACCOUNT_RATE_LIMITS = {"password_failed": "10/m/ip,5/5m/key", "login_failed": "10/m/ip,5/5m/key"}
    settings.TRUSTED_PROXY_COUNT = settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    cache.clear()
    yield
    cache.clear()


def sign_in(email: str, password: str, *, client_ip: str, forwarded_for: str | None = None, client=None):
    client = client or Client()
    response = client.post(
        reverse("account_login"),
        {"login": email, "password": password},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=forwarded_for or client_ip,
    )
    return client, response


def is_signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def locked_out(response) -> bool:
    return b"Too many failed login attempts" in response.content


@pytest.mark.django_db
def test_ten_wrong_passwords_from_one_workstation_do_not_lock_out_the_lab(technician):
    for number in range(10):
        sign_in(f"nobody{number}@lab.example", "wrong-password", client_ip="10.0.0.5")

    _, blocked = sign_in(technician.email, DEFAULT_PASSWORD, client_ip="10.0.0.5")
    colleague, response = sign_in(technician.email, DEFAULT_PASSWORD, client_ip="10.0.0.6")

    assert locked_out(blocked)
    assert is_signed_in(colleague), response.content[:500]


@pytest.mark.django_db
def test_the_client_is_the_address_the_proxy_appended_not_what_the_client_claims(technician):
    for number in range(10):
        sign_in(f"nobody{number}@lab.example", "wrong", client_ip="", forwarded_for=f"192.0.2.{number}, 10.0.0.5")

    _, response = sign_in(technician.email, DEFAULT_PASSWORD, client_ip="", forwarded_for="192.0.2.99, 10.0.0.5")

    assert locked_out(response)


@pytest.mark.django_db
def test_wrong_passwords_for_one_account_lock_that_account_only(technician, pathologist):
    for number in range(5):
        sign_in(technician.email, "wrong-password", client_ip=f"10.0.1.{number}")

    technician_client, refused = sign_in(technician.email, DEFAULT_PASSWORD, client_ip="10.0.2.1")
    pathologist_client, _ = sign_in(pathologist.email, DEFAULT_PASSWORD, client_ip="10.0.2.1")

    assert locked_out(refused) and not is_signed_in(technician_client)
    assert is_signed_in(pathologist_client)


@pytest.mark.django_db
def test_wrong_totp_codes_count_in_their_own_bucket(make_user, technician):
    user = make_user("pathologist", mfa=True)
    client, _ = sign_in(user.email, DEFAULT_PASSWORD, client_ip="10.0.3.1")
    for _ in range(4):
        client.post(reverse("mfa_authenticate"), {"code": "000000"}, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="10.0.3.1")
    for number in range(9):
        sign_in(f"nobody{number}@lab.example", "wrong-password", client_ip="10.0.3.1")

    colleague, response = sign_in(technician.email, DEFAULT_PASSWORD, client_ip="10.0.3.1")

    assert is_signed_in(colleague), response.content[:500]


@pytest.mark.django_db
def test_wrong_totp_codes_are_limited_per_account(make_user):
    user = make_user("pathologist", mfa=True)
    client, _ = sign_in(user.email, DEFAULT_PASSWORD, client_ip="10.0.4.1")
    for _ in range(5):
        client.post(reverse("mfa_authenticate"), {"code": "000000"}, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="10.0.4.1")

    response = client.post(
        reverse("mfa_authenticate"), {"code": current_totp_code()}, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="10.0.4.1"
    )

    assert not is_signed_in(client)
    assert b"Too many failed login attempts" in response.content


@pytest.mark.django_db
def test_the_token_endpoint_shares_the_accounts_password_bucket(technician):
    for number in range(5):
        sign_in(technician.email, "wrong-password", client_ip=f"10.0.5.{number}")

    response = APIClient().post(
        "/api/v1/auth/token/",
        {"email": technician.email, "password": DEFAULT_PASSWORD},
        format="json",
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR="10.0.6.1",
    )

    assert response.status_code == 429


@pytest.mark.django_db
def test_wrong_totp_codes_at_the_token_endpoint_do_not_use_up_the_password_bucket(supervisor, technician):
    api = APIClient()
    for _ in range(4):
        api.post(
            "/api/v1/auth/token/",
            {"email": supervisor.email, "password": DEFAULT_PASSWORD, "code": "000000"},
            format="json",
            REMOTE_ADDR=PROXY,
            HTTP_X_FORWARDED_FOR="10.0.7.1",
        )
    for number in range(9):
        sign_in(f"nobody{number}@lab.example", "wrong-password", client_ip="10.0.7.1")

    colleague, _ = sign_in(technician.email, DEFAULT_PASSWORD, client_ip="10.0.7.1")

    assert is_signed_in(colleague)
