import io

import pytest
from django.urls import reverse
from PIL import Image

from accounts.roles import Role
from audit.models import AuditEvent
from cases import storage
from cases.models import Case, Review
from cases.review_services import review_cells
from tests.accounts.helpers import current_totp_code
from tests.factories import DEFAULT_PASSWORD, CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory


@pytest.fixture
def case(db):
    case = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    version = ModelVersionFactory()
    for label in ["neutrophil", "lymphocyte"]:
        PredictionFactory(image=CellImageFactory(case=case), model_version=version, label=label)
    return case


@pytest.fixture
def cell_ids(case):
    return list(case.images.order_by("pk").values_list("pk", flat=True))


def post(client, name, case, data):
    return client.post(reverse(name, args=[case.pk]), data)


def test_review_page_shows_every_cell_with_its_controls(case, cell_ids, pathologist, client):
    client.force_login(pathologist)
    response = client.get(reverse("cases:review", args=[case.pk]))
    content = response.content.decode()
    assert response.status_code == 200
    assert content.count('data-testid="review-cell"') == 2
    for testid in ["class-select", "reason-input", "override-selected", "confirm-cell", "sign-case"]:
        assert f'data-testid="{testid}"' in content


@pytest.mark.parametrize("role_fixture", ["technician", "supervisor", "researcher", "admin_user"])
def test_review_page_is_for_pathologists(case, role_fixture, request, client):
    client.force_login(request.getfixturevalue(role_fixture))
    assert client.get(reverse("cases:review", args=[case.pk])).status_code == 403


def test_override_with_a_reason_is_saved(case, cell_ids, pathologist, client):
    client.force_login(pathologist)
    response = post(
        client,
        "cases:review_submit",
        case,
        {"action": "reclassify", "cells": [cell_ids[0]], "to_label": "monocyte", "reason": "kidney nucleus"},
    )
    assert response.status_code == 302
    review = Review.objects.get()
    assert (review.kind, review.to_label, review.reason) == (Review.Kind.OVERRIDE, "monocyte", "kidney nucleus")


def test_a_refused_review_shows_the_error_and_keeps_the_selection(case, cell_ids, pathologist, client):
    client.force_login(pathologist)
    response = post(
        client,
        "cases:review_submit",
        case,
        {"action": "reclassify", "cells": [cell_ids[1]], "to_label": "monocyte", "reason": "x" * 2001},
    )
    content = response.content.decode()
    assert response.status_code == 400
    assert "The reason is too long" in content
    assert f'value="{cell_ids[1]}" aria-label="Select cell {cell_ids[1]}" data-testid="cell-select" checked' in content
    assert '<option value="monocyte" selected>' in content
    assert not Review.objects.exists()


def test_a_class_key_reclassifies_without_a_reason_and_answers_with_the_changed_parts(
    case, cell_ids, pathologist, client
):
    client.force_login(pathologist)
    response = client.post(
        reverse("cases:review_submit", args=[case.pk]),
        {"quick_label": "monocyte", "cells": [cell_ids[0]], "target": "200"},
        HTTP_X_REVIEW_PARTIAL="1",
    )
    content = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in content and 'id="review-gallery" data-partial' in content
    assert 'id="review-count" data-partial' in content and '<option value="200" selected>' in content
    assert "1 cell → Monocyte (1 reclassified)." in content
    review = Review.objects.get()
    assert (review.kind, review.to_label, review.reason) == (Review.Kind.OVERRIDE, "monocyte", "")
    # The cell now sits under its new class, still selected.
    monocytes = content.split('data-group="monocyte"')[1].split("</section>")[0]
    assert f'data-image-id="{cell_ids[0]}"' in monocytes and "checked" in monocytes


def test_a_refused_partial_review_answers_400_with_the_error(case, cell_ids, pathologist, client):
    client.force_login(pathologist)
    response = client.post(
        reverse("cases:review_submit", args=[case.pk]),
        {"quick_label": "dragon", "cells": [cell_ids[0]]},
        HTTP_X_REVIEW_PARTIAL="1",
    )
    assert response.status_code == 400
    assert "is not a class of this case" in response.content.decode()
    assert not Review.objects.exists()


