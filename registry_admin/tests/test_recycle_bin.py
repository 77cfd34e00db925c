"""The recycle bin on the real registry (Debian's 2.8.2): every delete Oyster makes is held, the
online collector and the storage scan keep what is held, a restore puts the very same manifests
back (skopeo pulls them completely with the same digests), and a purge lets the next collection
free exactly their bytes.

The module starts its own registry, emptied before each test, so collecting touches no other
test's images.
"""

import io
import os
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from registry_admin import deletes, online_gc, recycle_bin, untagged, usage
from registry_admin.models import AuditEvent, BinBlob, BinItem, BinManifest

from . import harness
from .images import build_image, build_index, make_layer, sha256_digest
from .test_free_space import skopeo_pull
from .test_online_gc import age_storage

LAYER_BYTES = 150 * 1024

pytestmark = pytest.mark.django_db(transaction=True)


@harness.live_fixture(scope="module")
def bin_registry(live_server, tmp_path_factory):
    reg = harness.start_registry(tmp_path_factory.mktemp("recycle-bin"), live_server.url)
    yield reg
    reg.stop()


@pytest.fixture
def reg(bin_registry, settings):
    """The module's registry with an empty storage: each test's figures are its own."""
    harness.stop_process(bin_registry.process)
    harness.wait_for_quiet_notifications(quiet=0.1)
    for entry in Path(bin_registry.storage_root).iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    bin_registry.restart()
    harness.registry_settings(settings, bin_registry)
    settings.GC_GRACE_MINUTES = 60
    settings.GC_SETTLE_SECONDS = 0.2
    settings.GC_TRASH_HOURS = 24
    settings.REGISTRY_BLOB_CACHE = "none"
    settings.RECYCLE_BIN_DAYS = 7
    yield bin_registry
    harness.wait_for_quiet_notifications()


def name(prefix):
    return f"{prefix}/{uuid.uuid4().hex[:8]}"


def big_image(**kwargs):
    return build_image(layers=[make_layer({"big.bin": os.urandom(LAYER_BYTES)})], **kwargs)


def stored_bytes(image):
    """Every distinct blob and manifest an Image or ImageIndex stores."""
    parts = {}
    for child in getattr(image, "children", [image]):
        parts[child.digest] = len(child.manifest)
        for blob in child.blobs:
            parts[sha256_digest(blob)] = len(blob)
    parts[image.digest] = len(image.manifest)
    return sum(parts.values())


def restore(*references):
    out, err = io.StringIO(), io.StringIO()
    call_command("recycle_bin", "restore", *references, stdout=out, stderr=err)
    return out.getvalue()


def test_single_and_multi_platform_deletes_survive_a_collection_and_come_back_whole(reg, tmp_path):
    single_repo, multi_repo, kept_repo = name("single"), name("multi"), name("kept")
    single, multi = big_image(), build_index()
    pusher = reg.pusher()
    single_digest = pusher.push_image(single_repo, "v1", single)
    multi_digest = pusher.push_image(multi_repo, "v1", multi)
    pusher.push_image(kept_repo, "v1", big_image())

    deletes.delete_tag("alice", single_repo, "v1")
    deletes.delete_tag("alice", multi_repo, "v1")
    assert pusher.head_manifest(single_repo, "v1") is None
    assert pusher.head_manifest(multi_repo, multi_digest) is None

    items = {item.repository: item for item in BinItem.objects.all()}
    assert {i.state for i in items.values()} == {BinItem.State.HELD}
    assert items[single_repo].tags == ["v1"] and items[single_repo].reason == "manual"
    assert items[single_repo].actor == "alice" and items[single_repo].kind == "image"
    # The index and both platform manifests, byte for byte; children deeper than the index.
    manifests = {m.digest: m for m in BinManifest.objects.filter(item=items[multi_repo])}
    assert set(manifests) == {multi_digest, *(c.digest for c in multi.children)}
    assert bytes(manifests[multi_digest].content) == multi.manifest
    assert manifests[multi_digest].depth == 0
    assert {manifests[c.digest].depth for c in multi.children} == {1}
    assert items[single_repo].size_bytes == stored_bytes(single)
    assert items[multi_repo].size_bytes == stored_bytes(multi)
    held = AuditEvent.objects.filter(action="bin.held")
    assert sorted(held.values_list("repository", flat=True)) == sorted([single_repo, multi_repo])
    assert set(held.values_list("actor", flat=True)) == {"alice"}

    # The scan shows the deleted images as held, not reclaimable; the collector keeps them.
    age_storage(reg)
    scan = usage.run_scan()
    assert scan.reclaimable_bytes == 0
    assert scan.held_bytes == stored_bytes(single) + stored_bytes(multi)
    out = io.StringIO()
    call_command("garbage_collect", "--online", "--dry-run", stdout=out)
    assert "are held by the recycle bin until they expire" in out.getvalue()
    result = online_gc.collect_online("tester", dry_run=False)
    assert result.trashed_count == 0 and result.candidate_count == 0
    assert result.held_bytes == scan.held_bytes

    # Restored (the multi-platform one by digest) from the shell: same digests, complete pulls.
    out = restore(f"{single_repo}:v1", f"{multi_repo}@{multi_digest}")
    assert f"Restored {single_repo}@{single_digest} with {single_repo}:v1." in out
    assert pusher.head_manifest(single_repo, "v1") == single_digest
    assert pusher.head_manifest(multi_repo, "v1") == multi_digest
    for child in multi.children:
        assert pusher.head_manifest(multi_repo, child.digest) == child.digest
    skopeo_pull(reg, single_repo, "v1", tmp_path / "single")
    skopeo_pull(reg, multi_repo, "v1", tmp_path / "multi")
    assert set(BinItem.objects.values_list("state", flat=True)) == {BinItem.State.RESTORED}
    restored = AuditEvent.objects.filter(action="bin.restored")
    assert restored.count() == 2 and set(restored.values_list("actor", flat=True)) != {""}


