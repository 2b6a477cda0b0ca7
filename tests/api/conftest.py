import pytest
from rest_framework.test import APIClient

from accounts.mfa import totp_authenticator
from accounts.services import create_api_token
from cases.models import Case
from cases.review_services import review_cells, sign_case
from tests.factories import CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory


def token_client(user) -> APIClient:
    """A client with a fresh API token of the user, issued as the token endpoint would (with the
    second factor where the user has TOTP)."""
    client = APIClient()
    if user is not None:
        _, key = create_api_token(user=user, second_factor=totp_authenticator(user) is not None)
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def review_world(db, pathologist):
    """A case awaiting review and a signed one, each with two classified cells, and an active model version."""
    version = ModelVersionFactory(is_active=True)
    open_case = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    signed_case = CaseFactory(status=Case.Status.AWAITING_REVIEW)
    for case in (open_case, signed_case):
        for label in ("neutrophil", "lymphocyte"):
            PredictionFactory(image=CellImageFactory(case=case), model_version=version, label=label)
    review_cells(case=signed_case, image_ids=signed_case.images.values_list("pk", flat=True), reviewer=pathologist)
    sign_case(case=signed_case, signer=pathologist)
    return {"version": version, "open_case": open_case, "signed_case": signed_case}