def test_smudge_cells_are_counted_apart_and_abnormal_cells_make_the_case_critical(case, cell_ids, pathologist, client):
    review_cells(case=case, image_ids=[cell_ids[0]], reviewer=pathologist, to_label="smudge")
    review_cells(case=case, image_ids=[cell_ids[1]], reviewer=pathologist, to_label="abnormal")
    client.force_login(pathologist)
    review = client.get(reverse("cases:review", args=[case.pk])).content.decode()
    assert 'data-testid="critical-finding"' in review
    assert 'data-label="smudge" data-count="1"' in review and 'data-label="abnormal" data-count="1"' in review
    listing = client.get(reverse("cases:list")).content.decode()
    assert 'data-testid="case-critical"' in listing
    differential = client.get(reverse("cases:differential", args=[case.pk])).content.decode()
    assert 'data-testid="differential-critical"' in differential
    assert "0 leukocytes" in differential


def test_reclassify_without_a_class_is_refused(case, cell_ids, pathologist, client):
    client.force_login(pathologist)
    response = post(client, "cases:review_submit", case, {"action": "reclassify", "cells": cell_ids, "reason": "x"})
    assert response.status_code == 400
    assert "Choose the class" in response.content.decode()


def test_confirm_one_cell(case, cell_ids, pathologist, client):
    client.force_login(pathologist)
    post(client, "cases:review_submit", case, {"confirm_cell": cell_ids[1], "cells": [cell_ids[0]]})
    assert list(Review.objects.values_list("image_id", "kind")) == [(cell_ids[1], Review.Kind.CONFIRM)]


def test_confirm_all_unreviewed_asks_first_and_leaves_reviewed_cells_alone(case, cell_ids, pathologist, client):
    review_cells(case=case, image_ids=[cell_ids[0]], reviewer=pathologist, to_label="monocyte", reason="x")
    client.force_login(pathologist)
    response = post(client, "cases:review_submit", case, {"action": "confirm_unreviewed"})
    assert response["Location"] == reverse("cases:review_confirm_unreviewed", args=[case.pk])
    question = client.get(response["Location"]).content.decode()
    assert "<strong>1</strong> cell nobody has reviewed" in question
    assert Review.objects.count() == 1
    refused = post(client, "cases:review_confirm_unreviewed", case, {})
    assert refused.status_code == 400 and Review.objects.count() == 1
    post(client, "cases:review_confirm_unreviewed", case, {"confirm": "yes"})
    assert Review.objects.filter(image_id=cell_ids[0]).count() == 1
    assert Review.objects.get(image_id=cell_ids[1]).kind == Review.Kind.CONFIRM


def test_sign_is_refused_with_a_message_while_cells_lack_labels(case, cell_ids, pathologist, client):
    client.force_login(pathologist)
    response = post(client, "cases:review_sign", case, {"password": DEFAULT_PASSWORD})
    assert response.status_code == 400
    assert "cannot be signed: 2 cells have no final label" in response.content.decode()
    case.refresh_from_db()
    assert case.status == Case.Status.AWAITING_REVIEW


def test_sign_asks_for_the_password_again(case, cell_ids, pathologist, client):
    review_cells(case=case, image_ids=cell_ids, reviewer=pathologist)
    client.force_login(pathologist)
    page = client.get(reverse("cases:review_sign", args=[case.pk])).content.decode()
    assert 'data-testid="sign-password"' in page and 'data-testid="sign-code"' not in page
    for data, message in [({}, "Enter your password"), ({"password": "wrong"}, "That password is not right")]:
        response = post(client, "cases:review_sign", case, data)
        assert response.status_code == 400 and message in response.content.decode()
    case.refresh_from_db()
    assert case.status == Case.Status.AWAITING_REVIEW
    failed = AuditEvent.objects.get(action=AuditEvent.Action.SIGN_IN_FAILED)
    assert failed.details == {"re_authentication": f"sign case {case.accession_id}", "method": "password"}


def test_sign_with_a_totp_code(case, cell_ids, make_user, client):
    signer = make_user(Role.PATHOLOGIST, mfa=True)
    review_cells(case=case, image_ids=cell_ids, reviewer=signer)
    client.force_login(signer)
    assert 'data-testid="sign-code"' in client.get(reverse("cases:review_sign", args=[case.pk])).content.decode()
    assert post(client, "cases:review_sign", case, {"code": "000000"}).status_code == 400
    assert post(client, "cases:review_sign", case, {"code": current_totp_code()}).status_code == 302
    case.refresh_from_db()
    assert (case.status, case.signed_by) == (Case.Status.SIGNED, signer)


