"""Every writer of a repository's tags takes the repository's row first, so a portal delete
and a notification's upsert of the same repository never deadlock (PostgreSQL found one: the
delete locked tags then the repository, the upsert the repository then tags)."""

import threading
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction

from registry_admin import index
from registry_admin.models import AuditEvent, Repository, Tag

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def concurrently(*steps):
    """Run each step in its own thread (its own database connection) and wait for all; the
    exceptions they raised."""
    errors = []

    def run(step):
        try:
            step()
        except Exception as exc:  # noqa: BLE001  (reported by the test)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(step,)) for step in steps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("forget", ["tags", "digest"])
def test_a_delete_waits_for_the_repository_before_touching_its_tags(forget):
    index.upsert_tag("team/app", "v1", D1, T0)
    index.upsert_tag("team/app", "v2", D2, T0)
    upsert_holds_repository = threading.Event()
    delete_started = threading.Event()

    def notification():
        # As upsert_tag does: the repository's row first, then (a moment later) its tags.
        with transaction.atomic():
            Repository.objects.select_for_update().get(name="team/app")
            upsert_holds_repository.set()
            delete_started.wait(5)
            # Long enough for the delete to reach its first lock.
            threading.Event().wait(0.5)
            Tag.objects.filter(repository__name="team/app", name="v1").update(digest=D2)

    def portal_delete():
        upsert_holds_repository.wait(5)
        delete_started.set()
        if forget == "tags":
            index.forget_tags("team/app", ["v1", "v2"])
        else:
            index.forget_digest("team/app", D1)

    assert concurrently(notification, portal_delete) == []
    # The delete ran after the notification: v1 had moved to D2 by then.
    remaining = set(Tag.objects.values_list("name", "digest"))
    assert remaining == (set() if forget == "tags" else {("v1", D2), ("v2", D2)})


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_repository_delete_waits_for_a_notification_that_holds_the_repository():
    """CI met this on PostgreSQL: a late push notification inserted a tag between the delete's
    collection of the repository's tags and its delete of the row, and the commit broke the
    tag's foreign key. The delete now takes the row first."""
    index.upsert_tag("team/app", "v1", D1, T0)
    notification_holds = threading.Event()
    delete_started = threading.Event()

    def notification():
        with transaction.atomic():
            repository = Repository.objects.select_for_update().get(name="team/app")
            notification_holds.set()
            delete_started.wait(5)
            threading.Event().wait(0.5)
            Tag.objects.create(repository=repository, name="v2", digest=D2, pushed_at=T0)

    def repository_delete():
        notification_holds.wait(5)
        delete_started.set()
        index.forget_repository("team/app")

    assert concurrently(notification, repository_delete) == []
    assert not Repository.objects.filter(name="team/app").exists()
    assert not Tag.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("writer", ["upsert_tag", "batch"])
def test_a_push_applied_while_its_repository_is_deleted_creates_it_again(monkeypatch, writer):
    """The other order: the push saw the repository's row, then waited for it while the
    delete removed it. It records its tag in a repository created again (the event says the
    repository exists), not against the deleted row."""
    index.upsert_tag("team/app", "v1", D1, T0)
    push_saw_the_row = threading.Event()
    delete_holds = threading.Event()
    create = index.create_repositories

    def create_then_pause(names):
        created = create(names)
        if not push_saw_the_row.is_set():
            push_saw_the_row.set()
            delete_holds.wait(5)
        return created

    monkeypatch.setattr(index, "create_repositories", create_then_pause)

    def push():
        if writer == "upsert_tag":
            index.upsert_tag("team/app", "v9", D2, T0)
        else:
            event = AuditEvent(
                action="push", repository="team/app", tag="v9", digest=D2, timestamp=T0
            )
            with transaction.atomic():
                index._upsert_pushes([event])

    def repository_delete():
        push_saw_the_row.wait(5)
        with transaction.atomic():
            index.forget_repository("team/app")
            delete_holds.set()
            threading.Event().wait(0.5)

    assert concurrently(push, repository_delete) == []
    assert set(Tag.objects.values_list("repository__name", "name", "digest")) == {
        ("team/app", "v9", D2)
    }
