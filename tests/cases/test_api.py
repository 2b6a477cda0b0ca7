import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from cases import services
from cases.models import Case, CellImage
from tests.cases import images
from tests.factories import CaseFactory, CellImageFactory, PredictionFactory


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def case(technician):
    return CaseFactory(created_by=technician, accession_id="ACC-API-1", patient_reference="MRN-SECRET-7")


def test_cases_list_never_returns_the_patient_reference(api, technician, case):
    api.force_authenticate(technician)

    response = api.get("/api/v1/cases/")

    assert response.status_code == 200
    assert response.json()["results"][0]["accession_id"] == "ACC-API-1"
    assert "MRN-SECRET-7" not in response.content.decode()


def test_cases_list_filters_by_status_and_accession(api, pathologist, case):
    CaseFactory(accession_id="ACC-OTHER", status=Case.Status.SIGNED)
    api.force_authenticate(pathologist)

    by_status = api.get("/api/v1/cases/", {"status": "signed"}).json()["results"]
    by_accession = api.get("/api/v1/cases/", {"accession": "api-1"}).json()["results"]

    assert [c["accession_id"] for c in by_status] == ["ACC-OTHER"]
    assert [c["accession_id"] for c in by_accession] == ["ACC-API-1"]


def test_technician_creates_a_case(api, technician):
    api.force_authenticate(technician)

    response = api.post("/api/v1/cases/", {"accession_id": "ACC-NEW", "patient_reference": "MRN1"}, format="json")

    assert response.status_code == 201
    assert response.json()["status"] == "draft"
    assert "patient_reference" not in response.json()
    assert Case.objects.get(accession_id="ACC-NEW").patient_reference == "MRN1"


def test_pathologist_cannot_create_a_case(api, pathologist):
    api.force_authenticate(pathologist)

    assert api.post("/api/v1/cases/", {"accession_id": "ACC-X"}, format="json").status_code == 403


def test_researcher_cannot_list_cases(api, researcher):
    api.force_authenticate(researcher)

    assert api.get("/api/v1/cases/").status_code == 403


def test_retrieve_a_case_with_its_image_count(api, technician, case):
    CellImageFactory(case=case)
    api.force_authenticate(technician)

    response = api.get(f"/api/v1/cases/{case.pk}/")

    assert response.json()["image_count"] == 1


@override_settings(MAX_UPLOAD_BYTES=2000)
def test_upload_returns_accepted_and_rejected_with_messages(api, technician, case):
    api.force_authenticate(technician)
    files = [
        images.upload("truncated.jpg", images.truncated_jpeg()),
        images.upload("empty.jpg", b""),
        images.upload("notes.jpg", b"plain text\n"),
        images.upload("bomb.png", images.png_declaring(50_000, 50_000)),
        images.upload("anim.gif", images.animated_gif()),
        images.upload("drawing.svg", images.SVG),
        images.upload("huge.png", images.noisy_png(size=(48, 48))),
        images.upload("cmyk.jpg", images.cmyk_jpeg()),
        images.upload("deep.png", images.png_16_bit()),
    ]

    response = api.post(f"/api/v1/cases/{case.pk}/images/", {"files": files}, format="multipart")

    assert response.status_code == 201
    body = response.json()
    assert sorted(image["original_name"] for image in body["accepted"]) == ["cmyk.jpg", "deep.png"]
    assert [item["name"] for item in body["rejected"]] == [
        "truncated.jpg",
        "empty.jpg",
        "notes.jpg",
        "bomb.png",
        "anim.gif",
        "drawing.svg",
        "huge.png",
    ]
    assert all(item["message"].startswith(item["name"] + " ") for item in body["rejected"])


def test_upload_where_every_file_is_rejected_is_a_400(api, technician, case):
    api.force_authenticate(technician)

    response = api.post(
        f"/api/v1/cases/{case.pk}/images/", {"files": [images.upload("e.jpg", b"")]}, format="multipart"
    )

    assert response.status_code == 400
    assert response.json()["rejected"][0]["message"] == "e.jpg is empty (0 bytes)."


def test_upload_to_a_signed_case_is_a_409(api, technician):
    case = CaseFactory(created_by=technician, status=Case.Status.SIGNED)
    api.force_authenticate(technician)

    response = api.post(
        f"/api/v1/cases/{case.pk}/images/", {"files": [images.upload("a.png", images.rgb_png())]}, format="multipart"
    )

    assert response.status_code == 409


def test_images_of_a_case_come_with_their_predictions(api, pathologist, case):
    PredictionFactory(image=CellImageFactory(case=case), label="eosinophil", confidence=0.8)
    api.force_authenticate(pathologist)

    response = api.get(f"/api/v1/cases/{case.pk}/images/")

    (image,) = response.json()["results"]
    assert image["predictions"][0]["label"] == "eosinophil"
    assert image["image_url"] == f"/cases/images/{image['id']}/"


def test_retry_of_a_failed_image(api, technician, case, monkeypatch):
    image = CellImageFactory(case=case, status=CellImage.Status.FAILED, status_message="boom")
    monkeypatch.setattr(services, "enqueue_classification", lambda *, image_ids: None)
    api.force_authenticate(technician)

    response = api.post(f"/api/v1/images/{image.pk}/retry/")

    assert response.status_code == 202
    assert response.json()["status"] == "queued"


def test_retry_of_a_classified_image_is_a_409(api, technician, case):
    image = CellImageFactory(case=case, status=CellImage.Status.CLASSIFIED)
    api.force_authenticate(technician)

    response = api.post(f"/api/v1/images/{image.pk}/retry/")

    assert response.status_code == 409
    assert "already classified" in response.json()["detail"]


def test_pathologist_cannot_retry(api, pathologist, case):
    image = CellImageFactory(case=case, status=CellImage.Status.FAILED)
    api.force_authenticate(pathologist)

    assert api.post(f"/api/v1/images/{image.pk}/retry/").status_code == 403


def test_openapi_schema_of_the_cases_endpoints_has_no_warnings():
    from drf_spectacular.drainage import GENERATOR_STATS, reset_generator_stats
    from drf_spectacular.generators import SchemaGenerator

    reset_generator_stats()
    schema = SchemaGenerator().get_schema(request=None, public=True)

    assert "/api/v1/cases/{id}/images/" in schema["paths"]
    problems = [
        message for message in [*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache] if "cases/" in message
    ]
    assert problems == []


def test_unknown_status_filter_is_a_400(api, pathologist):
    api.force_authenticate(pathologist)

    response = api.get("/api/v1/cases/", {"status": "lost"})

    assert response.status_code == 400
    assert "status" in response.json()["errors"]
