"""Django's own middlewares (and WhiteNoise's) with their hooks run on the event loop under ASGI.

Django's ``MiddlewareMixin`` runs every ``process_request`` and ``process_response`` of a middleware through
``sync_to_async(thread_sensitive=True)`` when the chain is asynchronous (uvicorn): a hand-off to the
request's thread and back per hook, about fifteen per request for the list in settings, and WhiteNoise,
which is synchronous only, sends the whole rest of the chain to a thread and back to the loop. Most of
those hooks only read headers and cookies and set attributes or headers: here they run inline. A hook
keeps the hand-off only when it may touch the database or the disk: the session saved because it was
modified, the messages stored because they were read or added, the CSRF check of an unsafe request (it
parses the form), a static file served. In the synchronous chain (WSGI, the test client) each class is
exactly Django's: only ``__acall__`` differs.
"""

import django
from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth_middleware
from django.contrib.messages import middleware as messages_middleware
from django.contrib.sessions import middleware as sessions_middleware
from django.core.handlers.asgi import ASGIHandler
from django.middleware import clickjacking, common, csrf, locale, security
from whitenoise import middleware as whitenoise_middleware


class LoopHooksMixin:
    """``MiddlewareMixin.__acall__`` with the hooks called on the event loop unless the ``*_needs_thread``
    predicate of the request (and response) says the hook may block."""

    def request_needs_thread(self, request) -> bool:
        return False

    def response_needs_thread(self, request, response) -> bool:
        return False

    async def __acall__(self, request):
        response = None
        if hasattr(self, "process_request"):
            if self.request_needs_thread(request):
                response = await sync_to_async(self.process_request, thread_sensitive=True)(request)
            else:
                response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.response_needs_thread(request, response):
                response = await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
            else:
                response = self.process_response(request, response)
        return response


class SecurityMiddleware(LoopHooksMixin, security.SecurityMiddleware):
    """Redirects to HTTPS and sets headers from settings: no I/O."""


class SessionMiddleware(LoopHooksMixin, sessions_middleware.SessionMiddleware):
    """Creating the store reads only the cookie (the session row is read when the session is first used, in
    the view's thread). The response hook saves the session, and reads its expiry, only when it was
    modified (or SESSION_SAVE_EVERY_REQUEST) and is not empty; otherwise it only sets Vary or deletes the
    cookie."""

    def response_needs_thread(self, request, response) -> bool:
        session = getattr(request, "session", None)
        if session is None:
            return False
        return (session.modified or settings.SESSION_SAVE_EVERY_REQUEST) and not session.is_empty()


class LocaleMiddleware(LoopHooksMixin, locale.LocaleMiddleware):
    """Chooses and activates the language from the cookie and Accept-Language. Django's translation state is
    an asgiref Local, so the language activated here is the one the view's thread sees. A language's
    catalogues are read from disk on its first activation in a process: gunicorn.conf.py activates every
    language at start-up."""


class CommonMiddleware(LoopHooksMixin, common.CommonMiddleware):
    """User-agent refusal, the APPEND_SLASH redirect (URL resolution) and Content-Length: no I/O."""


class CsrfViewMiddleware(LoopHooksMixin, csrf.CsrfViewMiddleware):
    """The secret comes from the cookie, the new cookie is set on the response: no I/O, unless
    CSRF_USE_SESSIONS keeps the secret in the session. The view hook checks an unsafe request's token,
    which may parse the form: that request keeps the thread hand-off; safe methods and exempt views (the
    API) are accepted on the loop."""

    def __init__(self, get_response):
        super().__init__(get_response)
        if self.async_mode:
            # Django adapts a synchronous process_view with a thread hand-off; an instance attribute that is
            # a coroutine function is awaited as it is.
            self.process_view = self._process_view_on_loop

    def request_needs_thread(self, request) -> bool:
        return settings.CSRF_USE_SESSIONS

    def response_needs_thread(self, request, response) -> bool:
        return settings.CSRF_USE_SESSIONS and bool(request.META.get("CSRF_COOKIE_NEEDS_UPDATE"))

    async def _process_view_on_loop(self, request, callback, callback_args, callback_kwargs):
        checked_on_loop = (
            getattr(request, "csrf_processing_done", False)
            or getattr(callback, "csrf_exempt", False)
            or request.method in ("GET", "HEAD", "OPTIONS", "TRACE")
        )
        view_hook = super().process_view
        if checked_on_loop:
            return view_hook(request, callback, callback_args, callback_kwargs)
        return await sync_to_async(view_hook, thread_sensitive=True)(request, callback, callback_args, callback_kwargs)


class AuthenticationMiddleware(LoopHooksMixin, auth_middleware.AuthenticationMiddleware):
    """Sets a lazy request.user and request.auser: the user is read when first used, in the view's thread."""


class MessageMiddleware(LoopHooksMixin, messages_middleware.MessageMiddleware):
    """Creating the storage reads nothing. The response hook stores messages (cookie, or the session, read
    from the database if not yet loaded) only when they were read or added during the request."""

    def response_needs_thread(self, request, response) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and bool(getattr(storage, "used", True) or getattr(storage, "added_new", True))


class XFrameOptionsMiddleware(LoopHooksMixin, clickjacking.XFrameOptionsMiddleware):
    """Sets X-Frame-Options from settings: no I/O."""


class WhiteNoiseMiddleware(whitenoise_middleware.WhiteNoiseMiddleware):
    """WhiteNoise, synchronous only, makes Django run the rest of the chain in a thread that hands back to
    the loop for the async-capable middlewares below it. Here a request that is not for a static file (every
    request but the few assets, which the reverse proxy may serve anyway) passes straight on; a static file
    is looked up and opened in the request's thread, as before."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None, settings=settings):
        super().__init__(get_response, settings=settings)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        if self.autorefresh:
            # Finding a file looks at the disk on every request (DEBUG only).
            static_file = await sync_to_async(self.find_file, thread_sensitive=True)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve, thread_sensitive=True)(static_file, request)
        return await self.get_response(request)


# Settings name Django's classes (its deploy checks look for them by name); the ASGI application loads these.
LOOP_VERSIONS = {
    "django.middleware.security.SecurityMiddleware": f"{__name__}.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware": f"{__name__}.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware": f"{__name__}.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware": f"{__name__}.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware": f"{__name__}.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware": f"{__name__}.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware": f"{__name__}.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware": f"{__name__}.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware": f"{__name__}.XFrameOptionsMiddleware",
}


def on_the_loop(middleware: list[str]) -> list[str]:
    """The MIDDLEWARE list with each of Django's (and WhiteNoise's) classes replaced by its loop version."""
    return [LOOP_VERSIONS.get(dotted, dotted) for dotted in middleware]


def get_loop_asgi_application() -> ASGIHandler:
    """Django's get_asgi_application(), its middleware chain built from on_the_loop(settings.MIDDLEWARE).
    The chain is built once, here; the setting is restored at once, so every other reader (the checks, the
    test client) still sees Django's names."""
    django.setup(set_prefix=False)
    configured = settings.MIDDLEWARE
    settings.MIDDLEWARE = on_the_loop(configured)
    try:
        return ASGIHandler()
    finally:
        settings.MIDDLEWARE = configured
