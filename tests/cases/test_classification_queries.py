"""The classification workflow stores a batch with a fixed number of queries, whatever the number of cells in it,
and each row still gets its own values.

The inference pipeline is replaced by a fake (as in test_field_uploads) so the stored values are known.
"""

from __future__ import annotations

import datetime

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cases import classification, services
from cases.models import CellImage, Prediction
from tests.cases import images
from tests.cases.test_field_uploads import crop_of, field_of, found
from tests.factories import CaseFactory


def crop_answer(picture):
    """One cell whose box depends on the picture's size, so every crop gets its own box."""
    width, height = picture.size
    return crop_of(picture, [found((1, 2, width - 1, height - 2), "eosinophil")])


def field_answer(cells: int):
    def answer(picture):
        return field_of(picture, [found((10 * n, 5, 10 * n + 8, 13), "lymphocyte") for n in range(cells)])

    return answer


def uploads(technician, count: int, *, size=(40, 30)) -> list[CellImage]:
    """`count` queued uploads in a new case, each a different picture (size and colour)."""
    case = CaseFactory(created_by=technician)
    files = [
        images.upload(f"image-{n}.png", images.rgb_png(size=(size[0] + n, size[1] + n), colour=(10 + n, 90, 160)))
        for n in range(count)
    ]
    accepted, rejected = services.add_images(case=case, files=files, uploaded_by=technician)
    assert rejected == [] and len(accepted) == count
    return accepted


def queries_to_classify(accepted: list[CellImage]) -> int:
    with CaptureQueriesContext(connection) as queries:
        counts = classification.classify(image_ids=[image.pk for image in accepted])
    assert counts["classified"] == len(accepted)
    return len(queries)


def test_storing_a_batch_of_crops_takes_as_many_queries_for_twelve_as_for_two(analysis, technician):
    analysis(crop_answer)
    queries_to_classify(uploads(technician, 1))  # the model is loaded once per process: not counted below

    two = queries_to_classify(uploads(technician, 2))
    twelve = queries_to_classify(uploads(technician, 12))

    assert twelve == two
    assert Prediction.objects.count() == 1 + 2 + 12


def test_storing_fields_takes_as_many_queries_for_many_fields_and_cells_as_for_one(analysis, technician):
    analysis(field_answer(2))
    queries_to_classify(uploads(technician, 1, size=(200, 100)))
    one = queries_to_classify(uploads(technician, 1, size=(200, 100)))

    # 30 new cells: Django splits an INSERT on SQLite at 999 parameters (39 cells), which is not per cell.
    analysis(field_answer(6))
    many = queries_to_classify(uploads(technician, 5, size=(200, 100)))

    assert many == one
    assert CellImage.objects.filter(parent__isnull=False).count() == 2 + 2 + 5 * 6


def test_each_crop_of_a_batch_gets_its_own_box_and_keeps_its_other_columns(analysis, technician):
    analysis(crop_answer)
    accepted = uploads(technician, 5)
    before = timezone.now()

    classification.classify(image_ids=[image.pk for image in accepted])

    for n, image in enumerate(accepted):
        image.refresh_from_db()
        width, height = 40 + n, 30 + n
        assert image.box == (1, 2, width - 1, height - 2)
        assert (image.kind, image.status, image.located_as) == ("cell", "classified", "leukocyte")
        assert (image.um_per_pixel, image.scale_source, image.status_message) == (None, "default", "")
        assert image.status_changed_at >= before
        # Columns the store does not write are left as they were.
        assert (image.attempts, image.final_label, image.original_name) == (1, "", f"image-{n}.png")
        assert image.predictions.get().label == "eosinophil"


def test_update_rows_writes_each_row_its_own_values_including_none_and_times(technician):
    first, second, untouched = uploads(technician, 3)
    when = timezone.now() - datetime.timedelta(days=3)
    first.um_per_pixel, first.scale_source, first.status_changed_at, first.box_x0 = 0.25, "red_cells", when, 7
    second.um_per_pixel, second.scale_source, second.status_changed_at, second.box_x0 = None, "", when, None
    first.status_message, second.status_message = 'it\'s a "quoted" message; -- not SQL', ""

    with CaptureQueriesContext(connection) as queries:
        classification.update_rows(
            CellImage,
            [first, second],
            ["um_per_pixel", "scale_source", "status_changed_at", "box_x0", "status_message"],
        )

    assert len(queries) == 1
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.um_per_pixel, first.scale_source, first.status_changed_at, first.box_x0) == (
        0.25,
        "red_cells",
        when,
        7,
    )
    assert first.status_message == 'it\'s a "quoted" message; -- not SQL'
    assert (second.um_per_pixel, second.scale_source, second.status_changed_at, second.box_x0) == (None, "", when, None)
    assert CellImage.objects.get(pk=untouched.pk).status_changed_at != when
