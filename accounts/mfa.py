"""Which accounts must have a second factor before they may do anything."""

from allauth.mfa.models import Authenticator
from django.utils.translation import gettext_lazy as _

from .demo import is_demo_user
from .roles import MFA_REQUIRED_ROLES

# Lazy: translated into the language of the request that is refused.
TOTP_REQUIRED_MESSAGE = _(
    "Your role requires two-factor authentication: activate an authenticator app under Security "
    "(/accounts/2fa/totp/activate/) first."
)


def totp_authenticator(user) -> Authenticator | None:
    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()


def needs_second_factor(user) -> bool:
    """The account's role (or superuser flag) requires TOTP; the demo accounts of DEMO_MODE excepted."""
    if not user.is_authenticated:
        return False
    if user.role not in MFA_REQUIRED_ROLES and not user.is_superuser:
        return False
    # In the embedded demo (DEMO_MODE) the demo supervisor and admin are exempt so a newcomer can click around.
    return not is_demo_user(user)


def needs_totp_setup(user) -> bool:
    return needs_second_factor(user) and totp_authenticator(user) is None
