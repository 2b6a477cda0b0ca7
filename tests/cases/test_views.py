import pytest
from django.test import override_settings
from django.urls import reverse

from audit.models import AuditEvent
from cases import services
from cases.models import Case, CellImage
from tests.cases import images
from tests.factories import CaseFactory, CellImageFactory


@pytest.fixture
def case(technician):
    return CaseFactory(created_by=technician, patient_reference="MRN-SECRET-42")


def upload_one(case, user, name="cell.png", data=None):
    (image,), _ = services.add_images(
        case=case, files=[images.upload(name, data or images.rgb_png())], uploaded_by=user
    )
    return image


def test_case_list_shows_cases_but_never_the_patient_reference(client, technician, case):
    client.force_login(technician)

    response = client.get(reverse("cases:list"))

    assert response.status_code == 200
    assert case.accession_id in response.text
    assert "MRN-SECRET-42" not in response.text


def test_case_list_filters_by_status(client, pathologist):
    CaseFactory(accession_id="ACC-DRAFT")
    CaseFactory(accession_id="ACC-SIGNED", status=Case.Status.SIGNED)
    client.force_login(pathologist)

    response = client.get(reverse("cases:list"), {"status": "signed"})

    assert "ACC-SIGNED" in response.text
    assert "ACC-DRAFT" not in response.text


def test_researcher_cannot_see_cases(client, researcher):
    client.force_login(researcher)

    assert client.get(reverse("cases:list")).status_code == 403


def test_anonymous_user_is_sent_to_sign_in(client):
    response = client.get(reverse("cases:list"))

    assert response.status_code == 302
    assert reverse("account_login") in response["Location"]


def test_technician_creates_a_case(client, technician):
    client.force_login(technician)

    response = client.post(reverse("cases:create"), {"accession_id": "ACC-77", "patient_reference": "MRN77"})

    case = Case.objects.get(accession_id="ACC-77")
    assert response.status_code == 302
    assert response["Location"] == reverse("cases:detail", args=[case.pk])
    assert case.created_by == technician


def test_duplicate_accession_id_is_shown_on_the_form(client, technician, case):
    client.force_login(technician)

    response = client.post(reverse("cases:create"), {"accession_id": case.accession_id})

    assert response.status_code == 200
    assert "already exists" in response.text


def test_pathologist_cannot_create_cases(client, pathologist):
    client.force_login(pathologist)

    assert client.post(reverse("cases:create"), {"accession_id": "ACC-9"}).status_code == 403


def test_case_page_has_the_upload_area_for_technicians(client, technician, case):
    client.force_login(technician)

    response = client.get(reverse("cases:detail", args=[case.pk]))

    assert 'data-testid="upload-input"' in response.text
    assert 'data-testid="upload-progress"' not in response.text  # bars are made per file by upload.js


def test_case_page_has_no_upload_area_for_pathologists(client, pathologist, case):
    client.force_login(pathologist)

    response = client.get(reverse("cases:detail", args=[case.pk]))

    assert response.status_code == 200
    assert 'data-testid="upload-input"' not in response.text


@override_settings(MAX_UPLOAD_BYTES=2000)
def test_upload_of_a_mixed_batch_answers_each_file(client, technician, case):
    client.force_login(technician)
    bad = {
        "truncated.jpg": images.truncated_jpeg(),
        "empty.jpg": b"",
        "notes.jpg": b"plain text\n",
        "bomb.png": images.png_declaring(50_000, 50_000),
        "anim.gif": images.animated_gif(),
        "drawing.svg": images.SVG,
        "huge.png": images.noisy_png(size=(48, 48)),
    }
    good = {"cmyk.jpg": images.cmyk_jpeg(), "deep.png": images.png_16_bit(), "fine.jpg": images.rgb_jpeg()}
    files = [images.upload(name, data) for name, data in {**bad, **good}.items()]

    response = client.post(reverse("cases:upload", args=[case.pk]), {"files": files}, HTTP_ACCEPT="application/json")

    assert response.status_code == 201
    body = response.json()
    assert sorted(item["name"] for item in body["accepted"]) == sorted(good)
    assert {item["name"] for item in body["rejected"]} == set(bad)
    assert all(item["message"] for item in body["rejected"])
    assert CellImage.objects.filter(case=case).count() == len(good)


