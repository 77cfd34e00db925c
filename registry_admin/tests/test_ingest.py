"""The webhook's batched mode (NOTIFICATIONS_APPLY_DELAY > 0): events are stored at once and
applied to the index and the pull counters moments later, in batches, exactly once."""

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from registry_admin import event_hooks, ingest, notifications, pulls, signals
from registry_admin.models import AuditEvent, PendingEvent, PullCount, Repository, Tag

from .factories import make_envelope, make_registry_event

URL = "/api/registry/events"
TOKEN = "test-notifications-token-0123456789"
V1 = "application/vnd.docker.distribution.events.v1+json"
# Recent: the index believes an event's own time only within index.EVENT_TIME_TOLERANCE of its
# receipt, and these tests compare push times across deliveries made at different moments.
T0 = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)


def digest(n):
    return "sha256:" + f"{n:02x}" * 32


def push(repository, tag, n, when, **extra):
    event = make_registry_event(repository=repository, tag=tag, digest=digest(n), **extra)
    event["target"]["url"] = f"http://127.0.0.1:5000/v2/{repository}/manifests/{digest(n)}"
    event["timestamp"] = when.isoformat()
    return event


def delete(repository, when, tag="", n=None):
    event = make_registry_event(action="delete", repository=repository, tag=tag)
    event["target"] = {"repository": repository, **({"tag": tag} if tag else {})}
    if n is not None:
        event["target"]["digest"] = digest(n)
    event["timestamp"] = when.isoformat()
    return event


def pull(repository, when, method="GET", tag="v1", n=1, actor="bob"):
    event = push(repository, tag, n, when)
    event.update(action="pull", actor={"name": actor})
    event["request"]["method"] = method
    if not tag:
        event["target"].pop("tag", None)
    return event


@pytest.fixture
def post(settings):
    settings.NOTIFICATIONS_TOKEN = TOKEN
    client = Client()

    def send(*events):
        response = client.post(
            URL, data=make_envelope(*events), content_type=V1, HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
        )
        assert response.status_code == 200, response.content
        return response.json()

    return send


def index_state():
    tags = sorted(
        Tag.objects.values_list("repository__name", "name", "digest", "pushed_at"),
    )
    repositories = sorted(
        Repository.objects.values_list("name", "tag_count", "is_empty", "last_push_at")
    )
    return tags, repositories


@pytest.mark.django_db
def test_events_are_stored_before_the_answer_and_applied_once_by_a_catch_up(post, batched):
    events = [push("team/app", "v1", 1, T0), pull("team/app", T0 + timedelta(seconds=5))]
    assert post(*events)["stored"] == 2
    assert post(events[0])["stored"] == 0  # a redelivery: nothing new to apply either
    assert AuditEvent.objects.count() == 2
    assert PendingEvent.objects.count() == 2
    assert batched == [1]  # woken once, for the delivery that stored something
    assert not Tag.objects.exists() and not PullCount.objects.exists()

    assert ingest.catch_up() == 2
    assert Tag.objects.get().digest == digest(1)
    assert pulls.snapshot_counters() != {}
    live = pulls.snapshot_counters()
    assert not PendingEvent.objects.exists()
    assert ingest.catch_up() == 0  # applied exactly once
    assert pulls.snapshot_counters() == live
    call_command("rebuild_pull_stats", stdout=StringIO())
    assert pulls.snapshot_counters() == live


@pytest.mark.django_db
def test_a_receiver_failure_leaves_the_events_pending_and_stored(post, batched, monkeypatch):
    post(push("team/app", "v1", 1, T0))

    def broken(sender, events, **kwargs):
        raise RuntimeError("a bug in a receiver")

    signals.events_recorded.connect(broken, dispatch_uid="broken")
    try:
        with pytest.raises(RuntimeError):
            ingest.catch_up()
    finally:
        signals.events_recorded.disconnect(dispatch_uid="broken")
    assert PendingEvent.objects.count() == 1 and AuditEvent.objects.count() == 1
    assert not Tag.objects.exists()
    assert ingest.catch_up() == 1
    assert Tag.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_worker_loop_applies_what_a_dead_web_process_left(post, batched):
    post(push("team/app", "v1", 1, T0))
    call_command("run_worker", "--once", "--kind", "noop", stdout=StringIO())
    assert Tag.objects.get().digest == digest(1)
    assert not PendingEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("seed", range(6))
