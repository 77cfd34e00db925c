"""An event's own time comes from whoever holds the notifications token: a forged event dated
in the past must not make a deletion more likely than the registry's own facts do (issue:
hardening round 2, item 1). Before the fix one POSTed event dated 2001 moved "the portal started
watching on" back to 2001 and made a tag the reconcile had found "9,470 days old"."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from registry_admin import index, pulls
from registry_admin.models import AuditEvent, Manifest, Repository, Tag

from .factories import make_envelope, make_registry_event

URL = "/api/registry/events"
TOKEN = "test-notifications-token-0123456789"
V1 = "application/vnd.docker.distribution.events.v1+json"
FORGED = "2001-01-01T00:00:00Z"
DIGEST = "sha256:" + "4e" * 32


@pytest.fixture
def deliver(settings):
    settings.NOTIFICATIONS_TOKEN = TOKEN
    settings.NOTIFICATIONS_APPLY_DELAY = 0  # applied in the request: the test reads at once
    client = Client()

    def post(*events):
        response = client.post(
            URL,
            data=make_envelope(*events),
            content_type=V1,
            HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
        )
        assert response.status_code == 200, response.content
        return response

    return post


def _event(action="pull", when=None, **target):
    event = make_registry_event(action=action, **target)
    event["timestamp"] = when or timezone.now().isoformat()
    return event


@pytest.mark.django_db
def test_a_past_dated_event_does_not_move_the_watch_start_back(deliver):
    started = timezone.now()
    deliver(_event())
    deliver(_event(when=FORGED, repository="other/app"))
    # The audit log keeps what the registry (or the forger) said...
    assert AuditEvent.objects.filter(timestamp__year=2001).exists()
    # ...but the portal started watching when it first received an event.
    assert pulls.watching_since() >= started - timedelta(seconds=1)


@pytest.mark.django_db
def test_a_past_dated_event_does_not_turn_no_pull_data_into_unused(deliver):
    repository = Repository.objects.create(name="team/app")
    manifest = Manifest.objects.create(digest=DIGEST)
    # As the reconcile finds a tag: no push time yet.
    Tag.objects.create(repository=repository, name="v1", digest=DIGEST, manifest=manifest)
    deliver(_event(repository="other/app"))
    verdict = pulls.last_pull_verdict("team/app", 30)
    assert verdict("v1", DIGEST)[0] is False
    deliver(_event(when=FORGED, repository="elsewhere/app"))
    unused, why = pulls.last_pull_verdict("team/app", 30)("v1", DIGEST)
    assert unused is False, why
    assert "no pull data" in why


@pytest.mark.django_db
def test_a_past_dated_push_does_not_age_a_tag_the_reconcile_found(deliver):
    repository = Repository.objects.create(name="team/app")
    manifest = Manifest.objects.create(digest=DIGEST)
    Tag.objects.create(repository=repository, name="v1", digest=DIGEST, manifest=manifest)
    received = timezone.now()
    deliver(_event(action="push", when=FORGED, tag="v1", digest=DIGEST))
    tag = Tag.objects.get(name="v1")
    assert tag.pushed_at >= received - index.EVENT_TIME_TOLERANCE - timedelta(seconds=1)
    # A new tag pushed with a forged date is no older than that either.
    deliver(_event(action="push", when=FORGED, tag="v2", digest=DIGEST))
    assert Tag.objects.get(name="v2").pushed_at >= received - index.EVENT_TIME_TOLERANCE


@pytest.mark.django_db
def test_a_recent_event_keeps_its_own_time_and_order(deliver):
    now = timezone.now()
    newer = _event(action="push", when=(now - timedelta(minutes=5)).isoformat(), digest=DIGEST)
    older = _event(
        action="push", when=(now - timedelta(minutes=10)).isoformat(), digest="sha256:" + "1" * 64
    )
    deliver(newer)
    deliver(older)  # a late redelivery of an older push changes nothing
    tag = Tag.objects.get(name="v1")
    assert tag.digest == DIGEST
    assert abs(tag.pushed_at - (now - timedelta(minutes=5))) < timedelta(seconds=1)


@pytest.mark.django_db
def test_events_delivered_together_long_after_keep_their_order(deliver):
    # Two pushes of one tag that waited in the registry's queue together: the same receipt,
    # so their own times decide which one the tag ends on.
    first = _event(action="push", when="2026-01-01T10:00:00Z", digest="sha256:" + "1" * 64)
    second = _event(action="push", when="2026-01-01T11:00:00Z", digest=DIGEST)
    deliver(second, first)
    assert Tag.objects.get(name="v1").digest == DIGEST
