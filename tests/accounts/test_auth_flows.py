"""Sign-up with an emailed verification code, sign-in by password or by emailed code, TOTP."""

import pytest
from django.core import mail
from django.urls import reverse

from accounts.models import User
from audit.models import AuditEvent
from tests.accounts.helpers import code_from_email, current_totp_code
from tests.factories import DEFAULT_PASSWORD

NEW_PASSWORD = "a-Strong-passphrase-42"
SIGNUP_DETAILS = {
    "password1": NEW_PASSWORD,
    "password2": NEW_PASSWORD,
    "first_name": "Ana",
    "last_name": "García",
    "laboratory": "Hospital Clínic Haematology",
    "requested_role": "technician",
}


def sign_up(client, email="new.tech@lab.example"):
    return client.post(reverse("account_signup"), {"email": email, **SIGNUP_DETAILS})


def signed_in_user(client):
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id) if user_id else None


@pytest.mark.django_db
def test_sign_up_asks_for_the_emailed_verification_code_before_signing_in(client):
    response = sign_up(client)

    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    assert signed_in_user(client) is None
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_entering_the_verification_code_signs_the_new_user_in_as_pending(client):
    sign_up(client)
    code = code_from_email(mail.outbox[0])

    response = client.post(reverse("account_email_verification_sent"), {"code": code}, follow=True)

    user = signed_in_user(client)
    assert user.email == "new.tech@lab.example"
    assert user.role is None
    assert user.emailaddress_set.get().verified
    assert response.redirect_chain[-1][0] == reverse("accounts:pending")
    assert b"awaiting approval" in response.content


@pytest.mark.django_db
def test_a_wrong_verification_code_is_refused_and_the_form_stays(client):
    sign_up(client)

    response = client.post(reverse("account_email_verification_sent"), {"code": "ZZZZ-ZZZZ"})

    assert response.status_code == 200
    assert response.context["form"].errors
    assert signed_in_user(client) is None


@pytest.mark.django_db
def test_password_sign_in_of_an_unverified_account_sends_a_code_instead(client):
    sign_up(client)
    client.logout()
    mail.outbox.clear()

    response = client.post(reverse("account_login"), {"login": "new.tech@lab.example", "password": NEW_PASSWORD})

    assert response["Location"] == reverse("account_email_verification_sent")
    assert signed_in_user(client) is None
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_sign_in_by_emailed_code_without_a_password(client, technician):
    client.post(reverse("account_request_login_code"), {"email": technician.email})
    code = code_from_email(mail.outbox[-1])

    response = client.post(reverse("account_confirm_login_code"), {"code": code})

    assert response.status_code == 302
    assert signed_in_user(client) == technician


@pytest.mark.django_db
def test_sign_in_is_audited(client, technician):
    client.post(reverse("account_login"), {"login": technician.email, "password": DEFAULT_PASSWORD})

    event = AuditEvent.objects.get(action=AuditEvent.Action.SIGN_IN)
    assert event.actor == technician


@pytest.mark.django_db
def test_failed_sign_in_is_audited_with_the_email_tried(client, technician):
    client.post(reverse("account_login"), {"login": technician.email, "password": "wrong-password"})

    event = AuditEvent.objects.get(action=AuditEvent.Action.SIGN_IN_FAILED)
    assert event.details["email"] == technician.email


@pytest.mark.django_db
def test_user_with_totp_must_enter_a_code_after_the_password(client, make_user):
    user = make_user("pathologist", mfa=True)

    response = client.post(reverse("account_login"), {"login": user.email, "password": DEFAULT_PASSWORD})

    assert response["Location"] == reverse("mfa_authenticate")
    assert signed_in_user(client) is None


@pytest.mark.django_db
def test_correct_totp_code_completes_the_sign_in(client, make_user):
    user = make_user("pathologist", mfa=True)
    client.post(reverse("account_login"), {"login": user.email, "password": DEFAULT_PASSWORD})

    client.post(reverse("mfa_authenticate"), {"code": current_totp_code()})

    assert signed_in_user(client) == user


@pytest.mark.django_db
def test_failed_sign_ins_are_rate_limited(client, technician, settings):
    settings.ACCOUNT_RATE_LIMITS = {"password_failed": "3/m/key"}
    for _ in range(3):
        client.post(reverse("account_login"), {"login": technician.email, "password": "wrong-password"})

    response = client.post(reverse("account_login"), {"login": technician.email, "password": DEFAULT_PASSWORD})

    assert signed_in_user(client) is None
    assert b"Too many failed login attempts" in response.content
