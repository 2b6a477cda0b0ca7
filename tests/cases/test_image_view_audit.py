"""Every way of seeing a cell's pixels is in the audit trail: the full image, its thumbnail and preview, and the
Grad-CAM overlay. Each is one plain INSERT (the hash chain is sealed later, in batches)."""

import io

import pytest
from django.urls import reverse
from PIL import Image

from audit.models import AuditEvent
from cases import storage
from tests.factories import CaseFactory, CellImageFactory, PredictionFactory


def stored_cell(case, picture: Image.Image):
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    data = buffer.getvalue()
    return CellImageFactory(case=case, storage_key=storage.save(data), thumbnail_key=storage.save(data))


@pytest.mark.parametrize("variant", ["thumb", "full"])
def test_viewing_an_image_or_its_thumbnail_is_audited(client, technician, variant):
    image = stored_cell(CaseFactory(), Image.new("RGB", (40, 40), "pink"))
    client.force_login(technician)

    response = client.get(reverse("cases:image", args=[image.pk]), {"variant": variant})

    assert response.status_code == 200
    event = AuditEvent.objects.get(action=AuditEvent.Action.IMAGE_VIEWED)
    assert event.object_id == str(image.pk) and event.actor == technician
    assert event.details["variant"] == variant
    assert event.chain_seq is None  # sealed later, off the request


def test_a_gallery_of_thumbnails_is_one_insert_per_thumbnail_and_no_chaining(
    client, technician, django_assert_max_num_queries
):
    case = CaseFactory()
    images = [stored_cell(case, Image.new("RGB", (24, 24), (n, 0, 0))) for n in range(5)]
    client.force_login(technician)
    client.get(reverse("cases:image", args=[images[0].pk]), {"variant": "thumb"})  # session, user: warm

    for image in images[1:]:
        with django_assert_max_num_queries(12) as queries:
            client.get(reverse("cases:image", args=[image.pk]), {"variant": "thumb"})
        inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
        assert len(inserts) == 1 and "audit_auditevent" in inserts[0]
        updates = [q["sql"] for q in queries.captured_queries if "UPDATE" in q["sql"] and "audit" in q["sql"]]
        assert updates == []
    assert AuditEvent.objects.filter(action=AuditEvent.Action.IMAGE_VIEWED).count() == 5


@pytest.mark.slow
def test_a_gradcam_view_is_audited(tiny_model, pathologist, client):
    from inference.testing import synthetic_cell_image

    image = stored_cell(CaseFactory(), synthetic_cell_image(0, len(tiny_model.classes), size=48))
    PredictionFactory(image=image, model_version=tiny_model, label=tiny_model.classes[0])
    client.force_login(pathologist)

    response = client.get(reverse("cases:review_gradcam", args=[image.pk]))

    assert response.status_code == 200
    event = AuditEvent.objects.get(action=AuditEvent.Action.IMAGE_VIEWED)
    assert event.object_id == str(image.pk) and event.details["variant"] == "gradcam"