def test_sign_locks_the_case(case, cell_ids, pathologist, client):
    review_cells(case=case, image_ids=cell_ids, reviewer=pathologist)
    client.force_login(pathologist)
    post(client, "cases:review_sign", case, {"password": DEFAULT_PASSWORD})
    case.refresh_from_db()
    assert (case.status, case.signed_by) == (Case.Status.SIGNED, pathologist)
    page = client.get(reverse("cases:review", args=[case.pk])).content.decode()
    assert 'data-testid="amend-selected"' in page and 'data-testid="override-selected"' not in page


def test_technicians_cannot_sign(case, cell_ids, pathologist, technician, client):
    review_cells(case=case, image_ids=cell_ids, reviewer=pathologist)
    client.force_login(technician)
    assert post(client, "cases:review_sign", case, {"password": DEFAULT_PASSWORD}).status_code == 403
    case.refresh_from_db()
    assert case.status != Case.Status.SIGNED


def test_amendment_needs_a_reason_on_the_page(case, cell_ids, pathologist, client):
    review_cells(case=case, image_ids=cell_ids, reviewer=pathologist)
    client.force_login(pathologist)
    post(client, "cases:review_sign", case, {"password": DEFAULT_PASSWORD})
    response = post(client, "cases:review_amend", case, {"cells": [cell_ids[0]], "to_label": "basophil"})
    assert response.status_code == 400
    assert "An amendment needs a reason." in response.content.decode()
    post(client, "cases:review_amend", case, {"cells": [cell_ids[0]], "to_label": "basophil", "reason": "re-read"})
    assert Review.objects.filter(kind=Review.Kind.AMENDMENT, image_id=cell_ids[0]).exists()


def test_differential_page_marks_unreviewed_cells_and_flags(case, cell_ids, pathologist, technician, client):
    review_cells(case=case, image_ids=[cell_ids[0]], reviewer=pathologist)
    client.force_login(technician)
    response = client.get(reverse("cases:differential", args=[case.pk]))
    content = response.content.decode()
    assert response.status_code == 200
    assert "1 with a pathologist's final label, 1 counted with the model's predicted label" in content
    # One neutrophil and one lymphocyte: 50% each, inside 40-75% for neutrophils, above 20-45% for lymphocytes.
    assert 'data-label="neutrophil" data-flag=""' in content
    assert 'data-label="lymphocyte" data-flag="high"' in content
    assert "@media print" in content


def test_differential_page_is_refused_to_researchers(case, researcher, client):
    client.force_login(researcher)
    assert client.get(reverse("cases:differential", args=[case.pk])).status_code == 403


def test_gradcam_of_an_unclassified_cell_says_why_not(pathologist, client):
    image = CellImageFactory(status="failed")
    client.force_login(pathologist)
    response = client.get(reverse("cases:review_gradcam", args=[image.pk]))
    assert response.status_code == 409
    assert "has not been classified" in response.content.decode()


def stored_cell(case, picture: Image.Image):
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return CellImageFactory(case=case, storage_key=storage.save(buffer.getvalue()))


def test_gradcam_without_a_keras_model_says_why_not(case, pathologist, client):
    image = stored_cell(case, Image.new("RGB", (40, 40), "pink"))
    PredictionFactory(image=image, model_version=ModelVersionFactory(keras_artifact=""))
    client.force_login(pathologist)
    response = client.get(reverse("cases:review_gradcam", args=[image.pk]))
    assert response.status_code == 409
    assert "no Keras model file" in response.content.decode()


@pytest.mark.slow
def test_gradcam_overlay_is_a_png_of_the_cell(tiny_model, pathologist, client):
    from inference.testing import synthetic_cell_image

    image = stored_cell(CaseFactory(), synthetic_cell_image(0, len(tiny_model.classes), size=48))
    PredictionFactory(image=image, model_version=tiny_model, label=tiny_model.classes[0])
    client.force_login(pathologist)
    response = client.get(reverse("cases:review_gradcam", args=[image.pk]))
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (48, 48)


def test_a_cell_found_in_a_field_shows_its_field_and_box_in_the_zoom(case, pathologist, client):
    field = CellImageFactory(case=case, kind="field", width=1200, height=900)
    cell = CellImageFactory(case=case, parent=field, box_x0=100, box_y0=50, box_x1=180, box_y1=140)
    PredictionFactory(image=cell, label="monocyte")
    client.force_login(pathologist)
    content = client.get(reverse("cases:review", args=[case.pk])).content.decode()
    assert content.count('data-testid="review-cell"') == 3  # the two cells of the fixture and this one, not the field
    assert (
        f'data-field-src="{reverse("cases:image", args=[field.pk])}?variant=preview" '
        'data-field-size="1200,900" data-box="100,50,180,140"'
    ) in content
