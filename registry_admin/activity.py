"""The dashboard's 30-day activity, counted per day as registry events arrive.

`on_events_recorded` (a receiver of `signals.events_recorded`, so in the delivery's
transaction or in the batch that applies it) adds each new event to `DailyActivity`: manifest
pushes and pulls per day, and events per repository and per user per day, with the same
filters as the dashboard's queries on the audit log (registry events, no blob-level or HEAD
noise, not the portal's service account). The dashboard then sums at most 30 days of small
rows instead of grouping a month of the audit log; only the oldest, partial day of the rolling
30-day window is read from the audit log itself, so the figures are exactly those queries'.
"""

from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from . import db, ingest
from .models import AuditEvent, DailyActivity
from .references import RegistryAction

Kind = DailyActivity.Kind
DAYS = 30
# The registry actions counted per day, and the row kind each one is counted in.
COUNTED_ACTIONS = {RegistryAction.PUSH: Kind.PUSH, RegistryAction.PULL: Kind.PULL}


def _counted(events):
    """The events the dashboard counts: the registry's own, manifest level, not the portal's."""
    return events.filter(source=AuditEvent.Source.REGISTRY, noise=False).exclude(
        actor=settings.REGISTRY_USERNAME
    )


def count(events):
    """Counter of (day, kind, key) for `events` (AuditEvent rows)."""
    totals = Counter()
    for event in events:
        if event.source != AuditEvent.Source.REGISTRY or event.noise:
            continue
        if event.actor == settings.REGISTRY_USERNAME:
            continue
        day = timezone.localdate(event.timestamp)
        if event.kind == AuditEvent.Kind.MANIFEST and event.action in COUNTED_ACTIONS:
            totals[(day, COUNTED_ACTIONS[event.action], "")] += 1
        if event.repository:
            totals[(day, Kind.REPOSITORY, event.repository)] += 1
        if event.actor:
            totals[(day, Kind.ACTOR, event.actor)] += 1
    return totals


def on_events_recorded(sender, events, **kwargs):
    add(count(events))


def add(totals):
    """Add `totals` ({(day, kind, key): count}) to the table in one statement."""
    rows = [
        {"day": day, "kind": str(kind), "key": key, "count": n}
        for (day, kind, key), n in totals.items()
    ]
    db.insert_or_add(DailyActivity, rows, key=("day", "kind", "key"), add=("count",))


def rebuild():
    """Recount the whole table from the audit log, in one transaction; the rows written."""
    with transaction.atomic():
        ingest.settle()
        # Hold off inline deliveries' upserts until the recount is written.
        db.lock_table_writes(DailyActivity)
        events = _counted(AuditEvent.objects.all()).annotate(
            day=TruncDate("timestamp", tzinfo=timezone.get_current_timezone())
        )
        rows = []
        manifests = events.filter(kind=AuditEvent.Kind.MANIFEST, action__in=COUNTED_ACTIONS)
        for row in manifests.values("day", "action").annotate(n=Count("id")).order_by():
            kind = COUNTED_ACTIONS[row["action"]]
            rows.append(DailyActivity(day=row["day"], kind=kind, count=row["n"]))
        for kind in (Kind.REPOSITORY, Kind.ACTOR):
            grouped = events.exclude(**{kind: ""}).values("day", kind).annotate(n=Count("id"))
            for row in grouped.order_by():
                rows.append(DailyActivity(day=row["day"], kind=kind, key=row[kind], count=row["n"]))
        DailyActivity.objects.all().delete()
        DailyActivity.objects.bulk_create(rows, batch_size=1000)
    return len(rows)


def prune(before):
    """Drop the days before `before` (the audit log's own retention)."""
    return DailyActivity.objects.filter(day__lt=before).delete()[0]


# --- What the dashboard reads ---------------------------------------------------------------


def pushes_and_pulls_per_day(days=DAYS):
    """[(date, pushes, pulls)] for each of the last `days` days (today included), zeros too:
    the dashboard's filters (registry events, manifest level), from the table."""
    today = timezone.localdate()
    first = today - timedelta(days=days - 1)
    rows = DailyActivity.objects.filter(kind__in=[Kind.PUSH, Kind.PULL], day__gte=first)
    counts = {(day, kind): n for day, kind, n in rows.values_list("day", "kind", "count")}
    return [
        (day, counts.get((day, Kind.PUSH), 0), counts.get((day, Kind.PULL), 0))
        for day in (first + timedelta(days=i) for i in range(days))
    ]


def most_active(field, days=DAYS, limit=5):
    """[(value, events)] of the busiest repositories or users over the last `days` x 24 hours:
    whole days from the table, the partial first day from the audit log."""
    since = timezone.now() - timedelta(days=days)
    first_whole = timezone.localdate(since) + timedelta(days=1)
    boundary = timezone.make_aware(datetime.combine(first_whole, datetime.min.time()))
    totals = Counter(
        dict(
            DailyActivity.objects.filter(kind=field, day__gte=first_whole)
            .values_list("key")
            .annotate(n=Sum("count"))
            .order_by()
        )
    )
    partial = _counted(AuditEvent.objects.filter(timestamp__gte=since, timestamp__lt=boundary))
    for value, n in partial.exclude(**{field: ""}).values_list(field).annotate(n=Count("id")):
        totals[value] += n
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:limit]