def test_after_the_bin_days_a_purge_and_a_collection_free_exactly_their_bytes(reg, tmp_path):
    single_repo, multi_repo, kept_repo = name("single"), name("multi"), name("kept")
    single, multi, kept = big_image(), build_index(), big_image()
    pusher = reg.pusher()
    pusher.push_image(single_repo, "v1", single)
    pusher.push_image(multi_repo, "v1", multi)
    pusher.push_image(kept_repo, "v1", kept)
    deletes.delete_tag("alice", single_repo, "v1")
    deletes.delete_tag("alice", multi_repo, "v1")
    age_storage(reg)
    before = usage.run_scan()
    expected = stored_bytes(single) + stored_bytes(multi)
    assert before.held_bytes == expected and before.reclaimable_bytes == 0

    # Not expired yet: the daily purge releases nothing.
    assert recycle_bin.purge("worker") == []
    # RECYCLE_BIN_DAYS later (simulated): released, and only then collectable.
    later = timezone.now() + timedelta(days=7, minutes=1)
    purged = recycle_bin.purge("worker", now=later)
    assert sorted(i.repository for i in purged) == sorted([single_repo, multi_repo])
    assert not BinManifest.objects.exists() and not BinBlob.objects.exists()
    assert AuditEvent.objects.filter(action="bin.purged", actor="worker").count() == 2
    scan = usage.run_scan()
    assert scan.held_bytes == 0 and scan.reclaimable_bytes == expected
    result = online_gc.collect_online("tester", dry_run=False)
    assert result.trashed_bytes == expected
    after = usage.run_scan()
    assert after.total_bytes == before.total_bytes - expected
    skopeo_pull(reg, kept_repo, "v1", tmp_path / "kept")
    # Purged items cannot be restored.
    with pytest.raises(CommandError):
        restore(f"{single_repo}:v1")


def test_a_tag_pushed_again_since_the_delete_is_left_alone(reg):
    repo = name("again")
    old, new = big_image(), big_image()
    pusher = reg.pusher()
    old_digest = pusher.push_image(repo, "v1", old)
    pusher.put_manifest(repo, "stable", old.manifest, old.media_type)
    deletes.delete_image("alice", repo, old_digest, confirmed_tags=["stable", "v1"])
    item = BinItem.objects.get()
    assert item.tags == ["stable", "v1"] and item.reason == "digest"
    new_digest = pusher.push_image(repo, "v1", new)

    outcome = recycle_bin.restore("bob", item)
    assert outcome.restored_tags == ("stable",) and outcome.kept_tags == {"v1": new_digest}
    assert "was pushed again since" in outcome.message
    assert pusher.head_manifest(repo, "v1") == new_digest
    assert pusher.head_manifest(repo, "stable") == old_digest
    # A second restore finds it taken.
    with pytest.raises(recycle_bin.BinError, match="restored, not held"):
        recycle_bin.restore("bob", item)


def test_a_tag_deleted_beside_a_sibling_is_held_as_a_tag_and_comes_back(reg):
    repo = name("sibling")
    image = big_image()
    pusher = reg.pusher()
    digest = pusher.push_image(repo, "v1", image)
    pusher.put_manifest(repo, "v2", image.manifest, image.media_type)
    outcomes = deletes.delete_tags(
        "carol", [deletes.TagToDelete(repo, "v1", bin_reason="retention:keep-last")]
    )
    assert outcomes[0].state == deletes.DELETED
    item = BinItem.objects.get()
    assert (item.kind, item.tags, item.reason) == ("tag", ["v1"], "retention:keep-last")
    assert item.digest == digest and item.state == BinItem.State.HELD
    recycle_bin.restore("carol", item)
    assert pusher.head_manifest(repo, "v1") == digest


