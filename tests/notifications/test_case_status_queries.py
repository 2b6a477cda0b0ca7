"""The case's status flips classifying <-> awaiting review after every classification batch: the receiver
asks one question per flip while everyone has been told, and still tells whoever has not."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.roles import Role
from cases.models import Case, CellImage
from cases.services import refresh_case_statuses
from notifications.models import Notification
from notifications.receivers import case_status_changed
from notifications.services import mark_read
from tests.factories import CaseFactory, CellImageFactory, PredictionFactory, UserFactory


def receiver_queries(case, status):
    case.status = status
    with CaptureQueriesContext(connection) as queries:
        case_status_changed(sender=Case, instance=case, created=False, update_fields={"status", "updated_at"})
    return len(queries)


def kinds_of(user):
    return sorted(Notification.objects.filter(recipient=user).values_list("kind", flat=True))


@pytest.fixture
def told_case(pathologist, admin_user):
    case = CaseFactory(status=Case.Status.CLASSIFYING)
    PredictionFactory(image=CellImageFactory(case=case, status=CellImage.Status.CLASSIFIED))
    CellImageFactory(case=case, status=CellImage.Status.FAILED, status_message="decoder crashed")
    refresh_case_statuses(case_ids=[case.pk])
    assert kinds_of(pathologist) == [Notification.Kind.CASE_AWAITING_REVIEW]
    assert kinds_of(admin_user) == [Notification.Kind.CLASSIFICATION_FAILED]
    case.refresh_from_db()
    return case


@pytest.mark.django_db
def test_status_churn_with_everyone_told_asks_one_question_per_flip_and_writes_nothing(told_case):
    before = Notification.objects.count()
    per_flip = [
        (receiver_queries(told_case, Case.Status.CLASSIFYING), receiver_queries(told_case, Case.Status.AWAITING_REVIEW))
        for _ in range(3)
    ]
    assert per_flip == [(0, 1)] * 3
    assert Notification.objects.count() == before


@pytest.mark.django_db
def test_a_reviewer_who_read_the_notice_is_told_again_and_a_new_failure_is_told(
    told_case, pathologist, admin_user, technician
):
    mark_read(user=pathologist)
    receiver_queries(told_case, Case.Status.CLASSIFYING)
    assert receiver_queries(told_case, Case.Status.AWAITING_REVIEW) > 1
    assert kinds_of(pathologist) == [Notification.Kind.CASE_AWAITING_REVIEW] * 2
    assert kinds_of(admin_user) == [Notification.Kind.CLASSIFICATION_FAILED]

    second_failure = CellImageFactory(case=told_case, status=CellImage.Status.FAILED, status_message="truncated")
    receiver_queries(told_case, Case.Status.AWAITING_REVIEW)
    assert kinds_of(admin_user) == [Notification.Kind.CLASSIFICATION_FAILED] * 2
    assert Notification.objects.filter(recipient=admin_user, key=f"failed:{second_failure.pk}").exists()
    assert kinds_of(pathologist) == [Notification.Kind.CASE_AWAITING_REVIEW] * 2
    assert kinds_of(technician) == []


@pytest.mark.django_db
def test_a_case_with_only_failures_tells_the_error_viewers_not_the_reviewers(pathologist, admin_user):
    case = CaseFactory(status=Case.Status.CLASSIFYING)
    CellImageFactory(case=case, status=CellImage.Status.FAILED)
    refresh_case_statuses(case_ids=[case.pk])
    assert kinds_of(pathologist) == []
    assert kinds_of(admin_user) == [Notification.Kind.CLASSIFICATION_FAILED]
    case.refresh_from_db()
    assert receiver_queries(case, Case.Status.AWAITING_REVIEW) == 1


@pytest.mark.django_db
def test_a_save_that_does_not_write_the_status_asks_nothing(told_case, django_assert_max_num_queries):
    told_case.status = Case.Status.AWAITING_REVIEW
    with django_assert_max_num_queries(0):
        case_status_changed(sender=Case, instance=told_case, created=False, update_fields={"updated_at"})


@pytest.mark.django_db
def test_who_counts_as_untold_follows_users_with(told_case, pathologist, make_user):
    """The one-query check (SQL) and `notify` (users_with) agree on who would be told: a new reviewer without an
    email, or inactive, is nobody to tell; a new active reviewer with an email, or a superuser, is."""
    from notifications.receivers import _anyone_to_tell_about

    assert not _anyone_to_tell_about(told_case)
    no_email = make_user(Role.PATHOLOGIST)
    no_email.email = ""
    no_email.save(update_fields=["email"])
    inactive = make_user(Role.PATHOLOGIST)
    inactive.is_active = False
    inactive.save(update_fields=["is_active"])
    make_user(Role.TECHNICIAN)
    assert not _anyone_to_tell_about(told_case)
    superuser = UserFactory(email="root@lab.example", is_superuser=True)
    assert _anyone_to_tell_about(told_case)
    assert receiver_queries(told_case, Case.Status.AWAITING_REVIEW) > 1
    assert sorted(kinds_of(superuser)) == [
        Notification.Kind.CASE_AWAITING_REVIEW,
        Notification.Kind.CLASSIFICATION_FAILED,
    ]
    assert not _anyone_to_tell_about(told_case)
    make_user(Role.PATHOLOGIST)
    assert _anyone_to_tell_about(told_case)
