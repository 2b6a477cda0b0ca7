"""The one place views and API endpoints ask whether a user may do something."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from rest_framework.permissions import BasePermission

from .roles import ROLE_CAPABILITIES


def has_capability(user, capability: str) -> bool:
    """The role's capabilities (accounts/roles.py); a superuser has all, an inactive user none.

    Answered from the role, which the groups give (prefetched with an API token), without Django's
    permission queries: each role group holds exactly its role's permissions (roles.sync_role_groups), and
    the project grants no permission to a user directly or through any other group.
    """
    if not (user.is_authenticated and user.is_active):
        return False
    if user.is_superuser:
        return True
    return capability in ROLE_CAPABILITIES.get(user.role, ())


def capability_required(*capabilities: str):
    """View decorator: anonymous users go to sign-in, pending users to the pending page, others get 403."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if user.role is None and not user.is_superuser:
                return redirect("accounts:pending")
            if not any(has_capability(user, capability) for capability in capabilities):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        wrapper.required_capabilities = capabilities
        return wrapper

    return decorator


class HasCapability(BasePermission):
    """DRF permission: the view declares `required_capabilities` (any of them grants access).

    A dict maps HTTP methods to capabilities where reads and writes differ.
    """

    def has_permission(self, request, view) -> bool:
        required = getattr(view, "required_capabilities", None)
        if isinstance(required, dict):
            required = required.get(request.method, required.get("*"))
        if not required:
            return False
        return any(has_capability(request.user, capability) for capability in required)
