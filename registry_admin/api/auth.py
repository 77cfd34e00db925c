"""Bearer API tokens for REST framework: who is asking (authentication), whether the token's
scopes cover the request (permission), and how often it may ask (throttle, per token)."""

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.throttling import SimpleRateThrottle

from .. import accounts, api_tokens

# An Authorization header longer than this is not a token of ours; refused unread.
MAX_HEADER_LENGTH = 200
REALM = 'Bearer realm="oyster-api"'

# What the client is told per refusal reason (api_tokens.Refused.reason); the audit row keeps
# the reason itself.
ANSWERS = {
    "token revoked": "This token was revoked.",
    "token expired": "This token has expired.",
}
INVALID = "The token is not valid (send Authorization: Bearer oyster_...)."


def _refuse(request, reason, token=None):
    api_tokens.record_refusal(
        reason,
        token,
        address=accounts.client_ip(request) or "",
        method=request.method,
        path=request.path,
    )


class ApiTokenAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if len(header) > MAX_HEADER_LENGTH or scheme.lower() != "bearer" or not value.strip():
            _refuse(request, "malformed Authorization header")
            raise exceptions.AuthenticationFailed(INVALID)
        try:
            token = api_tokens.authenticate(value.strip())
        except api_tokens.Refused as exc:
            _refuse(request, exc.reason, exc.token)
            raise exceptions.AuthenticationFailed(ANSWERS.get(exc.reason, INVALID)) from None
        return token.owner, token

    def authenticate_header(self, request):
        return REALM


class HasScope(BasePermission):
    """The view's `scopes[method]` (read for GET) among the token's scopes that the owner's
    role still allows."""

    def has_permission(self, request, view):
        token = request.auth
        if token is None:
            # No credential was tried: a 401 without an audit row (a browser opening an API
            # URL is not an attempt, and the audit stays for tokens that were sent).
            return False
        needed = view.scope_for(request.method)
        if needed not in api_tokens.effective_scopes(token):
            _refuse(request, f"needs scope {needed}", token)
            raise exceptions.PermissionDenied(
                f"This request needs a token with the {needed!r} scope"
                + (
                    " (the owner's role no longer allows it)."
                    if needed in token.scope_list
                    else "."
                )
            )
        return True


class TokenRateThrottle(SimpleRateThrottle):
    """API_THROTTLE_RATE per token (each process counts in its own cache)."""

    scope = "api_token"

    def get_cache_key(self, request, view):
        if request.auth is None:
            return None
        # The prefix, not the row id: ids come back after a database is restored or reset.
        return self.cache_format % {"scope": self.scope, "ident": request.auth.prefix}
