"""Deleting a whole repository on the real registry (Debian's 2.8.2), with skopeo: it leaves the
catalog, its images are held by the recycle bin and its unique bytes become reclaimable once
purged, another repository sharing its layers still pulls, a restore brings it back with the
same digests, the dry run changes nothing, and a client pushing while it is deleted either keeps
the repository or never had its push accepted (docs/recycle-bin.md "Tests this design owes").

The module starts its own registry, emptied before each test.
"""

import io
import json
import os
import shutil
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from registry_admin import recycle_bin, registry, repository_delete, usage
from registry_admin.models import AuditEvent, BinItem, Repository

from . import harness
from .images import build_image, build_index, make_layer, sha256_digest, write_oci_layout
from .test_free_space import skopeo_pull
from .test_online_gc import age_storage
from .test_storage_writes import mounted_read_only

pytestmark = pytest.mark.django_db(transaction=True)

LAYER_BYTES = 120 * 1024


@harness.live_fixture(scope="module")
def rd_registry(live_server, tmp_path_factory):
    reg = harness.start_registry(tmp_path_factory.mktemp("repository-delete"), live_server.url)
    yield reg
    reg.stop()


@pytest.fixture
def reg(rd_registry, settings):
    yield emptied(rd_registry, settings)
    harness.wait_for_quiet_notifications()


def emptied(rd_registry, settings):
    """The module's registry with an empty storage and the portal pointed at it."""
    harness.stop_process(rd_registry.process)
    harness.wait_for_quiet_notifications(quiet=0.1)
    for entry in Path(rd_registry.storage_root).iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    rd_registry.restart()
    harness.registry_settings(settings, rd_registry)
    settings.GC_GRACE_MINUTES = 60
    settings.GC_SETTLE_SECONDS = 0.2
    settings.REGISTRY_BLOB_CACHE = "none"
    settings.RECYCLE_BIN_DAYS = 7
    return rd_registry


def name(prefix):
    return f"{prefix}/{uuid.uuid4().hex[:8]}"


def catalog():
    return set(registry.get_client().list_repositories())


def repo_dir(reg, repository):
    return Path(reg.storage_root) / "docker/registry/v2/repositories" / repository


def delete(repository, *args):
    out, err = io.StringIO(), io.StringIO()
    call_command("delete_repository", repository, *args, stdout=out, stderr=err)
    return out.getvalue()


def storage_tree(reg):
    return sorted(
        (str(p.relative_to(reg.storage_root)), p.stat().st_size)
        for p in Path(reg.storage_root).rglob("*")
        if p.is_file()
    )