def test_the_untagged_prune_is_held_and_restored_by_digest(reg, settings):
    repo = name("prune")
    old = big_image()
    pusher = reg.pusher()
    old_digest = pusher.push_image(repo, "v1", old)
    pusher.push_image(repo, "v1", big_image())  # the old manifest is untagged now
    settings.UNTAGGED_GRACE_MINUTES = 1
    age_storage(reg)
    usage.run_scan()
    result = untagged.prune("dave")
    assert [i["digest"] for i in result.removed] == [old_digest]
    item = BinItem.objects.get()
    assert (item.reason, item.tags, item.state) == ("prune", [], BinItem.State.HELD)
    assert usage.run_scan().reclaimable_bytes == 0
    restore(f"{repo}@{old_digest}")
    assert pusher.head_manifest(repo, old_digest) == old_digest


def test_a_refused_delete_leaves_nothing_in_the_bin(reg):
    repo = name("refused")
    pusher = reg.pusher()
    digest = pusher.push_image(repo, "v1", big_image())
    # Deletes off: the registry answers 405; the recorded item goes again.
    config = yaml.safe_load(reg.config_path.read_text())
    config["storage"]["delete"] = {"enabled": False}
    reg.restart(config)
    try:
        with pytest.raises(deletes.registry.RegistryDeleteUnsupported):
            deletes.delete_image("alice", repo, digest, confirmed_tags=["v1"])
    finally:
        config["storage"]["delete"] = {"enabled": True}
        reg.restart(config)
    assert not BinItem.objects.exists()


def test_with_the_bin_off_deletes_hold_nothing(reg, settings):
    settings.RECYCLE_BIN_DAYS = 0
    repo = name("off")
    reg.pusher().push_image(repo, "v1", big_image())
    deletes.delete_tag("alice", repo, "v1")
    assert not BinItem.objects.exists()


def test_a_delete_whose_process_died_is_settled_by_the_purge_job(reg):
    repo = name("died")
    pusher = reg.pusher()
    digest = pusher.push_image(repo, "v1", big_image())
    gone = recycle_bin.record("alice", repo, digest, ["v1"], "manual")
    deletes.registry.get_client().delete_image(repo, digest)
    other_repo = name("died")
    other = pusher.push_image(other_repo, "v1", big_image())
    stays = recycle_bin.record("alice", other_repo, other, ["v1"], "manual")
    # Younger than ten minutes: left alone; older: settled by a HEAD each.
    recycle_bin.purge("worker")
    assert BinItem.objects.filter(state=BinItem.State.DELETING).count() == 2
    recycle_bin.purge("worker", now=timezone.now() + timedelta(minutes=11))
    assert BinItem.objects.get(pk=gone.pk).state == BinItem.State.HELD
    assert not BinItem.objects.filter(pk=stays.pk).exists()


def test_a_client_pushing_the_tag_between_the_check_and_the_put_keeps_its_image(reg, monkeypatch):
    repo = name("race")
    old, new = big_image(), big_image()
    pusher = reg.pusher()
    old_digest = pusher.push_image(repo, "v1", old)
    for blob in new.blobs:
        pusher.push_blob(repo, blob)
    deletes.delete_tag("alice", repo, "v1")
    item = BinItem.objects.get()
    client = recycle_bin.registry.get_client()
    put = client.put_manifest
    pushed = {}

    def put_after_a_client(repository, reference, raw, media_type):
        # The client's push lands in the window between our HEAD (tag absent) and our PUT.
        if reference == "v1" and not pushed:
            pushed["digest"] = pusher.put_manifest(repo, "v1", new.manifest, new.media_type)
        return put(repository, reference, raw, media_type)

    monkeypatch.setattr(client, "put_manifest", put_after_a_client)
    outcome = recycle_bin.restore("bob", item)
    assert outcome.kept_tags == {"v1": pushed["digest"]} and outcome.restored_tags == ()
    assert pusher.head_manifest(repo, "v1") == pushed["digest"] == new.digest
    # Our manifest is back as an untagged revision, byte-identical.
    assert pusher.head_manifest(repo, old_digest) == old_digest


def test_the_registry_client_puts_manifests_and_checks_blobs(reg):
    """The two calls a restore adds to registry.py, against the real registry."""
    repo = name("client")
    image = big_image()
    client = recycle_bin.registry.get_client()
    # A manifest whose blobs the repository does not have is refused as "not found".
    with pytest.raises(recycle_bin.registry.RegistryNotFound, match="refused the manifest"):
        client.put_manifest(repo, image.digest, image.manifest, image.media_type)
    assert client.blob_exists(repo, image.config_digest) is False
    pusher = reg.pusher()
    for blob in image.blobs:
        pusher.push_blob(repo, blob)
    assert client.blob_exists(repo, image.config_digest) is True
    assert client.put_manifest(repo, image.digest, image.manifest, image.media_type) == (
        image.digest
    )
    assert client.put_manifest(repo, "v1", image.manifest, image.media_type) == image.digest
    # Names and references off the grammar never reach a URL.
    for bad_repo, reference in (("../x", "v1"), (repo, "../../v2"), (repo, "a" * 200)):
        with pytest.raises(recycle_bin.registry.RegistryNotFound):
            client.put_manifest(bad_repo, reference, b"{}", image.media_type)
    with pytest.raises(recycle_bin.registry.RegistryNotFound):
        client.blob_exists(repo, "sha256:zz")
