"""The requests a technician makes per cell (bench/e2e.py; bench/api_request_cpu.py measures them): their
answers stay what they were, in a bounded number of queries."""

import json

import pytest
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from cases import selectors
from cases.api import _images_with_predictions
from cases.models import CellImage
from cases.serializers import CellImageSerializer
from tests.cases import images
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(technician):
    client = APIClient()
    client.force_authenticate(technician)
    return client


def as_json(data):
    return json.loads(JSONRenderer().render(data))


def test_the_upload_answer_is_the_images_as_read_back(api, technician):
    case = CaseFactory(created_by=technician)
    files = [images.upload("a.png", images.rgb_png()), images.upload("b.jpg", images.rgb_jpeg())]

    response = api.post(f"/api/v1/cases/{case.pk}/images/", {"files": files}, format="multipart")

    assert response.status_code == 201
    accepted = response.json()["accepted"]
    assert [image["original_name"] for image in accepted] == ["a.png", "b.jpg"]
    read_back = selectors.images_of_case(case=case).filter(pk__in=[image["id"] for image in accepted])
    assert accepted == as_json(CellImageSerializer(read_back, many=True).data)
    assert accepted[0]["predictions"] == [] and accepted[0]["cells"] == [] and accepted[0]["status"] == "queued"


def test_an_upload_of_one_crop_asks_few_queries(api, technician, django_assert_max_num_queries):
    case = CaseFactory(created_by=technician)
    first = images.upload("a.png", images.rgb_png())
    api.post(f"/api/v1/cases/{case.pk}/images/", {"files": [first]}, format="multipart")

    # The role (permission check), the case, its known hashes, the savepoint, the lock, the images' INSERT,
    # the audit INSERT, the release; the answer is made from the rows written (it used to read them back
    # with their uploader, predictions and cells: 3 more queries).
    with django_assert_max_num_queries(8):
        response = api.post(
            f"/api/v1/cases/{case.pk}/images/",
            {"files": [images.upload("b.jpg", images.rgb_jpeg())]},
            format="multipart",
        )
    assert response.status_code == 201


def test_the_case_images_page_asks_few_queries(api, technician, django_assert_max_num_queries):
    case = CaseFactory(created_by=technician)
    for _ in range(5):
        PredictionFactory(image=CellImageFactory(case=case))
    field = CellImageFactory(case=case, kind=CellImage.Kind.FIELD)
    CellImageFactory(case=case, parent=field)

    # The role (permission check), the case (no joins), the count, the page (no uploader join), its
    # predictions with their versions, the fields' cells.
    with django_assert_max_num_queries(6):
        response = api.get(f"/api/v1/cases/{case.pk}/images/")
    assert response.status_code == 200
    assert len(response.json()["results"]) == 7


@pytest.fixture
def image_kinds(technician):
    case = CaseFactory(created_by=technician)
    crop = CellImageFactory(case=case, um_per_pixel=0.1, scale_source="laboratory", located_as="leukocyte")
    crop.box_x0, crop.box_y0, crop.box_x1, crop.box_y1 = 3, 4, 60, 61
    crop.save()
    older, newer = ModelVersionFactory(name="older"), ModelVersionFactory(name="newer")
    PredictionFactory(image=crop, model_version=older, label="monocyte", confidence=0.5)
    PredictionFactory(
        image=crop, model_version=newer, flagged=True, ood_score=3.25, flag_reasons=["out_of_distribution"]
    )
    field = CellImageFactory(case=case, kind=CellImage.Kind.FIELD, status=CellImage.Status.CLASSIFIED)
    cells = [CellImageFactory(case=case, parent=field, box_x0=1, box_y0=2, box_x1=30, box_y1=31) for _ in range(2)]
    PredictionFactory(image=cells[1], model_version=newer, ood_score=None)
    queued = CellImageFactory(case=case, status=CellImage.Status.QUEUED, status_message="waiting for a worker")
    return [crop, field, *cells, queued]


def test_an_image_reads_as_the_serializer_shows_it(api, image_kinds):
    for image in image_kinds:
        response = api.get(f"/api/v1/images/{image.pk}/")
        assert response.status_code == 200
        expected = as_json(CellImageSerializer(_images_with_predictions().get(pk=image.pk)).data)
        assert response.json() == expected
        assert list(response.json()) == list(expected)
    crop, field = image_kinds[:2]
    assert [p["model_version"] for p in api.get(f"/api/v1/images/{crop.pk}/").json()["predictions"]] == [
        "newer",
        "older",
    ]
    assert api.get(f"/api/v1/images/{field.pk}/").json()["cells"] == sorted(image.pk for image in image_kinds[2:4])


def test_an_unknown_image_is_a_404(api, image_kinds):
    response = api.get(f"/api/v1/images/{max(image.pk for image in image_kinds) + 100}/")
    assert response.status_code == 404
    assert response.json()["detail"] == "No CellImage matches the given query."


def test_an_image_get_is_one_query_and_the_role(api, image_kinds, django_assert_max_num_queries):
    crop, field = image_kinds[:2]
    # The role (permission check) and the image joined to its predictions and their versions.
    with django_assert_max_num_queries(2):
        assert api.get(f"/api/v1/images/{crop.pk}/").status_code == 200
    # A field: its cells too.
    with django_assert_max_num_queries(3):
        assert api.get(f"/api/v1/images/{field.pk}/").status_code == 200


def test_the_duplicate_look_up_finds_what_the_orm_finds(technician):
    from cases.services import _known_hashes

    case, other = CaseFactory(created_by=technician), CaseFactory(created_by=technician)
    field = CellImageFactory(case=case, sha256="f" * 64, original_name="field.png")
    kept = CellImageFactory(case=case, sha256="a" * 64, original_name="a.png")
    CellImageFactory(case=case, parent=field, sha256="c" * 64, original_name="cell of the field")
    CellImageFactory(case=other, sha256="b" * 64, original_name="other case.png")
    asked = {"a" * 64, "b" * 64, "c" * 64, "f" * 64, "d" * 64}

    expected = dict(
        case.images.filter(parent__isnull=True, sha256__in=asked).order_by().values_list("sha256", "original_name")
    )
    assert _known_hashes(case, asked) == expected == {kept.sha256: "a.png", field.sha256: "field.png"}
    assert _known_hashes(case, {"d" * 64}) == {}


def test_the_image_detail_read_finds_what_the_orm_finds(image_kinds):
    for image in image_kinds:
        assert selectors._image_detail_rows(image.pk) == list(selectors._image_detail_values(image.pk))
    assert selectors._image_detail_rows(max(image.pk for image in image_kinds) + 100) == []


def test_the_case_read_of_an_upload_finds_what_the_orm_finds(technician):
    from cases.models import Case

    case = CaseFactory(created_by=technician, patient_reference="P-1")
    CaseFactory(created_by=technician)

    found = selectors.get_case(pk=case.pk, related=False)
    expected = Case.objects.get(pk=case.pk)
    assert {field.attname: getattr(found, field.attname) for field in Case._meta.concrete_fields} == {
        field.attname: getattr(expected, field.attname) for field in Case._meta.concrete_fields
    }
    assert (found._state.adding, found._state.db) == (False, expected._state.db)
    with pytest.raises(Case.DoesNotExist):
        selectors.get_case(pk=case.pk + 100, related=False)
