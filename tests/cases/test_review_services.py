import pytest
from django.core.exceptions import PermissionDenied

from audit.models import AuditEvent
from cases.models import Case, Review
from cases.review_selectors import cells_for_review, critical_case_ids, review_gallery
from cases.review_services import ReviewRefused, amend_cells, review_cells, sign_case
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory


@pytest.fixture
def version(db):
    return ModelVersionFactory()


@pytest.fixture
def case(version):
    case = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    for label in ["neutrophil", "lymphocyte", "monocyte"]:
        PredictionFactory(image=CellImageFactory(case=case), model_version=version, label=label)
    return case


def ids(case):
    return list(case.images.values_list("pk", flat=True))


def final_labels(case):
    return {cell.image.pk: cell.final_label for cell in cells_for_review(case=case)}


def test_confirm_keeps_the_predicted_label(case, pathologist):
    reviews = review_cells(case=case, image_ids=ids(case), reviewer=pathologist)
    assert {r.kind for r in reviews} == {Review.Kind.CONFIRM}
    assert sorted(final_labels(case).values()) == ["lymphocyte", "monocyte", "neutrophil"]


def test_override_records_from_to_and_reason(case, pathologist):
    cell = ids(case)[0]
    (review,) = review_cells(
        case=case, image_ids=[cell], reviewer=pathologist, to_label="eosinophil", reason="granules"
    )
    assert (review.kind, review.from_label, review.to_label, review.reason) == (
        Review.Kind.OVERRIDE,
        "neutrophil",
        "eosinophil",
        "granules",
    )
    assert final_labels(case)[cell] == "eosinophil"


def test_override_without_a_reason_is_saved_while_reviewing(case, pathologist):
    cell = ids(case)[0]
    (review,) = review_cells(case=case, image_ids=[cell], reviewer=pathologist, to_label="eosinophil", reason="  ")
    assert (review.kind, review.to_label, review.reason) == (Review.Kind.OVERRIDE, "eosinophil", "")


def test_reclassifying_to_an_unknown_class_is_refused(case, pathologist):
    with pytest.raises(ReviewRefused, match="not a class"):
        review_cells(case=case, image_ids=ids(case)[:1], reviewer=pathologist, to_label="dragon", reason="x")


def test_cells_of_another_case_are_refused(case, pathologist):
    other = CellImageFactory()
    with pytest.raises(ReviewRefused, match="has no cell"):
        review_cells(case=case, image_ids=[other.pk], reviewer=pathologist)


def test_latest_review_is_the_final_label(case, pathologist):
    cell = ids(case)[0]
    review_cells(case=case, image_ids=[cell], reviewer=pathologist, to_label="monocyte", reason="shape")
    review_cells(case=case, image_ids=[cell], reviewer=pathologist, to_label="neutrophil", reason="second look")
    assert final_labels(case)[cell] == "neutrophil"
    assert Review.objects.filter(image_id=cell).count() == 2


@pytest.mark.parametrize("role_fixture", ["technician", "supervisor", "researcher", "admin_user"])
def test_only_pathologists_review(case, role_fixture, request):
    with pytest.raises(PermissionDenied):
        review_cells(case=case, image_ids=ids(case), reviewer=request.getfixturevalue(role_fixture))


@pytest.mark.parametrize("role_fixture", ["technician", "supervisor", "researcher", "admin_user"])
def test_only_pathologists_sign(case, role_fixture, pathologist, request):
    review_cells(case=case, image_ids=ids(case), reviewer=pathologist)
    with pytest.raises(PermissionDenied):
        sign_case(case=case, signer=request.getfixturevalue(role_fixture))


def test_sign_off_is_refused_while_a_cell_lacks_a_final_label(case, pathologist):
    review_cells(case=case, image_ids=ids(case)[:2], reviewer=pathologist)
    with pytest.raises(ReviewRefused, match="1 cell"):
        sign_case(case=case, signer=pathologist)
    case.refresh_from_db()
    assert case.status == Case.Status.AWAITING_REVIEW


def test_a_case_without_cells_cannot_be_signed(pathologist):
    with pytest.raises(ReviewRefused, match="no cells"):
        sign_case(case=CaseFactory(), signer=pathologist)


def test_signing_locks_the_case(case, pathologist):
    review_cells(case=case, image_ids=ids(case), reviewer=pathologist)
    sign_case(case=case, signer=pathologist)
    case.refresh_from_db()
    assert (case.status, case.signed_by, case.signed_at is not None) == (Case.Status.SIGNED, pathologist, True)
    with pytest.raises(ReviewRefused, match="amendment"):
        review_cells(case=case, image_ids=ids(case), reviewer=pathologist, to_label="monocyte", reason="late")


def test_signing_twice_is_refused(case, pathologist):
    review_cells(case=case, image_ids=ids(case), reviewer=pathologist)
    sign_case(case=case, signer=pathologist)
    with pytest.raises(ReviewRefused, match="already signed"):
        sign_case(case=case, signer=pathologist)


@pytest.fixture
def signed_case(case, pathologist):
    review_cells(case=case, image_ids=ids(case), reviewer=pathologist)
    return sign_case(case=case, signer=pathologist)


