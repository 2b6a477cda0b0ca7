from functools import cache

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse

from hematovision.async_middleware import AsyncCapableMiddleware

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


class MFARequiredMiddleware(AsyncCapableMiddleware):
    """Sends a supervisor or admin without an authenticator to the TOTP activation page.

    API clients authenticate by token inside DRF, after this middleware: the token endpoint refuses
    to issue a token until TOTP is active (accounts.services.issue_api_token), and the token
    authentication applies the same rule to every request (accounts.authentication).
    """

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        refused = self._refusal(request)
        return refused if refused is not None else self.get_response(request)

    async def __acall__(self, request):
        # Only a session can sign a user in before the view (AuthenticationMiddleware). Without a session
        # key the user is anonymous and needs no second factor: no database, no thread. With one, the user
        # and their role are loaded in the request's thread, where the view finds them cached.
        session = getattr(request, "session", None)
        if session is None or session.session_key is not None:
            refused = await sync_to_async(self._refusal)(request)
            if refused is not None:
                return refused
        return await self.get_response(request)

    @staticmethod
    def _refusal(request):
        path = request.path_info
        if not path.startswith(mfa_setup_path_prefixes()) and needs_totp_setup(request.user):
            if path.startswith("/api/"):
                return JsonResponse({"detail": str(TOTP_REQUIRED_MESSAGE)}, status=403)
            return redirect("mfa_activate_totp")
        return None
