"""Uploads that are whole microscope fields, single-cell crops, or hold no cell at all; the case-level warning;
stored thumbnails; the thin classification task.

Most tests replace the inference pipeline (cases.classification.analyse_images) by a fake that answers with
chosen cells, so what is stored is known exactly; one uses the real pipeline on an olympus field.
"""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.urls import reverse
from PIL import Image

from cases import classification, review_selectors, selectors, services, storage, tasks
from cases.models import Case, CellImage, Prediction
from inference.analysis import FoundCell, ImageAnalysis
from inference.predictor import CellPrediction
from tests.api.conftest import token_client
from tests.cases import images
from tests.conftest import skip_or_fail
from tests.factories import CaseFactory, LaboratoryFactory

CLASSES = ["basophil", "eosinophil", "lymphocyte", "neutrophil", "platelet"]


def prediction(label: str, confidence: float = 0.9, reasons: tuple[str, ...] = ()) -> CellPrediction:
    rest = (1 - confidence) / (len(CLASSES) - 1)
    return CellPrediction(
        label=label,
        confidence=confidence,
        probabilities={name: confidence if name == label else rest for name in CLASSES},
        flagged=bool(reasons),
        ood_score=0.5,
        latency_ms=3.0,
        flag_reasons=reasons,
    )


def found(box, label="neutrophil", kind="leukocyte", reasons=()) -> FoundCell:
    x0, y0, x1, y1 = box
    crop = Image.new("RGB", (x1 - x0, y1 - y0), (180, 90, 160))
    return FoundCell(box=box, kind=kind, crop=crop, prediction=prediction(label, reasons=reasons))


def field_of(picture, cells, *, scale=0.2, source="red_cells") -> ImageAnalysis:
    return ImageAnalysis(
        layout="field",
        size=picture.size,
        cells=cells,
        um_per_pixel=scale,
        scale_source=source,
        main_cell=0 if cells else None,
    )


def crop_of(picture, cells) -> ImageAnalysis:
    return ImageAnalysis(
        layout="crop",
        size=picture.size,
        cells=cells,
        um_per_pixel=None,
        scale_source="default",
        main_cell=0 if cells else None,
    )


class FakeAnalysis:
    """Answers each image with `answer(picture)`; remembers the scale it was called with."""

    def __init__(self, answer):
        self.answer = answer
        self.scales: list[float | None] = []

    def __call__(self, pictures, *, um_per_pixel=None, predictor=None):
        self.scales.append(um_per_pixel)
        return [self.answer(picture) for picture in pictures]


@pytest.fixture
def case(technician):
    return CaseFactory(created_by=technician)


def upload(case, user, name="field.png", size=(640, 480), colour=(230, 200, 200)):
    (image,), rejected = services.add_images(
        case=case, files=[images.upload(name, images.rgb_png(size=size, colour=colour))], uploaded_by=user
    )
    assert rejected == []
    return image


THREE_CELLS = [(10, 20, 110, 120), (300, 200, 390, 290), (500, 50, 530, 80)]


def three_cells(picture):
    return field_of(
        picture,
        [
            found(THREE_CELLS[0], "neutrophil"),
            found(THREE_CELLS[1], "lymphocyte", reasons=("low_confidence",)),
            found(THREE_CELLS[2], "platelet", kind="platelet"),
        ],
    )


