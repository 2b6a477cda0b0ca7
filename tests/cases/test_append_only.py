"""Reviews are append-only and a signed case changes only by amendment, enforced by the database itself
(triggers on PostgreSQL and SQLite), so a queryset .update()/.delete() cannot rewrite the record."""

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from cases.models import Case, CellImage, Review
from cases.review_services import amend_cells, review_cells, sign_case
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory


def refused(callable_, match="append-only|signed"):
    with pytest.raises(IntegrityError, match=match), transaction.atomic():
        callable_()


@pytest.fixture
def signed_case(db, pathologist):
    version = ModelVersionFactory(is_active=True)
    case = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    for label in ("neutrophil", "lymphocyte"):
        PredictionFactory(image=CellImageFactory(case=case), model_version=version, label=label)
    review_cells(case=case, image_ids=case.images.values_list("pk", flat=True), reviewer=pathologist)
    return sign_case(case=case, signer=pathologist)


def test_queryset_update_of_reviews_is_refused(signed_case):
    refused(lambda: Review.objects.filter(image__case=signed_case).update(to_label="monocyte"))

    assert set(Review.objects.values_list("to_label", flat=True)) == {"neutrophil", "lymphocyte"}


def test_queryset_delete_of_reviews_is_refused(signed_case):
    refused(lambda: Review.objects.all().delete())

    assert Review.objects.count() == 2


def test_a_signed_case_cannot_be_put_back_to_draft(signed_case):
    refused(lambda: Case.objects.filter(pk=signed_case.pk).update(status=Case.Status.DRAFT))

    signed_case.refresh_from_db()
    assert signed_case.status == Case.Status.SIGNED


def test_the_signature_of_a_signed_case_cannot_be_rewritten(signed_case, make_user):
    other = make_user("pathologist")
    refused(lambda: Case.objects.filter(pk=signed_case.pk).update(signed_by=other))
    refused(lambda: Case.objects.filter(pk=signed_case.pk).update(signed_at=timezone.now()))
    refused(lambda: Case.objects.filter(pk=signed_case.pk).update(patient_reference="someone else"))
    refused(lambda: Case.objects.filter(pk=signed_case.pk).update(accession_id="ACC-NEW"))


def test_a_signed_case_cannot_be_deleted(signed_case):
    refused(lambda: Case.objects.filter(pk=signed_case.pk).delete(), match="signed|protected|FOREIGN KEY")


def test_columns_outside_the_signature_may_still_change_on_a_signed_case(signed_case):
    """Other columns (e.g. updated_at, or stored summaries other services keep) are not frozen."""
    Case.objects.filter(pk=signed_case.pk).update(updated_at=timezone.now())


def test_no_image_can_be_added_to_or_removed_from_a_signed_case(signed_case):
    image = signed_case.images.first()
    refused(lambda: CellImageFactory(case=signed_case))
    refused(lambda: CellImage.objects.filter(pk=image.pk).delete(), match="signed|protected|FOREIGN KEY")
    refused(lambda: CellImage.objects.filter(pk=image.pk).update(sha256="0" * 64))


def test_a_signed_case_takes_no_review_but_an_amendment(signed_case, pathologist):
    image = signed_case.images.first()
    refused(
        lambda: Review.objects.create(
            image=image, reviewer=pathologist, kind=Review.Kind.CONFIRM, from_label="x", to_label="x"
        )
    )

    amend_cells(case=signed_case, image_ids=[image.pk], amender=pathologist, to_label="monocyte", reason="second look")

    assert image.reviews.last().kind == Review.Kind.AMENDMENT


def test_an_open_case_still_changes_freely(db):
    case = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    Case.objects.filter(pk=case.pk).update(status=Case.Status.SIGNED)  # signing itself is allowed
    with transaction.atomic():
        CaseFactory(status=Case.Status.DRAFT).delete()
