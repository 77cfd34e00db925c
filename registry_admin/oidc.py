"""The one module that talks to the OpenID Provider (OIDC_ISSUER), through Authlib.

Authlib reads the provider's discovery document, makes the state, the nonce and the PKCE
verifier (S256) and keeps them in the Django session, exchanges the code, and validates the ID
token: signature against the provider's published keys (fetched again when a token names a key
it has not seen), issuer, audience, expiry and nonce. Nothing here parses or checks a token by
hand. Every request to the provider has OIDC_TIMEOUT; a provider that is down or answers
nonsense is reported as `Unavailable`, a sign-in that fails a check as `directory.Refused`.
"""

import logging
import threading
import time
from urllib.parse import urlsplit

import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.django_client import OAuth
from django.conf import settings
from joserfc.errors import JoseError

from .directory import Refused

logger = logging.getLogger(__name__)

# The discovery document and the keys are read again after this long, so a provider's change
# of endpoints or keys reaches a long-running portal.
METADATA_SECONDS = 3600
# The `error` a provider sends back is shown and audited; only its plain form.
MAX_ERROR_CODE = 64


class Unavailable(Exception):
    """The provider could not be reached, or answered something that is not OpenID Connect."""


_lock = threading.Lock()
_clients = {}


def enabled():
    return bool(settings.OIDC_ISSUER)


def _client():
    """One Authlib client per configuration (tests change it), dropped after METADATA_SECONDS."""
    key = (
        settings.OIDC_ISSUER,
        settings.OIDC_CLIENT_ID,
        settings.OIDC_CLIENT_SECRET,
        settings.OIDC_SCOPES,
        settings.OIDC_TIMEOUT,
    )
    now = time.monotonic()
    with _lock:
        entry = _clients.get(key)
        if entry is None or now - entry[1] > METADATA_SECONDS:
            oauth = OAuth()
            client = oauth.register(
                "oidc",
                client_id=settings.OIDC_CLIENT_ID,
                client_secret=settings.OIDC_CLIENT_SECRET,
                server_metadata_url=f"{settings.OIDC_ISSUER}/.well-known/openid-configuration",
                client_kwargs={
                    "scope": settings.OIDC_SCOPES,
                    "code_challenge_method": "S256",
                    "default_timeout": (min(3.05, settings.OIDC_TIMEOUT), settings.OIDC_TIMEOUT),
                },
            )
            entry = _clients[key] = (client, now)
        return entry[0]


def _metadata(client):
    try:
        metadata = client.load_server_metadata()
    except (requests.RequestException, ValueError, TypeError, AttributeError) as exc:
        raise Unavailable(type(exc).__name__) from exc
    # OpenID Connect Discovery 1.0, 4.3: the document must name the issuer it was read from,
    # or a document elsewhere could vouch for another issuer's tokens.
    if str(metadata.get("issuer", "")).rstrip("/") != settings.OIDC_ISSUER:
        with _lock:
            _clients.clear()
        raise Unavailable("issuer mismatch")
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if urlsplit(str(metadata.get(name, ""))).scheme not in ("https", "http"):
            with _lock:
                _clients.clear()
            raise Unavailable(f"no {name}")
    return metadata


def begin(request, redirect_uri):
    """The redirect to the provider's sign-in page; the state, nonce and PKCE verifier go into
    the session. Raises Unavailable."""
    client = _client()
    _metadata(client)
    try:
        return client.authorize_redirect(request, redirect_uri)
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise Unavailable(type(exc).__name__) from exc


def _error_code(value):
    text = str(value or "")[:MAX_ERROR_CODE]
    return "".join(ch for ch in text if ch.isalnum() or ch in "_-.") or "unknown"


def finish(request):
    """The verified ID token claims of the sign-in the provider sent back to the callback.
    Raises Unavailable or Refused (not audited here: the caller knows what to record)."""
    client = _client()
    _metadata(client)
    try:
        token = client.authorize_access_token(request)
    except MismatchingStateError as exc:
        raise Refused(
            "state",
            "This sign-in was started in another browser, or has been used already: sign in again.",
        ) from exc
    except OAuthError as exc:
        code = _error_code(exc.error)
        raise Refused(
            f"provider:{code}", f"The identity provider did not sign you in ({code})."
        ) from exc
    except JoseError as exc:
        logger.warning("ID token refused: %s", type(exc).__name__)
        raise Refused(
            "id-token", "The identity provider's answer did not pass the checks: sign in again."
        ) from exc
    except requests.HTTPError as exc:
        raise Unavailable(f"HTTP {exc.response.status_code}") from exc
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        raise Unavailable(type(exc).__name__) from exc
    claims = token.get("userinfo")
    if not claims:
        raise Refused("id-token", "The identity provider sent no ID token: sign in again.")
    return dict(claims)


def issuer():
    return settings.OIDC_ISSUER