def test_a_field_becomes_one_cell_per_cell_found_with_its_box_and_crop(analysis, case, technician, tiny_model):
    analysis(three_cells)
    field = upload(case, technician)

    tasks.classify_images.apply(args=[[field.pk]])

    field.refresh_from_db()
    assert (field.kind, field.status) == (CellImage.Kind.FIELD, CellImage.Status.CLASSIFIED)
    assert field.predictions.count() == 0  # the field itself is not a prediction
    assert (field.um_per_pixel, field.scale_source) == (0.2, "red_cells")
    assert field.preview_key
    cells = list(field.cells.order_by("pk"))
    assert [cell.box for cell in cells] == THREE_CELLS
    assert [cell.located_as for cell in cells] == ["leukocyte", "leukocyte", "platelet"]
    assert [cell.predictions.get().label for cell in cells] == ["neutrophil", "lymphocyte", "platelet"]
    assert cells[1].predictions.get().flag_reasons == ["low_confidence"]
    assert {cell.kind for cell in cells} == {CellImage.Kind.CELL}
    assert all(cell.predictions.get().model_version == tiny_model for cell in cells)
    # Each cell has its own stored, encrypted crop (the classified window) and thumbnail.
    first = cells[0]
    raw = (Path(django_settings.PRIVATE_MEDIA_ROOT) / first.storage_key).read_bytes()
    assert not raw.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(storage.load(first.storage_key))) as crop:
        assert crop.size == (100, 100)
    assert first.thumbnail_key and first.thumbnail_key != first.storage_key
    case.refresh_from_db()
    assert case.status == Case.Status.AWAITING_REVIEW


def test_review_and_differential_count_the_found_cells_never_the_field(analysis, case, technician):
    analysis(three_cells)
    field = upload(case, technician)
    tasks.classify_images.apply(args=[[field.pk]])

    progress = review_selectors.review_progress(case=case)
    differential = review_selectors.case_differential(case=case)
    listed = selectors.list_cases().get(pk=case.pk)

    assert progress.total == 3
    assert field.pk not in progress.unlabelled_ids
    assert differential.total_cells == 3
    assert (listed.image_count, listed.cell_count) == (1, 3)


def test_the_case_page_draws_the_field_with_a_box_per_cell(client, analysis, case, technician):
    analysis(three_cells)
    field = upload(case, technician)
    tasks.classify_images.apply(args=[[field.pk]])
    client.force_login(technician)

    page = client.get(reverse("cases:detail", args=[case.pk])).text

    assert f'data-testid="field-card" data-image-id="{field.pk}"' in page
    assert page.count('data-testid="field-box"') == 3
    assert 'x="300" y="200" width="90" height="90"' in page
    # The queued card's markup waits unshown in a <template> for live_grid.js (cells uploaded later).
    shown = re.sub(r"<template data-queued-card-template[^>]*>.*?</template>", "", page, flags=re.S)
    assert shown.count('data-testid="cell-card"') == 3
    assert "low confidence" in page  # the flag's reason in words


def test_a_field_preview_is_served_only_to_users_who_see_cases(client, analysis, case, technician, researcher):
    analysis(three_cells)
    field = upload(case, technician)
    tasks.classify_images.apply(args=[[field.pk]])
    url = reverse("cases:image", args=[field.pk]) + "?variant=preview"

    client.force_login(researcher)
    assert client.get(url).status_code == 403
    client.force_login(technician)
    response = client.get(url)

    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert response["Cache-Control"] == "private, no-store"
    with Image.open(io.BytesIO(response.content)) as preview:
        assert preview.size == (640, 480)


def test_the_api_describes_fields_and_their_cells(analysis, case, technician):
    analysis(three_cells)
    field = upload(case, technician)
    tasks.classify_images.apply(args=[[field.pk]])

    body = token_client(technician).get(f"/api/v1/cases/{case.pk}/images/").json()
    rows = {row["id"]: row for row in body["results"]} if isinstance(body, dict) else {r["id"]: r for r in body}

    field_row = rows[field.pk]
    assert field_row["kind"] == "field"
    assert field_row["box"] is None and field_row["predictions"] == []
    assert len(field_row["cells"]) == 3
    case_row = token_client(technician).get(f"/api/v1/cases/{case.pk}/").json()
    assert (case_row["image_count"], case_row["cell_count"]) == (1, 3)
    cell_row = rows[field_row["cells"][1]]
    assert cell_row["kind"] == "cell" and cell_row["parent"] == field.pk
    assert cell_row["box"] == list(THREE_CELLS[1])
    assert cell_row["predictions"][0]["flag_reasons"] == ["low_confidence"]


