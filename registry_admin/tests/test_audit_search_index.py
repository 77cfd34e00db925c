"""The audit log's free-text search through the trigram index of migration 0008 (SQLite FTS5 or
PostgreSQL pg_trgm, whichever the suite runs on) finds exactly what the plain scan finds."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from registry_admin.models import AuditEvent
from registry_admin.models.audit import SEARCHED_FIELDS


def scan(text):
    """Today's meaning, without any index: one field contains the text, ignoring ASCII case."""
    condition = Q(source=AuditEvent.Source.PORTAL, raw__icontains=text)
    for name in SEARCHED_FIELDS:
        condition |= Q(**{f"{name}__icontains": text})
    return set(AuditEvent.objects.filter(condition).values_list("id", flat=True))


def found(text):
    return set(AuditEvent.objects.matching_text(text).values_list("id", flat=True))


@pytest.fixture
def events(db):
    now = timezone.now()
    rows = []
    for i in range(60):
        rows.append(
            AuditEvent(
                source=AuditEvent.Source.PORTAL if i % 5 == 0 else AuditEvent.Source.REGISTRY,
                event_id=f"evt-{i:04d}",
                timestamp=now - timedelta(minutes=i),
                action=["push", "pull", "delete", "user.created"][i % 4],
                kind=AuditEvent.Kind.MANIFEST,
                repository=f"Team-{i % 7}/App-{i}",
                tag=f"v1.{i}",
                digest=f"sha256:{i:064x}",
                actor=f"User{i % 3}",
                request_id=f"req-{i * 37}",
                request_addr=f"10.0.{i % 4}.{i}:5000",
                request_useragent=f"docker/27.{i % 2} go/1.22",
                media_type="application/vnd.oci.image.manifest.v1+json",
                raw=json.dumps({"detail": f"secret-word-{i}"}),
            )
        )
    AuditEvent.objects.bulk_create(rows)
    return rows


@pytest.mark.parametrize(
    "text",
    [
        "team-3/",  # case differs from the stored "Team-3/"
        "APP-1",
        "req-37",
        "docker/27.1",
        "10.0.2.",
        "secret-word-5",  # portal events' raw detail only
        "oci.image",
        "0000000000000000000000000000000000000000000003a",
        "user.cre",
        "nothing-matches-this",
        "ab",  # too short for a trigram: the plain scan
        "v1.1",
        "100%",  # a LIKE wildcard: the plain scan, taken literally
        "a_b",
        "app-12" + "\x1f" + "v1",  # across two fields: never a match
    ],
)
def test_the_index_finds_what_the_scan_finds(events, text):
    assert found(text) == scan(text)


def test_the_index_follows_inserts_updates_and_deletes(events):
    event = AuditEvent.objects.get(event_id="evt-0007")
    assert found("renamed-repo") == set()
    AuditEvent.objects.filter(pk=event.pk).update(repository="renamed-repo")
    assert found("renamed-repo") == {event.pk}
    assert found("Team-0/App-7") == set()
    AuditEvent.objects.filter(pk=event.pk).delete()
    assert found("renamed-repo") == set()
    fresh = AuditEvent.objects.create(
        source=AuditEvent.Source.REGISTRY,
        event_id="evt-new",
        timestamp=timezone.now(),
        action="push",
        kind=AuditEvent.Kind.MANIFEST,
        repository="brand-new/thing",
    )
    assert found("new/thi") == {fresh.pk}


def test_the_search_is_served_by_the_index(events):
    sql, params = AuditEvent.objects.matching_text("req-37").values("id").query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
            assert "VIRTUAL TABLE INDEX" in plan and "auditevent_search" in plan, plan
        else:
            cursor.execute("SET enable_seqscan = off")  # 60 rows: the planner would scan
            cursor.execute("EXPLAIN " + sql, params)
            plan = " ".join(row[0] for row in cursor.fetchall())
            assert "audit_search_trgm_idx" in plan, plan


def test_the_query_uses_the_expression_the_migration_indexed():
    # PostgreSQL uses an expression index only for the very same expression.
    import importlib

    from registry_admin.models.audit import SEARCH_DOCUMENT

    migration = importlib.import_module("registry_admin.migrations.0008_audit_text_search")
    assert SEARCH_DOCUMENT == migration.SEARCH_DOCUMENT
