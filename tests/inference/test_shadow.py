"""Shadow mode: an evaluated, inactive version also classifies every new cell; what it says is stored apart
and never reaches a technician's page, the API, an export or a differential; a failing shadow is skipped."""

from __future__ import annotations

import logging

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse
from rest_framework.test import APIClient

from audit.models import AuditEvent
from cases import classification
from cases import services as case_services
from cases.models import CellImage, Prediction, ShadowPrediction
from inference import predictor as predictor_module
from inference import services
from inference.models import ModelVersion
from inference.testing import build_tiny_model_version
from reports.selectors import ExportFilter
from reports.services import export_cells
from tests.cases import images
from tests.factories import CaseFactory, ModelVersionFactory

# The shadow version's classes: any of these strings on a page or in a response would be a leak.
SHADOW_CLASSES = ("ZZSHADOWLYMPH", "ZZSHADOWNEUT", "ZZSHADOWPLT")
MARK = "ZZSHADOW"


@pytest.fixture
def shadow_version(tiny_model):
    version = build_tiny_model_version(classes=SHADOW_CLASSES, name="candidate-in-shadow", activate=False)
    services.record_evaluation(version=version, data="a folder (3 cells)", metrics={"n": 3, "accuracy": 1.0})
    services.start_shadow(version)
    return version


def classified_cells(case, user, *class_indexes) -> list[CellImage]:
    files = [images.upload(f"cell{i}.png", images.cell_png(index, seed=i)) for i, index in enumerate(class_indexes)]
    accepted, rejected = case_services.add_images(case=case, files=files, uploaded_by=user)
    assert rejected == []
    classification.classify(image_ids=[image.pk for image in accepted])
    return accepted


def test_every_new_cell_is_also_classified_by_the_shadow_version(tiny_model, shadow_version, technician):
    cells = classified_cells(CaseFactory(created_by=technician), technician, 0, 2)

    shown = {p.image_id: p for p in Prediction.objects.all()}
    shadow = {s.image_id: s for s in ShadowPrediction.objects.all()}
    assert set(shown) == set(shadow) == {cell.pk for cell in cells}
    assert {p.model_version for p in shown.values()} == {tiny_model}  # the active path is unchanged
    for cell in cells:
        assert shadow[cell.pk].model_version == shadow_version and shadow[cell.pk].served_version == tiny_model
        assert shadow[cell.pk].label in SHADOW_CLASSES and set(shadow[cell.pk].probabilities) == set(SHADOW_CLASSES)


def test_no_shadow_version_no_shadow_predictions(tiny_model, technician):
    classified_cells(CaseFactory(created_by=technician), technician, 1)
    assert Prediction.objects.count() == 1 and not ShadowPrediction.objects.exists()


def test_a_failing_shadow_model_is_logged_and_skipped(tiny_model, shadow_version, technician, monkeypatch, caplog):
    class BrokenShadow:
        version = shadow_version

        def predict(self, images):
            raise RuntimeError("shadow runtime exploded")

    monkeypatch.setattr(predictor_module, "get_shadow_predictor", BrokenShadow)
    predictor_module.reset_predictor()  # the task looks the shadow up again, through get_shadow_predictor
    with caplog.at_level(logging.ERROR, logger="cases.classification"):
        cells = classified_cells(CaseFactory(created_by=technician), technician, 0, 1)

    assert Prediction.objects.filter(image__in=cells).count() == 2  # shown as usual
    assert set(CellImage.objects.values_list("status", flat=True)) == {CellImage.Status.CLASSIFIED}
    assert not ShadowPrediction.objects.exists()
    assert "shadow model version candidate-in-shadow failed" in caplog.text


def test_a_shadow_version_that_cannot_load_is_skipped(tiny_model, technician, caplog):
    gone = ModelVersionFactory(name="shadow-without-files")  # registered, its files never existed
    services.record_evaluation(version=gone, data="a folder (1 cell)", metrics={"n": 1, "accuracy": 1.0})
    services.start_shadow(gone)
    with caplog.at_level(logging.ERROR, logger="inference.predictor"):
        cells = classified_cells(CaseFactory(created_by=technician), technician, 2)
    assert Prediction.objects.filter(image=cells[0]).exists() and not ShadowPrediction.objects.exists()
    assert "shadow model version shadow-without-files cannot be loaded" in caplog.text


