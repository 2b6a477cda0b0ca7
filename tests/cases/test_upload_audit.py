"""Every uploaded (and every rejected) file stays in the audit trail with its own event, found by its image;
a multi-file upload writes them in one INSERT."""

from django.test.client import RequestFactory

from audit.models import AuditEvent
from cases import services
from tests.cases import images
from tests.factories import CaseFactory


def upload_files(count: int, *, prefix: str = "cell", blue: int = 160):
    return [images.upload(f"{prefix}-{n}.png", images.rgb_png(colour=(n * 20, 90, blue))) for n in range(count)]


def test_each_image_of_a_multi_file_upload_has_its_own_event(technician):
    case = CaseFactory(created_by=technician)
    request = RequestFactory().post("/", REMOTE_ADDR="10.1.2.3")
    request.user = technician

    accepted, _ = services.add_images(case=case, files=upload_files(5), uploaded_by=technician, request=request)

    events = AuditEvent.objects.filter(action=AuditEvent.Action.UPLOAD)
    assert sorted(int(event.object_id) for event in events) == sorted(image.pk for image in accepted)
    by_image = {int(event.object_id): event for event in events}
    for image in accepted:
        event = by_image[image.pk]
        assert event.object_type == "cases.cellimage" and event.actor == technician
        assert event.actor_email == technician.email and event.ip_address == "10.1.2.3"
        assert event.details == {
            "case": case.pk,
            "file": image.original_name,
            "sha256": image.sha256,
            "bytes": image.size_bytes,
        }
        assert event.chain_seq is None  # sealed later, in batches


def test_the_upload_events_are_one_insert_whatever_the_number_of_files(technician, django_assert_max_num_queries):
    case = CaseFactory(created_by=technician)
    services.add_images(case=case, files=upload_files(1, prefix="warm", blue=10), uploaded_by=technician)

    with django_assert_max_num_queries(50) as queries:
        services.add_images(case=case, files=upload_files(6), uploaded_by=technician)

    audit_inserts = [
        q["sql"] for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "audit_auditevent"')
    ]
    assert len(audit_inserts) == 1
    assert AuditEvent.objects.filter(action=AuditEvent.Action.UPLOAD).count() == 7


def test_each_rejected_file_has_its_own_event(technician):
    case = CaseFactory(created_by=technician)
    files = [images.upload("empty.png", b""), images.upload("text.png", b"not an image at all")]

    services.add_images(case=case, files=files, uploaded_by=technician)

    events = AuditEvent.objects.filter(action=AuditEvent.Action.UPLOAD_REJECTED)
    assert sorted(event.details["file"] for event in events) == ["empty.png", "text.png"]
    assert {event.object_id for event in events} == {str(case.pk)}
