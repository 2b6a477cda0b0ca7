import logging

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.utils.translation import gettext

from hematovision.api_errors import api_error_response, is_api_request
from hematovision.async_middleware import AsyncCapableMiddleware

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30


def is_database_unavailable(exception: BaseException | None) -> bool:
    """A lost or refused connection, as opposed to a bug in a query (which stays a 500)."""
    if isinstance(exception, (OperationalError, InterfaceError)):
        return True
    return isinstance(exception, DatabaseError) and "connection" in str(exception).lower()


def database_unavailable_response(request=None) -> HttpResponse:
    if is_api_request(request):
        response = api_error_response(
            status=503,
            detail=gettext("The database is unavailable. Try again shortly."),
            code="database_unavailable",
        )
    else:
        # Rendered without a request context: context processors would query the database again.
        response = HttpResponse(render_to_string("503.html"), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class DatabaseUnavailableMiddleware(AsyncCapableMiddleware):
    """A database outage becomes a clear 503 page instead of a server error.

    Writes that span several rows run in transaction.atomic, which the server rolls back when the
    connection drops, so nothing is half-written. Failures outside the view (session or auth
    middleware) never reach process_exception; hematovision.views.server_error covers those.
    """

    def process_exception(self, request, exception):
        if is_database_unavailable(exception):
            logger.error("database unavailable path=%s error=%s", request.path, exception)
            return database_unavailable_response(request)
        return None
