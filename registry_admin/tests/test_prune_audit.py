"""Audit retention: prune_audit_events(), `manage.py prune_audit` and the worker's daily job."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from registry_admin import audit, worker
from registry_admin.models import AuditEvent, PortalAction, RejectedDelivery, Run

pytestmark = pytest.mark.django_db


def make_events(days_ago, count, prefix):
    when = timezone.now() - timedelta(days=days_ago)
    AuditEvent.objects.bulk_create(
        AuditEvent(
            source="registry",
            event_id=f"{prefix}-{i}",
            timestamp=when,
            action="pull",
            kind="manifest",
            repository="team/app",
        )
        for i in range(count)
    )


def registry_events():
    return AuditEvent.objects.filter(source="registry")


def test_it_deletes_only_events_older_than_the_retention_in_batches(settings):
    settings.AUDIT_RETENTION_DAYS = 30
    make_events(31, 25, "old")
    make_events(29, 5, "recent")
    old_rejected = RejectedDelivery.objects.create(error="x", body=b"x")
    RejectedDelivery.objects.filter(pk=old_rejected.pk).update(
        received_at=timezone.now() - timedelta(days=40)
    )
    RejectedDelivery.objects.create(error="y", body=b"y")

    result = audit.prune_audit_events(batch_size=7)

    assert (result["deleted"], result["rejected_deleted"]) == (25, 1)
    assert sorted(registry_events().values_list("event_id", flat=True)) == [
        f"recent-{i}" for i in range(5)
    ]
    assert RejectedDelivery.objects.count() == 1
    # The pruning itself is in the trail, as a portal action.
    record = AuditEvent.objects.get(source="portal")
    assert (record.action, record.actor) == (PortalAction.AUDIT_PRUNED, "system")
    assert '"deleted": 25' in record.raw


def test_nothing_to_prune_records_nothing(settings):
    settings.AUDIT_RETENTION_DAYS = 30
    make_events(1, 3, "recent")
    assert audit.prune_audit_events()["deleted"] == 0
    assert not AuditEvent.objects.filter(source="portal").exists()


def test_zero_days_keeps_everything(settings):
    settings.AUDIT_RETENTION_DAYS = 0
    make_events(4000, 3, "ancient")
    assert audit.prune_audit_events()["disabled"] is True
    assert AuditEvent.objects.count() == 3


def test_the_command_prunes_and_says_how_many():
    make_events(10, 4, "old")
    make_events(1, 2, "new")
    out = StringIO()
    call_command("prune_audit", "--days", "5", "--batch-size", "3", stdout=out)
    assert "Deleted 4 audit events and 0 rejected deliveries" in out.getvalue()
    assert registry_events().count() == 2
    assert AuditEvent.objects.get(source="portal").actor == "manage.py prune_audit"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--days", "-1"], "--days"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "999999999"], "--batch-size"),
    ],
)
def test_the_command_refuses_bad_numbers(args, message):
    make_events(10, 1, "old")
    with pytest.raises(CommandError, match=message):
        call_command("prune_audit", *args)
    assert AuditEvent.objects.count() == 1


def test_the_command_refuses_non_numbers():
    with pytest.raises(CommandError):
        call_command("prune_audit", "--days", "ten'; DROP TABLE x")


def test_the_worker_runs_it_daily(settings):
    settings.AUDIT_RETENTION_DAYS = 30
    settings.AUDIT_PRUNE_INTERVAL = 24 * 3600
    assert worker.JOBS["audit_prune"].interval() == 24 * 3600
    make_events(31, 12, "old")

    [run] = worker.tick(["audit_prune"])

    assert run.state == Run.State.DONE
    assert run.result["deleted"] == 12
    assert Run.objects.get(pk=run.pk).done == 12
    assert worker.tick(["audit_prune"]) == []  # not due again for a day


@pytest.mark.parametrize("days", [30, 0])
def test_the_daily_job_clears_expired_sessions_and_keeps_live_ones(settings, days):
    """Django keeps an expired session row until `clearsessions`: without this, every sign-in
    (and every anonymous visit to the identity provider's link) stays in the table forever."""
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session

    settings.AUDIT_RETENTION_DAYS = days
    expired, live = SessionStore(), SessionStore()
    expired["x"], live["x"] = 1, 2
    expired.create()
    live.create()
    Session.objects.filter(session_key=expired.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    audit.prune_audit_events()
    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]
