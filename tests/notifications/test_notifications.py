"""Notifications in the app and by email: sign-ups -> people managers, approval -> the person, a case awaiting
review -> pathologists, classification failures -> admins. Emails name HematoVision, not the host."""

import pytest
from django.core import mail
from django.urls import reverse

from accounts.roles import Role
from accounts.services import approve_user
from cases.models import Case, CellImage
from cases.services import refresh_case_statuses
from notifications.models import Notification
from notifications.services import notify
from tests.factories import CaseFactory, CellImageFactory, PredictionFactory

NEW_PASSWORD = "a-Strong-passphrase-42"


def kinds_of(user):
    return sorted(Notification.objects.filter(recipient=user).values_list("kind", flat=True))


@pytest.mark.django_db
def test_a_sign_up_notifies_people_managers_by_email_naming_hematovision(
    client, supervisor, admin_user, pathologist, django_capture_on_commit_callbacks, settings
):
    settings.SITE_URL = "https://hv.lab.example"
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("account_signup"),
            {
                "email": "new.tech@lab.example",
                "password1": NEW_PASSWORD,
                "password2": NEW_PASSWORD,
                "first_name": "Ana",
                "last_name": "García",
                "laboratory": "Hospital Clínic Haematology",
                "requested_role": "pathologist",
            },
            HTTP_HOST="127.0.0.1:8011",
        )
    assert kinds_of(supervisor) == kinds_of(admin_user) == [Notification.Kind.SIGNUP_PENDING]
    assert kinds_of(pathologist) == []
    by_recipient = {message.to[0]: message for message in mail.outbox}
    verification = by_recipient["new.tech@lab.example"]
    assert "HematoVision" in verification.body and "127.0.0.1:8011" not in verification.body
    assert verification.subject.startswith("[HematoVision] ")
    notice = by_recipient[supervisor.email]
    assert notice.subject == "[HematoVision] Ana García (new.tech@lab.example) signed up and awaits approval"
    assert "Hello from HematoVision" in notice.body and "https://hv.lab.example/people/" in notice.body
    assert "Laboratory: Hospital Clínic Haematology. Requested role: Pathologist." in notice.body


@pytest.mark.django_db
def test_approval_tells_the_person_once(supervisor, pending_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        approve_user(actor=supervisor, user=pending_user, role=Role.TECHNICIAN)
    assert kinds_of(pending_user) == [Notification.Kind.ACCOUNT_APPROVED]
    assert [message.to for message in mail.outbox] == [[pending_user.email]]
    assert mail.outbox[0].subject == "[HematoVision] Your HematoVision account is approved"


@pytest.mark.django_db
def test_a_case_awaiting_review_notifies_pathologists_and_failures_notify_admins(
    pathologist, admin_user, technician, supervisor
):
    case = CaseFactory(status=Case.Status.CLASSIFYING)
    PredictionFactory(image=CellImageFactory(case=case, status=CellImage.Status.CLASSIFIED))
    failed = CellImageFactory(case=case, status=CellImage.Status.FAILED, status_message="decoder crashed")
    refresh_case_statuses(case_ids=[case.pk])
    review = Notification.objects.get(recipient=pathologist)
    assert (review.kind, review.link) == (Notification.Kind.CASE_AWAITING_REVIEW, f"/cases/{case.pk}/review/")
    failure = Notification.objects.get(recipient=admin_user)
    assert failure.kind == Notification.Kind.CLASSIFICATION_FAILED and failure.body == "decoder crashed"
    assert str(failed.pk) in failure.title
    assert kinds_of(technician) == kinds_of(supervisor) == []
    # Back to classifying and ready again: nothing new while the first notice is unread; the failure never again.
    Case.objects.filter(pk=case.pk).update(status=Case.Status.CLASSIFYING)
    refresh_case_statuses(case_ids=[case.pk])
    assert Notification.objects.count() == 2


@pytest.mark.django_db
def test_inbox_lists_a_persons_own_notifications_and_marks_them_read(client, pathologist, technician):
    notify(recipients=[pathologist], kind=Notification.Kind.CASE_AWAITING_REVIEW, title="Case A awaits review",
           link="/cases/1/review/", email=False)  # fmt: skip
    notify(recipients=[technician], kind=Notification.Kind.ACCOUNT_APPROVED, title="not for the pathologist")
    client.force_login(pathologist)
    page = client.get(reverse("notifications:inbox")).content.decode()
    assert "Case A awaits review" in page and "not for the pathologist" not in page
    assert 'data-testid="unread-count">1<' in page
    notification = Notification.objects.get(recipient=pathologist)
    response = client.post(
        reverse("notifications:mark_read"), {"notification": notification.pk, "next": notification.link}
    )
    assert response["Location"] == "/cases/1/review/"
    notification.refresh_from_db()
    assert notification.read_at is not None
    outside = client.post(reverse("notifications:mark_read"), {"next": "https://evil.example/"})
    assert outside["Location"] == reverse("notifications:inbox")


@pytest.mark.django_db
def test_a_mail_server_failure_keeps_the_in_app_notification(
    pathologist, django_capture_on_commit_callbacks, settings, caplog
):
    settings.EMAIL_BACKEND = "tests.notifications.broken_backend.BrokenBackend"
    with django_capture_on_commit_callbacks(execute=True):
        notify(recipients=[pathologist], kind=Notification.Kind.CASE_AWAITING_REVIEW, title="Case B awaits review")
    notification = Notification.objects.get()
    assert not notification.emailed
    assert "could not be emailed" in caplog.text


@pytest.mark.django_db
def test_an_abnormal_cell_is_a_critical_finding_for_pathologists_and_supervisors(
    pathologist, make_user, supervisor, technician
):
    from cases.review_services import review_cells

    colleague = make_user(Role.PATHOLOGIST)
    case = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    prediction = PredictionFactory(image=CellImageFactory(case=case), label="lymphocyte")
    Notification.objects.all().delete()
    review_cells(case=case, image_ids=[prediction.image_id], reviewer=pathologist, to_label="abnormal")
    assert kinds_of(colleague) == kinds_of(supervisor) == [Notification.Kind.CRITICAL_FINDING]
    assert kinds_of(pathologist) == kinds_of(technician) == []  # not the reviewer, not technicians
    notice = Notification.objects.get(recipient=supervisor)
    assert notice.title == f"Critical finding in case {case.accession_id}"
    assert notice.link == f"/cases/{case.pk}/review/"