def test_delete_repository_leaves_the_catalog_keeps_shared_layers_and_restores(reg, tmp_path):
    old, other = "team/old", name("team")
    shared = make_layer({"shared.bin": os.urandom(LAYER_BYTES)})
    unique_a = build_image(layers=[shared, make_layer({"a.bin": os.urandom(LAYER_BYTES)})])
    unique_b = build_index()
    sibling = build_image(layers=[shared, make_layer({"s.bin": os.urandom(LAYER_BYTES)})])
    pusher = reg.pusher()
    a_digest = pusher.push_image(old, "v1", unique_a)
    pusher.put_manifest(old, "latest", unique_a.manifest, unique_a.media_type)
    b_digest = pusher.push_image(old, "multi", unique_b)
    untagged = build_image(layers=[make_layer({"u.bin": os.urandom(LAYER_BYTES)})])
    untagged_digest = pusher.push_image(old, "gone", untagged)
    pusher.session.delete(f"{pusher.base_url}/v2/{old}/manifests/{untagged_digest}")
    pusher.push_image(old, "untagged-later", untagged)  # a revision, re-tagged
    pusher.push_image(other, "v1", sibling)
    call_command("sync_registry", stdout=io.StringIO())
    assert Repository.objects.filter(name=old).exists()
    assert old in catalog()

    # The dry run plans and changes nothing (neither the registry nor its storage).
    age_storage(reg)
    usage.run_scan()
    before = storage_tree(reg)
    out = delete(old, "--dry-run", "--json")
    planned = json.loads(out)
    assert planned["dry_run"] is True and planned["deleted"] is False
    assert planned["tags"] == ["latest", "multi", "untagged-later", "v1"]
    assert set(planned["plan"]["revisions"]) >= {a_digest, b_digest, untagged_digest}
    assert planned["plan"]["unique_bytes"] > 2 * LAYER_BYTES
    assert storage_tree(reg) == before and not BinItem.objects.exists()

    out = delete(old)
    assert f"Deleted {old}: 4 tag(s)" in out
    assert old not in catalog() and other in catalog()
    assert not repo_dir(reg, old).exists() and not repo_dir(reg, "team").joinpath("old").exists()
    assert not Repository.objects.filter(name=old).exists()
    # Nothing of the repository is left in Oyster's trash either.
    assert not (Path(reg.storage_root) / repository_delete.TRASH).exists() or not any(
        p.is_file() for p in (Path(reg.storage_root) / repository_delete.TRASH).rglob("*")
    )
    items = BinItem.objects.filter(repository=old)
    assert {i.state for i in items} == {BinItem.State.HELD}
    assert {i.reason for i in items} == {repository_delete.REASON}
    assert {i.digest for i in items} == {a_digest, b_digest, untagged_digest}
    assert sorted(items.get(digest=a_digest).tags) == ["latest", "v1"]
    audit = AuditEvent.objects.get(action="repository.deleted")
    detail = json.loads(audit.raw)
    assert audit.repository == old and audit.actor.startswith("cli:")
    assert detail["images"] == 3 and detail["unique_bytes"] > 2 * LAYER_BYTES
    # The repository sharing a layer still pulls completely.
    skopeo_pull(reg, other, "v1", tmp_path / "other")

    # Held by the bin, then reclaimable once purged: exactly what the scan called unique.
    age_storage(reg)
    scan = usage.run_scan()
    assert scan.reclaimable_bytes == 0 and scan.held_bytes > 0
    held = scan.held_bytes
    recycle_bin.purge("worker", now=timezone.now() + timedelta(days=8))
    scan = usage.run_scan()
    assert scan.held_bytes == 0 and scan.reclaimable_bytes == held
    assert held == detail["unique_bytes"]


def test_restore_brings_a_deleted_repository_back_with_the_same_digests(reg, tmp_path):
    """Its blobs come back by a mount from a repository still using them, else as links."""
    old, other = name("old"), name("other")
    shared = make_layer({"shared": os.urandom(LAYER_BYTES)})
    single = build_image(layers=[shared, make_layer({"x": os.urandom(LAYER_BYTES)})])
    multi = build_index()
    pusher = reg.pusher()
    single_digest = pusher.push_image(old, "v1", single)
    multi_digest = pusher.push_image(old, "multi", multi)
    pusher.push_image(other, "v1", build_image(layers=[shared]))
    call_command("sync_registry", stdout=io.StringIO())
    usage.run_scan()  # what the restore learns the sharing from
    repository_delete.delete_repository("alice", old)
    assert old not in catalog()
    harness.wait_for_quiet_notifications()

    out = io.StringIO()
    call_command("recycle_bin", "restore", f"{old}:v1", f"{old}@{multi_digest}", stdout=out)
    assert f"Restored {old}@{single_digest} with {old}:v1." in out.getvalue()
    assert old in catalog()
    assert pusher.head_manifest(old, "v1") == single_digest
    assert pusher.head_manifest(old, "multi") == multi_digest
    skopeo_pull(reg, old, "v1", tmp_path / "single")
    skopeo_pull(reg, old, "multi", tmp_path / "multi")
    # The shared layer was mounted from the other repository (the registry said so).
    harness.wait_for_quiet_notifications()
    mounts = AuditEvent.objects.filter(action="mount", repository=old, from_repository=other)
    assert set(mounts.values_list("digest", flat=True)) == {sha256_digest(shared)}


