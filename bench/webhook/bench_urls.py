"""The portal's URLs plus two bench-only endpoints beside the real webhook:

- /bench/noop: the same middleware, token check and body read, no parsing or storing (the
  baseline);
- /bench/audit-only: the webhook without the events_recorded receivers (the repository index update), to
  show what the audit trail itself costs;
- /bench/without-pulls: the webhook with the repository index receiver but not the pull
  counters, the baseline of the pull-burst phases.
"""

from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from registry_admin import index, notifications
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
def without_pulls(request):
    if not _authorized(request):
        return JsonResponse({"error": "token"}, status=401)
    body = request.read()
    stored = notifications.record(
        notifications.parse_envelope(body),
        raw_body=body,
        handlers=(lambda events: index.on_events_recorded(sender=AuditEvent, events=events),),
    )
    return JsonResponse({"stored": len(stored)})


urlpatterns = [
    path("bench/without-pulls", without_pulls),
    path("bench/noop", noop),
    path("bench/audit-only", audit_only),
    path("", include("portal.urls")),
]
