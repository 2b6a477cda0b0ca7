"""Token authentication reads the user's groups (the role) once per token and process: the role decides the
second-factor rule and every capability check, and must not be asked of the database again for each
(accounts/authentication.py). Every change of the role ends the token, so the role kept with it never outlives
the role itself."""

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.mfa import totp_authenticator
from accounts.roles import Role
from accounts.services import change_role, create_api_token, deactivate_user
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
def test_the_groups_are_read_at_a_tokens_first_use_only(technician):
    client = token_client(technician)
    assert client.get("/api/v1/me/").status_code == 200

    with CaptureQueriesContext(connection) as queries:
        again = client.get("/api/v1/me/")
    with CaptureQueriesContext(connection) as new_token_queries:
        other = token_client(technician).get("/api/v1/me/")

    assert again.status_code == 200 and again.json()["role"] == Role.TECHNICIAN
    assert group_queries(queries) == []
    assert other.status_code == 200 and len(group_queries(new_token_queries)) == 1


def _people_page_change(user, admin_user):
    change_role(actor=admin_user, user=user, role=Role.PATHOLOGIST)


def _groups_set(user, admin_user):
    user.groups.set([Group.objects.get(name=Role.SUPERVISOR)])


def _groups_side_removal(user, admin_user):
    Group.objects.get(name=Role.TECHNICIAN).user_set.remove(user)


def _role_group_deleted(user, admin_user):
    Group.objects.get(name=Role.TECHNICIAN).delete()


def _role_group_renamed(user, admin_user):
    group = Group.objects.get(name=Role.TECHNICIAN)
    group.name = "former technicians"
    group.save()


def _deactivated(user, admin_user):
    deactivate_user(actor=admin_user, user=user)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        _people_page_change,
        _groups_set,
        _groups_side_removal,
        _role_group_deleted,
        _role_group_renamed,
        _deactivated,
    ],
)
def test_a_role_change_ends_a_token_whose_role_was_already_read(technician, admin_user, change):
    client = token_client(technician)
    assert client.get("/api/v1/me/").json()["role"] == Role.TECHNICIAN  # the role now kept with the token

    change(technician, admin_user)

    assert client.get("/api/v1/me/").json()["detail"] == "Invalid token."


@pytest.mark.django_db
def test_a_users_deactivation_left_over_is_seen_at_once_by_a_token_in_use(technician):
    client = token_client(technician)
    assert client.get("/api/v1/me/").status_code == 200

    type(technician).objects.filter(pk=technician.pk).update(is_active=False)

    assert client.get("/api/v1/me/").json()["detail"] == "User inactive or deleted."


@pytest.mark.django_db
def test_other_groups_renamed_leave_the_token_alone(technician):
    client = token_client(technician)
    night_shift = Group.objects.create(name="night shift")
    technician.groups.add(night_shift)
    assert client.get("/api/v1/me/").status_code == 200

    night_shift.name = "late shift"
    night_shift.save()

    assert client.get("/api/v1/me/").json()["role"] == Role.TECHNICIAN


@pytest.mark.django_db
def test_the_second_factor_rule_still_sees_the_role_loaded_with_the_token(supervisor):
    # A supervisor's token issued without the second factor opens nothing, whatever was prefetched.
    _, key = create_api_token(user=supervisor, second_factor=False)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    assert client.get("/api/v1/me/").status_code == 403


@pytest.mark.django_db
def test_the_token_is_read_with_its_user_as_the_orm_reads_them(technician):
    from accounts.authentication import hash_key, token_with_user
    from accounts.models import ApiToken

    token, key = create_api_token(user=technician, second_factor=False)
    create_api_token(user=technician, second_factor=True)  # another token of the same user

    with CaptureQueriesContext(connection) as queries:
        found = token_with_user(hash_key(key))
        user = found.user  # read with the token, no query of its own
    expected = ApiToken.objects.select_related("user").get(pk=token.pk)

    assert len(queries.captured_queries) == 1
    assert found.pk == token.pk and not found._state.adding
    fields = ApiToken._meta.concrete_fields
    assert [getattr(found, field.attname) for field in fields] == [getattr(expected, field.attname) for field in fields]
    user_fields = type(user)._meta.concrete_fields
    assert [getattr(user, field.attname) for field in user_fields] == [
        getattr(expected.user, field.attname) for field in user_fields
    ]
    assert token_with_user(hash_key("not a key")) is None