def test_shadow_predictions_never_reach_technicians_the_api_or_exports(
    tiny_model, shadow_version, technician, researcher, client
):
    case = CaseFactory(created_by=technician)
    cells = classified_cells(case, technician, 0, 1, 2)
    assert ShadowPrediction.objects.filter(image__in=cells).count() == 3  # there is something to leak

    client.force_login(technician)
    for url in (
        reverse("cases:detail", args=[case.pk]),
        reverse("cases:cells", args=[case.pk]),
        reverse("cases:cards", args=[case.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 200 and MARK not in response.content.decode(), url
    api = APIClient()
    api.force_authenticate(technician)
    for url in (
        f"/api/v1/cases/{case.pk}/",
        f"/api/v1/cases/{case.pk}/images/",
        *(f"/api/v1/images/{cell.pk}/" for cell in cells),
        f"/api/v1/cases/{case.pk}/differential/",
    ):
        response = api.get(url)
        assert response.status_code == 200 and MARK not in response.content.decode(), url
    rows = list(export_cells(actor=researcher, export_filter=ExportFilter()))
    assert len(rows) == 1 + 3  # header and the three shown predictions, none of the shadow's
    assert MARK not in repr(rows)


def test_start_and_stop_are_audited_and_one_version_at_a_time(tiny_model, admin_user):
    first = ModelVersionFactory(name="first-candidate")
    second = ModelVersionFactory(name="second-candidate")
    with pytest.raises(services.ShadowRefused, match="no recorded evaluation"):
        services.start_shadow(first, admin_user)
    with pytest.raises(services.ShadowRefused, match="active version"):
        services.start_shadow(tiny_model, admin_user)
    for version in (first, second):
        services.record_evaluation(version=version, data="a folder (1 cell)", metrics={"n": 1, "accuracy": 1.0})
    services.start_shadow(first, admin_user)
    services.start_shadow(second, admin_user)  # replaces the first
    assert list(ModelVersion.objects.filter(is_shadow=True)) == [second]
    assert services.stop_shadow(admin_user) == second
    assert not ModelVersion.objects.filter(is_shadow=True).exists()
    steps = list(AuditEvent.objects.order_by("id").values_list("action", "details__name"))
    assert [step for step in steps if step[0].startswith("model_shadow")] == [
        ("model_shadow_started", "first-candidate"),
        ("model_shadow_stopped", "first-candidate"),
        ("model_shadow_started", "second-candidate"),
        ("model_shadow_stopped", "second-candidate"),
    ]


def test_the_database_holds_one_shadow_version_never_the_active_one(tiny_model):
    other = ModelVersionFactory(name="other", is_shadow=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersionFactory(name="another", is_shadow=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=tiny_model.pk).update(is_shadow=True)
    # Activating the version in shadow takes it out of shadow.
    services.record_evaluation(version=other, data="a folder (1 cell)", metrics={"n": 1, "accuracy": 1.0})
    services.activate_version(other, require_evaluation=True)
    other.refresh_from_db()
    assert other.is_active and not other.is_shadow


def test_the_shadow_predictor_is_cached_and_follows_the_shadow_version(tiny_model, shadow_version):
    first = predictor_module.get_shadow_predictor()
    assert first is not None and first.version == shadow_version
    assert predictor_module.get_shadow_predictor() is first  # loaded once per process
    services.stop_shadow()
    assert predictor_module.get_shadow_predictor() is None
    services.start_shadow(shadow_version)
    again = predictor_module.get_shadow_predictor()
    assert again is not None and again is not first  # started again: loaded again


def test_the_models_page_shows_the_shadow_version_and_starts_and_stops_it(tiny_model, admin_user, supervisor, client):
    candidate = ModelVersionFactory(name="page-candidate")
    services.record_evaluation(version=candidate, data="a folder (1 cell)", metrics={"n": 1, "accuracy": 1.0})
    client.force_login(admin_user)
    page = client.get(reverse("inference:list")).content.decode()
    assert 'data-testid="shadow-start"' in page and 'data-testid="shadow-banner"' not in page

    response = client.post(reverse("inference:shadow_start", args=[candidate.pk]))
    assert response.status_code == 302 and ModelVersion.objects.get(is_shadow=True) == candidate
    page = client.get(reverse("inference:list")).content.decode()
    assert 'data-testid="shadow-banner"' in page and 'data-testid="model-shadow"' in page

    client.post(reverse("inference:shadow_stop"))
    assert not ModelVersion.objects.filter(is_shadow=True).exists()
    event = AuditEvent.objects.get(action="model_shadow_stopped")
    assert event.actor == admin_user and event.details["name"] == "page-candidate"

    client.force_login(supervisor)  # supervisors watch the dashboard; admins manage models
    assert client.post(reverse("inference:shadow_start", args=[candidate.pk])).status_code == 403
    assert not ModelVersion.objects.filter(is_shadow=True).exists()
