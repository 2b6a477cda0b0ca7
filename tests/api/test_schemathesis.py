"""Property-based run of the whole API against its own OpenAPI schema (drf-spectacular), in-process (WSGI).

Requests are authenticated with the token of a superuser, who holds every capability, so each operation
is exercised beyond its permission check; the role rules themselves are tested in test_role_matrix.py.
"""

import json

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance, status_code_conformance

from accounts.services import create_api_token

MAX_EXAMPLES = 15
# DRF answers 400 (validation), 404 (unknown id, page out of range) and 403 on every operation, and
# drf-spectacular documents them only where a view says so; a schema-valid id or date range can still
# name nothing or be reversed. Server errors, response bodies, content types, headers and the
# enforcement of authentication are checked.
EXCLUDED_CHECKS = [status_code_conformance, positive_data_acceptance]


def load_schema():
    document = json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))
    loaded = schemathesis.openapi.from_dict(document)
    loaded.app = get_wsgi_application()
    return loaded


schema = load_schema()
current_token: dict[str, str] = {}


@schema.auth(refresh_interval=None)
class SuperuserToken:
    """The token of the test's superuser; declared to schemathesis so it can probe missing and bad tokens."""

    def get(self, case, context):
        return current_token.get("key")

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Token {data}"}


@pytest.fixture
def superuser_token(review_world, make_user):
    superuser = make_user(None, is_superuser=True, is_staff=True, mfa=True)
    _, current_token["key"] = create_api_token(user=superuser, second_factor=True)
    yield current_token["key"]
    current_token.clear()


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, superuser_token):
    case.call_and_validate(excluded_checks=EXCLUDED_CHECKS)
