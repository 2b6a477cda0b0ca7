"""Supervisors and admins cannot use the platform until TOTP is active (demo accounts excepted)."""

import pytest
from django.urls import reverse

from accounts.demo import demo_email
from accounts.roles import Role


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.SUPERVISOR, Role.ADMIN])
def test_role_requiring_mfa_without_authenticator_is_sent_to_totp_activation(client, make_user, role):
    client.force_login(make_user(role))

    response = client.get(reverse("accounts:people"))

    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_activate_totp")


@pytest.mark.django_db
def test_role_requiring_mfa_with_authenticator_gets_through(client, supervisor):
    client.force_login(supervisor)

    assert client.get(reverse("accounts:people")).status_code == 200


@pytest.mark.django_db
def test_role_not_requiring_mfa_gets_through_without_authenticator(client, technician):
    client.force_login(technician)

    response = client.get(reverse("accounts:pending"))

    assert response["Location"] == reverse("home")


@pytest.mark.django_db
@pytest.mark.parametrize("url_name", ["mfa_index", "mfa_activate_totp", "account_reauthenticate"])
def test_mfa_setup_pages_stay_reachable(client, make_user, url_name):
    client.force_login(make_user(Role.SUPERVISOR))

    response = client.get(reverse(url_name))

    assert response.get("Location") != reverse("mfa_activate_totp")
    assert response.status_code in (200, 302)


@pytest.mark.django_db
def test_sign_out_stays_possible(client, make_user):
    client.force_login(make_user(Role.ADMIN))

    client.post(reverse("account_logout"))

    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_api_request_gets_a_json_refusal_instead_of_a_redirect(client, make_user):
    client.force_login(make_user(Role.SUPERVISOR))

    response = client.get("/api/v1/me/")

    assert response.status_code == 403
    assert "two-factor" in response.json()["detail"]


@pytest.mark.django_db
def test_demo_supervisor_is_exempt_in_demo_mode(client, make_user, settings):
    settings.DEMO_MODE = True
    client.force_login(make_user(Role.SUPERVISOR, email=demo_email(Role.SUPERVISOR)))

    assert client.get(reverse("accounts:people")).status_code == 200


@pytest.mark.django_db
def test_demo_address_is_not_exempt_outside_demo_mode(client, make_user, settings):
    settings.DEMO_MODE = False
    client.force_login(make_user(Role.SUPERVISOR, email=demo_email(Role.SUPERVISOR)))

    assert client.get(reverse("accounts:people"))["Location"] == reverse("mfa_activate_totp")