def test_upload_answer_carries_the_accepted_cells_cards(client, technician, case):
    """The page puts these cards in place without a cards request of its own (issue 12)."""
    client.force_login(technician)
    files = [images.upload("a.jpg", images.rgb_jpeg()), images.upload("b.txt", b"plain text\n")]

    response = client.post(reverse("cases:upload", args=[case.pk]), {"files": files}, HTTP_ACCEPT="application/json")

    body = response.json()
    (accepted,) = body["accepted"]
    image = CellImage.objects.get(pk=accepted["id"])
    cards = body["cards"]
    assert cards.count('data-testid="cell-card"') == 1
    assert f'data-image-id="{image.pk}" data-status="{image.status}"' in cards
    assert 'data-testid="case-status"' in cards


def test_with_a_broker_the_upload_answer_renders_no_cards_and_the_page_has_the_queued_card(
    client, technician, case, settings, monkeypatch
):
    """The cells are all queued when the answer leaves: the page draws them from its queued card
    (live_grid.js showQueued), so the answer carries none."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    monkeypatch.setattr(services, "enqueue_classification", lambda *, image_ids: None)
    client.force_login(technician)

    response = client.post(
        reverse("cases:upload", args=[case.pk]),
        {"files": [images.upload("a.jpg", images.rgb_jpeg())]},
        HTTP_ACCEPT="application/json",
    )
    page = client.get(reverse("cases:detail", args=[case.pk])).content.decode()

    body = response.json()
    assert response.status_code == 201 and "cards" not in body
    (accepted,) = body["accepted"]
    assert accepted["status"] == "queued"
    template = page.split("<template data-queued-card-template", 1)[1].split("</template>", 1)[0]
    assert template.count('data-testid="cell-card"') == 1 and 'data-status="queued"' in template
    assert "data-cell-name" in template and "cell-retry" not in template


def test_upload_without_script_redirects_with_messages(client, technician, case):
    client.force_login(technician)

    response = client.post(
        reverse("cases:upload", args=[case.pk]),
        {"files": [images.upload("empty.jpg", b""), images.upload("ok.png", images.rgb_png())]},
        follow=True,
    )

    assert "1 image uploaded" in response.text
    assert "empty.jpg is empty" in response.text


def test_upload_with_no_file_is_a_clear_error(client, technician, case):
    client.force_login(technician)

    response = client.post(reverse("cases:upload", args=[case.pk]), {}, HTTP_ACCEPT="application/json")

    assert response.status_code == 400
    assert "at least one image" in response.json()["detail"]


def test_upload_to_a_signed_case_is_refused(client, technician):
    case = CaseFactory(created_by=technician, status=Case.Status.SIGNED)
    client.force_login(technician)

    response = client.post(
        reverse("cases:upload", args=[case.pk]),
        {"files": [images.upload("ok.png", images.rgb_png())]},
        HTTP_ACCEPT="application/json",
    )

    assert response.status_code == 409
    assert "signed" in response.json()["detail"]


def test_cells_fragment_marks_pending_cells_for_the_live_grid(client, technician, case):
    upload_one(case, technician)
    client.force_login(technician)

    response = client.get(reverse("cases:cells", args=[case.pk]))

    assert 'data-pending="true"' in response.text
    # live_grid.js keeps it current: it fetches changed cards from here (by push, else polling every second).
    assert f'data-cards-url="{reverse("cases:cards", args=[case.pk])}"' in response.text


def test_cells_fragment_has_nothing_pending_when_everything_is_done(client, technician, case):
    CellImageFactory(case=case, status=CellImage.Status.CLASSIFIED)
    client.force_login(technician)

    response = client.get(reverse("cases:cells", args=[case.pk]))

    assert 'data-pending="false"' in response.text


def test_failed_cell_shows_its_message_and_a_retry_button(client, technician, case):
    CellImageFactory(case=case, status=CellImage.Status.FAILED, status_message="Classification failed: boom")
    client.force_login(technician)

    response = client.get(reverse("cases:cells", args=[case.pk]))

    assert "Classification failed: boom" in response.text
    assert 'data-testid="cell-retry"' in response.text


def test_pathologist_gets_no_retry_button(client, pathologist, case):
    CellImageFactory(case=case, status=CellImage.Status.FAILED, status_message="boom")
    client.force_login(pathologist)

    response = client.get(reverse("cases:cells", args=[case.pk]))

    assert 'data-testid="cell-retry"' not in response.text


def test_flagged_prediction_is_shown_as_needing_review(client, technician, case):
    from tests.factories import PredictionFactory

    PredictionFactory(image=CellImageFactory(case=case), label="monocyte", flagged=True)
    client.force_login(technician)

    response = client.get(reverse("cases:cells", args=[case.pk]))

    assert "monocyte" in response.text
    assert "unidentified — needs review" in response.text


def test_retry_view_queues_a_failed_image_again(
    client, technician, case, django_capture_on_commit_callbacks, monkeypatch
):
    image = upload_one(case, technician)
    CellImage.objects.filter(pk=image.pk).update(status=CellImage.Status.FAILED, status_message="boom")
    sent = []
    monkeypatch.setattr(services, "enqueue_classification", lambda *, image_ids: sent.append(image_ids))
    client.force_login(technician)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("cases:retry", args=[image.pk]))

    image.refresh_from_db()
    assert response.status_code == 302
    assert (image.status, image.status_message) == (CellImage.Status.QUEUED, "")
    assert sent == [[image.pk]]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.CLASSIFICATION_RETRIED).exists()


def test_retry_of_a_classified_image_is_refused_with_a_message(client, technician, case):
    image = CellImageFactory(case=case, status=CellImage.Status.CLASSIFIED)
    client.force_login(technician)

    response = client.post(reverse("cases:retry", args=[image.pk]), follow=True)

    assert "already classified" in response.text


def test_pathologist_cannot_retry(client, pathologist, case):
    image = CellImageFactory(case=case, status=CellImage.Status.FAILED)
    client.force_login(pathologist)

    assert client.post(reverse("cases:retry", args=[image.pk])).status_code == 403


def test_image_view_streams_the_decrypted_image_privately(client, pathologist, technician, case):
    data = images.rgb_png()
    image = upload_one(case, technician, data=data)
    client.force_login(pathologist)

    response = client.get(reverse("cases:image", args=[image.pk]))

    assert response.status_code == 200
    assert response.content == data
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == "private, no-store"
    assert AuditEvent.objects.filter(action=AuditEvent.Action.IMAGE_VIEWED, object_id=str(image.pk)).exists()


def test_image_view_converts_what_browsers_cannot_show(client, technician, case):
    image = upload_one(case, technician, name="scan.tif", data=images.encode(images.Image.new("RGB", (8, 8)), "TIFF"))
    client.force_login(technician)

    response = client.get(reverse("cases:image", args=[image.pk]))

    assert response["Content-Type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")


def test_thumbnail_is_a_small_jpeg(client, technician, case):
    image = upload_one(case, technician, data=images.rgb_png(size=(600, 300)))
    client.force_login(technician)

    response = client.get(reverse("cases:image", args=[image.pk]), {"variant": "thumb"})

    thumbnail = images.Image.open(images.BytesIO(response.content))
    assert (thumbnail.format, thumbnail.size) == ("JPEG", (224, 112))


def test_researcher_cannot_see_images(client, researcher, technician, case):
    image = upload_one(case, technician)
    client.force_login(researcher)

    assert client.get(reverse("cases:image", args=[image.pk])).status_code == 403


def test_tampered_image_file_gives_a_clear_error(client, technician, case, settings):
    image = upload_one(case, technician)
    path = settings.PRIVATE_MEDIA_ROOT / image.storage_key
    blob = path.read_bytes()
    path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 0xFF]))
    client.force_login(technician)

    response = client.get(reverse("cases:image", args=[image.pk]))

    assert response.status_code == 500
    assert "integrity check" in response.text


def test_cells_fragment_also_updates_the_case_status_badge(client, technician, case):
    CellImageFactory(case=case, status=CellImage.Status.CLASSIFIED)
    Case.objects.filter(pk=case.pk).update(status=Case.Status.AWAITING_REVIEW)
    client.force_login(technician)

    response = client.get(reverse("cases:cells", args=[case.pk]))

    assert 'id="case-status"' in response.text
    assert 'hx-swap-oob="true"' in response.text
    assert "Awaiting review" in response.text


def test_a_crashing_in_process_classification_does_not_break_the_upload(
    client, technician, case, monkeypatch, django_capture_on_commit_callbacks
):
    from cases import classification

    def crash(*, image_ids):
        raise RuntimeError("unexpected bug in classification")

    monkeypatch.setattr(classification, "classify", crash)
    client.force_login(technician)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("cases:upload", args=[case.pk]),
            {"files": [images.upload("ok.png", images.rgb_png())]},
            HTTP_ACCEPT="application/json",
        )

    assert response.status_code == 201
    assert CellImage.objects.get(case=case).status == CellImage.Status.QUEUED
