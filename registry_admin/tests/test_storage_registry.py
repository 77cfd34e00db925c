"""Storage scans of trees written by the real registry (Debian's docker-registry 2.8), on the
filesystem driver and copied into Azurite, checked against a hand count of what was pushed;
then a delete, the real garbage collector, and a scan after it."""

import re
from collections import Counter

import pytest
import requests

from registry_admin import storage, worker
from registry_admin.models import Run, StorageSnapshot
from registry_admin.tests import harness
from registry_admin.tests.images import (
    ALL_MANIFEST_TYPES,
    build_image,
    build_index,
    make_layer,
    sha256_digest,
)
from registry_admin.tests.storage_trees import (
    azure_settings,
    azurite_container,
    blob_data_sizes,
    files_under,
    upload_tree,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def own_registry(tmp_path, live_server, settings):
    """A registry of this test's own, so exact byte counts are not disturbed by other tests."""
    reg = harness.start_registry(tmp_path / "registry", live_server.url)
    harness.registry_settings(settings, reg)
    settings.STORAGE_READ_CONCURRENCY = 4
    yield reg
    reg.stop()


def push_images(reg):
    """Three repositories sharing layers, one of them an OCI index; an unfinished upload.

    Returns {repository: [(name, bytes), ...]} of every blob each repository received, and the
    image the delete test removes."""
    base = make_layer({"base.txt": b"a base layer every repository uses\n" * 300})
    alpha_beta = make_layer({"shared.txt": b"alpha and beta share this\n" * 100})
    alpha_v1 = build_image(layers=[base, alpha_beta, make_layer({"a1": b"first\n" * 40})])
    alpha_v2 = build_image(layers=[base, make_layer({"a2": b"second\n" * 900})])
    beta = build_image(layers=[base, alpha_beta], docker=True)
    index = build_index()
    pusher = reg.pusher()
    pusher.push_image("st/alpha", "v1", alpha_v1)
    pusher.push_image("st/alpha", "v2", alpha_v2)
    pusher.push_image("st/beta", "v1", beta)
    pusher.push_image("st/multi", "latest", index)
    started = pusher.session.post(f"{reg.url}/v2/st/beta/blobs/uploads/", timeout=10)
    assert started.status_code == 202
    location = started.headers["Location"]
    location = location if location.startswith("http") else reg.url + location
    patched = pusher.session.patch(
        location,
        data=b"half an upload" * 10,
        headers={"Content-Type": "application/octet-stream"},
        timeout=10,
    )
    assert patched.status_code == 202, patched.text
    blobs = {
        "st/alpha": [
            *alpha_v1.blobs,
            alpha_v1.manifest,
            *alpha_v2.blobs,
            alpha_v2.manifest,
        ],
        "st/beta": [*beta.blobs, beta.manifest],
        "st/multi": [
            *(blob for child in index.children for blob in [*child.blobs, child.manifest]),
            index.manifest,
        ],
    }
    return blobs, alpha_v2


def hand_count(blobs_by_repository):
    """Referenced / unique / shared bytes per repository, counted from what was pushed."""
    distinct = {
        repository: {sha256_digest(blob): len(blob) for blob in blobs}
        for repository, blobs in blobs_by_repository.items()
    }
    users = Counter(digest for blobs in distinct.values() for digest in blobs)
    figures = {}
    for repository, blobs in distinct.items():
        referenced = sum(blobs.values())
        unique = sum(size for digest, size in blobs.items() if users[digest] == 1)
        figures[repository] = (referenced, unique, referenced - unique, len(blobs))
    total = sum({d: s for blobs in distinct.values() for d, s in blobs.items()}.values())
    return figures, total


def per_repository(result):
    return {
        usage_row.name: (
            usage_row.referenced_bytes,
            usage_row.unique_bytes,
            usage_row.shared_bytes,
            usage_row.blob_count,
        )
        for usage_row in result.repositories
    }


def comparable(result):
    """Everything a scan reports except timing and upload ages (Azure stamps its own)."""
    figures = result.as_dict()
    for key in ("duration_seconds", "oldest_upload_started"):
        figures.pop(key)
    return figures


def test_filesystem_and_azure_scans_match_a_hand_count(own_registry, azurite, settings):
    blobs, _ = push_images(own_registry)
    expected, expected_total = hand_count(blobs)

    _, on_disk = storage.scan_storage()

    data_files = blob_data_sizes(own_registry.storage_root)
    assert on_disk.total_bytes == sum(data_files.values()) == expected_total
    assert on_disk.blob_count == len(data_files)
    assert per_repository(on_disk) == expected
    # Every blob is in use: nothing for garbage collection yet.
    assert (on_disk.reclaimable_bytes, on_disk.reclaimable_count) == (0, 0)
    assert {r.name: r.reclaimable_bytes for r in on_disk.repositories} == dict.fromkeys(blobs, 0)
    # alpha: 2 images; beta: 1; multi: the index and its 2 children.
    assert {r.name: r.manifest_count for r in on_disk.repositories} == {
        "st/alpha": 2,
        "st/beta": 1,
        "st/multi": 3,
    }
    assert on_disk.manifest_count == on_disk.manifests_read == 6
    # Sharing saved what the repositories reference beyond the distinct bytes stored.
    assert on_disk.dedup_saved_bytes == sum(f[0] for f in expected.values()) - expected_total > 0
    assert on_disk.linked_bytes == expected_total
    uploads = files_under(
        own_registry.storage_root, "docker/registry/v2/repositories/st/beta/_uploads"
    )
    assert on_disk.upload_count == 1
    assert on_disk.upload_bytes == sum(uploads.values())
    assert on_disk.oldest_upload_started is not None

    # The same tree in Azurite, under a root directory as the azure driver would write it.
    container = azurite_container(azurite)
    upload_tree(container, own_registry.storage_root, prefix="registry-root/")
    azure_settings(settings, azurite, container.container_name, root_directory="/registry-root/")
    backend, in_azure = storage.scan_storage()

    assert backend.kind == "azure"
    assert comparable(in_azure) == comparable(on_disk)
    assert in_azure.oldest_upload_started is not None


def delete_manifest(reg, repository, digest):
    response = requests.delete(
        f"{reg.url}/v2/{repository}/manifests/{digest}",
        auth=(harness.PUSH_USER, harness.PUSH_PASSWORD),
        headers={"Accept": ALL_MANIFEST_TYPES},
        timeout=10,
    )
    assert response.status_code == 202, response.text


def test_a_deleted_image_is_reclaimable_until_garbage_collection(own_registry):
    _, deleted = push_images(own_registry)
    first = worker.run_now(Run.Kind.STORAGE_SCAN)
    assert first.state == first.State.DONE, first.error
    before = StorageSnapshot.objects.get(pk=first.result["snapshot_id"])
    assert before.reclaimable_bytes == 0

    # Deleting the manifest by digest removes tag v2 (and only it: v1 is another image).
    delete_manifest(own_registry, "st/alpha", deleted.digest)
    assert own_registry.pusher().tags("st/alpha") == ["v1"]
    run = worker.run_now(Run.Kind.STORAGE_SCAN)
    after_delete = StorageSnapshot.objects.get(pk=run.result["snapshot_id"])

    # Only that image used its manifest, its config and its second layer; the base is shared.
    only_deleted = [deleted.manifest, deleted.config, deleted.layers[1]]
    assert after_delete.reclaimable_bytes == sum(len(blob) for blob in only_deleted)
    assert after_delete.reclaimable_count == 3
    assert after_delete.total_bytes == before.total_bytes
    alpha = after_delete.repositories.get(name="st/alpha")
    # alpha still links the config and layer (until GC), no longer the deleted manifest.
    assert alpha.reclaimable_bytes == len(deleted.config) + len(deleted.layers[1])
    assert alpha.referenced_bytes == (
        before.repositories.get(name="st/alpha").referenced_bytes - len(deleted.manifest)
    )
    assert alpha.manifest_count == 1

    # The real collector's mark phase agrees on the count.
    own_registry.stop()
    dry_run = own_registry.garbage_collect(dry_run=True).stdout
    eligible = re.search(r"(\d+) blobs and \d+ manifests eligible for deletion", dry_run)
    assert eligible and int(eligible.group(1)) == after_delete.reclaimable_count
    own_registry.garbage_collect()
    own_registry.restart()

    run = worker.run_now(Run.Kind.STORAGE_SCAN)
    after_gc = StorageSnapshot.objects.get(pk=run.result["snapshot_id"])
    assert after_gc.total_bytes == before.total_bytes - after_delete.reclaimable_bytes
    assert after_gc.total_bytes == sum(blob_data_sizes(own_registry.storage_root).values())
    assert (after_gc.reclaimable_bytes, after_gc.reclaimable_count) == (0, 0)
    assert after_gc.blob_count == before.blob_count - 3
    # GC deletes blobs, not alpha's two layer links to them.
    assert after_gc.missing_blob_links == 2
    assert after_gc.repositories.get(name="st/alpha").reclaimable_bytes == 0
    # Figures of the untouched repositories did not move.
    for name in ("st/beta", "st/multi"):
        assert (
            after_gc.repositories.get(name=name).referenced_bytes
            == before.repositories.get(name=name).referenced_bytes
        )
    # Later scans read no manifest from storage: the reference cache knew every linked one.
    assert after_gc.manifest_count == 5
    assert first.result["manifests_read"] == 6
    assert run.result["manifests_read"] == 0


def test_a_first_scan_after_a_reconcile_reads_no_manifest_the_portal_has_seen(own_registry):
    """The reconcile reads every tagged manifest through the registry API (checked against its
    digest) and keeps what each references: the first storage scan then reads none of them
    from storage, and its figures are those of a scan that read them all."""
    from registry_admin import reconcile, usage
    from registry_admin.models import ManifestReferences

    push_images(own_registry)
    assert reconcile.reconcile(concurrency=2).errors == []
    # The six manifests: two alpha images, beta, the index and its two children.
    assert ManifestReferences.objects.count() == 6

    backend = storage.get_backend()
    reads = []

    def counting_read(path, max_bytes):
        reads.append(path)
        return backend.read(path, max_bytes)

    entries = list(backend.list_entries(storage.V2_PREFIX))
    seeded = storage.scan(entries, counting_read, cache=usage.ManifestReferenceCache())
    assert [p for p in reads if p.endswith("/data")] == []
    assert seeded.manifests_read == 0

    ManifestReferences.objects.all().delete()
    cold = storage.scan(entries, backend.read, cache=usage.ManifestReferenceCache())
    assert cold.manifests_read == 6
    assert {k: v for k, v in comparable(seeded).items() if k != "manifests_read"} == {
        k: v for k, v in comparable(cold).items() if k != "manifests_read"
    }
