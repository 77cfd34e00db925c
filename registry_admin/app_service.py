"""Azure App Service authentication ("Easy Auth"): the person App Service's front end signed in,
from the X-MS-CLIENT-PRINCIPAL header it adds to each request (base64 JSON: `auth_typ`, and
`claims` as a list of {typ, val}).

The front end removes any X-MS-* header a client sends, so the header can be believed only on
requests that came through it: with APP_SERVICE_AUTH on, PROXY_COUNT at least 1, and as many
X-Forwarded-For entries as PROXY_COUNT says proxies appended. Anything else (the setting off, a
request straight to the container, a header that does not parse) is as if it were absent.
"""

import base64
import binascii
import hashlib
import json
import logging

from django.conf import settings

logger = logging.getLogger(__name__)

HEADER = "HTTP_X_MS_CLIENT_PRINCIPAL"
# Entra ID's principal with a few hundred groups is some 30 KB of base64; more is not App
# Service's (its front end caps headers well below this).
MAX_HEADER = 64 * 1024
MAX_CLAIMS = 1000

# Easy Auth names some claims by their long WS-Federation URIs; the short names are the ones
# OIDC_ROLE_CLAIM and OIDC_USERNAME_CLAIM use with OpenID Connect.
ALIASES = {
    "http://schemas.microsoft.com/identity/claims/objectidentifier": "oid",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress": "email",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name": "name",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier": "nameidentifier",
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/role": "roles",
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups": "groups",
}


def trusted(request):
    """True when the request may carry App Service's header at all."""
    if not settings.APP_SERVICE_AUTH or settings.PROXY_COUNT < 1:
        return False
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [part for part in forwarded.split(",") if part.strip()]
    return len(hops) >= settings.PROXY_COUNT


def principal(request):
    """(issuer, claims) of the person App Service signed in, or None: no header, not trusted,
    or not a principal. `claims` has `sub` (the directory's object ID where there is one) and
    every claim by its short name, repeated ones as lists."""
    raw = request.META.get(HEADER)
    if not raw or not trusted(request):
        return None
    if len(raw) > MAX_HEADER:
        logger.warning("X-MS-CLIENT-PRINCIPAL ignored: %d characters", len(raw))
        return None
    try:
        document = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        logger.warning("X-MS-CLIENT-PRINCIPAL ignored: not base64 JSON")
        return None
    entries = document.get("claims") if isinstance(document, dict) else None
    if not isinstance(entries, list) or len(entries) > MAX_CLAIMS:
        logger.warning("X-MS-CLIENT-PRINCIPAL ignored: no list of claims")
        return None
    claims = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        typ, val = entry.get("typ"), entry.get("val")
        if not isinstance(typ, str) or not isinstance(val, str):
            continue
        name = ALIASES.get(typ, typ)
        if name in claims:
            previous = claims[name]
            claims[name] = [*previous, val] if isinstance(previous, list) else [previous, val]
        else:
            # The role claim is always a list, even with one value.
            claims[name] = [val] if name == settings.OIDC_ROLE_CLAIM else val
    subject = next(
        (claims[n] for n in ("oid", "sub", "nameidentifier") if isinstance(claims.get(n), str)),
        "",
    )
    claims["sub"] = subject
    provider = document.get("auth_typ")
    issuer = "app-service:" + (provider if isinstance(provider, str) else "")[:64]
    return issuer, claims


def fingerprint(issuer, claims):
    """What a portal session signed in from the header is bound to: the person and their role
    claim's values. A change in either signs the session in again."""
    values = claims.get(settings.OIDC_ROLE_CLAIM)
    values = sorted(v for v in values if isinstance(v, str)) if isinstance(values, list) else []
    text = json.dumps([issuer, claims.get("sub", ""), values])
    return hashlib.sha256(text.encode()).hexdigest()
