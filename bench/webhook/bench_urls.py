"""The portal's URLs plus two bench-only endpoints beside the real webhook:

- /bench/noop: the same middleware, token check and body read, no parsing or storing (the
  baseline);
- /bench/audit-only: the webhook without the events_recorded receivers (the repository index update),
  storing in a transaction of its own (the shape before batching, search index included), to
  show what the audit trail itself costs;
- /bench/inline: the webhook applying the index and the pull counters inside each delivery's
  transaction (`NOTIFICATIONS_APPLY_DELAY=0`), for contrast with the batched default.

With BENCH_PULL_COUNTERS=off in the environment the server runs without the pull counters'
receiver (the baseline of the pull-burst phases).
"""

import os

from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from registry_admin import notifications
from registry_admin.models import AuditEvent
from registry_admin.views import webhooks


def _authorized(request):
    return webhooks._token_matches(request.headers.get("Authorization", ""))


@csrf_exempt
@login_not_required
@require_POST
def noop(request):
    if not _authorized(request):
        return JsonResponse({"error": "token"}, status=401)
    request.read()
    return JsonResponse({"stored": 0})


@csrf_exempt
@login_not_required
@require_POST
def audit_only(request):
    if not _authorized(request):
        return JsonResponse({"error": "token"}, status=401)
    body = request.read()
    stored = notifications.record(notifications.parse_envelope(body), raw_body=body, handlers=())
    return JsonResponse({"stored": len(stored)})


@csrf_exempt
@login_not_required
@require_POST
def inline(request):
    if not _authorized(request):
        return JsonResponse({"error": "token"}, status=401)
    body = request.read()
    stored = notifications.record(
        notifications.parse_envelope(body),
        raw_body=body,
        handlers=(
            lambda events: notifications.events_recorded.send(sender=AuditEvent, events=events),
        ),
    )
    return JsonResponse({"stored": len(stored)})


if os.environ.get("BENCH_PULL_COUNTERS") == "off":
    notifications.events_recorded.disconnect(dispatch_uid="pulls")


urlpatterns = [
    path("bench/inline", inline),
    path("bench/noop", noop),
    path("bench/audit-only", audit_only),
    path("", include("portal.urls")),
]
