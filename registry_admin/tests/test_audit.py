"""AuditEvent.objects.log_portal_action: portal actions in the same trail as registry events."""

import json

import pytest

from registry_admin.models import AuditEvent, PortalAction

pytestmark = pytest.mark.django_db


def test_it_records_a_portal_action():
    event = AuditEvent.objects.log_portal_action(
        "alice", PortalAction.TAG_DELETED, repository="team/app", tag="v1", detail={"reason": "old"}
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.source == AuditEvent.Source.PORTAL
    assert stored.event_id.startswith("portal-")
    assert (stored.actor, stored.action, stored.repository, stored.tag) == (
        "alice",
        "tag.deleted",
        "team/app",
        "v1",
    )
    assert stored.kind == AuditEvent.Kind.TAG
    assert not stored.noise
    assert json.loads(stored.raw) == {"reason": "old"}


def test_each_action_gets_its_own_id():
    first = AuditEvent.objects.log_portal_action(
        "alice", PortalAction.USER_CREATED, detail={"username": "bob"}
    )
    second = AuditEvent.objects.log_portal_action(
        "alice", PortalAction.USER_CREATED, detail={"username": "bob"}
    )
    assert first.event_id != second.event_id
    assert first.kind == AuditEvent.Kind.OTHER


def test_it_keeps_hostile_and_oversized_values_storable():
    event = AuditEvent.objects.log_portal_action(
        "<script>alert(1)</script>\x00",
        PortalAction.IMAGE_DELETED,
        repository="../" + "a" * 400,
        digest="sha256:" + "f" * 64,
        detail={"note": "\x00'; DROP TABLE x; --", "unicode": "ünï✓"},
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.actor == "<script>alert(1)</script>"
    assert len(stored.repository) == 255
    assert stored.kind == AuditEvent.Kind.MANIFEST
    assert json.loads(stored.raw)["note"] == "\x00'; DROP TABLE x; --"
    assert json.loads(stored.raw)["unicode"] == "ünï✓"


def test_it_refuses_an_empty_action():
    with pytest.raises(ValueError):
        AuditEvent.objects.log_portal_action("alice", "  ")
    assert not AuditEvent.objects.exists()
