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
    return [query["sql"] for query in queries.captured_queries if '"auth_group"' in query["sql"]]


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


@pytest.mark.django_db
def test_the_role_is_read_in_the_same_query_as_the_token(technician):
    image = CellImageFactory()
    PredictionFactory(image=image, model_version=ModelVersionFactory(is_active=True))
    client = token_client(technician)

    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"/api/v1/images/{image.pk}/").status_code == 200

    [role_query] = group_queries(queries)
    assert "accounts_apitoken" in role_query


@pytest.mark.django_db
@pytest.mark.parametrize(
    "groups",
    [[], ["researcher"], ["pathologist", "technician"], ["researcher", "pathologist"], ["researcher", "not-a-role"]],
)
def test_the_role_read_with_the_token_is_the_one_role_of_chooses(make_user, groups):
    from django.contrib.auth.models import Group

    from accounts.authentication import ApiTokenAuthentication
    from accounts.roles import role_of

    user = make_user(role=None)
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    _, key = create_api_token(user=user, second_factor=False)

    authenticated, _ = ApiTokenAuthentication().authenticate_credentials(key)

    fresh = type(user).objects.get(pk=user.pk)
    assert authenticated.role == role_of(fresh)


@pytest.mark.django_db
def test_set_role_forgets_the_role_read_with_the_token(technician):
    from accounts.authentication import ApiTokenAuthentication
    from accounts.roles import set_role

    _, key = create_api_token(user=technician, second_factor=False)
    user, _ = ApiTokenAuthentication().authenticate_credentials(key)
    assert user.role == "technician"

    set_role(user, "researcher")

    assert user.role == "researcher"