def test_a_crop_upload_stays_one_cell_with_its_box(analysis, case, technician):
    analysis(lambda picture: crop_of(picture, [found((4, 6, 60, 62), "eosinophil")]))
    crop = upload(case, technician, name="cell.png", size=(64, 68))

    tasks.classify_images.apply(args=[[crop.pk]])

    crop.refresh_from_db()
    assert (crop.kind, crop.status) == (CellImage.Kind.CELL, CellImage.Status.CLASSIFIED)
    assert crop.box == (4, 6, 60, 62)
    assert crop.parent is None and not crop.cells.exists()
    assert crop.predictions.get().label == "eosinophil"
    assert CellImage.objects.filter(case=case).count() == 1


def test_no_cell_found_is_a_final_state_not_a_failure_nor_a_prediction(client, analysis, case, technician):
    analysis(lambda picture: field_of(picture, []))
    empty = upload(case, technician, name="screenshot.png")

    tasks.classify_images.apply(args=[[empty.pk]])

    empty.refresh_from_db()
    assert (empty.kind, empty.status) == (CellImage.Kind.NO_CELL, CellImage.Status.NO_CELL)
    assert not Prediction.objects.exists()
    assert not selectors.retry_allowed(image=empty)
    assert review_selectors.review_progress(case=case).total == 0
    case.refresh_from_db()
    assert case.status == Case.Status.AWAITING_REVIEW
    client.force_login(technician)
    page = client.get(reverse("cases:detail", args=[case.pk])).text
    assert 'data-testid="cell-no-cell"' in page and "No cell found" in page
    # A task delivered again leaves it alone.
    tasks.classify_images.apply(args=[[empty.pk]])
    empty.refresh_from_db()
    assert empty.status == CellImage.Status.NO_CELL


def test_running_the_task_again_does_not_add_the_cells_twice(analysis, case, technician):
    analysis(three_cells)
    field = upload(case, technician)
    tasks.classify_images.apply(args=[[field.pk]])
    # As if the worker died after storing but before the broker heard: the task comes again.
    CellImage.objects.filter(pk=field.pk).update(status=CellImage.Status.CLASSIFYING)
    stored_files = {path for path in Path(django_settings.PRIVATE_MEDIA_ROOT).rglob("*") if path.is_file()}

    classification.classify(image_ids=[field.pk])

    assert field.cells.count() == 3
    assert Prediction.objects.count() == 3
    assert CellImage.objects.get(pk=field.pk).status == CellImage.Status.CLASSIFIED
    # The second analysis's files were removed again.
    assert {path for path in Path(django_settings.PRIVATE_MEDIA_ROOT).rglob("*") if path.is_file()} == stored_files


def test_the_laboratory_scale_reaches_the_pipeline(analysis, technician):
    fake = analysis(three_cells)
    known = CaseFactory(created_by=technician, laboratory=LaboratoryFactory(um_per_pixel=0.125))
    unknown = CaseFactory(created_by=technician)
    first = upload(known, technician)
    second = upload(unknown, technician, colour=(1, 2, 3))

    classification.classify(image_ids=[first.pk, second.pk])

    assert sorted(fake.scales, key=lambda scale: scale or 0) == [None, 0.125]


def test_a_pipeline_error_on_one_image_fails_only_that_image(analysis, case, technician):
    def answer(picture):
        if picture.getpixel((0, 0)) == (1, 2, 3):
            raise RuntimeError("window outside the image")
        return three_cells(picture)

    analysis(answer)
    bad = upload(case, technician, name="bad.png", colour=(1, 2, 3))
    good = upload(case, technician, name="good.png")

    tasks.classify_images.apply(args=[[bad.pk, good.pk]])

    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.status == CellImage.Status.FAILED
    assert "window outside the image" in bad.status_message
    assert good.kind == CellImage.Kind.FIELD and good.cells.count() == 3


