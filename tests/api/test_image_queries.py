"""GET /api/v1/images/{id}/ (what a technician's client asks after each upload) reads an image's predictions
and their model versions in one query, however many versions classified it (cases/api.py)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.api.conftest import token_client
from tests.factories import CellImageFactory, ModelVersionFactory, PredictionFactory


def queries_reading(queries, table: str) -> list[str]:
    """The queries that read `table`, as their main table or joined."""
    return [query["sql"] for query in queries.captured_queries if f'"{table}"' in query["sql"]]


@pytest.mark.django_db
def test_an_images_predictions_come_with_their_model_versions_in_one_query(technician):
    image = CellImageFactory()
    now = timezone.now()
    for age_minutes, name in ((30, "v1"), (20, "v2"), (10, "v3")):
        prediction = PredictionFactory(image=image, model_version=ModelVersionFactory(name=name))
        prediction.created_at = now - timedelta(minutes=age_minutes)
        prediction.save(update_fields=["created_at"])
    client = token_client(technician)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/api/v1/images/{image.pk}/")

    assert response.status_code == 200
    assert [prediction["model_version"] for prediction in response.json()["predictions"]] == ["v3", "v2", "v1"]
    # One query reads the predictions, joined to their model versions (no query per version).
    (reading_predictions,) = queries_reading(queries, "cases_prediction")
    assert queries_reading(queries, "inference_modelversion") == [reading_predictions]
