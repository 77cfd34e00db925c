"""What `/metrics` reports (Prometheus' text format, prometheus-client), read from the database
at every scrape.

Why the database and not prometheus-client's own counters: Oyster runs as several gunicorn
workers and, on App Service, as several instances sharing one database. A per-process counter
(or the multiprocess mode, which sums the workers of one machine only) would answer each scrape
from whichever worker and instance the load balancer picked, so a counter would jump up and
down. Here every counter is a total the database keeps, the same from every process:

- running totals in `MetricCounter`, added to in the transaction of what they count (events
  applied, rejected deliveries, job runs and their seconds, token requests, failed logins);
- the refused-token counter the webhook already keeps (`DeliveryCounter`);
- gauges from what the pages read: the repository totals kept by triggers (browse.py), the
  latest storage snapshot, the pending-event queue.

Nothing here counts a table that grows with use (the audit log, the index, Run rows).
Counters start at zero when this version is installed; Prometheus' rate() needs nothing more.
"""

import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from . import browse, registry
from .models import (
    AuditEvent,
    DeliveryCounter,
    EventHook,
    HookDelivery,
    JobKind,
    MetricCounter,
    PendingEvent,
    Quota,
    Run,
    StorageSnapshot,
)
from .references import RegistryAction

logger = logging.getLogger(__name__)

# The answer's media type (text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# How long one process reuses its last ping of the registry: a scrape never waits for the
# registry more often than this, and never longer than METRICS_REGISTRY_TIMEOUT.
PING_CACHE_SECONDS = 15
REJECTION_REASONS = ("unauthorized", "unreadable", "too_large")
TOKEN_OUTCOMES = ("issued", "bad_request", "refused", "throttled", "unavailable", "other")
JOB_OUTCOMES = (Run.State.DONE, Run.State.FAILED)


def on_events_recorded(sender, events, **kwargs):
    """Count applied registry events by action (an `events_recorded` receiver, so in the
    transaction that applies them)."""
    totals = {}
    for event in events:
        name = f"notifications_received:{event.action}"
        totals[name] = totals.get(name, 0) + 1
    MetricCounter.objects.add(totals)


def on_login_failed(sender, credentials=None, request=None, **kwargs):
    """Count one failed portal login (Django's `user_login_failed`); the name is not kept."""
    MetricCounter.objects.add({"login_failures": 1})