def test_pages_watching_the_case_hear_of_the_field_and_its_new_cells(
    analysis, case, technician, monkeypatch, django_capture_on_commit_callbacks
):
    analysis(three_cells)
    field = upload(case, technician)
    heard = []
    monkeypatch.setattr(
        classification.events,
        "publish_image_updates",
        lambda *, case_id, image_ids, model_warning=False: heard.append((case_id, list(image_ids), model_warning)),
    )

    with django_capture_on_commit_callbacks(execute=True):
        tasks.classify_images.apply(args=[[field.pk]])

    cell_ids = list(field.cells.order_by("pk").values_list("pk", flat=True))
    assert heard == [(case.pk, sorted([field.pk, *cell_ids]), False)]  # three plain cells: not escalated


# The case-level warning.


def unlike(picture):
    return field_of(
        picture,
        [
            found((0, 0, 50, 50), reasons=("out_of_distribution",)),
            found((60, 0, 110, 50), reasons=("not_a_cell",)),
            found((120, 0, 170, 50)),
            found((180, 0, 230, 50), reasons=("low_confidence",)),
        ],
    )


def test_cells_unlike_the_training_data_warn_on_the_case_review_and_differential(
    client, analysis, case, technician, pathologist
):
    analysis(unlike)
    field = upload(case, technician)
    tasks.classify_images.apply(args=[[field.pk]])

    validity = selectors.model_validity(case=case)

    assert (validity.classified_cells, validity.unlike_training) == (4, 2)
    assert validity.warn
    client.force_login(pathologist)
    for name in ("cases:detail", "cases:review", "cases:differential"):
        page = client.get(reverse(name, args=[case.pk])).text
        assert "This model is not validated for images like these." in page, name
    api = token_client(pathologist).get(f"/api/v1/cases/{case.pk}/differential/").json()
    assert api["model_warning"] == selectors.NOT_VALIDATED_MESSAGE


def test_no_warning_when_few_cells_are_unlike_the_training_data(client, analysis, case, technician):
    # One of four is out of distribution (25 %, under the 30 % rule); low confidence alone does not count.
    analysis(
        lambda picture: field_of(
            picture,
            [
                found((0, 0, 50, 50), reasons=("out_of_distribution",)),
                found((60, 0, 110, 50), reasons=("low_confidence",)),
                found((120, 0, 170, 50)),
                found((180, 0, 230, 50)),
            ],
        )
    )
    field = upload(case, technician)
    tasks.classify_images.apply(args=[[field.pk]])
    client.force_login(technician)

    assert not selectors.model_validity(case=case).warn
    page = client.get(reverse("cases:detail", args=[case.pk])).text
    # The banner's markup waits unshown in a <template> for live_grid.js (an event saying the case is escalated).
    shown = re.sub(r"<template data-validity-warning-template>.*?</template>", "", page, flags=re.S)
    assert "not validated for images like these" in page
    assert "not validated for images like these" not in shown


def test_no_warning_below_the_minimum_number_of_cells(analysis, case, technician):
    analysis(lambda picture: field_of(picture, [found((0, 0, 50, 50), reasons=("not_a_cell",))] * 2))
    field = upload(case, technician)
    tasks.classify_images.apply(args=[[field.pk]])

    validity = selectors.model_validity(case=case)

    assert (validity.classified_cells, validity.unlike_training) == (2, 2)
    assert not validity.warn


# Stored thumbnails.


def test_thumbnails_are_stored_at_upload_and_served_without_decoding(client, analysis, case, technician, monkeypatch):
    analysis(three_cells)
    field = upload(case, technician, size=(1600, 1200))
    tasks.classify_images.apply(args=[[field.pk]])
    field.refresh_from_db()
    cell = field.cells.first()
    client.force_login(technician)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a thumbnail request decoded an image")

    monkeypatch.setattr(Image, "open", no_decoding)
    for image in (field, cell):
        response = client.get(reverse("cases:image", args=[image.pk]) + "?variant=thumb")
        assert response.status_code == 200
        assert response.content == storage.load(image.thumbnail_key)
    preview = client.get(reverse("cases:image", args=[field.pk]) + "?variant=preview")
    assert preview.content == storage.load(field.preview_key)
    monkeypatch.undo()
    with Image.open(io.BytesIO(storage.load(field.thumbnail_key))) as thumbnail:
        assert max(thumbnail.size) == selectors.THUMBNAIL_SIZE


