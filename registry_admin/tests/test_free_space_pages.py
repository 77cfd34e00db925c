"""The Storage page's untagged cleanup and garbage collection actions: roles, CSRF-protected
POSTs, confirmation, hostile input. The jobs themselves run in test_free_space.py."""

import pytest
from django.urls import reverse
from django.utils import timezone

from registry_admin import index
from registry_admin.models import RepositoryStorage, Run, StorageSnapshot, UntaggedManifest

PRUNE = reverse("registry_admin:untagged-prune")
GC = reverse("registry_admin:garbage-collect")


def snapshot_with_untagged():
    snapshot = StorageSnapshot.objects.create(
        backend="filesystem",
        total_bytes=1000,
        blob_count=3,
        reclaimable_bytes=0,
        reclaimable_count=0,
    )
    UntaggedManifest.objects.create(
        snapshot=snapshot,
        repository="team/app",
        digest="sha256:" + "a" * 64,
        reclaimable_bytes=307200,
    )
    UntaggedManifest.objects.create(
        snapshot=snapshot, repository="other/x", digest="sha256:" + "b" * 64, reclaimable_bytes=10
    )
    return snapshot


@pytest.mark.django_db
def test_the_storage_page_lists_untagged_images_and_offers_admins_the_actions(admin_client):
    snapshot_with_untagged()
    page = admin_client.get(reverse("registry_admin:storage")).content.decode()
    assert 'data-untagged-repository="team/app"' in page
    assert "300.0\xa0KB" in page
    assert f'action="{PRUNE}"' in page and f'action="{GC}"' in page
    assert "REGISTRY_STORAGE_MAINTENANCE_READONLY" in page


@pytest.mark.django_db
def test_viewers_see_the_untagged_images_without_the_actions(viewer_client):
    snapshot_with_untagged()
    page = viewer_client.get(reverse("registry_admin:storage")).content.decode()
    assert 'data-untagged-repository="team/app"' in page
    assert f'action="{PRUNE}"' not in page and f'action="{GC}"' not in page


@pytest.mark.django_db
def test_pruning_is_confirmed_first_then_queued_for_the_worker(admin_client):
    snapshot_with_untagged()
    asked = admin_client.post(PRUNE, {"repository": "team/*"})
    page = asked.content.decode()
    assert asked.status_code == 200
    assert f'data-untagged="sha256:{"a" * 64}"' in page
    assert f'data-untagged="sha256:{"b" * 64}"' not in page
    assert not Run.objects.exists()

    admin_client.post(PRUNE, {"repository": "team/*", "confirm": "yes"})
    run = Run.objects.get(kind="prune_untagged")
    assert run.options == {"repository": "team/*"}


@pytest.mark.django_db
@pytest.mark.parametrize("pattern", ["team/\x00*", "x" * 256, "a\nb"])
def test_hostile_patterns_are_refused_and_queue_nothing(admin_client, pattern):
    response = admin_client.post(PRUNE, {"repository": pattern, "confirm": "yes"}, follow=True)
    assert response.status_code == 200
    assert not Run.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "mode, dry_run, stopped",
    [("dry-run", True, False), ("run", False, False), ("run-stopped", False, True)],
)
def test_garbage_collection_is_queued_with_its_mode(admin_client, mode, dry_run, stopped):
    admin_client.post(GC, {"mode": mode})
    run = Run.objects.get(kind="garbage_collect")
    assert run.options == {"dry_run": dry_run, "registry_stopped": stopped}


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["", "delete-untagged", "x" * 10000])
def test_an_unknown_mode_queues_nothing(admin_client, mode):
    admin_client.post(GC, {"mode": mode})
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_viewers_change_nothing(viewer_client):
    assert viewer_client.post(PRUNE, {"confirm": "yes"}).status_code == 403
    assert viewer_client.post(GC, {"mode": "run"}).status_code == 403
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_a_get_or_an_anonymous_post_changes_nothing(admin_client, client):
    assert admin_client.get(GC).status_code == 405
    admin_client.logout()
    assert client.post(GC, {"mode": "run"}).status_code in (302, 403)
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_a_repository_page_shows_its_untagged_images(admin_client):
    snapshot = snapshot_with_untagged()
    RepositoryStorage.objects.create(
        snapshot=snapshot,
        name="team/app",
        referenced_bytes=1,
        unique_bytes=1,
        shared_bytes=0,
        reclaimable_bytes=0,
        blob_count=1,
        manifest_count=1,
    )
    index.upsert_tag("team/app", "v1", "sha256:" + "c" * 64, timezone.now())
    page = admin_client.get(
        reverse("registry_admin:repository", args=["team/app"])
    ).content.decode()
    assert 'data-untagged-count="1"' in page
    assert '<input type="hidden" name="repository" value="team/app">' in page
