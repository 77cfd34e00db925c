"""GET/POST /auth/token: the registry's token endpoint (REGISTRY_AUTH_MODE=token only).

GET with optional Basic credentials and `service` + any number of `scope` parameters
(https://distribution.github.io/distribution/spec/auth/token/); POST is the OAuth2 form newer
clients send first (grant_type=password with username/password, .../spec/auth/oauth/). Each
scope is cut down to what the access rules allow; asking for more than allowed is not an error
(the registry refuses the request the token does not cover), but it is written to the audit log:
a user's every time, a failed or anonymous request's at most a few times per address and minute
(`access.record_refusal`).
"""

import base64
import binascii
import json
import logging
from datetime import UTC, datetime

from axes.helpers import get_client_ip_address
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError
from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from .. import access, cli_secrets, quotas, tokens
from ..models import MetricCounter
from ..models.access import ACTIONS

logger = logging.getLogger(__name__)

# Credentials arrive in a header or a small form; anything longer is not a password we issued.
MAX_CREDENTIAL_LENGTH = 4096


def _error(status, code, message, **headers):
    # Messages quote what the client sent; escaped so no browser ever reads markup from them.
    body = json.dumps({"errors": [{"code": code, "message": message}]})
    body = body.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    response = HttpResponse(body, status=status, content_type="application/json")
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _basic_credentials(header):
    """(username, password) from a Basic header, None without one; raises ValueError if broken."""
    scheme, _, value = (header or "").partition(" ")
    if not header:
        return None
    if scheme.lower() != "basic" or len(value) > MAX_CREDENTIAL_LENGTH:
        raise ValueError("unsupported Authorization header")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("malformed Basic credentials") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise ValueError("malformed Basic credentials")
    return username, password


# What /metrics calls each answer of the endpoint (oyster_token_requests_total{outcome}).
OUTCOMES = {200: "issued", 400: "bad_request", 401: "refused", 429: "throttled", 503: "unavailable"}


@csrf_exempt
@login_not_required
@never_cache
@require_http_methods(["GET", "POST"])
def token(request):
    if settings.REGISTRY_AUTH_MODE != "token":
        # Not a password oracle while the registry checks htpasswd itself.
        raise Http404("The token endpoint is off (REGISTRY_AUTH_MODE is not token).")
    response = _answer(request)
    try:
        # One small upsert per request, beside the attempt counters a password check already
        # writes; kept in the database so every worker and instance reports the same total.
        outcome = OUTCOMES.get(response.status_code, "other")
        MetricCounter.objects.add({f"token_requests:{outcome}": 1})
    except DatabaseError:
        logger.exception("token endpoint: could not count a request")
    return response


def _answer(request):
    oauth = request.method == "POST"
    params = request.POST if oauth else request.GET
    ip_address = get_client_ip_address(request) or ""

    service = params.get("service", "")
    if service != settings.TOKEN_SERVICE:
        return _error(400, "UNSUPPORTED", f"Unknown service {service[:80]!r}.")
    try:
        scopes = tokens.parse_scopes(params.getlist("scope"))
    except tokens.ScopeError as exc:
        return _error(400, "INVALID_SCOPE", str(exc))

    try:
        if oauth:
            credentials = _oauth_credentials(params)
        else:
            credentials = _basic_credentials(request.headers.get("Authorization", ""))
    except ValueError as exc:
        return _error(400 if oauth else 401, "UNAUTHORIZED", str(exc))
    except _UnsupportedGrant as exc:
        return JsonResponse(
            {"error": "unsupported_grant_type", "error_description": str(exc)}, status=400
        )

    try:
        if credentials is None:
            principal = access.Principal("")
        else:
            username, password = credentials
            if len(username) + len(password) > MAX_CREDENTIAL_LENGTH:
                raise access.AuthRefused("invalid credentials")
            # A directory user's CLI secret first; anything else (a wrong secret included) is
            # the htpasswd check, which counts failures.
            principal = cli_secrets.principal(username, password, ip_address)
            if principal is None:
                principal = access.authenticate(username, password, ip_address)
        granted = access.grant_access(principal, scopes)
    except access.AuthRefused as exc:
        if exc.recorded:
            name = credentials[0] if credentials else ""
            access.record_refusal(name, ip_address, scopes, [], exc.audit_reason)
        headers = {"Retry_After": str(exc.retry_after)} if exc.retry_after else {}
        if exc.status == 401:
            headers["WWW_Authenticate"] = f'Basic realm="{settings.TOKEN_SERVICE}"'
        code = "TOOMANYREQUESTS" if exc.status == 429 else "UNAUTHORIZED"
        return _error(exc.status, code, f"Authentication failed: {exc.reason}.", **headers)
    except DatabaseError:
        logger.exception("token endpoint: database unavailable")
        return _error(503, "UNAVAILABLE", "The token server cannot read its rules; try again.")

    # Asked for more than the rules allow: judged before the quotas, whose refusals have their
    # own audit row once per quota and window (a pusher retrying in a loop is not a row each).
    refused_by_rules = _fewer_than_asked(scopes, granted)
    try:
        granted, over_quota = quotas.withhold_push(principal, granted)
        if over_quota:
            quotas.record_refusals(principal.username, over_quota, _first_repository(scopes))
    except DatabaseError:
        logger.exception("token endpoint: could not read the quotas")
        return _error(503, "UNAVAILABLE", "The token server cannot read its quotas; try again.")

    if refused_by_rules:
        # Anonymous requests are bounded per address; a user's are not (a password was needed).
        access.record_refusal(
            principal.username,
            ip_address,
            scopes,
            granted,
            "not allowed by the access rules",
            bounded=principal.is_anonymous,
        )
    signed, issued = tokens.issue(principal.username, granted, service)
    issued_at = datetime.fromtimestamp(issued, tz=UTC).isoformat()
    body = {"expires_in": settings.TOKEN_LIFETIME, "issued_at": issued_at}
    if oauth:
        body["access_token"] = signed
        body["scope"] = " ".join(
            f"{g['type']}:{g['name']}:{','.join(g['actions'])}" for g in granted
        )
    else:
        # Both names: docker reads `token`, some clients only `access_token`.
        body["token"] = body["access_token"] = signed
    return JsonResponse(body)


class _UnsupportedGrant(Exception):
    pass


def _oauth_credentials(params):
    grant_type = params.get("grant_type", "")
    if grant_type != "password":
        # No refresh tokens are issued, so there is nothing to refresh with; clients then fall
        # back to GET with Basic credentials.
        raise _UnsupportedGrant(f"grant_type {grant_type[:40]!r} is not supported; use password.")
    username, password = params.get("username", ""), params.get("password", "")
    if not username:
        raise ValueError("username and password are required")
    return username, password


def _fewer_than_asked(scopes, granted):
    given = {(g["type"], g["name"]): set(g["actions"]) for g in granted}
    for scope in scopes:
        wanted = set(ACTIONS) if "*" in scope.actions else set(scope.actions)
        have = given.get((scope.type, scope.name), set())
        if scope.type == "registry":
            wanted = {"*"}
        if not wanted <= have:
            return True
    return False


def _first_repository(scopes):
    return next((s.name for s in scopes if s.type == "repository"), "")
