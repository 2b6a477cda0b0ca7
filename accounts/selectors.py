"""Reads about people and their roles."""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.db.models import Case, Exists, IntegerField, OuterRef, QuerySet, Value, When

from .models import User
from .permissions import has_capability
from .roles import ADMIN_ONLY_ROLES, ALL_CAPABILITIES, Role


def list_people() -> QuerySet[User]:
    """Everyone, awaiting approval first, then people with a role, then deactivated accounts."""
    has_role = Exists(Group.objects.filter(user=OuterRef("pk"), name__in=Role.values))
    return (
        User.objects.annotate(
            listing_order=Case(
                When(is_active=False, then=Value(2)),
                When(has_role, then=Value(1)),
                default=Value(0),
                output_field=IntegerField(),
            )
        )
        .prefetch_related("groups")
        .select_related("approved_by")
        .order_by("listing_order", "email")
    )


def count_pending_users() -> int:
    has_role = Exists(Group.objects.filter(user=OuterRef("pk"), name__in=Role.values))
    return User.objects.filter(is_active=True, is_superuser=False).exclude(has_role).count()


def grantable_roles(*, actor) -> list[tuple[str, str]]:
    """The roles this person may hand out, as form choices."""
    may_grant_admin = actor.is_superuser or actor.role == Role.ADMIN
    return [(role.value, role.label) for role in Role if may_grant_admin or role not in ADMIN_ONLY_ROLES]


def capabilities_of(*, user) -> list[str]:
    return sorted(capability for capability in ALL_CAPABILITIES if has_capability(user, capability))
