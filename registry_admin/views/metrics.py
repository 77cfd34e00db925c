"""GET /metrics: Prometheus' scrape (registry_admin/metrics.py reads the figures).

With METRICS_TOKEN set, only `Authorization: Bearer <METRICS_TOKEN>` is let in, from any
address, and a request without it gets 401 wherever it comes from; without a token, only the
addresses in METRICS_ALLOWED_ADDRESSES (the client address as the login limits read it, behind
PROXY_COUNT proxies). No session: a scraper has none.
"""

import hmac
import ipaddress
import logging

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .. import accounts, metrics

logger = logging.getLogger(__name__)

# A bearer token longer than this is not ours; refused before it is compared.
MAX_AUTHORIZATION_LENGTH = 1024


@login_not_required
@never_cache
@require_GET
def metrics_view(request):
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    try:
        body = metrics.exposition()
    except DatabaseError:
        logger.exception("metrics: the database failed")
        return _plain(503, "The database is unavailable; no metrics.\n")
    return HttpResponse(body, content_type=metrics.CONTENT_TYPE)


def _refusal(request):
    """The answer that turns `request` away, or None when it may scrape."""
    expected = settings.METRICS_TOKEN
    if expected:
        header = request.headers.get("Authorization", "")
        if len(header) > MAX_AUTHORIZATION_LENGTH:
            return _plain(400, "The Authorization header is too long.\n")
        scheme, _, token = header.partition(" ")
        # Compared even when the scheme is wrong, so the answer takes as long either way.
        matches = hmac.compare_digest(
            token.strip().encode("utf-8", "replace"), expected.encode("utf-8")
        )
        if scheme.lower() != "bearer" or not matches:
            response = _plain(401, "A bearer token (METRICS_TOKEN) is needed.\n")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        return None
    if not _allowed(accounts.client_ip(request)):
        return _plain(403, "This address may not read the metrics (METRICS_ALLOWED_ADDRESSES).\n")
    return None


def _allowed(address):
    try:
        client = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    # An IPv4 client on an IPv6 socket arrives as ::ffff:a.b.c.d.
    client = getattr(client, "ipv4_mapped", None) or client
    for entry in settings.METRICS_ALLOWED_ADDRESSES:
        try:
            if client in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # reported by the system check (checks.py)
    return False


def _plain(status, text):
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
