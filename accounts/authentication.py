"""API token authentication: hashed keys that expire, and the second-factor rule of the website.

Clients send `Authorization: Token <key>` as before. A token whose holder's role requires a second
factor is accepted only if it was issued after a TOTP code was checked, so a token obtained as a
technician stops opening supervisor or admin endpoints the moment the account needs TOTP.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.utils import timezone
from django.utils.translation import gettext
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from .mfa import TOTP_REQUIRED_MESSAGE, needs_second_factor, needs_totp_setup
from .models import ApiToken

# A request refreshes a token's last use at most this often (one UPDATE, not one per request).
LAST_USED_RESOLUTION = timedelta(minutes=5)


def hash_key(key: str) -> str:
    """The key is 256 random bits: a plain SHA-256 is enough to make the stored value useless."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiTokenAuthentication(TokenAuthentication):
    keyword = "Token"
    model = ApiToken

    def authenticate_credentials(self, key):
        # The user's groups come with the token: the role decides the second-factor rule below and every
        # capability check after it, which would otherwise ask for them again each time (user.role).
        token = (
            ApiToken.objects.select_related("user")
            .prefetch_related("user__groups")
            .filter(key_hash=hash_key(key))
            .first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed(gettext("Invalid token."))
        now = timezone.now()
        if token.expires_at <= now:
            raise exceptions.AuthenticationFailed(
                gettext("This token has expired: request a new one at /api/v1/auth/token/.")
            )
        user = token.user
        if not user.is_active:
            raise exceptions.AuthenticationFailed(gettext("User inactive or deleted."))
        if needs_totp_setup(user):
            raise exceptions.PermissionDenied(str(TOTP_REQUIRED_MESSAGE))
        if needs_second_factor(user) and not token.second_factor:
            raise exceptions.PermissionDenied(
                gettext(
                    "Your role requires two-factor authentication and this token was issued without it: "
                    "request a new token at /api/v1/auth/token/ with the code from your authenticator app."
                )
            )
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return user, token