def test_amendment_changes_the_final_label_and_keeps_the_case_signed(signed_case, pathologist):
    cell = ids(signed_case)[0]
    (review,) = amend_cells(
        case=signed_case, image_ids=[cell], amender=pathologist, to_label="basophil", reason="re-read"
    )
    assert review.kind == Review.Kind.AMENDMENT
    assert final_labels(signed_case)[cell] == "basophil"
    signed_case.refresh_from_db()
    assert signed_case.status == Case.Status.SIGNED


def test_amendment_needs_a_reason(signed_case, pathologist):
    with pytest.raises(ReviewRefused, match="needs a reason"):
        amend_cells(
            case=signed_case, image_ids=ids(signed_case)[:1], amender=pathologist, to_label="basophil", reason=""
        )


def test_amendment_of_an_unsigned_case_is_refused(case, pathologist):
    with pytest.raises(ReviewRefused, match="not signed"):
        amend_cells(case=case, image_ids=ids(case)[:1], amender=pathologist, to_label="basophil", reason="x")


def test_technicians_cannot_amend(signed_case, technician):
    with pytest.raises(PermissionDenied):
        amend_cells(
            case=signed_case, image_ids=ids(signed_case)[:1], amender=technician, to_label="basophil", reason="x"
        )


def test_reviews_cannot_be_edited(case, pathologist):
    (review,) = review_cells(case=case, image_ids=ids(case)[:1], reviewer=pathologist)
    review.to_label = "basophil"
    with pytest.raises(PermissionError):
        review.save()


def test_reviews_cannot_be_deleted(case, pathologist):
    (review,) = review_cells(case=case, image_ids=ids(case)[:1], reviewer=pathologist)
    with pytest.raises(PermissionError):
        review.delete()


def test_review_sign_off_and_amendment_are_audited(signed_case, pathologist):
    amend_cells(case=signed_case, image_ids=ids(signed_case)[:1], amender=pathologist, to_label="basophil", reason="x")
    actions = list(AuditEvent.objects.filter(actor=pathologist).values_list("action", flat=True))
    assert actions.count(AuditEvent.Action.REVIEW) == 3
    assert actions.count(AuditEvent.Action.SIGN_OFF) == 1
    assert actions.count(AuditEvent.Action.AMENDMENT) == 1


def test_a_cell_without_prediction_must_be_reclassified_not_confirmed(case, pathologist, version):
    failed = CellImageFactory(case=case, status="failed")
    with pytest.raises(ReviewRefused, match="no prediction to confirm"):
        review_cells(case=case, image_ids=[failed.pk], reviewer=pathologist)
    review_cells(case=case, image_ids=[failed.pk], reviewer=pathologist, to_label="platelet", reason="seen by eye")
    assert final_labels(case)[failed.pk] == "platelet"


def test_gallery_puts_flagged_cells_first(case, version):
    flagged = PredictionFactory(image=CellImageFactory(case=case), model_version=version, flagged=True, label="ig")
    groups = review_gallery(case=case)
    assert groups[0].key == "flagged"
    assert [cell.image.pk for cell in groups[0].cells] == [flagged.image_id]
    assert [group.key for group in groups[1:]] == ["lymphocyte", "monocyte", "neutrophil"]


def test_a_reviewer_only_label_is_a_final_label_but_not_a_model_class(case, pathologist):
    cell = ids(case)[0]
    (review,) = review_cells(case=case, image_ids=[cell], reviewer=pathologist, to_label="smudge")
    assert (review.kind, final_labels(case)[cell]) == (Review.Kind.OVERRIDE, "smudge")
    with pytest.raises(ReviewRefused, match="smudge, artefact, abnormal"):
        review_cells(case=case, image_ids=[cell], reviewer=pathologist, to_label="blast")


def test_a_reclassified_cell_moves_to_its_new_class_in_the_gallery(case, pathologist, version):
    flagged = PredictionFactory(image=CellImageFactory(case=case), model_version=version, flagged=True, label="ig")
    neutrophil = case.images.get(predictions__label="neutrophil").pk
    review_cells(case=case, image_ids=[neutrophil], reviewer=pathologist, to_label="lymphocyte")
    review_cells(case=case, image_ids=[flagged.image_id], reviewer=pathologist, to_label="artefact")
    groups = {group.key: [cell.image.pk for cell in group.cells] for group in review_gallery(case=case)}
    assert list(groups) == ["lymphocyte", "monocyte", "artefact"]
    assert neutrophil in groups["lymphocyte"] and groups["artefact"] == [flagged.image_id]


def test_a_case_is_critical_while_its_latest_word_on_a_cell_is_abnormal(case, pathologist):
    other = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    cell = ids(case)[0]
    review_cells(case=case, image_ids=[cell], reviewer=pathologist, to_label="abnormal", reason="blast?")
    assert critical_case_ids(case_ids=[case.pk, other.pk]) == {case.pk}
    review_cells(case=case, image_ids=[cell], reviewer=pathologist, to_label="lymphocyte", reason="reactive")
    assert critical_case_ids(case_ids=[case.pk, other.pk]) == set()
