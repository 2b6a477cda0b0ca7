"""Writes: approving people, changing roles, deactivating accounts, issuing API tokens."""

from __future__ import annotations

import secrets
from datetime import timedelta

from allauth.account.adapter import get_adapter as get_account_adapter
from allauth.account.models import EmailAddress
from allauth.mfa.base.internal.flows import check_rate_limit as check_totp_rate_limit
from allauth.mfa.totp.internal.auth import TOTP
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from audit.models import AuditEvent
from audit.services import record

from .authentication import hash_key
from .mfa import TOTP_REQUIRED_MESSAGE, needs_totp_setup, totp_authenticator
from .models import ApiToken, User
from .roles import ADMIN_ONLY_ROLES, Role, set_role
from .signals import signup_details_given


class UserManagementError(Exception):
    """A change to someone's account that is not allowed; the message says why."""


class TokenRefused(Exception):
    def __init__(self, message: str, *, status: int):
        super().__init__(message)
        self.status = status


def can_manage_admin_roles(actor) -> bool:
    return actor.is_superuser or actor.role == Role.ADMIN


def _check_change_allowed(*, actor, user, new_role: str | None = None) -> None:
    if actor.pk == user.pk:
        raise UserManagementError(gettext("You cannot change your own role or deactivate your own account."))
    if can_manage_admin_roles(actor):
        return
    if new_role in ADMIN_ONLY_ROLES:
        raise UserManagementError(
            gettext("Only an administrator can grant the %(role)s role.") % {"role": Role(new_role).label}
        )
    if user.is_superuser or user.role in ADMIN_ONLY_ROLES:
        raise UserManagementError(gettext("Only an administrator can change an administrator's account."))


def _valid_role(role: str) -> Role:
    if role not in Role.values:
        raise UserManagementError(f"“{role}” is not a role. Choose one of: {', '.join(Role.values)}.")
    return Role(role)


@transaction.atomic
def record_signup_details(*, user: User, first_name: str, last_name: str, laboratory: str, requested_role: str) -> User:
    """Keep who the person says they are. The requested role is shown to the people managers, never granted."""
    user.first_name = first_name.strip()
    user.last_name = last_name.strip()
    user.laboratory = laboratory.strip()
    user.requested_role = Role(requested_role).value if requested_role else ""
    user.save(update_fields=["first_name", "last_name", "laboratory", "requested_role"])
    return user


def give_signup_details(*, user: User, first_name: str, last_name: str, laboratory: str, requested_role: str) -> User:
    """The details a social sign-up (Google, LinkedIn: no laboratory or role) gives later, on the pending page:
    kept as at sign-up, and the people managers are told (accounts.signals.signup_details_given)."""
    record_signup_details(
        user=user, first_name=first_name, last_name=last_name, laboratory=laboratory, requested_role=requested_role
    )
    signup_details_given.send(sender=User, user=user)
    return user


def approve_user(*, actor, user: User, role: str, request=None) -> User:
    """Give a pending (or deactivated) person a role, which opens the clinical pages to them."""
    role = _valid_role(role)
    if user.role is not None:
        raise UserManagementError(f"{user.email} already has the {user.role} role; change it instead.")
    _check_change_allowed(actor=actor, user=user, new_role=role)
    if (
        not user.is_active
        and not can_manage_admin_roles(actor)
        and (user.deactivated_by_id is None or user.deactivated_by_admin)
    ):
        raise UserManagementError(
            f"{user.email} was deactivated by an administrator: only an administrator can give them a role again."
        )
    user.is_active = True
    user.approved_at = timezone.now()
    user.approved_by = actor
    user.deactivated_at = None
    user.deactivated_by = None
    user.deactivated_by_admin = False
    user.save(
        update_fields=[
            "is_active",
            "approved_at",
            "approved_by",
            "deactivated_at",
            "deactivated_by",
            "deactivated_by_admin",
        ]
    )
    set_role(user, role)
    record(
        action=AuditEvent.Action.USER_APPROVED,
        actor=actor,
        obj=user,
        details={"email": user.email, "role": role.value},
        request=request,
    )
    return user


