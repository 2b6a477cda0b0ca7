"""Token authentication loads the user's groups once per request: the role decides the second-factor rule
and every capability check, and must not be asked of the database again for each (accounts/authentication.py)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.mfa import totp_authenticator
from accounts.services import create_api_token
from tests.factories import CellImageFactory, ModelVersionFactory, PredictionFactory


def token_client(user) -> APIClient:
    _, key = create_api_token(user=user, second_factor=totp_authenticator(user) is not None)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def group_queries(queries) -> list[str]:
    """Queries reading the user's groups (the role), not the groups' permissions."""
    return [query["sql"] for query in queries.captured_queries if '"auth_group"."name"' in query["sql"]]


@pytest.mark.django_db
def test_a_token_request_reads_the_users_groups_once(technician):
    image = CellImageFactory()
    PredictionFactory(image=image, model_version=ModelVersionFactory(is_active=True))
    client = token_client(technician)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/api/v1/images/{image.pk}/")

    assert response.status_code == 200
    assert len(group_queries(queries)) == 1


@pytest.mark.django_db
def test_the_second_factor_rule_still_sees_the_role_loaded_with_the_token(supervisor):
    # A supervisor's token issued without the second factor opens nothing, whatever was prefetched.
    _, key = create_api_token(user=supervisor, second_factor=False)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    assert client.get("/api/v1/me/").status_code == 403
