"""Hostile input is a clear 4xx, never a server error: deeply nested JSON, ids beyond any integer column."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from cases.models import Case
from tests.api.conftest import token_client
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory

HUGE = 10**25


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_deeply_nested_json_to_the_token_endpoint_is_a_400(db, depth):
    response = APIClient().post(reverse("api-token"), nested(depth), content_type="application/json")

    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")


def test_deeply_nested_json_to_an_authenticated_endpoint_is_a_400(technician):
    body = '{"accession_id": ' + nested(50_000) + "}"

    response = token_client(technician).post(reverse("api-case-list"), body, content_type="application/json")

    assert response.status_code == 400


@pytest.fixture
def open_case(db):
    version = ModelVersionFactory(is_active=True)
    case = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    PredictionFactory(image=CellImageFactory(case=case), model_version=version, label="neutrophil")
    return case


def test_an_over_large_cell_id_in_a_review_is_a_400_not_a_500(pathologist, open_case):
    response = token_client(pathologist).post(
        reverse("api-case-reviews", args=[open_case.pk]), {"cells": [HUGE]}, format="json"
    )

    assert response.status_code in (400, 404)


def test_an_over_large_id_in_a_query_parameter_is_a_4xx(pathologist, open_case):
    response = token_client(pathologist).get(reverse("api-case-reviews", args=[open_case.pk]), {"image": str(HUGE)})

    assert response.status_code in (200, 400, 404)


def test_an_over_large_id_in_a_review_form_is_a_4xx(client, pathologist, open_case):
    client.force_login(pathologist)

    response = client.post(reverse("cases:review_submit", args=[open_case.pk]), {"cells": [str(HUGE)]})

    assert response.status_code in (302, 400, 404)


def test_an_over_large_id_in_the_path_is_a_404(client, technician):
    client.force_login(technician)

    assert client.get(f"/cases/{HUGE}/").status_code == 404
    assert token_client(technician).get(f"/api/v1/images/{HUGE}/").status_code == 404
