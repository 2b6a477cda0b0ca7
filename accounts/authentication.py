"""API token authentication: hashed keys that expire, and the second-factor rule of the website.

Clients send `Authorization: Token <key>` as before. A token whose holder's role requires a second
factor is accepted only if it was issued after a TOTP code was checked, so a token obtained as a
technician stops opening supervisor or admin endpoints the moment the account needs TOTP.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from functools import partial

from django.db import connections, router
from django.utils import timezone
from django.utils.translation import gettext
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from hematovision.statements import Statement, built_once, instances_from_rows, qualified_columns

from .mfa import TOTP_REQUIRED_MESSAGE, needs_second_factor, needs_totp_setup
from .models import ApiToken, User
from .roles import remember_role, role_of

# A request refreshes a token's last use at most this often (one UPDATE, not one per request).
LAST_USED_RESOLUTION = timedelta(minutes=5)

# The role of each token's user, read from the groups at the token's first use in this process. A token lives
# only as long as its user's role: every change of the role groups, from either side, ends the user's tokens
# (accounts.signals), so while the token's row is found the role read with it holds. Keyed by the token's
# hash, id and creation time, so a new token never meets an old token's entry.
_roles_by_token: dict[tuple, str | None] = {}
ROLES_BY_TOKEN_LIMIT = 4096  # tokens in use at once in one process; the cache starts over beyond it


def hash_key(key: str) -> str:
    """The key is 256 random bits: a plain SHA-256 is enough to make the stored value useless."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiTokenAuthentication(TokenAuthentication):
    keyword = "Token"
    model = ApiToken

    def authenticate_credentials(self, key):
        token = token_with_user(hash_key(key))
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
        # The role decides the second-factor rule below and every capability check after it (user.role).
        remember_role(user, _role_of_token_user(token))
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


def token_with_user(key_hash: str) -> ApiToken | None:
    """ApiToken.objects.select_related("user").filter(key_hash=key_hash).first(): key_hash is unique, so the
    ordering cannot choose between rows. The SELECT is built once per process from the models' metadata: the
    ORM compiled the same statement for every API request, which cost more CPU than the query
    (docs/benchmarks.md, "hweb"). PostgreSQL and SQLite; other databases take the ORM's path."""
    connection = connections[router.db_for_read(ApiToken)]
    if connection.vendor not in ("postgresql", "sqlite"):
        return ApiToken.objects.select_related("user").filter(key_hash=key_hash).first()
    select = built_once(connection, "accounts token with user", partial(_token_with_user_select, connection))
    with connection.cursor() as cursor:
        cursor.execute(select.sql, [key_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    # The token's columns, then its user's (the order of the select list).
    (token,) = instances_from_rows(ApiToken, connection, [row])
    (token.user,) = instances_from_rows(User, connection, [row[len(ApiToken._meta.concrete_fields) :]])
    return token


def _token_with_user_select(connection) -> Statement:
    quote = connection.ops.quote_name
    token_table, user_table = quote(ApiToken._meta.db_table), quote(User._meta.db_table)
    user_id, key_hash = (quote(ApiToken._meta.get_field(name).column) for name in ("user", "key_hash"))
    return Statement(
        f"SELECT {qualified_columns(connection, ApiToken)}, {qualified_columns(connection, User)}"  # noqa: S608 - names from _meta
        f" FROM {token_table} INNER JOIN {user_table}"
        f" ON {token_table}.{user_id} = {user_table}.{quote(User._meta.pk.column)}"
        f" WHERE {token_table}.{key_hash} = %s LIMIT 1"
    )


def _role_of_token_user(token: ApiToken) -> str | None:
    cache_key = (token.key_hash, token.pk, token.created_at)
    try:
        return _roles_by_token[cache_key]
    except KeyError:
        pass
    role = role_of(token.user)  # the groups, once per token and process
    if len(_roles_by_token) >= ROLES_BY_TOKEN_LIMIT:
        _roles_by_token.clear()
    _roles_by_token[cache_key] = role
    return role
