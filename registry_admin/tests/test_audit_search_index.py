"""The audit log's free-text search through the trigram index of migrations 0008 and 0014 (SQLite
FTS5 or PostgreSQL pg_trgm, whichever the suite runs on) finds exactly what the plain scan finds,
whether the rows are in the index yet or still in the tail a batch has not indexed."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from registry_admin.models import AuditEvent
from registry_admin.models.audit import SEARCHED_FIELDS, index_new_events


def scan(text):
    """Today's meaning, without any index: one field contains the text, ignoring ASCII case."""
    condition = Q(source=AuditEvent.Source.PORTAL, raw__icontains=text)
    for name in SEARCHED_FIELDS:
        condition |= Q(**{f"{name}__icontains": text})
    return set(AuditEvent.objects.filter(condition).values_list("id", flat=True))


def pushed(event_id, repository):
    """An unsaved registry push event."""
    return AuditEvent(
        source=AuditEvent.Source.REGISTRY,
        event_id=event_id,
        timestamp=timezone.now(),
        action="push",
        kind=AuditEvent.Kind.MANIFEST,
        repository=repository,
    )


def store_push(event_id, repository):
    event = pushed(event_id, repository)
    event.save()
    return event


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
@pytest.mark.parametrize("mode", ["tail", "indexed", "busy"])
def test_the_index_finds_what_the_scan_finds(events, text, mode, monkeypatch):
    """tail: not indexed yet; busy: the text counts as common (one indexed match is enough
    here), so the search walks the time order instead of the index."""
    if mode != "tail":
        assert index_new_events() == len(events)
    if mode == "busy":
        monkeypatch.setattr("registry_admin.models.audit.BUSY_PREFIX_ROWS", 1)
    assert found(text) == scan(text)


def test_half_indexed_rows_are_all_found(events):
    index_new_events()
    later = store_push("evt-later", "team-3/late-arrival")
    assert later.pk in found("team-3/") == scan("team-3/")
    assert index_new_events() == 1
    assert index_new_events() == 0
    assert later.pk in found("team-3/") == scan("team-3/")


@pytest.mark.parametrize("indexed", [False, True], ids=["tail", "indexed"])
def test_the_index_follows_inserts_updates_and_deletes(events, indexed):
    if indexed:
        index_new_events()
    event = AuditEvent.objects.get(event_id="evt-0007")
    assert found("renamed-repo") == set()
    AuditEvent.objects.filter(pk=event.pk).update(repository="renamed-repo")
    assert found("renamed-repo") == {event.pk}
    assert found("Team-0/App-7") == set()
    AuditEvent.objects.filter(pk=event.pk).delete()
    assert found("renamed-repo") == set()
    fresh = store_push("evt-new", "brand-new/thing")
    assert found("new/thi") == {fresh.pk}
    index_new_events()
    assert found("new/thi") == {fresh.pk}
    AuditEvent.objects.filter(pk=fresh.pk).update(repository="renamed-again")
    assert found("new/thi") == set() and found("renamed-again") == {fresh.pk}


def test_the_search_is_served_by_the_index(events):
    index_new_events()
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
            assert "audit_search_doc_trgm_idx" in plan, plan


def test_the_query_uses_the_expression_the_migration_indexed():
    # PostgreSQL uses an expression index only for the very same expression.
    import importlib

    from registry_admin.models.audit import SEARCH_DOCUMENT

    for name in ["0008_audit_text_search", "0014_audit_search_batched_postgresql"]:
        migration = importlib.import_module(f"registry_admin.migrations.{name}")
        assert SEARCH_DOCUMENT == migration.SEARCH_DOCUMENT


@pytest.mark.django_db(transaction=True)
def test_pruned_and_emptied_rows_leave_the_index():
    """The index lives in a table of its own (FTS5, or 0014's table and queue on PostgreSQL): a
    deleted row (audit pruning) and an emptied table (TRUNCATE on PostgreSQL: the test suite,
    a manual reset) take their documents and queue entries with them."""
    rows = AuditEvent.objects.bulk_create(
        pushed(f"prune-{i}", f"pruned/app-{i}") for i in range(10)
    )

    def counts():
        """(documents in the index, rows waiting for it)"""
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute(
                    "SELECT (SELECT count(*) FROM registry_admin_auditevent_search), "
                    "(SELECT count(*) FROM registry_admin_auditevent WHERE id > "
                    "(SELECT coalesce(max(rowid), 0) FROM registry_admin_auditevent_search))"
                )
            else:
                cursor.execute(
                    "SELECT (SELECT count(*) FROM registry_admin_auditevent_search), "
                    "(SELECT count(*) FROM registry_admin_auditevent_search_queue)"
                )
            return cursor.fetchone()

    assert counts() == (0, 10)
    assert index_new_events() == 10
    store_push("prune-queued", "pruned/queued")
    assert counts() == (10, 1)
    AuditEvent.objects.filter(pk__in=[r.pk for r in rows[:4]]).delete()
    AuditEvent.objects.filter(event_id="prune-queued").delete()
    assert counts() == (6, 0)
    assert found("pruned/") == {r.pk for r in rows[4:]}
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("DELETE FROM registry_admin_auditevent")
        else:
            cursor.execute("TRUNCATE registry_admin_auditevent")
    assert counts() == (0, 0)
    assert found("pruned/") == set()


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_indexes_the_events_already_stored():
    """Migration 0014 (PostgreSQL; a no-op on SQLite) moves the text index into a table of its
    own: events stored before the upgrade must be found after it, and after a downgrade."""
    from django.db.migrations.executor import MigrationExecutor

    before, after = (
        [("registry_admin", "0013_pull_lookback_index")],
        [("registry_admin", "0014_audit_search_batched_postgresql")],
    )
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        old = executor.loader.project_state(before).apps.get_model("registry_admin", "AuditEvent")
        stored = old.objects.create(
            source="registry",
            event_id="before-the-upgrade",
            timestamp=timezone.now(),
            action="push",
            kind="manifest",
            repository="team/stored-before",
        )
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        assert found("stored-befo") == {stored.pk}
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT id FROM registry_admin_auditevent_search")
                assert cursor.fetchall() == [(stored.pk,)]
                cursor.execute("SELECT count(*) FROM registry_admin_auditevent_search_queue")
                assert cursor.fetchone() == (0,)
        MigrationExecutor(connection).migrate(before)
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(
                    "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'audit_search%'"
                )
                assert cursor.fetchall() == [("audit_search_trgm_idx",)]
                cursor.execute("SELECT to_regclass('registry_admin_auditevent_search')")
                assert cursor.fetchone() == (None,)
        MigrationExecutor(connection).migrate(after)
        assert found("stored-befo") == {stored.pk}
    finally:
        # Later migrations add tables and columns the following tests need.
        MigrationExecutor(connection).migrate(latest)
