import pytest
from django.test import override_settings

from audit.models import AuditEvent
from cases import services, storage
from cases.models import Case, CellImage
from tests.cases import images
from tests.factories import CaseFactory


@pytest.fixture
def case(technician):
    return CaseFactory(created_by=technician)


def test_create_case_audits_and_starts_as_draft(technician):
    case = services.create_case(accession_id=" ACC-1 ", patient_reference="MRN1", created_by=technician)

    assert (case.accession_id, case.status) == ("ACC-1", Case.Status.DRAFT)
    assert AuditEvent.objects.filter(action=AuditEvent.Action.CASE_CREATED, object_id=str(case.pk)).exists()


def test_duplicate_accession_id_is_a_clear_error(technician):
    services.create_case(accession_id="ACC-1", created_by=technician)

    with pytest.raises(services.CaseError, match="ACC-1 already exists"):
        services.create_case(accession_id="ACC-1", created_by=technician)


def test_accepted_image_is_stored_encrypted_with_its_metadata(case, technician):
    data = images.rgb_png(size=(8, 6))

    (image,), rejected = services.add_images(
        case=case, files=[images.upload("dir/cell one.png", data)], uploaded_by=technician
    )

    assert rejected == []
    assert (image.original_name, image.width, image.height, image.size_bytes) == ("cell one.png", 8, 6, len(data))
    assert (image.content_type, image.status, image.uploaded_by) == ("image/png", CellImage.Status.QUEUED, technician)
    assert storage.load(image.storage_key) == data
    assert "cell" not in image.storage_key


def test_upload_moves_the_case_to_classifying(case, technician):
    services.add_images(case=case, files=[images.upload("a.png", images.rgb_png())], uploaded_by=technician)

    case.refresh_from_db()
    assert case.status == Case.Status.CLASSIFYING


@override_settings(MAX_UPLOAD_BYTES=2000)
def test_bad_files_get_a_message_each_and_the_good_files_of_the_batch_are_kept(case, technician):
    bad = {
        "truncated.jpg": images.truncated_jpeg(),
        "empty.jpg": b"",
        "notes.jpg": b"not an image at all\n",
        "bomb.png": images.png_declaring(50_000, 50_000),
        "anim.gif": images.animated_gif(),
        "drawing.svg": images.SVG,
        "huge.png": images.noisy_png(size=(48, 48)),
    }
    good = {"cmyk.jpg": images.cmyk_jpeg(), "deep.png": images.png_16_bit(), "plain.jpg": images.rgb_jpeg()}
    files = [images.upload(name, data) for name, data in {**bad, **good}.items()]

    accepted, rejected = services.add_images(case=case, files=files, uploaded_by=technician)

    assert sorted(image.original_name for image in accepted) == sorted(good)
    assert [item.name for item in rejected] == list(bad)
    assert len({item.message for item in rejected}) == len(bad)
    assert all(item.message.startswith(item.name) for item in rejected)
    assert CellImage.objects.filter(case=case).count() == len(good)


def test_each_rejection_is_audited(case, technician):
    services.add_images(case=case, files=[images.upload("empty.jpg", b"")], uploaded_by=technician)

    event = AuditEvent.objects.get(action=AuditEvent.Action.UPLOAD_REJECTED)
    assert event.details["file"] == "empty.jpg"


def test_each_accepted_image_is_audited(case, technician):
    (image,), _ = services.add_images(
        case=case, files=[images.upload("a.png", images.rgb_png())], uploaded_by=technician
    )

    assert AuditEvent.objects.filter(action=AuditEvent.Action.UPLOAD, object_id=str(image.pk)).exists()


def test_the_same_image_twice_in_a_case_is_rejected(case, technician):
    data = images.rgb_png()
    services.add_images(case=case, files=[images.upload("a.png", data)], uploaded_by=technician)

    accepted, (rejected,) = services.add_images(case=case, files=[images.upload("b.png", data)], uploaded_by=technician)

    assert accepted == []
    assert "identical to a.png" in rejected.message


def test_duplicates_and_bad_files_are_rejected_in_the_order_the_files_came(case, technician):
    known, other = images.rgb_png(colour=(1, 2, 3)), images.rgb_png(colour=(4, 5, 6))
    services.add_images(case=case, files=[images.upload("known.png", known)], uploaded_by=technician)
    files = [
        images.upload("again.png", known),
        images.upload("new.png", other),
        images.upload("empty.jpg", b""),
        images.upload("new-twice.png", other),
    ]

    accepted, rejected = services.add_images(case=case, files=files, uploaded_by=technician)

    assert [image.original_name for image in accepted] == ["new.png"]
    assert [item.name for item in rejected] == ["again.png", "empty.jpg", "new-twice.png"]
    assert "identical to known.png" in rejected[0].message
    assert "identical to new.png" in rejected[2].message
    assert CellImage.objects.filter(case=case).count() == 2


def test_uploads_to_a_signed_case_are_refused(technician):
    case = CaseFactory(created_by=technician, status=Case.Status.SIGNED)

    with pytest.raises(services.UploadRefused, match="signed"):
        services.add_images(case=case, files=[images.upload("a.png", images.rgb_png())], uploaded_by=technician)
    assert not CellImage.objects.exists()


def test_classification_is_scheduled_on_commit(case, technician, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    monkeypatch.setattr(services, "enqueue_classification", lambda *, image_ids: sent.append(image_ids))

    with django_capture_on_commit_callbacks(execute=True):
        (image,), _ = services.add_images(
            case=case, files=[images.upload("a.png", images.rgb_png())], uploaded_by=technician
        )

    assert sent == [[image.pk]]
