"""Security headers on every page: a Content-Security-Policy, a Permissions-Policy, and no caching.

- Content-Security-Policy (HTML responses): scripts only from this site's static files, no inline script,
  no eval, no plugins, not framed. Inline `style="..."` attributes stay allowed (templates and Bootstrap use
  them; they cannot run code). Pages keep their scripts in static/js (tests/test_security_headers.py scans
  the templates for inline scripts and handlers).
- Permissions-Policy: no camera, microphone, geolocation, payment, USB or motion sensors for any page.
- Cache-Control: responses that set none get `no-store, private` (Django's never-cache headers): pages and
  API answers carry patient references and cell images, which must not stay in a browser or proxy cache.
  A view may let the user's own browser keep an answer (`private, max-age=...`, a cell's stored
  thumbnail); anything else not public or no-store gets no-store added.
  Static files are served before this middleware (WhiteNoise) and keep their own long-lived caching.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.cache import add_never_cache_headers, patch_cache_control

from hematovision.async_middleware import AsyncCapableMiddleware

DEFAULT_CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'none'",
    ]
)
DEFAULT_PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "camera",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "payment",
        "usb",
    )
)


class SecurityHeadersMiddleware(AsyncCapableMiddleware):
    def __init__(self, get_response):
        super().__init__(get_response)
        self.content_security_policy = getattr(settings, "CONTENT_SECURITY_POLICY", DEFAULT_CONTENT_SECURITY_POLICY)
        self.permissions_policy = getattr(settings, "PERMISSIONS_POLICY", DEFAULT_PERMISSIONS_POLICY)

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        return self._with_headers(self.get_response(request))

    async def __acall__(self, request):
        return self._with_headers(await self.get_response(request))

    def _with_headers(self, response):
        if self.content_security_policy and response.get("Content-Type", "").startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy", self.content_security_policy)
        if self.permissions_policy:
            response.headers.setdefault("Permissions-Policy", self.permissions_policy)
        if "Cache-Control" not in response:
            add_never_cache_headers(response)
        elif not _explicitly_cacheable(response["Cache-Control"]):
            patch_cache_control(response, no_store=True, private=True)
        return response


def _explicitly_cacheable(cache_control: str) -> bool:
    """no-store already, public (static assets, the JavaScript catalogue), or private with a max-age: a view
    that lets only the user's own browser keep an answer for a while (a cell's stored thumbnail)."""
    directives = {part.strip().split("=", 1)[0].lower() for part in cache_control.split(",")}
    return bool(directives & {"no-store", "public"}) or {"private", "max-age"} <= directives