@transaction.atomic
def change_role(*, actor, user: User, role: str, request=None) -> User:
    role = _valid_role(role)
    previous = user.role
    if previous is None:
        raise UserManagementError(f"{user.email} has no role yet; approve them instead.")
    if previous == role:
        raise UserManagementError(f"{user.email} already has the {role} role.")
    _check_change_allowed(actor=actor, user=user, new_role=role)
    # A token carries the trust of the sign-in that issued it, under the old role: the client signs in
    # again (set_role would revoke them too, accounts.signals; here they are counted for the audit trail).
    revoked = revoke_api_tokens(user=user)
    set_role(user, role)
    record(
        action=AuditEvent.Action.ROLE_CHANGED,
        actor=actor,
        obj=user,
        details={"email": user.email, "from": previous, "to": role.value, "api_tokens_revoked": revoked},
        request=request,
    )
    return user


@transaction.atomic
def deactivate_user(*, actor, user: User, request=None) -> User:
    """Ends all access: sessions stop authenticating, the API token is revoked, the role removed.

    The row stays, because cases, reviews and the audit trail refer to it.
    """
    if not user.is_active:
        raise UserManagementError(f"{user.email} is already deactivated.")
    _check_change_allowed(actor=actor, user=user)
    previous = user.role
    user.is_active = False
    user.deactivated_at = timezone.now()
    user.deactivated_by = actor
    user.deactivated_by_admin = can_manage_admin_roles(actor)
    user.save(update_fields=["is_active", "deactivated_at", "deactivated_by", "deactivated_by_admin"])
    set_role(user, None)
    revoke_api_tokens(user=user)
    record(
        action=AuditEvent.Action.ROLE_CHANGED,
        actor=actor,
        obj=user,
        details={"email": user.email, "from": previous, "to": None, "deactivated": True},
        request=request,
    )
    return user


def create_api_token(*, user: User, second_factor: bool) -> tuple[ApiToken, str]:
    """A new token and its key. The key is returned once and never stored; only its hash is."""
    key = secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        key_hash=hash_key(key),
        prefix=key[:8],
        expires_at=timezone.now() + timedelta(days=settings.API_TOKEN_TTL_DAYS),
        second_factor=second_factor,
    )
    return token, key


def revoke_api_tokens(*, user: User) -> int:
    """Every API token of the user stops working at once; returns how many there were."""
    deleted, _ = ApiToken.objects.filter(user=user).delete()
    return deleted


def issue_api_token(*, request, email: str, password: str, code: str = "") -> tuple[ApiToken, str]:
    """The API's sign-in: the same checks as the website's (verified email, approved role, TOTP)."""
    adapter = get_account_adapter(request)
    try:
        # The website's password check: the per-client and per-account buckets (accounts.adapters).
        user = adapter.authenticate(request, email=email, password=password)
    except ValidationError:
        raise TokenRefused(
            gettext("Too many failed sign-in attempts. Wait a few minutes and try again."), status=429
        ) from None
    if user is None:
        raise TokenRefused(gettext("The email address or password is not correct."), status=400)
    if not EmailAddress.objects.filter(user=user, email__iexact=user.email, verified=True).exists():
        raise TokenRefused(gettext("Verify your email address first by signing in on the website."), status=403)
    if user.role is None and not user.is_superuser:
        raise TokenRefused(
            gettext(
                "Your account is awaiting approval: a supervisor must assign you a role before you can use the API."
            ),
            status=403,
        )
    if needs_totp_setup(user):
        raise TokenRefused(str(TOTP_REQUIRED_MESSAGE), status=403)
    authenticator = totp_authenticator(user)
    if authenticator is not None:
        # The website's TOTP step's bucket: per user, apart from the passwords'.
        try:
            clear_totp_failures = check_totp_rate_limit(user)
        except ValidationError:
            raise TokenRefused(gettext("Too many wrong codes. Wait a few minutes and try again."), status=429) from None
        if not TOTP(authenticator).validate_code(code.strip()):
            message = (
                gettext("Enter the current code from your authenticator app.")
                if not code
                else gettext("That code is not valid.")
            )
            raise TokenRefused(message, status=400)
        clear_totp_failures()
    token, key = create_api_token(user=user, second_factor=authenticator is not None)
    record(action=AuditEvent.Action.SIGN_IN, actor=user, obj=user, details={"via": "api_token"}, request=request)
    return token, key