def test_a_batch_ends_where_one_delivery_at_a_time_ends(post, settings, monkeypatch, seed):
    """Pushes, re-pushes, older redeliveries and deletes of a few tags in a random order: one
    batch leaves the index as applying each delivery in its own transaction does."""
    rng = random.Random(seed)
    events = []
    for _ in range(40):
        repository, tag = rng.choice(["team/a", "team/b"]), rng.choice(["v1", "v2", "latest"])
        when = T0 + timedelta(seconds=rng.randrange(0, 30))
        kind = rng.random()
        if kind < 0.7:
            events.append(push(repository, tag, rng.randrange(1, 4), when))
        elif kind < 0.85:
            events.append(delete(repository, when, tag=tag))
        else:
            events.append(delete(repository, when, n=rng.randrange(1, 4)))

    settings.NOTIFICATIONS_APPLY_DELAY = 0
    for event in events:
        post(event)
    inline = index_state()
    assert inline[0], "the stream leaves some tags"

    Tag.objects.all().delete()
    Repository.objects.all().delete()
    AuditEvent.objects.all().delete()
    settings.NOTIFICATIONS_APPLY_DELAY = 0.25
    monkeypatch.setattr(ingest, "wake", lambda: None)
    for event in events:
        event["id"] = str(uuid.uuid4())
        post(event)
    assert ingest.catch_up() == len(events)
    assert index_state() == inline


@pytest.mark.django_db(transaction=True)
def test_the_applier_thread_applies_a_delivery_within_the_delay(post, settings):
    settings.NOTIFICATIONS_APPLY_DELAY = 0.05
    started = time.monotonic()
    post(push("team/app", "v1", 1, T0))
    while not Tag.objects.exists():
        assert time.monotonic() - started < 10, "not applied within 10 s"
        time.sleep(0.01)
    while PendingEvent.objects.exists():
        assert time.monotonic() - started < 10
        time.sleep(0.01)
    ingest.stop()  # its connection would keep the test database open


@pytest.mark.django_db(transaction=True)
def test_the_worker_thread_applies_deliveries_every_delay(post, settings, monkeypatch):
    settings.NOTIFICATIONS_APPLY_DELAY = 0.05
    monkeypatch.setattr(ingest, "wake", lambda: None)  # the worker alone applies
    stop = threading.Event()
    applier = threading.Thread(target=ingest.run_applier, args=(stop,))
    applier.start()
    try:
        started = time.monotonic()
        post(push("team/app", "v1", 1, T0), pull("team/app", T0 + timedelta(seconds=1)))
        while PendingEvent.objects.exists():
            assert time.monotonic() - started < 10, "not applied within 10 s"
            time.sleep(0.01)
        assert Tag.objects.exists() and PullCount.objects.exists()
    finally:
        stop.set()
        applier.join(5)
    assert not applier.is_alive()


@pytest.mark.django_db(transaction=True)
def test_stopping_the_applier_applies_what_is_pending_first(post, settings):
    settings.NOTIFICATIONS_APPLY_DELAY = 1
    post(push("team/app", "v1", 1, T0))
    ingest.stop()
    assert Tag.objects.exists() and not PendingEvent.objects.exists()


@pytest.mark.django_db
def test_hostile_and_oversized_envelopes_store_and_enqueue_nothing_wrong(post, batched):
    many = [push("team/app", f"t{i}", 1, T0) for i in range(1200)]  # more than one INSERT
    body = post(*many, many[0])  # and the same event twice in one envelope
    assert body["stored"] == 1200
    assert PendingEvent.objects.count() == AuditEvent.objects.count() == 1200
    hostile = push("team/app", "v1", 1, T0)
    hostile["id"] = "x'); DROP TABLE registry_admin_auditevent; --"
    hostile["target"]["repository"] = "team/app\x00; DELETE"
    assert post(hostile)["stored"] == 1
    ingest.catch_up()
    assert Tag.objects.count() == 1200  # the hostile name is stored, never indexed
    assert AuditEvent.objects.filter(event_id=hostile["id"]).exists()


