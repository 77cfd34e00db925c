"""Every writer of a repository's tags takes the repository's row first, so a portal delete
and a notification's upsert of the same repository never deadlock (PostgreSQL found one: the
delete locked tags then the repository, the upsert the repository then tags)."""

import threading
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction

from registry_admin import index
from registry_admin.models import Repository, Tag

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("forget", ["tags", "digest"])
def test_a_delete_waits_for_the_repository_before_touching_its_tags(forget):
    index.upsert_tag("team/app", "v1", D1, T0)
    index.upsert_tag("team/app", "v2", D2, T0)
    upsert_holds_repository = threading.Event()
    delete_started = threading.Event()
    errors = []

    def notification():
        # As upsert_tag does: the repository's row first, then (a moment later) its tags.
        try:
            with transaction.atomic():
                Repository.objects.select_for_update().get(name="team/app")
                upsert_holds_repository.set()
                delete_started.wait(5)
                # Long enough for the delete to reach its first lock.
                threading.Event().wait(0.5)
                Tag.objects.filter(repository__name="team/app", name="v1").update(digest=D2)
        except Exception as exc:  # noqa: BLE001  (reported by the test)
            errors.append(exc)
        finally:
            connection.close()

    def portal_delete():
        upsert_holds_repository.wait(5)
        delete_started.set()
        try:
            if forget == "tags":
                index.forget_tags("team/app", ["v1", "v2"])
            else:
                index.forget_digest("team/app", D1)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=notification), threading.Thread(target=portal_delete)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    # The delete ran after the notification: v1 had moved to D2 by then.
    remaining = set(Tag.objects.values_list("name", "digest"))
    assert remaining == (set() if forget == "tags" else {("v1", D2), ("v2", D2)})
