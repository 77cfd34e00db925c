"""The audit log: the filtered page, one event, the CSV export, rejected deliveries, the
registry-side notification settings, and the dashboard's audit sections."""

import json
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from .. import activity, referrers, registry_config
from .. import audit_export as csv_export
from ..forms.audit import ACTION_SUGGESTIONS, AuditFilterForm, NotificationSettingsForm
from ..models import AuditEvent, DeliveryCounter, RejectedDelivery
from ..models.audit import encode_cursor
from ..roles import MANAGE_USERS, require

PAGE_SIZE = 50
# The dashboard's 30-day aggregates read a month of events (tens of thousands of rows on a busy
# registry, over half a second at 1M events); a chart five minutes old is fine.
ACTIVITY_CACHE_KEY = "registry_admin:audit-activity"
ACTIVITY_CACHE_SECONDS = 300
PAGING_PARAMS = ("after", "before")


def audit_log(request):
    form = AuditFilterForm(request.GET)
    page = _page(form) if form.is_valid() else None
    base_query = _query_without(request.GET, PAGING_PARAMS)
    return render(
        request,
        "registry_admin/audit/log.html",
        {
            "form": form,
            "page": page,
            "base_query": base_query,
            "export_query": base_query,
            "action_suggestions": ACTION_SUGGESTIONS,
        },
    )


def audit_event(request, pk):
    event = get_object_or_404(AuditEvent, pk=pk)
    related = []
    if event.request_id:
        related = (
            AuditEvent.objects.filter(request_id=event.request_id)
            .exclude(pk=event.pk)
            .newest_first()
            .defer("raw")[:50]
        )
    return render(
        request,
        "registry_admin/audit/event.html",
        {"event": event, "pretty_raw": _pretty_json(event.raw), "related": related},
    )


def audit_export(request):
    """The filtered view (same parameters as the page, every page) as CSV, streamed."""
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        return HttpResponseBadRequest(
            f"Invalid filter: {errors}", content_type="text/plain; charset=utf-8"
        )
    events = form.filtered(whole=True)
    too_many = csv_export.too_many(events)
    if too_many:
        return HttpResponseBadRequest(too_many, content_type="text/plain; charset=utf-8")
    rows = csv_export.csv_lines(csv_export.every_event(events))
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{csv_export.file_name()}"'
    return response


@require(MANAGE_USERS)
def rejected_deliveries(request):
    deliveries = RejectedDelivery.objects.order_by("-received_at", "-id")[:100]
    return render(
        request,
        "registry_admin/audit/rejected.html",
        {
            "deliveries": [(d, _body_preview(d.body)) for d in deliveries],
            "total": RejectedDelivery.objects.count(),
            "unauthorized": _unauthorized_counter(),
        },
    )


@require(MANAGE_USERS)
def notification_settings(request):
    """The registry-side config for this portal (as `manage.py registry_config` prints it)."""
    form = NotificationSettingsForm(request.GET or {"url": request.build_absolute_uri("/")})
    texts = None
    if form.is_valid():
        texts = registry_config.notification_config_texts(
            form.cleaned_data["url"],
            registry_config.TOKEN_PLACEHOLDER,
            ignore=form.ignore_block(),
        )
    return render(
        request,
        "registry_admin/audit/settings.html",
        {"form": form, "texts": texts, "token_set": bool(settings.NOTIFICATIONS_TOKEN)},
    )


def duration_text(delta):
    """A setting's duration as people say it: "24 hours", "90 minutes", "2 days"."""
    seconds = round(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


# Refused deliveries of one event id before the dashboard warns about a wrong token. Anyone who
# can reach the webhook can POST the same event id twice, or twice a few minutes apart, and the
# address is no proof either (behind a proxy it is whatever the proxy says; the registry's own is
# not known for certain): no evidence an outsider cannot cheaply produce is available. So the
# warning is worded as a possibility (an out-of-date token, or someone guessing) with the address
# for the operator to judge, and the repeat only keeps one-off noise off the dashboard.
TOKEN_ALARM_REPEATS = 2


def dashboard_context(ping):
    """What the dashboard's audit sections show; `ping` says whether the registry is up."""
    activity = cache.get_or_set(ACTIVITY_CACHE_KEY, _activity, ACTIVITY_CACHE_SECONDS)
    per_day = activity["per_day"]
    last_received = AuditEvent.objects.last_received()
    silence = timedelta(seconds=settings.NOTIFICATIONS_SILENCE_WARNING)
    now = timezone.now()
    unauthorized = _unauthorized_counter()
    return {
        "audit_chart": {
            "labels": [day.isoformat() for day, _, _ in per_day],
            "pushes": [pushes for _, pushes, _ in per_day],
            "pulls": [pulls for _, _, pulls in per_day],
        },
        "audit_per_day": per_day,
        "audit_top_repositories": activity["top_repositories"],
        "audit_top_actors": activity["top_actors"],
        "audit_last_received": last_received,
        "audit_silent": ping.state == "reachable"
        and (last_received is None or now - last_received > silence),
        "audit_silence": duration_text(silence),
        "audit_rejected_count": RejectedDelivery.objects.count(),
        "audit_unauthorized": unauthorized,
        # A wrong token: the registry keeps retrying its first refused event, so nothing newer
        # arrives either. Warn while refusals are newer than the last accepted event, and only
        # once the same event was refused again (see TOKEN_ALARM_REPEATS).
        "audit_token_blocked": bool(
            unauthorized
            and unauthorized.repeats >= TOKEN_ALARM_REPEATS
            and unauthorized.last_seen
            and (last_received is None or unauthorized.last_seen > last_received)
        ),
    }


def _activity():
    # The portal's own service account reads every manifest during reconciles and pushes a
    # placeholder for every single-tag delete: that is not the registry's users' activity.
    # Counted per day as events arrive (registry_admin/activity.py), not grouped here.
    return {
        "per_day": activity.pushes_and_pulls_per_day(30),
        "top_repositories": activity.most_active("repository"),
        "top_actors": activity.most_active("actor"),
    }


def _page(form):
    events = form.filtered().defer("raw")
    after, before = form.cleaned_data.get("after"), form.cleaned_data.get("before")
    if before:
        rows = list(events.newer_than(before).order_by("timestamp", "id")[: PAGE_SIZE + 1])
        has_newer, has_older = len(rows) > PAGE_SIZE, True
        rows = rows[:PAGE_SIZE][::-1]
    else:
        if after:
            events = events.older_than(after)
        rows = list(events.newest_first()[: PAGE_SIZE + 1])
        has_newer, has_older = bool(after), len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
    # Signatures, SBOMs, attestations pushed: said so, with the image they are for.
    referrers.describe_pushes(rows)
    return {
        "events": rows,
        "older": encode_cursor(rows[-1]) if rows and has_older else "",
        "newer": encode_cursor(rows[0]) if rows and has_newer else "",
    }


def _query_without(query, names):
    query = query.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


def _pretty_json(raw):
    try:
        return json.dumps(json.loads(raw), indent=2, sort_keys=False)
    except ValueError:
        return raw


def _body_preview(body, limit=20000):
    data = bytes(body)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + (f"\n… ({len(data) - limit} more bytes)" if len(data) > limit else "")


def _unauthorized_counter():
    return DeliveryCounter.objects.filter(name=DeliveryCounter.UNAUTHORIZED).first()
