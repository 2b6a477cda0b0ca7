"""Writes: approving people, changing roles, deactivating accounts, issuing API tokens."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from allauth.core import ratelimit
from allauth.mfa.totp.internal.auth import TOTP
from django.contrib.auth import authenticate
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from audit.models import AuditEvent
from audit.services import record

from .mfa import TOTP_REQUIRED_MESSAGE, needs_totp_setup, totp_authenticator
from .models import User
from .roles import ADMIN_ONLY_ROLES, Role, set_role


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
        raise UserManagementError("You cannot change your own role or deactivate your own account.")
    if can_manage_admin_roles(actor):
        return
    if new_role in ADMIN_ONLY_ROLES:
        raise UserManagementError(f"Only an administrator can grant the {new_role} role.")
    if user.is_superuser or user.role in ADMIN_ONLY_ROLES:
        raise UserManagementError("Only an administrator can change an administrator's account.")


def _valid_role(role: str) -> Role:
    if role not in Role.values:
        raise UserManagementError(f"“{role}” is not a role. Choose one of: {', '.join(Role.values)}.")
    return Role(role)


@transaction.atomic
def approve_user(*, actor, user: User, role: str, request=None) -> User:
    """Give a pending (or deactivated) person a role, which opens the clinical pages to them."""
    role = _valid_role(role)
    if user.role is not None:
        raise UserManagementError(f"{user.email} already has the {user.role} role; change it instead.")
    _check_change_allowed(actor=actor, user=user, new_role=role)
    user.is_active = True
    user.approved_at = timezone.now()
    user.approved_by = actor
    user.save(update_fields=["is_active", "approved_at", "approved_by"])
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
    set_role(user, role)
    record(
        action=AuditEvent.Action.ROLE_CHANGED,
        actor=actor,
        obj=user,
        details={"email": user.email, "from": previous, "to": role.value},
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
    user.save(update_fields=["is_active"])
    set_role(user, None)
    Token.objects.filter(user=user).delete()
    record(
        action=AuditEvent.Action.ROLE_CHANGED,
        actor=actor,
        obj=user,
        details={"email": user.email, "from": previous, "to": None, "deactivated": True},
        request=request,
    )
    return user


def issue_api_token(*, request, email: str, password: str, code: str = "") -> Token:
    """The API's sign-in: the same checks as the website's (verified email, approved role, TOTP)."""
    rate_key = email.strip().lower()
    if not ratelimit.consume(request, action="login_failed", key=rate_key, dry_run=True):
        raise TokenRefused("Too many failed sign-in attempts. Wait a few minutes and try again.", status=429)
    user = authenticate(request, email=email, password=password)
    if user is None:
        ratelimit.consume(request, action="login_failed", key=rate_key)
        raise TokenRefused("The email address or password is not correct.", status=400)
    if not EmailAddress.objects.filter(user=user, email__iexact=user.email, verified=True).exists():
        raise TokenRefused("Verify your email address first by signing in on the website.", status=403)
    if user.role is None and not user.is_superuser:
        raise TokenRefused(
            "Your account is awaiting approval: a supervisor must assign you a role before you can use the API.",
            status=403,
        )
    if needs_totp_setup(user):
        raise TokenRefused(TOTP_REQUIRED_MESSAGE, status=403)
    authenticator = totp_authenticator(user)
    if authenticator is not None and not TOTP(authenticator).validate_code(code.strip()):
        ratelimit.consume(request, action="login_failed", key=rate_key)
        message = "Enter the current code from your authenticator app." if not code else "That code is not valid."
        raise TokenRefused(message, status=400)
    token, _ = Token.objects.get_or_create(user=user)
    record(action=AuditEvent.Action.SIGN_IN, actor=user, obj=user, details={"via": "api_token"}, request=request)
    return token
