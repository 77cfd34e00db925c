"""The "Recently deleted" page and `manage.py recycle_bin`: who may see and restore, and what
malformed, hostile and oversized input gets (a sentence, never a 500 or a change)."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from registry_admin import recycle_bin
from registry_admin.models import AuditEvent, BinItem, StorageSnapshot

from .test_settings_and_checks import run_python

PAGE = reverse("registry_admin:recycle-bin")
RESTORE = reverse("registry_admin:recycle-bin-restore")
DIGEST = "sha256:" + "ab" * 32

pytestmark = pytest.mark.django_db


def make_item(repository="team/app", tags=("v1",), state=BinItem.State.HELD, days_ago=0):
    deleted = timezone.now() - timedelta(days=days_ago)
    return BinItem.objects.create(
        repository=repository,
        digest=DIGEST,
        tags=list(tags),
        reason="manual",
        actor="alice",
        deleted_at=deleted,
        expires_at=deleted + timedelta(days=7),
        state=state,
        size_bytes=1234,
    )


def test_a_viewer_sees_the_items_read_only(viewer_client):
    make_item()
    make_item("team/other", state=BinItem.State.PURGED)
    response = viewer_client.get(PAGE)
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-repository="team/app"' in body and "team/other" not in body
    assert 'name="item"' not in body and "Restore selected" not in body
    assert viewer_client.post(RESTORE, {"item": "1"}).status_code == 403


def test_an_admin_gets_checkboxes_and_can_filter_by_repository(admin_client):
    make_item()
    make_item("team/other")
    response = admin_client.get(PAGE, {"repository": "team/other"})
    body = response.content.decode()
    assert 'data-repository="team/other"' in body and 'data-repository="team/app"' not in body
    assert 'name="item"' in body and "Restore selected" in body
    everything = admin_client.get(PAGE, {"show": "all"}).content.decode()
    assert everything.count("data-item=") == 2


def test_anonymous_users_are_sent_to_log_in(client):
    response = client.get(PAGE)
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert client.post(RESTORE, {"item": "1"}).status_code in (302, 403)


def test_restore_needs_a_post_with_the_csrf_token(admin_user):
    item = make_item()
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(admin_user)
    assert csrf_client.post(RESTORE, {"item": str(item.pk)}).status_code == 403
    assert csrf_client.get(RESTORE).status_code == 405
    item.refresh_from_db()
    assert item.state == BinItem.State.HELD


@pytest.mark.parametrize(
    "repository",
    ["../../etc/passwd", "Team/App", "a" * 5000, "team/app\x00", "<script>x</script>", " / "],
)
def test_a_bad_repository_filter_is_refused_with_a_sentence(admin_client, repository):
    make_item()
    response = admin_client.get(PAGE, {"repository": repository})
    assert response.status_code == 400
    assert "Not a repository name" in response.content.decode()
    assert "<script>x" not in response.content.decode()


@pytest.mark.parametrize(
    "items",
    [[], ["abc"], ["1; DROP TABLE x"], ["-1"], ["9" * 40], ["１"], ["1" for _ in range(501)]],
)
def test_a_malformed_or_oversized_selection_restores_nothing(admin_client, items):
    item = make_item()
    response = admin_client.post(RESTORE, {"item": items})
    assert response.status_code == 400
    item.refresh_from_db()
    assert item.state == BinItem.State.HELD
    assert not AuditEvent.objects.filter(action="bin.restored").exists()


def test_an_unknown_or_taken_item_is_reported_without_touching_the_registry(admin_client):
    purged = make_item(state=BinItem.State.PURGED)
    response = admin_client.post(RESTORE, {"item": ["999999", str(purged.pk)]})
    assert response.status_code == 200
    body = response.content.decode()
    assert "Item 999999 is not in the recycle bin." in body
    assert "is purged, not held: nothing restored" in body
    assert body.count('data-state="failed"') == 2


def test_the_command_lists_as_json_and_refuses_bad_input():
    make_item()
    out = io.StringIO()
    call_command("recycle_bin", "list", "--json", stdout=out)
    listed = json.loads(out.getvalue())
    assert [(i["repository"], i["tags"], i["state"]) for i in listed] == [
        ("team/app", ["v1"], "held")
    ]
    for reference in ("nonsense", "a" * 10000, "team/app@sha256:zz", "team/app:", "Team/x:v1"):
        with pytest.raises(CommandError):
            call_command("recycle_bin", "restore", reference, stderr=io.StringIO())
    with pytest.raises(CommandError, match="could not be restored"):
        call_command("recycle_bin", "restore", "team/app:v2", stderr=io.StringIO())
    for days in ("-1", "abc", "99999999999999999999", "1e3"):
        with pytest.raises(CommandError):
            call_command("recycle_bin", "purge", "--older-than", days)
    with pytest.raises(CommandError, match="At most"):
        call_command("recycle_bin", "restore", *(["team/app:v1"] * 501))
    assert BinItem.objects.get().state == BinItem.State.HELD


def test_the_command_purges_what_is_older_than_asked_and_audits_it():
    old, new = make_item(days_ago=3), make_item("team/new")
    out = io.StringIO()
    call_command("recycle_bin", "purge", "--older-than", "2", stdout=out)
    assert "1 items purged" in out.getvalue()
    old.refresh_from_db(), new.refresh_from_db()
    assert (old.state, new.state) == (BinItem.State.PURGED, BinItem.State.HELD)
    row = AuditEvent.objects.get(action="bin.purged")
    assert row.repository == "team/app" and row.actor


def test_forged_notifications_cannot_restore_or_purge(client, settings):
    """The webhook stores events; no event, whatever it says, changes an item's state."""
    settings.NOTIFICATIONS_TOKEN = "t" * 40
    item = make_item()
    envelope = {
        "events": [
            {
                "id": "forged-1",
                "timestamp": timezone.now().isoformat(),
                "action": action,
                "target": {"repository": "team/app", "digest": DIGEST, "tag": "v1"},
                "actor": {"name": "mallory"},
                "request": {"method": "PUT"},
            }
            for action in ("push", "delete", "restore", "purge")
        ]
    }
    response = client.post(
        reverse("registry_admin:registry-events"),
        json.dumps(envelope),
        content_type="application/vnd.docker.distribution.events.v1+json",
        HTTP_AUTHORIZATION="Bearer " + "t" * 40,
    )
    assert response.status_code < 300  # stored, and applied to the index
    item.refresh_from_db()
    assert item.state == BinItem.State.HELD
    assert not AuditEvent.objects.filter(action__startswith="bin.").exists()


