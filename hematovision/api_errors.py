"""Every error under /api/ is JSON of one shape: {"detail": <message>, "code": <stable code>}, and a validation
error adds "errors": {field: [messages]}, and keeps each field's messages at the top level as well, where clients
written before this shape read them. Clients branch on "code", people read "detail".

Who answers which error:
- DRF's own exceptions (validation, authentication, permission, not found, throttling, parse errors):
  `api_exception_handler` (REST_FRAMEWORK["EXCEPTION_HANDLER"]).
- Anything else a view raises is left to the middleware: a lost database is a 503
  (hematovision.middleware.DatabaseUnavailableMiddleware), hostile input a 400 (hematovision.bad_input);
  whatever none of them handles is a 500 from `ApiErrorMiddleware`, logged with its traceback and never
  sent to the client (an exception's text can hold a query, a path or a patient reference).
- Failures before or after the view (in other middleware) and unknown URLs reach the handler views in
  hematovision/views.py, which answer with `api_error_response` under /api/.
- A view that answers an error itself with {"detail": ...} gets its "code" from the status here.
"""

from __future__ import annotations

import json
import logging

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, JsonResponse
from django.utils.translation import gettext
from rest_framework import exceptions

from hematovision.async_middleware import AsyncCapableMiddleware

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
# Error bodies this size or larger are left as they are (no error body of ours comes near it).
MAX_REWRITTEN_BODY_BYTES = 64 * 1024

CODE_BY_STATUS = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "throttled",
    500: "server_error",
    503: "service_unavailable",
}


def is_api_request(request) -> bool:
    return request is not None and request.path.startswith(API_PREFIX)


def code_for_status(status: int) -> str:
    return CODE_BY_STATUS.get(status, "client_error" if status < 500 else "server_error")


def api_error_response(*, status: int, detail: str, code: str | None = None) -> JsonResponse:
    return JsonResponse({"detail": str(detail), "code": code or code_for_status(status)}, status=status)


def server_error_response() -> JsonResponse:
    return api_error_response(status=500, detail=gettext("A server error occurred. It has been logged."))


def _single_code(codes) -> str | None:
    return codes if isinstance(codes, str) else None


def api_exception_handler(exc, context):
    """DRF's handler (status, headers such as WWW-Authenticate and Retry-After), with the body in the API's
    shape. Exceptions DRF does not know return None and so go on to the middleware (see the module's note)."""
    # Imported here: rest_framework.views reads REST_FRAMEWORK's classes on import, among them
    # hematovision.bad_input's parser, which imports this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError) and not isinstance(exc.detail, str):
        errors = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        # The fields stay at the top level too (DRF's own shape, which scripts already read); the shared keys win.
        response.data = {**errors, "detail": gettext("Invalid input."), "code": "invalid", "errors": errors}
        return response
    detail = response.data.get("detail") if isinstance(response.data, dict) else response.data
    code = None
    if isinstance(exc, exceptions.APIException):
        code = _single_code(exc.get_codes())
    response.data = {"detail": str(detail), "code": code or code_for_status(response.status_code)}
    return response


def _with_code(response):
    """A JSON error body {"detail": ...} a view wrote itself, given the "code" of its status."""
    if response.streaming or not response.get("Content-Type", "").startswith("application/json"):
        return response
    if len(response.content) >= MAX_REWRITTEN_BODY_BYTES:
        return response
    try:
        body = json.loads(response.content)
    except ValueError:
        return response
    if not isinstance(body, dict) or "detail" not in body or "code" in body:
        return response
    body["code"] = code_for_status(response.status_code)
    response.content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    if response.has_header("Content-Length"):
        response["Content-Length"] = str(len(response.content))
    return response


def _user_id(request):
    try:
        return request.user.pk
    except Exception:  # noqa: BLE001 - the log line must not fail too (the user is looked up in the database)
        return None


class ApiErrorMiddleware(AsyncCapableMiddleware):
    """Sits above DatabaseUnavailableMiddleware and BadInputMiddleware (process_exception runs bottom-up), so
    it sees only the exceptions they left: the last word on a server error under /api/."""

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        return self._answer(request, self.get_response(request))

    async def __acall__(self, request):
        return self._answer(request, await self.get_response(request))

    @staticmethod
    def _answer(request, response):
        if is_api_request(request) and response.status_code >= 400:
            return _with_code(response)
        return response

    def process_exception(self, request, exception):
        if not is_api_request(request):
            return None
        if isinstance(exception, (Http404, PermissionDenied, SuspiciousOperation)):
            return None  # Django's own 404/403/400 handling, answered as JSON by hematovision.views
        logger.error(
            "unhandled error in the API method=%s path=%s user=%s",
            request.method,
            request.path,
            _user_id(request),
            exc_info=exception,
        )
        return server_error_response()