def test_without_the_bin_the_unique_bytes_are_reclaimable_at_once(reg, settings, tmp_path):
    settings.RECYCLE_BIN_DAYS = 0
    old = name("nobin")
    pusher = reg.pusher()
    pusher.push_image(old, "v1", build_image(layers=[make_layer({"y": os.urandom(LAYER_BYTES)})]))
    age_storage(reg)
    expected = usage.run_scan().total_bytes
    repository_delete.delete_repository("alice", old)
    assert old not in catalog() and not BinItem.objects.exists()
    age_storage(reg)
    assert usage.run_scan().reclaimable_bytes == expected


def test_an_unknown_repository_and_a_storage_without_write_access_are_refused(reg, settings):
    with pytest.raises(CommandError, match="no repository"):
        delete(name("never"))
    old = name("ro")
    reg.pusher().push_image(old, "v1", build_image())
    settings.STORAGE_BACKEND = "nothing"
    with pytest.raises(CommandError, match="write access to the registry's storage"):
        delete(old)
    assert old in catalog()


@pytest.mark.parametrize(
    "hostile",
    ["", "UPPER/case", "../etc", "a/../../b", "x" * 300, "a\x00b", "-rf", "a//b", "/abs", "ok:tag"],
)
def test_hostile_names_are_refused_before_anything_is_touched(reg, hostile):
    before = storage_tree(reg)
    with pytest.raises(CommandError) as refused:
        delete(hostile)
    message = str(refused.value)
    # A usage error (2), or argparse's own for an option-like name; never a traceback.
    assert refused.value.returncode == 2 or "arguments are required" in message, message
    assert storage_tree(reg) == before


def test_a_second_delete_of_the_same_repository_at_once_is_refused(reg):
    old = name("busy")
    reg.pusher().push_image(old, "v1", build_image())
    with (
        repository_delete.one_at_a_time(old),
        pytest.raises(CommandError, match="being deleted by another process"),
    ):
        delete(old)
    assert old in catalog()
    delete(old)
    assert old not in catalog()


def test_a_push_between_the_recheck_and_the_move_is_put_back(reg, tmp_path, monkeypatch):
    """The window step 4 closes: a link written after step 3's listing, before the rename,
    moves with the directory and is moved back; the repository stays and the push pulls."""
    old = name("window")
    pusher = reg.pusher()
    pusher.push_image(old, "v1", build_image())
    late = build_image(layers=[make_layer({"late": os.urandom(LAYER_BYTES)})])
    real = repository_delete._Delete.pushed_meanwhile

    def push_then_check(self, contents):
        found = real(self, contents)
        pusher.push_image(old, "late", late)
        return found

    monkeypatch.setattr(repository_delete._Delete, "pushed_meanwhile", push_then_check)
    with pytest.raises(CommandError, match="a client pushed to it while its directory was moved"):
        delete(old)
    assert old in catalog()
    assert pusher.head_manifest(old, "late") == late.digest
    skopeo_pull(reg, old, "late", tmp_path / "late")
    assert AuditEvent.objects.filter(action="repository.delete_stopped").exists()


def _push_loop(reg, repository, layout, stop, results, pause):
    skopeo = harness.Skopeo(harness.SKOPEO_BINARY, reg.url)
    while not stop.wait(pause):
        began = time.monotonic()
        done = skopeo.copy_to_registry(
            layout, "v1", repository, harness.PUSH_USER, harness.PUSH_PASSWORD
        )
        results.append((began, time.monotonic(), done.returncode, done.stderr[-300:]))


