"""The portal's URLs plus a bench-only endpoint beside the real webhook:

- /bench/noop: the same middleware, token check and body read, no parsing or storing (the
  baseline).

The other shapes of the webhook are the real endpoint in a server started with other settings
(bench/webhook_throughput.py): `NOTIFICATIONS_APPLY_DELAY=0` applies the index and the
counters inside each delivery's transaction; with BENCH_RECEIVERS=off too, the delivery's
transaction stores only the audit row (the shape before batching, search index included),
to show what the audit trail itself costs. With BENCH_PULL_COUNTERS=off the server runs
without the pull counters' receiver (the baseline of the pull-burst phases).
"""

import os

from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from registry_admin import signals
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


if os.environ.get("BENCH_PULL_COUNTERS") == "off":
    signals.events_recorded.disconnect(dispatch_uid="pulls")
if os.environ.get("BENCH_RECEIVERS") == "off":
    for uid in ("index", "pulls", "activity", "robots"):
        signals.events_recorded.disconnect(dispatch_uid=uid)


urlpatterns = [
    path("bench/noop", noop),
    path("", include("portal.urls")),
]
