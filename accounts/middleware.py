from functools import cache

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse

from .mfa import TOTP_REQUIRED_MESSAGE, needs_totp_setup


@cache
def mfa_setup_path_prefixes() -> tuple[str, ...]:
    """What such a user may still reach: the pages that set TOTP up (activation may ask for the
    password again first), signing out, static files, the health probes, and the language switcher with
    the scripts' translations (the activation page shows them too)."""
    names = (
        "mfa_index",
        "account_reauthenticate",
        "account_logout",
        "healthz",
        "readyz",
        "set_language",
        "javascript-catalog",
    )
    return (settings.STATIC_URL, *(reverse(name) for name in names))


class MFARequiredMiddleware:
    """Sends a supervisor or admin without an authenticator to the TOTP activation page.

    API clients authenticate by token inside DRF, after this middleware: the token endpoint refuses
    to issue a token until TOTP is active (accounts.services.issue_api_token), and the token
    authentication applies the same rule to every request (accounts.authentication).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        if not path.startswith(mfa_setup_path_prefixes()) and needs_totp_setup(request.user):
            if path.startswith("/api/"):
                return JsonResponse({"detail": str(TOTP_REQUIRED_MESSAGE)}, status=403)
            return redirect("mfa_activate_totp")
        return self.get_response(request)
