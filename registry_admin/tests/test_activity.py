"""The dashboard's per-day activity table gives exactly the figures of the audit-log queries it
replaces, however the events arrive (in the delivery, in a batch), and recounts to the same."""

import importlib
import random
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from registry_admin import activity, audit, ingest, notifications
from registry_admin.models import AuditEvent, DailyActivity, PendingEvent

from .factories import make_envelope, make_registry_event

SERVICE = "oyster"


def stream(seed, count=300):
    """Registry events over 40 days, near the 30-day edge too: pushes and pulls of manifests
    and blobs, HEADs, deletes, the service account, no actor, long and odd names."""
    rng = random.Random(seed)
    now = timezone.now()
    events = []
    for _ in range(count):
        action = rng.choice(["push", "pull", "pull", "pull", "delete", "mount"])
        repository = rng.choice(["team/app", "team/web", "ops/db", "a" * 200 + "/b", ""])
        event = make_registry_event(action=action, repository=repository or "team/app")
        if not repository:
            event["target"].pop("repository")
        if rng.random() < 0.3:  # a blob
            event["target"]["url"] = "http://127.0.0.1:5000/v2/team/app/blobs/sha256:" + "cd" * 32
            event["target"]["mediaType"] = "application/octet-stream"
        event["request"]["method"] = rng.choice(["GET", "GET", "HEAD", "PUT"])
        event["actor"] = {"name": rng.choice(["bob", "carol", SERVICE, "", "dörte"])}
        edge = rng.random() < 0.2
        ago = timedelta(days=30, minutes=rng.randrange(-90, 90)) if edge else None
        ago = ago or timedelta(seconds=rng.randrange(0, 40 * 86400))
        event["timestamp"] = (now - ago).isoformat()
        events.append(event)
    return events


def pushes_and_pulls_per_day(events, days=30):
    """[(date, pushes, pulls)] for each of the last `days` days (today included), zeros too."""
    today = timezone.localdate()
    first = today - timedelta(days=days - 1)
    start = timezone.make_aware(datetime.combine(first, datetime.min.time()))
    rows = (
        events.filter(
            source=AuditEvent.Source.REGISTRY,
            noise=False,
            kind=AuditEvent.Kind.MANIFEST,
            action__in=["push", "pull"],
            timestamp__gte=start,
        )
        .annotate(day=TruncDate("timestamp", tzinfo=timezone.get_current_timezone()))
        .values("day", "action")
        .annotate(n=Count("id"))
    )
    counts = {(row["day"], row["action"]): row["n"] for row in rows}
    return [
        (day, counts.get((day, "push"), 0), counts.get((day, "pull"), 0))
        for day in (first + timedelta(days=i) for i in range(days))
    ]


def most_active(events, field, days=30, limit=5):
    """[(value, events)] of the busiest repositories or actors in manifest-level events."""
    since = timezone.now() - timedelta(days=days)
    return list(
        events.filter(source=AuditEvent.Source.REGISTRY, noise=False, timestamp__gte=since)
        .exclude(**{field: ""})
        .values_list(field)
        .annotate(n=Count("id"))
        .order_by("-n", field)[:limit]
    )


def expected(limit):
    """The queries on the audit log that the dashboard ran until the table replaced them: the
    oracle the table's figures must equal."""
    events = AuditEvent.objects.exclude(actor=SERVICE)
    return (
        pushes_and_pulls_per_day(events, 30),
        most_active(events, "repository", limit=limit),
        most_active(events, "actor", limit=limit),
    )


def figures(limit):
    return (
        activity.pushes_and_pulls_per_day(30),
        activity.most_active("repository", limit=limit),
        activity.most_active("actor", limit=limit),
    )


def deliver(events):
    for event in events:
        notifications.record(notifications.parse_envelope(make_envelope(event)))


@pytest.fixture(autouse=True)
def service(settings):
    settings.REGISTRY_USERNAME = SERVICE


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["UTC", "Pacific/Chatham", "America/New_York"])
def test_the_table_gives_the_figures_of_the_audit_log_queries(settings, zone):
    settings.TIME_ZONE = zone
    deliver(stream(seed=len(zone)))
    AuditEvent.objects.log_portal_action("alice", "delete", repository="team/app", tag="v1")
    assert DailyActivity.objects.exists()
    for limit in (5, 50):
        assert figures(limit) == expected(limit)


@pytest.mark.django_db
def test_batched_deliveries_and_redeliveries_count_once(batched):
    events = stream(seed=3)
    deliver(events)
    deliver(events[:50])  # redeliveries
    assert not DailyActivity.objects.exists()  # still pending
    ingest.catch_up()
    assert figures(50) == expected(50)


@pytest.mark.django_db
def test_the_recount_equals_the_live_table_and_leaves_nothing_to_count_twice(settings, monkeypatch):
    deliver(stream(seed=4))
    live = sorted(DailyActivity.objects.values_list("day", "kind", "key", "count"))
    settings.NOTIFICATIONS_APPLY_DELAY = 0.25
    monkeypatch.setattr(ingest, "wake", lambda: None)
    deliver(stream(seed=5, count=40))  # pending while the recount runs
    DailyActivity.objects.update(count=999)
    out = StringIO()
    call_command("rebuild_activity", stdout=out)
    assert "rows" in out.getvalue()
    assert not PendingEvent.objects.exists()
    assert ingest.catch_up() == 0
    assert figures(50) == expected(50)
    assert len(live) < DailyActivity.objects.count()


@pytest.mark.django_db
def test_the_migration_counts_the_events_already_stored():
    deliver(stream(seed=6))
    DailyActivity.objects.all().delete()
    migration = importlib.import_module("registry_admin.migrations.0011_daily_activity")
    migration.backfill(apps, None)
    assert figures(50) == expected(50)


@pytest.mark.django_db
def test_the_audit_prune_drops_the_days_it_empties(settings):
    deliver(stream(seed=7))
    audit.prune_audit_events(days=20)
    oldest = timezone.localdate(timezone.now() - timedelta(days=20))
    assert not DailyActivity.objects.filter(day__lt=oldest).exists()
    # The cutoff's own day keeps its count of what was there (retention is a year, the
    # dashboard shows 30 days); every later day is as the audit log says.
    later = lambda rows: [row for row in rows if row[0] > oldest]  # noqa: E731
    assert later(figures(50)[0]) == later(expected(50)[0])
