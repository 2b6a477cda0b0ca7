"""The base of the project's own middlewares: each runs in Django's synchronous chain (WSGI, the test client)
and in its asynchronous one (uvicorn) without a thread hand-off (Django's "Asynchronous support" for
middleware). Under uvicorn, one sync-only middleware sends every request to a thread and back."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction


class AsyncCapableMiddleware:
    """Passes the request on in either mode. A subclass that acts on the request or the response overrides
    ``__call__`` (dispatching to its ``__acall__`` when ``self.async_mode``); ``process_exception`` works as
    in any middleware."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        return self.get_response(request)  # in async mode, the coroutine: awaited by the caller
