"""Uploads: held in memory, never spooled to disk in clear, within hard limits, judged file by file.

Django writes an upload larger than FILE_UPLOAD_MAX_MEMORY_SIZE to a temporary file in the system's temp
folder, where a patient's image would sit unencrypted (and stay, if the process dies). Here:

- `InMemoryUploadHandler` (the only FILE_UPLOAD_HANDLERS entry) keeps each file in memory. A file over
  MAX_UPLOAD_BYTES, or beyond the first MAX_UPLOAD_FILES of a request, is read past and dropped; it still
  arrives as a file carrying `upload_refusal`, so validation rejects that one file with the reason and the
  others of the batch are kept.
- `UploadLimitsMiddleware` refuses a request body over MAX_UPLOAD_REQUEST_BYTES before reading it (413), so
  memory per request is bounded; it parses multipart bodies up front so that a malformed one is a clear 400
  (JSON for the API and for clients asking for JSON) rather than a server error deep in a view.
- Model files (the model import page and API, MODEL_UPLOAD_URL_NAMES) are not patient images: they keep
  Django's handlers and their own request limit, MAX_MODEL_UPLOAD_REQUEST_BYTES.
- Part headers may be up to 8 KB (Django's limit is 1 KB): a browser sends a 1,100-character file name as
  it is, and that one long name must not drop the whole batch. The stored name is cut to 255 characters.
"""

from __future__ import annotations

import io
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler, load_handler
from django.http import HttpResponse, JsonResponse, multipartparser
from django.urls import Resolver404, resolve
from django.utils import translation
from django.utils.html import escape
from django.utils.translation import gettext

from hematovision.async_middleware import AsyncCapableMiddleware

logger = logging.getLogger(__name__)

multipartparser.MAX_TOTAL_HEADER_SIZE = max(multipartparser.MAX_TOTAL_HEADER_SIZE, 8192)
DEFAULT_UPLOAD_HANDLERS = (
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
)


def _human_size(size: int) -> str:
    from cases.validation import human_size

    return human_size(size)


class InMemoryUploadHandler(FileUploadHandler):
    """Every uploaded file in memory (the request as a whole is bounded by the middleware)."""

    def __init__(self, request=None):
        super().__init__(request)
        self.files_seen = 0

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.files_seen += 1
        self.buffer = io.BytesIO()
        self.received = 0
        max_files = settings.MAX_UPLOAD_FILES
        self.refusal = (
            gettext("was not uploaded: the request held more than %(count)d files; send the rest in another upload.")
            % {"count": max_files}
            if self.files_seen > max_files
            else ""
        )

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.refusal:
            return None
        if self.received > settings.MAX_UPLOAD_BYTES:
            self.refusal = gettext("is larger than %(limit)s, the limit per image; it was not kept.") % {
                "limit": _human_size(settings.MAX_UPLOAD_BYTES)
            }
            self.buffer = io.BytesIO()
            return None
        self.buffer.write(raw_data)
        return None

    def file_complete(self, file_size):
        buffer = io.BytesIO() if self.refusal else self.buffer
        buffer.seek(0)
        uploaded = InMemoryUploadedFile(
            file=buffer,
            field_name=self.field_name,
            name=self.file_name,
            content_type=self.content_type,
            size=file_size,
            charset=self.charset,
            content_type_extra=self.content_type_extra,
        )
        uploaded.upload_refusal = self.refusal
        self.buffer = None
        return uploaded


# Request bodies up to this size are parsed on the event loop under ASGI (UploadLimitsMiddleware.__acall__).
INLINE_PARSE_MAX_BYTES = 2 * 1024 * 1024


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _url_name(request) -> str:
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return ""
    return match.view_name


def _wants_json(request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def _refusal(request, message: str, status: int) -> HttpResponse:
    if _wants_json(request):
        response = JsonResponse({"detail": message, "accepted": [], "rejected": []}, status=status)
    else:
        title = escape(gettext("Upload refused"))
        back = escape(gettext("Go back to the case page to try again."))
        page = (
            f'<!doctype html><html lang="{translation.get_language()}"><head><meta charset="utf-8">'
            f"<title>{title}</title></head><body><h1>{title}</h1><p>{escape(message)}</p><p>{back}</p></body></html>"
        )
        response = HttpResponse(page, status=status)
    response["Connection"] = "close"
    return response


class UploadLimitsMiddleware(AsyncCapableMiddleware):
    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        if request.method in ("POST", "PUT", "PATCH"):
            refused = self._refusal(request)
            if refused is not None:
                return refused
        return self.get_response(request)

    async def __acall__(self, request):
        if request.method in ("POST", "PUT", "PATCH"):
            # The body is already in memory (or ASGI's spooled file) and parsing it touches no database, so a
            # small one is parsed on the event loop; a large one in the request's thread, not to hold the loop.
            if _content_length(request) <= INLINE_PARSE_MAX_BYTES:
                refused = self._refusal(request)
            else:
                refused = await sync_to_async(self._refusal)(request)
            if refused is not None:
                return refused
        return await self.get_response(request)

    def _refusal(self, request) -> HttpResponse | None:
        # This runs before LocaleMiddleware: the refusals are written in the request's language here.
        with translation.override(translation.get_language_from_request(request)):
            return self._check(request)

    def _check(self, request) -> HttpResponse | None:
        limit = settings.MAX_UPLOAD_REQUEST_BYTES
        if _url_name(request) in settings.MODEL_UPLOAD_URL_NAMES:
            # A model file (up to its own limit, checked by the import form) is not a patient image: Django's
            # default handlers, which spool large files to a temporary file, and the model request limit.
            limit = settings.MAX_MODEL_UPLOAD_REQUEST_BYTES
            request.upload_handlers = [load_handler(path, request) for path in DEFAULT_UPLOAD_HANDLERS]
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _refusal(request, gettext("The request's Content-Length is not a number."), 400)
        if length > limit:
            logger.warning("upload refused path=%s bytes=%d limit=%d", request.path, length, limit)
            return _refusal(
                request,
                gettext(
                    "The upload is %(size)s; at most %(limit)s can be sent in one request. "
                    "Nothing was kept: send the images in several smaller uploads."
                )
                % {"size": _human_size(length), "limit": _human_size(limit)},
                413,
            )
        if request.content_type != "multipart/form-data":
            return None
        try:
            request.POST  # noqa: B018 - parse now, where a malformed body can be answered clearly
            request.FILES  # noqa: B018
        except (multipartparser.MultiPartParserError, TooManyFilesSent, TooManyFieldsSent, RequestDataTooBig) as exc:
            logger.warning("multipart body refused path=%s: %s", request.path, exc)
            return _refusal(
                request,
                gettext(
                    "The upload could not be read (%(error)s). Nothing was kept; check the file names (at most a few "
                    "thousand characters each) and send it again."
                )
                % {"error": exc},
                400,
            )
        return None