@pytest.mark.parametrize("round_number", range(8))
def test_a_client_pushing_in_a_loop_either_keeps_the_repository_or_was_refused(
    reg, tmp_path, round_number
):
    """skopeo pushes while the repository is deleted (and a little after): every push that
    succeeded and ended after the delete returned pulls completely, and a repository the
    catalog lists pulls whole; one the catalog does not list had no push succeed after it went."""
    repository = name("race")
    image = build_image(layers=[make_layer({f"r{round_number}": os.urandom(LAYER_BYTES)})])
    reg.pusher().push_image(repository, "v0", build_image())
    layout = tmp_path / "layout"
    write_oci_layout(layout, image, "v1")
    stop, results = threading.Event(), []
    pusher = threading.Thread(
        target=_push_loop,
        args=(reg, repository, layout, stop, results, 0.25 * (round_number % 4)),
    )
    pusher.start()
    try:
        while not results:
            time.sleep(0.02)
        time.sleep(0.07 * round_number)
        try:
            outcome = repository_delete.delete_repository("tester", repository)
            removed, message = outcome.deleted, outcome.message
        except repository_delete.RepositoryDeleteError as exc:
            removed, message = False, str(exc)
        returned = time.monotonic()
        time.sleep(0.3)
    finally:
        stop.set()
        pusher.join(timeout=120)
    listed = repository in catalog()
    late = [r for r in results if r[2] == 0 and r[1] > returned]
    if removed:
        assert "Deleted" in message
    if listed:
        # Never half-deleted: every tag it lists pulls completely. A push that was refused
        # (its first layer's link went with the repository) may leave the layers it uploaded
        # after, as any failed push to a new repository does: the catalog lists the name and
        # the registry knows no tags for it (CI met this). A push that succeeded after the
        # delete returned must be there whole.
        try:
            tags = registry.get_client().list_tags(repository)
        except registry.RegistryNotFound:
            tags = []
        if late:
            assert "v1" in tags, (late, message)
        for tag in tags:
            skopeo_pull(reg, repository, tag, tmp_path / f"pulled-{tag}")
    else:
        assert removed, message
        assert not late, (late, message)
    # Nothing half-deleted remains: a fresh push works and pulls whole.
    skopeo = harness.Skopeo(harness.SKOPEO_BINARY, reg.url)
    again = skopeo.copy_to_registry(
        layout, "v1", repository, harness.PUSH_USER, harness.PUSH_PASSWORD
    )
    assert again.returncode == 0, again.stderr
    skopeo_pull(reg, repository, "v1", tmp_path / "again")


def test_twenty_tags_go_whole(reg):
    """A repository of 20 tags (20 images) deleted whole; its time: bench/repository_delete.py."""
    repository = name("twenty")
    pusher = reg.pusher()
    for number in range(20):
        pusher.push_image(
            repository, f"v{number}", build_image(layers=[make_layer({"n": os.urandom(4096)})])
        )
    outcome = repository_delete.delete_repository("tester", repository)
    assert outcome.deleted and outcome.images == 20 and outcome.held_items == 20
    assert outcome.unlinked_layers == 40  # each image's layer and config
    assert repository not in catalog()


def test_a_mount_from_a_repository_without_the_blob_is_false_and_links_nothing(reg):
    source, target, empty = name("src"), name("dst"), name("empty")
    layer = make_layer({"m": os.urandom(4096)})
    pusher = reg.pusher()
    pusher.push_image(source, "v1", build_image(layers=[layer]))
    pusher.push_image(empty, "v1", build_image())
    client = registry.get_client()
    digest = sha256_digest(layer)
    assert client.mount_blob(target, digest, empty) is False
    assert not client.blob_exists(target, digest)
    assert client.mount_blob(target, digest, source) is True
    assert client.blob_exists(target, digest)
    for hostile in ("../x", "UP", "a\x00b", "x" * 300):
        with pytest.raises(registry.RegistryNotFound):
            client.mount_blob(target, digest, hostile)
        with pytest.raises(registry.RegistryNotFound):
            client.mount_blob(hostile, digest, source)
    with pytest.raises(registry.RegistryNotFound):
        client.mount_blob(target, "sha256:nothex", source)


@pytest.mark.skipif(os.geteuid() != 0, reason="a bind mount needs root")
def test_a_read_only_storage_stops_the_delete_before_anything_changes(reg):
    old = name("readonly")
    reg.pusher().push_image(old, "v1", build_image())
    before = storage_tree(reg)
    with mounted_read_only(str(reg.storage_root)), pytest.raises(CommandError) as refused:
        delete(old)
    message = str(refused.value)
    assert "Nothing was deleted" in message and "mounted read-only" in message
    assert "Deleting a repository needs write access to the registry's storage" in message
    assert old in catalog() and storage_tree(reg) == before and not BinItem.objects.exists()