def exposition():
    """The metrics as Prometheus' text format (bytes). Database errors propagate."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(_Collector())
    return generate_latest(collectors)


class _Collector:
    """A prometheus-client collector whose `collect()` reads the database."""

    def collect(self):
        counters = dict(MetricCounter.objects.values_list("name", "value"))
        yield from _notifications(counters)
        yield from _jobs(counters)
        yield from _storage()
        yield from _index()
        yield from _registry()
        yield from _access(counters)
        yield from _quotas()
        yield from _event_hooks()


def _counter(name, documentation, labels, values):
    family = CounterMetricFamily(name, documentation, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def _gauge(name, documentation, value, labels=(), rows=()):
    family = GaugeMetricFamily(name, documentation, value=value, labels=labels or None)
    for label_values, row_value in rows:
        family.add_metric(label_values, row_value)
    return family


def _notifications(counters):
    yield _counter(
        "oyster_notifications_received",
        "Registry events stored and applied to the index, by action (redeliveries once).",
        ["action"],
        [
            ([action], counters.get(f"notifications_received:{action}", 0))
            for action in RegistryAction.values
        ],
    )
    unauthorized = (
        DeliveryCounter.objects.filter(name=DeliveryCounter.UNAUTHORIZED)
        .values_list("count", flat=True)
        .first()
    )
    counters = {**counters, "notifications_rejected:unauthorized": unauthorized or 0}
    yield _counter(
        "oyster_notifications_rejected",
        "Notification deliveries refused (unauthorized: wrong or missing token; too_large: "
        "over NOTIFICATIONS_MAX_BODY) or kept as rejected deliveries (unreadable).",
        ["reason"],
        [
            ([reason], counters.get(f"notifications_rejected:{reason}", 0))
            for reason in REJECTION_REASONS
        ],
    )
    # The queue is short while a worker applies it (a batch every NOTIFICATIONS_APPLY_DELAY);
    # its primary key is all a count reads.
    pending = PendingEvent.objects.count()
    oldest = PendingEvent.objects.order_by("event_id").values_list("event_id", flat=True).first()
    received = (
        AuditEvent.objects.filter(pk=oldest).values_list("received_at", flat=True).first()
        if oldest is not None
        else None
    )
    lag = (timezone.now() - received).total_seconds() if received else 0.0
    yield _gauge(
        "oyster_notifications_pending",
        "Stored registry events not yet applied to the index and the pull counters.",
        pending,
    )
    yield _gauge(
        "oyster_notifications_apply_lag_seconds",
        "Age of the oldest stored event not yet applied (0 when none is waiting).",
        max(lag, 0.0),
    )
    last = AuditEvent.objects.last_received()
    yield _gauge(
        "oyster_notifications_last_received_timestamp_seconds",
        "When the newest registry event was received (Unix time; 0: never).",
        last.timestamp() if last else 0,
    )


def _jobs(counters):
    yield _counter(
        "oyster_job_runs",
        "Background job runs finished, by kind and outcome (a run whose worker died is failed).",
        ["kind", "outcome"],
        [
            ([kind, str(outcome)], counters.get(f"job_runs:{kind}:{outcome}", 0))
            for kind in JobKind.values
            for outcome in JOB_OUTCOMES
        ],
    )
    family = SummaryMetricFamily(
        "oyster_job_duration_seconds",
        "Time background job runs took from start to finish, by kind.",
        labels=["kind"],
    )
    for kind in JobKind.values:
        family.add_metric(
            [kind],
            count_value=counters.get(f"job_runs_timed:{kind}", 0),
            sum_value=counters.get(f"job_seconds:{kind}", 0),
        )
    yield family


def _storage():
    snapshot = StorageSnapshot.objects.latest_snapshot()
    total = snapshot.total_bytes if snapshot else 0
    reclaimable = snapshot.reclaimable_bytes if snapshot else 0
    yield _gauge(
        "oyster_storage_bytes",
        "Bytes in the registry's storage at the latest storage scan.",
        total,
    )
    yield _gauge(
        "oyster_storage_reclaimable_bytes",
        "Bytes garbage collection would reclaim, at the latest storage scan.",
        reclaimable,
    )
    yield _gauge(
        "oyster_storage_scan_timestamp_seconds",
        "When the latest storage scan was stored (Unix time; 0: never).",
        snapshot.created_at.timestamp() if snapshot else 0,
    )
    yield _gauge(
        "oyster_storage_repository_bytes",
        f"Bytes a repository references, for the {settings.METRICS_TOP_REPOSITORIES} largest "
        "at the latest storage scan.",
        None,
        labels=["repository"],
        rows=[([name], size) for name, size in _largest_repositories(snapshot)],
    )


def _largest_repositories(snapshot):
    """[(name, referenced bytes)] of the largest repositories in `snapshot`, cached per
    snapshot: sorting a snapshot's rows (one per repository) is the one costly read here, and
    a snapshot never changes."""
    if snapshot is None or settings.METRICS_TOP_REPOSITORIES <= 0:
        return []
    stamp = snapshot.created_at.timestamp()
    key = f"oyster:metrics-top:{snapshot.pk}:{stamp}:{settings.METRICS_TOP_REPOSITORIES}"
    rows = cache.get(key)
    if rows is None:
        rows = list(
            snapshot.repositories.order_by("-referenced_bytes", "name").values_list(
                "name", "referenced_bytes"
            )[: settings.METRICS_TOP_REPOSITORIES]
        )
        cache.set(key, rows, 24 * 3600)
    return rows


def _index():
    totals = browse.header_totals()
    yield _gauge(
        "oyster_repositories",
        "Repositories in the index with at least one tag.",
        totals["repositories"],
    )
    yield _gauge(
        "oyster_repositories_empty",
        "Repositories in the index without tags.",
        totals["empty"],
    )
    yield _gauge("oyster_tags", "Tags in the index.", totals["tags"])


def _registry():
    state, seconds = _registry_ping()
    yield _gauge(
        "oyster_registry_up",
        "1 when the registry answered GET /v2/ with 200 to the portal's service account.",
        1 if state == "reachable" else 0,
    )
    yield _gauge(
        "oyster_registry_response_seconds",
        "How long the registry took to answer GET /v2/ (up to METRICS_REGISTRY_TIMEOUT).",
        seconds,
    )


def _registry_ping():
    """(state, seconds) of this process's latest ping, at most PING_CACHE_SECONDS old; with a
    short timeout of its own, so a down registry cannot hold the scrape."""
    key = "oyster:metrics-ping:" + settings.REGISTRY_URL
    answer = cache.get(key)
    if answer is None:
        started = time.monotonic()
        timeout = min(settings.METRICS_REGISTRY_TIMEOUT, settings.REGISTRY_TIMEOUT)
        result = registry.get_client().ping(timeout=timeout)
        answer = (result.state, time.monotonic() - started)
        if result.state != "reachable":
            logger.warning("metrics: registry ping: %s", result.detail or result.state)
        cache.set(key, answer, PING_CACHE_SECONDS)
    return answer


def _access(counters):
    yield _counter(
        "oyster_token_requests",
        "Requests to the token endpoint (REGISTRY_AUTH_MODE=token), by outcome.",
        ["outcome"],
        [([outcome], counters.get(f"token_requests:{outcome}", 0)) for outcome in TOKEN_OUTCOMES],
    )
    yield _counter(
        "oyster_login_failures",
        "Failed portal logins: wrong passwords and attempts the lockout refused.",
        [],
        [([], counters.get("login_failures", 0))],
    )


def _quotas():
    rows = list(Quota.objects.all())  # configured by hand: a handful
    yield _gauge(
        "oyster_quota_usage_bytes",
        "A quota's usage: the latest scan's bytes plus pushes since minus collections since.",
        None,
        labels=["pattern"],
        rows=[([q.pattern], q.usage_bytes) for q in rows],
    )
    yield _gauge(
        "oyster_quota_limit_bytes",
        "A quota's limit in bytes.",
        None,
        labels=["pattern"],
        rows=[([q.pattern], q.limit_bytes) for q in rows],
    )
    yield _gauge(
        "oyster_quota_exceeded",
        "1 while a quota is at or over its limit (pushes refused in token mode), else 0.",
        None,
        labels=["pattern"],
        rows=[([q.pattern], int(q.level == Quota.Level.EXCEEDED)) for q in rows],
    )


def _event_hooks():
    # Pending and failed deliveries only: delivered ones grow with use (and are pruned).
    waiting = (
        HookDelivery.objects.filter(
            state__in=[HookDelivery.State.PENDING, HookDelivery.State.FAILED]
        )
        .order_by()
        .values_list("hook__name", "state")
        .annotate(count=Count("id"))
    )
    counts = {(name, state): count for name, state, count in waiting}
    names = list(EventHook.objects.values_list("name", flat=True))
    yield _gauge(
        "oyster_event_hook_deliveries",
        "Event hook deliveries waiting to be sent (pending) or given up (failed), per hook.",
        None,
        labels=["hook", "state"],
        rows=[
            ([name, state], counts.get((name, state), 0))
            for name in names
            for state in (HookDelivery.State.PENDING, HookDelivery.State.FAILED)
        ],
    )
