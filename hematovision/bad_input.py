"""Hostile input is a clear 400, never a server error.

- JSON nested so deeply that Python's parser runs out of recursion (anonymous, at the token endpoint) is a
  parse error (`SafeJSONParser`, the API's JSON parser).
- A number too large for SQLite's 64-bit integers (an id of 25 digits in a list, a form, a query
  parameter) makes the SQLite driver raise OverflowError; PostgreSQL simply finds nothing. The middleware
  turns it, and any RecursionError a request body caused, into a 400 that says which input was wrong.
"""

from __future__ import annotations

import logging

from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from hematovision.api_errors import is_api_request
from hematovision.async_middleware import AsyncCapableMiddleware

logger = logging.getLogger(__name__)


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - the document is nested too deeply.") from exc


def _bad_request(request, message: str, code: str) -> HttpResponse:
    if is_api_request(request) or "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"detail": message, "code": code}, status=400)
    return HttpResponse(message, content_type="text/plain; charset=utf-8", status=400)


class BadInputMiddleware(AsyncCapableMiddleware):
    def process_exception(self, request, exception):
        if isinstance(exception, OverflowError):
            logger.warning("number out of range path=%s: %s", request.path, exception)
            return _bad_request(
                request, gettext("A number in the request is out of range (no id is that large)."), "out_of_range"
            )
        if isinstance(exception, RecursionError) and request.method in ("POST", "PUT", "PATCH"):
            logger.warning("request body nested too deeply path=%s", request.path)
            return _bad_request(
                request, gettext("The request body is nested too deeply to be read."), "nested_too_deeply"
            )
        return None
