import os
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import TOTP
from django.conf import settings

from accounts.roles import Role
from tests.factories import UserFactory

IN_CI = os.environ.get("CI", "").lower() == "true"


def skip_or_fail(message: str) -> None:
    """Visible skip on a developer's machine, a failure in CI (which always has the data and services)."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_shared_data() -> Path:
    """The PBC dataset beside the project. Skipped where absent, a failure in CI (which always has it)."""
    root = Path(settings.SHARED_DATA_DIR) / "datasets" / "pbc"
    if not (root / "test").is_dir():
        skip_or_fail(f"shared dataset not found at {root} (it lives in ../shared beside the project)")
    return root


@pytest.fixture
def pbc_dir() -> Path:
    return require_shared_data()


# Base32 TOTP secret of every make_user(mfa=True) user; tests derive current codes from it.
TOTP_TEST_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture
def make_user(db):
    def make(role: str | None = None, *, mfa: bool = False, **kwargs):
        user = UserFactory(role=role, **kwargs)
        EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
        if mfa:
            TOTP.activate(user, TOTP_TEST_SECRET)
        return user

    return make


@pytest.fixture
def technician(make_user):
    return make_user(Role.TECHNICIAN)


@pytest.fixture
def pathologist(make_user):
    return make_user(Role.PATHOLOGIST)


@pytest.fixture
def supervisor(make_user):
    # Supervisors and admins must have TOTP (accounts.middleware.MFARequiredMiddleware).
    return make_user(Role.SUPERVISOR, mfa=True)


@pytest.fixture
def researcher(make_user):
    return make_user(Role.RESEARCHER)


@pytest.fixture
def admin_user(make_user):
    return make_user(Role.ADMIN, mfa=True)


@pytest.fixture
def pending_user(make_user):
    return make_user(None)


@pytest.fixture
def tiny_model(db):
    """A tiny real model (LiteRT), registered and active; see inference.testing."""
    from inference.predictor import reset_predictor
    from inference.testing import build_tiny_model_version

    reset_predictor()
    version = build_tiny_model_version()
    yield version
    reset_predictor()