def test_the_upload_decodes_each_image_once(case, technician, monkeypatch):
    from cases import validation

    decoded = []
    real_to_rgb = validation.to_rgb
    monkeypatch.setattr(validation, "to_rgb", lambda image: decoded.append(image.size) or real_to_rgb(image))
    monkeypatch.setattr(services, "schedule_classification", lambda **kwargs: None)

    services.add_images(
        case=case,
        files=[images.upload(f"{i}.png", images.rgb_png(size=(300, 200), colour=(i, 9, 9))) for i in range(3)],
        uploaded_by=technician,
    )

    assert decoded == [(300, 200)] * 3
    assert all(image.thumbnail_key for image in CellImage.objects.all())


# The thin task.


def _relative_imports(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            names.add(node.module or "")
            names.update(alias.name for alias in node.names if not node.module)
    return names


def test_the_task_only_delivers_and_the_workflow_imports_neither_services_nor_tasks():
    assert "services" not in _relative_imports(tasks)
    assert not {"services", "tasks"} & _relative_imports(classification)


def test_the_task_hands_its_images_to_the_workflow(monkeypatch, db):
    calls = []
    monkeypatch.setattr(classification, "classify", lambda *, image_ids: calls.append(image_ids) or {"classified": 2})

    result = tasks.classify_images.apply(args=[[5, 7]]).get()

    assert calls == [[5, 7]]
    assert result == {"classified": 2}


# The real pipeline.


def test_a_real_olympus_field_becomes_cells_with_boxes_inside_it(case, technician, tiny_model):
    from inference.locate import locate_cells

    folder = Path(django_settings.SHARED_DATA_DIR) / "datasets" / "olympus" / "images" / "test"
    if not folder.is_dir():
        skip_or_fail(f"olympus test fields not found at {folder}")
    # The first test field the cell finder reads as a field with several cells (some close-ups read as crops).
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as opened:
            location = locate_cells(opened.convert("RGB"))
        if location.layout == "field" and len(location.cells) >= 2:
            break
    else:
        pytest.fail("no olympus test field holds two cells the finder sees")
    (field,), _ = services.add_images(
        case=case, files=[images.upload(path.name, path.read_bytes())], uploaded_by=technician
    )

    tasks.classify_images.apply(args=[[field.pk]])

    field.refresh_from_db()
    assert field.kind == CellImage.Kind.FIELD, (field.kind, field.status, field.status_message)
    cells = list(field.cells.all())
    assert len(cells) == len(location.cells)
    for cell in cells:
        x0, y0, x1, y1 = cell.box
        assert 0 <= x0 < x1 <= field.width and 0 <= y0 < y1 <= field.height
        assert cell.predictions.get().label in tiny_model.classes
    assert review_selectors.review_progress(case=case).total == len(cells)


def test_a_field_itself_cannot_be_reviewed_only_its_cells(analysis, case, technician, pathologist):
    from cases.review_services import ReviewRefused, review_cells

    analysis(three_cells)
    field = upload(case, technician)
    tasks.classify_images.apply(args=[[field.pk]])

    with pytest.raises(ReviewRefused, match=f"has no cell {field.pk}"):
        review_cells(case=case, image_ids=[field.pk], reviewer=pathologist)
    review_cells(case=case, image_ids=list(field.cells.values_list("pk", flat=True)), reviewer=pathologist)

    assert review_selectors.review_progress(case=case).reviewed == 3


def test_a_page_polling_an_upload_that_became_a_field_gets_its_cells_too(client, analysis, case, technician):
    analysis(three_cells)
    field = upload(case, technician)
    tasks.classify_images.apply(args=[[field.pk]])
    client.force_login(technician)

    html = client.get(reverse("cases:cards", args=[case.pk]), {"ids": str(field.pk)}).text

    assert f'data-testid="field-card" data-image-id="{field.pk}"' in html
    for cell_id in field.cells.values_list("pk", flat=True):
        assert f'data-cell-col="{cell_id}"' in html
