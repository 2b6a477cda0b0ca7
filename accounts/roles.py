"""Roles are Django groups; each role's capabilities are declared once, here."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Role(models.TextChoices):
    TECHNICIAN = "technician", _("Lab technician")
    PATHOLOGIST = "pathologist", _("Pathologist")
    SUPERVISOR = "supervisor", _("Supervisor")
    RESEARCHER = "researcher", _("Researcher")
    ADMIN = "admin", _("Administrator")


# Capability codenames are permissions on accounts.User (see its Meta).
ROLE_CAPABILITIES: dict[str, set[str]] = {
    Role.TECHNICIAN: {"create_case", "view_cases", "retry_classification"},
    Role.PATHOLOGIST: {"view_cases", "review_cells", "sign_case"},
    Role.SUPERVISOR: {"view_cases", "view_dashboard", "view_audit", "manage_users", "manage_laboratories"},
    Role.RESEARCHER: {"export_data"},
    Role.ADMIN: {
        "view_cases",
        "retry_classification",
        "view_dashboard",
        "view_audit",
        "manage_users",
        "manage_models",
        "view_errors",
        "export_data",
        "manage_laboratories",
    },
}

# Roles whose holders must protect their account with a second factor.
MFA_REQUIRED_ROLES = {Role.SUPERVISOR, Role.ADMIN}

# Roles that only an admin may grant, take away, or touch the holders of.
ADMIN_ONLY_ROLES = {Role.ADMIN}

ALL_CAPABILITIES: frozenset[str] = frozenset().union(*ROLE_CAPABILITIES.values())


def perm(capability: str) -> str:
    return f"accounts.{capability}"


# Where the role was already known for this request (API token sign-in, accounts.authentication), it is kept
# on the user instance under this name and role_of does not ask for the groups.
KNOWN_ROLE = "_known_role"


def remember_role(user, role: str | None) -> None:
    user.__dict__[KNOWN_ROLE] = role


def role_of(user) -> str | None:
    if not user.is_authenticated or not user.is_active:
        return None
    if KNOWN_ROLE in user.__dict__:
        return user.__dict__[KNOWN_ROLE]
    names = {group.name for group in user.groups.all()}
    for role in Role:
        if role.value in names:
            return role.value
    return None


def set_role(user, role: str | None) -> None:
    """Replace the user's role group (None removes it); other groups are left alone."""
    from django.contrib.auth.models import Group

    user.groups.remove(*Group.objects.filter(name__in=Role.values))
    if role is not None:
        user.groups.add(Group.objects.get(name=Role(role).value))
    # Django caches permissions on the instance; the next check must see the new role.
    for cache_name in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        user.__dict__.pop(cache_name, None)
    user.__dict__.pop("_prefetched_objects_cache", None)
    user.__dict__.pop(KNOWN_ROLE, None)


def sync_role_groups(**kwargs) -> None:
    """Create one group per role with exactly its capabilities (runs after every migrate)."""
    from django.contrib.auth.models import Group, Permission

    for role, capabilities in ROLE_CAPABILITIES.items():
        group, _ = Group.objects.get_or_create(name=role.value)
        permissions = Permission.objects.filter(content_type__app_label="accounts", codename__in=capabilities)
        group.permissions.set(permissions)
