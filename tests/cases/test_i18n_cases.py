"""The case, review and differential pages in Spanish (the browser's Accept-Language), and English by default.

The Spanish comes from the project's catalogue (locale/es/LC_MESSAGES/django.mo), so these tests also fail when a
string of the case pages is marked but left out of the catalogue, or when it is no longer marked.
"""

import pytest
from django.urls import reverse
from django.utils import translation

from cases.models import Case, Review
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory

SPANISH = {"HTTP_ACCEPT_LANGUAGE": "es"}


@pytest.fixture(autouse=True)
def back_to_the_default_language():
    """A Spanish request leaves Spanish active in this thread (LocaleMiddleware does not reset it): the next test,
    calling services directly, must find the default language again."""
    yield
    translation.deactivate()


@pytest.fixture
def case(db):
    """Two neutrophils, one of them flagged as unlike the training images, and a lymphocyte."""
    case = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    version = ModelVersionFactory(confidence_threshold=0.5, ood_threshold=0.5)
    PredictionFactory(image=CellImageFactory(case=case), model_version=version, label="neutrophil")
    PredictionFactory(image=CellImageFactory(case=case), model_version=version, label="lymphocyte")
    PredictionFactory(
        image=CellImageFactory(case=case),
        model_version=version,
        label="neutrophil",
        flagged=True,
        flag_reasons=["out_of_distribution"],
        ood_score=0.91,
    )
    return case


def page(client, name, case, **headers):
    response = client.get(reverse(name, args=[case.pk]), **headers)
    assert response.status_code == 200
    return response.content.decode()


def test_the_case_page_is_in_spanish_for_a_spanish_browser(case, technician, client):
    client.force_login(technician)
    content = page(client, "cases:detail", case, **SPANISH)
    assert '<html lang="es"' in content
    assert f"Caso {case.accession_id}" in content
    for spanish in ["Referencia del paciente", "Todos los casos", "Recuento diferencial", "Pendiente de revisión"]:
        assert spanish in content
    # The flagged cell's reason, in words and in Spanish; the reason code itself is not translated.
    assert "no identificada — requiere revisión" in content
    assert "distinta de las imágenes con las que se entrenó el modelo" in content
    assert "Patient reference" not in content and "Awaiting review" not in content


def test_the_case_page_stays_in_english_by_default(case, technician, client):
    client.force_login(technician)
    content = page(client, "cases:detail", case)
    assert "Patient reference" in content and "Awaiting review" in content
    assert "unlike the images the model was trained on" in content
    assert "Referencia del paciente" not in content


def test_the_review_page_tells_why_a_cell_is_flagged_in_spanish(case, pathologist, client):
    client.force_login(pathologist)
    content = page(client, "cases:review", case, **SPANISH)
    assert f"Revisión del caso {case.accession_id}" in content
    # The gallery's groups and the class names.
    assert "No identificadas — requieren revisión" in content
    assert "Neutrófilo" in content and "Linfocito" in content
    # Reviewer-only labels on the palette.
    assert "Célula rota (sombra de Gumprecht)" in content and "Artefacto" in content
    # The flag's reason: title and sentence, with the figures; the machine code stays as it is.
    assert 'data-reason="out_of_distribution"' in content
    assert "<strong>Distinta de las imágenes de entrenamiento:</strong>" in content
    assert "puntuación fuera de distribución 0.91, por encima del límite 0.50" in content
    assert "Unlike the training images" not in content
    # A number with its plural: 0 of 3 cells.
    assert "0 de 3 células tienen etiqueta final" in content


def test_the_review_page_explains_the_flag_in_english_by_default(case, pathologist, client):
    client.force_login(pathologist)
    content = page(client, "cases:review", case)
    assert "<strong>Unlike the training images:</strong>" in content
    assert "out-of-distribution score 0.91, above the limit 0.50" in content
    assert "0 of 3 cells have a final label" in content


def test_the_differential_is_in_spanish_with_its_plurals(case, pathologist, client):
    client.force_login(pathologist)
    content = page(client, "cases:differential", case, **SPANISH)
    assert f"Recuento diferencial leucocitario — caso {case.accession_id}" in content
    for spanish in ["Tipo celular", "Referencia adulta", "Informado aparte", "Neutrófilo", "Linfocito", "3 células:"]:
        assert spanish in content
    assert "Leukocyte differential" not in content and "Cell type" not in content


def test_one_cell_is_singular_in_both_languages(db, pathologist, client):
    case = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    PredictionFactory(image=CellImageFactory(case=case), label="lymphocyte")
    client.force_login(pathologist)
    assert "1 célula:" in page(client, "cases:differential", case, **SPANISH)
    assert "1 cell:" in page(client, "cases:differential", case)


def test_a_review_notice_is_in_spanish(case, pathologist, client):
    client.force_login(pathologist)
    first = case.images.order_by("pk").first()
    response = client.post(
        reverse("cases:review_submit", args=[case.pk]), {"confirm_cell": first.pk}, follow=True, **SPANISH
    )
    assert Review.objects.filter(image=first, kind=Review.Kind.CONFIRM).exists()
    assert "1 célula confirmada." in response.content.decode()


def test_the_pdf_is_made_in_spanish_and_the_fhir_document_stays_in_the_site_language(case, pathologist, client):
    client.force_login(pathologist)
    pdf = client.get(reverse("cases:report_pdf", args=[case.pk]), **SPANISH)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    fhir = client.get(reverse("cases:report_fhir", args=[case.pk]), **SPANISH).content.decode()
    # For the laboratory information system: one language (the site's), whatever the browser asks for.
    assert '"text": "Neutrophil"' in fhir and "Neutrófilo" not in fhir
    assert '"code": "26511-6"' in fhir
