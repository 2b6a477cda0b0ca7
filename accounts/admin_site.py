"""Django's admin behind the site's own sign-in.

The admin's login form would accept an email and password alone, with no rate limit and no TOTP.
Here it only sends people to allauth's sign-in (rate limits, lockout, the TOTP step), and the admin
opens only to a session in which a second factor was completed.
"""

from allauth.account.authentication import get_authentication_records
from django.contrib import admin
from django.contrib.auth import REDIRECT_FIELD_NAME, logout
from django.http import HttpResponseRedirect
from django.shortcuts import resolve_url
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext_lazy as _


def session_completed_second_factor(request) -> bool:
    """True when this session's sign-in included an authenticator (TOTP or a recovery code)."""
    records = get_authentication_records(request, request.user)
    return any(record.get("method") == "mfa" for record in records)


class AdminSite(admin.AdminSite):
    site_header = _("HematoVision administration")
    site_title = _("HematoVision administration")

    def has_permission(self, request) -> bool:
        return super().has_permission(request) and session_completed_second_factor(request)

    def login(self, request, extra_context=None):
        # A session that is signed in but lacks the second factor (or the staff flag) is ended, so
        # the sign-in page asks again in full instead of sending the person straight back here.
        if request.user.is_authenticated and not self.has_permission(request):
            logout(request)
        next_url = request.GET.get(REDIRECT_FIELD_NAME) or request.POST.get(REDIRECT_FIELD_NAME) or ""
        if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
            next_url = ""
        next_url = next_url or resolve_url("admin:index")
        return HttpResponseRedirect(resolve_url("account_login") + "?" + urlencode({REDIRECT_FIELD_NAME: next_url}))
