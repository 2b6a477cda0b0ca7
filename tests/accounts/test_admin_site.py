"""Django's admin is reached only through the site's own sign-in (allauth: rate limits, TOTP), never
with an email and password alone."""

import pytest
from django.urls import reverse

from tests.accounts.helpers import current_totp_code


@pytest.fixture
def superuser(make_user):
    return make_user(None, mfa=True, is_staff=True, is_superuser=True, password="superuser-password-1")


@pytest.mark.django_db
def test_the_admin_login_form_does_not_sign_anyone_in(client, superuser):
    response = client.post(
        "/admin/login/?next=/admin/", {"username": superuser.email, "password": "superuser-password-1"}
    )

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302


@pytest.mark.django_db
def test_the_admin_login_page_sends_to_the_site_sign_in(client):
    response = client.get("/admin/login/?next=/admin/cases/case/")

    assert response.status_code == 302
    assert response["Location"] == reverse("account_login") + "?next=%2Fadmin%2Fcases%2Fcase%2F"


@pytest.mark.django_db
def test_a_session_without_a_second_factor_does_not_reach_the_admin(client, superuser):
    client.force_login(superuser)  # a session made without the TOTP step

    response = client.get("/admin/")

    assert response.status_code == 302
    assert client.get(response["Location"])["Location"].startswith(reverse("account_login"))
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_password_and_totp_through_the_site_sign_in_reach_the_admin(client, superuser):
    first = client.post(reverse("account_login"), {"login": superuser.email, "password": "superuser-password-1"})
    assert first["Location"] == reverse("mfa_authenticate")
    assert "_auth_user_id" not in client.session

    client.post(reverse("mfa_authenticate"), {"code": current_totp_code()})

    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_staff_without_a_second_factor_do_not_reach_the_admin(client, make_user):
    staff = make_user(None, is_staff=True, is_superuser=False, password="staff-password-123")
    client.post(reverse("account_login"), {"login": staff.email, "password": "staff-password-123"})
    assert client.session.get("_auth_user_id") == str(staff.pk)

    assert client.get("/admin/").status_code == 302


@pytest.mark.django_db
def test_the_admin_lists_api_tokens_by_prefix_without_their_hash(client, superuser, technician):
    from accounts.services import create_api_token

    token, key = create_api_token(user=technician, second_factor=False)
    client.post(reverse("account_login"), {"login": superuser.email, "password": "superuser-password-1"})
    client.post(reverse("mfa_authenticate"), {"code": current_totp_code()})

    listing = client.get("/admin/accounts/apitoken/")
    detail = client.get(f"/admin/accounts/apitoken/{token.pk}/change/")

    assert listing.status_code == 200 and token.prefix in listing.content.decode()
    assert detail.status_code == 200
    assert token.key_hash not in detail.content.decode() and key not in detail.content.decode()
