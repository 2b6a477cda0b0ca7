"""Reused request threads for the ASGI application.

Django's ASGIHandler runs each request's synchronous code (the view, the request_started/finished receivers,
the response's close) in a thread of its own: asgiref makes a one-thread executor per request, starts its
thread at the first hand-off and, when the request ends, starts a second thread that joins the first. Under
the e2e benchmark those thread starts and joins were about a fifth of the web process's GIL samples
(docs/benchmarks.md, "hweb2"). Here each request borrows an idle one-thread executor instead
(``ThreadSensitiveContext(executor=...)``, asgiref's own way to pass one in), so its thread outlives the
request and serves the next one, as a WSGI server's threads do.

What a request leaves on its thread is what a WSGI thread leaves: Django's database connection is per thread
and is closed (given back to the pool) by request_finished at the end of each request, as before. A thread is
handed to the next request only when nothing of the last one still runs on it (a view cancelled by a client
that went away keeps running on its thread): such an executor is let go as asgiref lets them go.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext

# Idle threads kept per process; requests beyond it at once get a thread of their own, let go at their end.
IDLE_THREADS_MAX = 32


class RequestThread(ThreadPoolExecutor):
    """One thread; counts the calls submitted and not finished, so a busy thread is never handed out again."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="django-request")
        self._lock = threading.Lock()
        self.unfinished = 0

    def submit(self, fn, /, *args, **kwargs):
        with self._lock:
            self.unfinished += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._finished(None)
            raise
        # Added before asyncio's own callback (run_in_executor wraps the future after submit returns), so the
        # count is down before the awaiting request resumes.
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future) -> None:
        with self._lock:
            self.unfinished -= 1


class ReusedRequestThreads:
    """ASGI wrapper running each HTTP request of `application` (Django's ASGIHandler) with a reused thread.

    The idle list is touched only from the event loop's thread (one loop per uvicorn worker process)."""

    def __init__(self, application, *, idle_max: int = IDLE_THREADS_MAX) -> None:
        self.application = application
        self.idle_max = idle_max
        self.idle: list[RequestThread] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.application(scope, receive, send)
        executor = self.idle.pop() if self.idle else RequestThread()
        try:
            # Django's own ThreadSensitiveContext() inside finds this one and leaves it in place.
            async with ThreadSensitiveContext(executor=executor):
                return await self.application(scope, receive, send)
        finally:
            self._release(executor)

    def _release(self, executor: RequestThread) -> None:
        if executor.unfinished == 0 and len(self.idle) < self.idle_max:
            self.idle.append(executor)
        else:
            # Its thread ends once its last call returns; nothing waits for it here.
            executor.shutdown(wait=False)