def test_the_offline_collector_says_what_it_makes_unrestorable_before_it_runs(admin_client):
    make_item()
    make_item("team/tagonly").__class__.objects.filter(repository="team/tagonly").update(
        kind=BinItem.Kind.TAG
    )
    page = admin_client.get(reverse("registry_admin:storage")).content.decode()
    assert "data-bin-warning" in page
    assert f"of the 1 deleted image held there (team/app@{DIGEST})" in page
    BinItem.objects.update(state=BinItem.State.RESTORED)
    page = admin_client.get(reverse("registry_admin:storage")).content.decode()
    assert "data-bin-warning" not in page


def test_the_garbage_collect_command_warns_before_it_runs(settings):
    settings.REGISTRY_URL = "http://127.0.0.1:9"  # nothing listens: the run itself refuses
    make_item()
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("garbage_collect", stderr=err, stdout=io.StringIO())
    assert err.getvalue().startswith("The registry's own garbage-collect does not know")


def test_a_restore_that_claimed_first_wins_over_the_purge_and_one_that_died_is_handed_back():
    item = make_item(days_ago=30)
    BinItem.objects.filter(pk=item.pk).update(
        state=BinItem.State.RESTORING, claimed_at=timezone.now()
    )
    assert recycle_bin.purge("worker") == []
    item.refresh_from_db()
    assert item.state == BinItem.State.RESTORING
    # Its process died: ten minutes later it is held again, and then expired, purged.
    later = timezone.now() + timedelta(minutes=11)
    assert [i.pk for i in recycle_bin.purge("worker", now=later)] == [item.pk]
    item.refresh_from_db()
    assert item.state == BinItem.State.PURGED


def test_the_storage_page_shows_held_bytes_apart_from_reclaimable(viewer_client):
    StorageSnapshot.objects.create(
        backend="filesystem",
        total_bytes=10_000,
        blob_count=5,
        reclaimable_bytes=100,
        reclaimable_count=1,
        held_bytes=4_321,
        held_count=3,
    )
    page = viewer_client.get(reverse("registry_admin:storage")).content.decode()
    assert 'data-figure="held"' in page and "Held by the recycle bin" in page
    assert "3 blobs of" in page


@pytest.mark.parametrize("value", ["-1", "366", "seven", "1e9"])
def test_a_bad_recycle_bin_days_stops_startup_naming_the_setting(tmp_path, value):
    result = run_python(
        "import django; django.setup()",
        DEBUG="0",
        DATA_DIR=str(tmp_path),
        SECRET_KEY="k" * 50,
        RECYCLE_BIN_DAYS=value,
    )
    assert result.returncode != 0
    assert "RECYCLE_BIN_DAYS" in result.stderr
