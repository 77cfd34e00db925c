"""POST /api/registry/events: the registry's notifications (see registry_admin/notifications.py).

Answers fast and never fails on content: the registry retries a failed delivery forever and holds
every later event behind it. Non-2xx only for a wrong token (401), an oversized body (413) and a
database failure (503, so the registry retries and nothing is lost).
"""

import hmac
import logging

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.db.models import F
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .. import notifications
from ..models import DeliveryCounter, MetricCounter

logger = logging.getLogger(__name__)

REFUSED_BODY_PEEK = 64 * 1024


@csrf_exempt
@login_not_required
@require_POST
def registry_events(request):
    remote_addr = request.META.get("REMOTE_ADDR", "")
    if not _token_matches(request.headers.get("Authorization", "")):
        # A little of the body, for the event id: enough for the registry's one-event deliveries,
        # too little for a stranger to make the refusal expensive.
        body = (
            b""
            if _declared_length(request) > REFUSED_BODY_PEEK
            else _read_body(request, REFUSED_BODY_PEEK)
        )
        _count_unauthorized(remote_addr, notifications.first_event_id(body))
        return JsonResponse({"error": "wrong or missing bearer token"}, status=401)

    max_body = settings.NOTIFICATIONS_MAX_BODY
    if _declared_length(request) > max_body:
        return _too_large(max_body)
    body = _read_body(request, max_body + 1)
    if len(body) > max_body:
        return _too_large(max_body)

    try:
        envelope, error = notifications.parse_envelope(body), ""
    except notifications.EnvelopeError as exc:
        envelope, error = None, str(exc)
    try:
        stored = _record(
            envelope,
            raw_body=body,
            content_type=request.META.get("CONTENT_TYPE", ""),
            remote_addr=remote_addr,
            error=error,
        )
    except DatabaseError:
        logger.exception("could not store a notification delivery; the registry will retry")
        return JsonResponse({"error": "could not store the events, retry later"}, status=503)

    received = len(envelope.events) if envelope else 0
    return JsonResponse(
        {"stored": len(stored), "duplicates": received - len(stored), "rejected": bool(error)}
        | ({"errors": envelope.errors} if envelope and envelope.errors else {})
    )


def _record(envelope, **delivery):
    """`notifications.record`, without the health check of a kept connection (PostgreSQL's
    CONN_HEALTH_CHECKS): on the registry's one-event deliveries that `SELECT 1` was half the
    database round trips. A connection that died while idle fails the store instead; it is
    then reopened and the store tried once more, which is safe: a delivery stored twice is
    stored once (the unique event id)."""
    connection.health_check_done = True
    try:
        return notifications.record(envelope, **delivery)
    except (InterfaceError, OperationalError):
        if connection.in_atomic_block:
            raise
        logger.warning("the database connection failed; storing the delivery on a new one")
        connection.close()
        return notifications.record(envelope, **delivery)


def _token_matches(authorization):
    expected = settings.NOTIFICATIONS_TOKEN
    scheme, _, token = authorization.partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


def _count_unauthorized(remote_addr, event_id):
    """Bump the one counter row in place; a failure here must not turn the 401 into a 500."""
    values = {"count": F("count") + 1, "last_seen": timezone.now(), "last_addr": remote_addr[:255]}
    name = DeliveryCounter.UNAUTHORIZED
    try:
        if not DeliveryCounter.objects.filter(name=name).update(**values):
            DeliveryCounter.objects.get_or_create(name=name)
            DeliveryCounter.objects.filter(name=name).update(**values)
        # The same event refused again is the registry retrying; anything else starts over.
        same = DeliveryCounter.objects.filter(name=name, last_event_id=event_id)
        if not (event_id and same.update(repeats=F("repeats") + 1)):
            DeliveryCounter.objects.filter(name=name).update(
                last_event_id=event_id, repeats=1 if event_id else 0
            )
    except DatabaseError:
        logger.exception("could not count an unauthorized notification delivery")
    logger.warning("notification delivery with a wrong or missing token from %s", remote_addr)


def _declared_length(request):
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _read_body(request, limit):
    """At most `limit` bytes of the body, read from the stream (request.body would apply the
    form-upload limit, not ours). A chunked body has no Content-Length: Django would see it as
    empty, so when the server says the input is terminated (gunicorn does) read it directly."""
    if "CONTENT_LENGTH" not in request.META and request.META.get("wsgi.input_terminated"):
        return request.META["wsgi.input"].read(limit)
    return request.read(limit)


def _too_large(max_body):
    try:
        # Counted, as a refused token is: a 413 blocks the registry's queue until it is raised.
        MetricCounter.objects.add({"notifications_rejected:too_large": 1})
    except DatabaseError:
        logger.exception("could not count an oversized notification delivery")
    return JsonResponse(
        {"error": f"the body is larger than NOTIFICATIONS_MAX_BODY ({max_body} bytes)"}, status=413
    )
