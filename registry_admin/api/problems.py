"""Errors as RFC 9457 problem details (`application/problem+json`), and the JSON parser's body
limit."""

import io
import logging
from http import HTTPStatus

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
# `type` of the problems the portal defines itself (a URN: the portal has no page to link).
TYPE_PREFIX = "urn:oyster:problem:"


class Problem(exceptions.APIException):
    """A problem with its own type: `Problem(409, "tag-moved", "…")`."""

    def __init__(self, status_code, code, detail, **extra):
        self.status_code = status_code
        self.problem_code = code
        self.extra = extra
        super().__init__(detail=detail, code=code)


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too-large"


class LimitedJSONParser(JSONParser):
    """JSON bodies of at most API_MAX_BODY bytes; a larger one is refused before it is read
    whole (REST framework reads the stream itself, past DATA_UPLOAD_MAX_MEMORY_SIZE)."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.API_MAX_BODY
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        return super().parse(io.BytesIO(data), media_type, parser_context)


def _text(detail):
    if isinstance(detail, list):
        return " ".join(_text(d) for d in detail)
    if isinstance(detail, dict):
        return " ".join(f"{k}: {_text(v)}" for k, v in detail.items())
    return str(detail)


def problem_response(status_code, detail, code=None, errors=None, headers=None, **extra):
    body = {
        "type": f"{TYPE_PREFIX}{code}" if code else "about:blank",
        "title": HTTPStatus(status_code).phrase,
        "status": status_code,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    return Response(body, status=status_code, headers=headers, content_type=PROBLEM_TYPE)


def exception_handler(exc, context):
    """REST framework's exception handler: every error a problem document."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    if not isinstance(exc, exceptions.APIException):
        logger.exception("API request failed", exc_info=exc)
        return problem_response(500, "The portal failed to answer; the error is in its log.")
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait) + 1)
    if isinstance(exc, Problem):
        return problem_response(
            exc.status_code, _text(exc.detail), exc.problem_code, headers=headers, **exc.extra
        )
    errors = exc.detail if isinstance(exc.detail, dict | list) else None
    detail = "Some fields are not valid (see errors)." if errors else _text(exc.detail)
    if isinstance(errors, list):
        errors = {"non_field_errors": errors}
    return problem_response(exc.status_code, detail, errors=errors, headers=headers)


def not_found(request, exception):
    """The project's 404 handler: a problem document under /api/ (a path no pattern matches,
    such as a job kind with a slash), the portal's page elsewhere."""
    if request.path.startswith("/api/v1/"):
        return JsonResponse(
            {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "No such path."},
            status=404,
            content_type=PROBLEM_TYPE,
        )
    return page_not_found(request, exception)
