"""A Google or LinkedIn sign-up skips the sign-up form, so it has no laboratory or requested role yet: the
people managers are told how the person signed up and that they are asked on first sign-in (not "none given"),
and are told again when the person answers on the pending page."""

import pytest
from django.urls import reverse

from notifications.models import Notification
from tests.accounts.test_social_login import (
    google_token_response,
    sign_in_with_google,
    sign_in_with_linkedin,
    signed_in_user,
)

DETAILS = {"first_name": "Dr", "last_name": "Who", "laboratory": "Tardis Haematology", "requested_role": "pathologist"}


def signup_notices(recipient):
    return Notification.objects.filter(recipient=recipient, kind=Notification.Kind.SIGNUP_PENDING).order_by("pk")


@pytest.mark.django_db
def test_a_google_sign_up_notice_names_google_and_the_first_sign_in_question(client, google_configured, supervisor):
    sign_in_with_google(client, google_token_response())

    (notice,) = signup_notices(supervisor)
    assert "dr.who@gmail.example" in notice.title
    assert "signed up with Google" in notice.body
    assert "asked for both when they first sign in" in notice.body
    assert "none given" not in notice.body


@pytest.mark.django_db
def test_a_linkedin_sign_up_notice_names_linkedin(client, linkedin_configured, supervisor):
    sign_in_with_linkedin(client)

    (notice,) = signup_notices(supervisor)
    assert "signed up with LinkedIn" in notice.body
    assert "none given" not in notice.body


@pytest.mark.django_db
def test_the_managers_are_told_when_a_social_sign_up_gives_its_details(client, google_configured, supervisor):
    sign_in_with_google(client, google_token_response())
    assert signed_in_user(client).role is None

    client.post(reverse("accounts:pending"), DETAILS)

    _, answered = signup_notices(supervisor)
    assert "gave their laboratory and requested role" in answered.title
    assert "Tardis Haematology" in answered.body and "Pathologist" in answered.body


@pytest.mark.django_db
def test_a_pending_page_visit_without_an_answer_tells_nobody(client, google_configured, supervisor):
    sign_in_with_google(client, google_token_response())

    client.post(reverse("accounts:pending"), {**DETAILS, "laboratory": ""})

    assert signup_notices(supervisor).count() == 1
