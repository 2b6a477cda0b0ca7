"""Re-authentication before a pathologist signs a case: the password again, or a current TOTP code.

A signed session alone is not enough to sign: whoever sits at an unlocked workstation must prove again that
they are the signer. A failed attempt is audited (as a failed sign-in, with what it was for) and changes nothing.
"""

from __future__ import annotations

from allauth.mfa.totp.internal.auth import TOTP
from django.utils.translation import gettext

from accounts.mfa import totp_authenticator
from audit.models import AuditEvent
from audit.services import record


class ReauthenticationFailed(Exception):
    """The password or code given does not prove the person is the signed-in user; the message says what to do."""


def reauthentication_methods(user) -> dict[str, bool]:
    """Which proofs this user can give: a password (accounts from social sign-in may have none) and/or TOTP."""
    return {"password": user.has_usable_password(), "totp": totp_authenticator(user) is not None}


def reauthenticate(*, user, password: str = "", code: str = "", purpose: str, request=None) -> str:
    """Return the method that succeeded ("password" or "totp"); raise ReauthenticationFailed otherwise."""
    password = password or ""
    code = (code or "").strip().replace(" ", "")
    methods = reauthentication_methods(user)
    if not password and not code:
        offered = (("your password", methods["password"]), ("a code from your authenticator app", methods["totp"]))
        wanted = " or ".join(name for name, ok in offered if ok)
        raise ReauthenticationFailed(f"Enter {wanted or 'your password'} to confirm it is you.")
    if code:
        authenticator = totp_authenticator(user)
        if authenticator is None:
            raise ReauthenticationFailed(
                gettext(
                    "Your account has no authenticator app; enter your password instead (or set one up under Security)."
                )
            )
        if TOTP(authenticator).validate_code(code):
            return "totp"
    elif password:
        if not methods["password"]:
            raise ReauthenticationFailed(
                gettext("Your account has no password; enter a code from your authenticator app.")
            )
        if user.check_password(password):
            return "password"
    record(
        action=AuditEvent.Action.SIGN_IN_FAILED,
        actor=user,
        obj=user,
        details={"re_authentication": purpose, "method": "totp" if code else "password"},
        request=request,
    )
    raise ReauthenticationFailed(
        gettext("That code is not valid; enter the current one.")
        if code
        else gettext("That password is not right; nothing was signed.")
    )