@pytest.mark.parametrize("value", ["-1", "5", "soon"])
def test_an_apply_delay_out_of_range_stops_the_start_with_a_sentence(value):
    env = {**os.environ, "NOTIFICATIONS_APPLY_DELAY": value, "SECRET_KEY": "k" * 50}
    result = subprocess.run(
        [sys.executable, "-c", "import portal.settings"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "NOTIFICATIONS_APPLY_DELAY" in result.stderr
    assert json.dumps(value)[1:-1] in result.stderr or value == "soon"


@pytest.mark.django_db
def test_a_delivery_is_stored_and_queued_by_one_statement(batched):
    """The registry's one-event delivery costs one write: PostgreSQL queues it in the INSERT's
    own CTE, SQLite by the trigger of migration 0012; no BEGIN/COMMIT round either."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    envelope = notifications.parse_envelope(make_envelope(push("team/app", "v1", 1, T0)))
    with CaptureQueriesContext(connection) as queries:
        stored = notifications.record(envelope)
    assert len(stored) == 1
    assert len(queries) == 1, [q["sql"][:80] for q in queries]
    assert list(PendingEvent.objects.values_list("event_id", flat=True)) == [stored[0].pk]


@pytest.mark.django_db
def test_an_applied_delivery_leaves_nothing_queued(settings):
    # Applied in its own request (NOTIFICATIONS_APPLY_DELAY=0): off the queue in the same
    # transaction, whatever queued it.
    settings.NOTIFICATIONS_APPLY_DELAY = 0
    envelope = notifications.parse_envelope(make_envelope(push("team/app", "v1", 1, T0)))
    assert len(notifications.record(envelope)) == 1
    assert Tag.objects.exists() and not PendingEvent.objects.exists()


@pytest.mark.django_db
def test_new_events_are_found_by_text_before_and_after_their_batch(post, batched):
    from django.db import connection

    post(push("team/needle-app", "v1", 1, T0))
    event = AuditEvent.objects.get()
    # Before its batch: not in the text index yet, found in the scanned tail.
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM registry_admin_auditevent_search")
        assert cursor.fetchone()[0] == 0
    assert list(AuditEvent.objects.matching_text("needle-ap").values_list("id", flat=True)) == [
        event.pk
    ]
    assert not AuditEvent.objects.matching_text("haystack").exists()
    ingest.catch_up()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rowid FROM registry_admin_auditevent_search"
            if connection.vendor == "sqlite"
            else "SELECT id FROM registry_admin_auditevent_search"
        )
        assert [row[0] for row in cursor.fetchall()] == [event.pk]
    assert list(AuditEvent.objects.matching_text("NEEDLE-AP").values_list("id", flat=True)) == [
        event.pk
    ]
    # Indexed once: a second round adds nothing.
    assert AuditEvent.objects.matching_text("needle-ap").count() == 1


@pytest.mark.django_db
def test_a_round_leaves_what_arrives_during_it_to_the_next_round(post, batched, monkeypatch):
    """The periodic appliers (`chase=False`) take what was pending, not each new arrival."""
    post(*[push("team/app", f"t{i}", 1, T0) for i in range(3)])
    arrivals = iter(range(10, 13))

    def meanwhile(sender, events, **kwargs):
        n = next(arrivals, None)
        if n is not None:
            notifications.record(
                notifications.parse_envelope(make_envelope(push("team/app", f"t{n}", 1, T0)))
            )

    signals.events_recorded.connect(meanwhile, dispatch_uid="meanwhile")
    try:
        assert ingest.catch_up(chase=False) == 3
        assert PendingEvent.objects.count() == 1
        assert ingest.catch_up() == 3  # chasing: until nothing is left
    finally:
        signals.events_recorded.disconnect(dispatch_uid="meanwhile")
    assert not PendingEvent.objects.exists()
    assert Tag.objects.count() == 6


@pytest.mark.django_db
def test_only_events_left_overdue_are_the_web_fallbacks_to_apply(post, batched):
    assert not ingest.overdue(1)  # nothing pending
    post(push("team/app", "v1", 1, T0))
    assert not ingest.overdue(60)  # the worker's turn
    AuditEvent.objects.update(received_at=T0)
    assert ingest.overdue(60)
    # A pending row whose audit row was pruned meanwhile: overdue, the batch drops it.
    AuditEvent.objects.all().delete()
    assert ingest.overdue(60)
    ingest.catch_up()
    assert not PendingEvent.objects.exists()


@pytest.mark.django_db
def test_a_batch_costs_the_same_queries_whatever_its_size(post, batched):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_for(count, prefix):
        # Warm: the repositories exist, so both sizes take the same path.
        post(*[push(f"{prefix}-{i}", "v1", 1, T0) for i in range(count)])
        ingest.catch_up()
        post(*[push(f"{prefix}-{i}", "v1", 2, T0 + timedelta(seconds=1)) for i in range(count)])
        # The enabled hooks are cached for 2 s per process: a slow machine let the cache expire
        # within one measured batch and not the other. Each batch reads them once here.
        event_hooks.forget_cached()
        with CaptureQueriesContext(connection) as queries:
            assert ingest.catch_up() == count
        assert (
            Tag.objects.filter(repository__name__startswith=prefix, digest=digest(2)).count()
            == count
        )
        return len(queries)

    queries_for(5, "team/first")  # asks for the details job once: not per batch
    # The portal's placeholders are looked up once per batch (it was a query per push).
    assert queries_for(5, "team/small") == queries_for(60, "team/large")
