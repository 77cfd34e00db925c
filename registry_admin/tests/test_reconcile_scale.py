"""The reconcile's memory does not grow with the registry: a bounded number of repositories is
in flight at once. A fake registry client (in memory) stands in for a registry of hundreds of
repositories, which would take minutes to push here; the real-registry behaviour is covered
by test_reconcile.py."""

import threading

import pytest
from django.utils import timezone

from registry_admin import reconcile, registry
from registry_admin.models import Manifest, Repository, Tag

OCI = "application/vnd.oci.image.manifest.v1+json"
DIGESTS = [f"sha256:{i:064x}" for i in range(7)]


class FakeRegistry:
    def __init__(self, repositories):
        self.names = [f"team/app-{i:04d}" for i in range(repositories)]
        self.lock = threading.Lock()
        self.listed = 0

    def list_repositories(self):
        return list(self.names)

    def list_tags(self, repository):
        with self.lock:
            self.listed += 1
        return [f"v{t}" for t in range(5)]

    def head_manifest(self, repository, reference):
        n = int(repository.rsplit("-", 1)[1]) + int(reference[1:])
        return registry.ManifestRef(digest=DIGESTS[n % len(DIGESTS)], media_type=OCI, size=578)


@pytest.mark.django_db
def test_at_most_a_window_of_repositories_is_in_flight(settings, monkeypatch):
    settings.SYNC_CONCURRENCY = 2
    fake = FakeRegistry(300)
    monkeypatch.setattr(registry, "get_client", lambda *a, **k: fake)
    now = timezone.now()
    Manifest.objects.bulk_create(
        [Manifest(digest=d, media_type=OCI, size=10, details_fetched_at=now) for d in DIGESTS]
    )
    applied, widest = [], [0]
    real_apply = reconcile.apply_repository

    def apply(name, found, listed_at, refresh=True):
        applied.append(name)
        widest[0] = max(widest[0], fake.listed - len(applied) + 1)
        return real_apply(name, found, listed_at, refresh=refresh)

    monkeypatch.setattr(reconcile, "apply_repository", apply)
    result = reconcile.reconcile()
    assert (result.repositories, result.tags_added, result.errors) == (300, 1500, [])
    assert Repository.objects.count() == 300 and Tag.objects.count() == 1500
    assert widest[0] <= 2 * reconcile.REPOSITORIES_PER_THREAD
    assert sorted(applied) == fake.names
    # Nothing changed: a second pass adds nothing and leaves the index as it is.
    again = reconcile.reconcile()
    assert (again.tags_added, again.tags_changed, again.tags_removed) == (0, 0, 0)
