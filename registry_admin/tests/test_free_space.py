"""Deletes that give the space back, end to end on the real registry (Debian's 2.8.2) and its
real collector: last-tag deletes by digest, the untagged cleanup, garbage collection from the
portal, and every remaining tag still pulling completely with skopeo afterwards.

The module starts its own registry, so switching it read-only and collecting garbage touches
no other test's images.
"""

import io
import json
import os
import re
import subprocess
import uuid

import pytest
import yaml
from django.core.management import call_command
from django.utils import timezone

from registry_admin import collector, deletes, index, reconcile, registry, untagged, unused, usage
from registry_admin.models import AuditEvent, RetentionRule, Tag, UntaggedManifest
from registry_admin.registry_config import EVENTS_PATH

from . import harness
from .factories import make_envelope, make_registry_event
from .images import OCI_INDEX, build_image, build_index, make_layer, sha256_digest

LAYER_BYTES = 300 * 1024


@harness.live_fixture(scope="module")
def gc_registry(live_server, tmp_path_factory):
    reg = harness.start_registry(tmp_path_factory.mktemp("gc-registry"), live_server.url)
    yield reg
    reg.stop()


@pytest.fixture
def reg(gc_registry, settings):
    if gc_registry.process.poll() is not None:
        gc_registry.restart()
    harness.registry_settings(settings, gc_registry)
    settings.REGISTRY_GC_COMMAND = harness.REGISTRY_BINARY
    settings.UNTAGGED_GRACE_MINUTES = 0
    # What a delete frees at once, without the recycle bin holding it (test_recycle_bin.py).
    settings.RECYCLE_BIN_DAYS = 0
    yield gc_registry
    harness.wait_for_quiet_notifications()


def set_read_only(reg, enabled):
    config = yaml.safe_load(reg.config_path.read_text())
    config["storage"]["maintenance"]["readonly"] = {"enabled": enabled}
    reg.restart(config)


def big_image(**kwargs):
    """An image with one layer of its own of about LAYER_BYTES (random: gzip cannot shrink it)."""
    return build_image(layers=[make_layer({"big.bin": os.urandom(LAYER_BYTES)})], **kwargs)


def skopeo_pull(reg, repo, tag, destination):
    """Pull every manifest, child manifest, config and layer of repo:tag with skopeo."""
    host = reg.url.split("://", 1)[1]
    done = subprocess.run(
        [
            harness.SKOPEO_BINARY,
            "--insecure-policy",
            "copy",
            "--all",
            "--src-creds",
            f"{harness.PUSH_USER}:{harness.PUSH_PASSWORD}",
            "--src-tls-verify=false",
            f"docker://{host}/{repo}:{tag}",
            f"oci:{destination}:{tag}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{repo}:{tag} does not pull: {done.stderr[-800:]}"


def collect_for_real(reg):
    set_read_only(reg, True)
    try:
        return collector.collect("tester", dry_run=False)
    finally:
        set_read_only(reg, False)


def name(prefix):
    return f"{prefix}/{uuid.uuid4().hex[:8]}"


@pytest.mark.django_db(transaction=True)
def test_deleting_the_only_tag_frees_its_layer_and_the_collector_frees_what_the_scan_said(reg):
    repo = name("big")
    image = big_image()
    reg.pusher().push_image(repo, "only", image)
    before = usage.run_scan()

    plan = deletes.delete_tag("tester", repo, "only")

    assert plan.method == deletes.BY_DIGEST
    assert plan.reclaimable_bytes >= LAYER_BYTES
    after = usage.run_scan()
    assert after.reclaimable_bytes - before.reclaimable_bytes >= LAYER_BYTES
    dry = collector.collect("tester", dry_run=True)
    assert dry.eligible_bytes == after.reclaimable_bytes
    assert dry.scan_reclaimable_bytes == after.reclaimable_bytes

    result = collect_for_real(reg)

    assert result.freed_bytes == after.reclaimable_bytes
    assert usage.latest_snapshot().reclaimable_bytes == 0
    row = AuditEvent.objects.filter(action="storage.garbage_collected").latest("id")
    assert json.loads(row.raw)["freed_bytes"] == after.reclaimable_bytes


@pytest.mark.django_db(transaction=True)
def test_pushing_latest_twice_then_prune_and_collect_frees_the_old_images_and_keeps_every_tag(
    reg, tmp_path
):
    single, multi, other = name("ci"), name("multi"), name("shared")
    pusher = reg.pusher()
    shared_layer = make_layer({"base.bin": os.urandom(LAYER_BYTES)})
    old_single = big_image()
    pusher.push_image(single, "latest", old_single)
    pusher.push_image(single, "latest", big_image())  # the old one is untagged now
    # A tag moved to a new image; another repository shares a layer with a remaining image.
    pusher.push_image(single, "stable", build_image(layers=[shared_layer]))
    pusher.push_image(single, "stable", build_image(layers=[shared_layer, make_layer({"x": b"1"})]))
    pusher.push_image(other, "v1", build_image(layers=[shared_layer]))
    old_index = build_index()
    pusher.push_image(multi, "latest", old_index)
    pusher.push_image(multi, "latest", build_index(docker=True))  # now a Docker manifest list
    pusher.push_image(multi, "oci", build_index())
    usage.run_scan()
    old_single_rows = UntaggedManifest.objects.filter(repository=single, digest=old_single.digest)
    assert old_single_rows.get().reclaimable_bytes >= LAYER_BYTES
    untagged_multi = set(
        UntaggedManifest.objects.filter(repository=multi).values_list("digest", flat=True)
    )
    assert untagged_multi == {old_index.digest, *(c.digest for c in old_index.children)}

    # A long grace period keeps everything; a dry run deletes nothing.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("django.conf.settings.UNTAGGED_GRACE_MINUTES", 60)
        kept = untagged.prune("tester", dry_run=False)
    assert not kept.removed
    assert untagged.prune("tester", dry_run=True).removed

    result = untagged.prune("tester")
    assert not [item for item in result.items if item["state"] == untagged.FAILED]
    assert reg.pusher().head_manifest(single, old_single.digest) is None
    scan = usage.run_scan()
    assert not UntaggedManifest.objects.filter(snapshot=scan).exists()
    freed = collect_for_real(reg)
    # The old images' own bytes: the big layer, and every blob of the old index's platforms.
    old_bytes = old_single.size + sum(child.size for child in old_index.children)
    assert freed.freed_bytes == scan.reclaimable_bytes >= old_bytes

    for repo, tag in [
        (single, "latest"),
        (single, "stable"),
        (other, "v1"),
        (multi, "latest"),
        (multi, "oci"),
    ]:
        skopeo_pull(reg, repo, tag, tmp_path / f"{repo.replace('/', '_')}-{tag}")


def _index_of(*manifests):
    """An OCI index over (digest, media type, size) descriptors, as pushed bytes."""
    entries = [
        {"mediaType": media_type, "digest": digest, "size": size}
        for digest, media_type, size in manifests
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


@pytest.mark.django_db(transaction=True)
def test_the_cleanup_keeps_a_manifest_a_tag_reaches_through_nested_indexes(reg):
    """Issue #27 item 6: untagged index C -> image M, then a tagged index T -> C. The cleanup
    looked one level below T, kept C and removed M: the tagged image no longer pulled."""
    repo = name("nested")
    pusher = reg.pusher()
    image, stray = build_image(), build_image()
    pusher.push_image(repo, image.digest, image)
    pusher.push_image(repo, stray.digest, stray)  # truly unreferenced
    inner = _index_of((image.digest, image.media_type, len(image.manifest)))
    inner_digest = sha256_digest(inner)
    pusher.put_manifest(repo, inner_digest, inner, OCI_INDEX)
    usage.run_scan()
    listed = set(UntaggedManifest.objects.filter(repository=repo).values_list("digest", flat=True))
    assert listed == {image.digest, stray.digest, inner_digest}

    # Tagged after the scan (a push that finished later): T -> C -> M.
    outer = _index_of((inner_digest, OCI_INDEX, len(inner)))
    pusher.put_manifest(repo, "v1", outer, OCI_INDEX)

    result = untagged.prune("tester", repo)
    states = {item["digest"]: (item["state"], item["message"]) for item in result.items}
    assert states[stray.digest][0] == untagged.REMOVED
    assert states[inner_digest] == (untagged.KEPT, f"a child of the tagged {sha256_digest(outer)}")
    assert states[image.digest][0] == untagged.KEPT
    assert "index" in states[image.digest][1]
    assert pusher.head_manifest(repo, image.digest) == image.digest
    assert pusher.head_manifest(repo, stray.digest) is None
    response = pusher.session.get(
        f"{reg.url}/v2/{repo}/manifests/{image.digest}",
        headers={"Accept": image.media_type},
        timeout=5,
    )
    assert response.status_code == 200
    # The scan, by the same rule, finds nothing untagged left there.
    rescan = usage.run_scan()
    assert not UntaggedManifest.objects.filter(snapshot=rescan, repository=repo).exists()


@pytest.mark.django_db(transaction=True)
def test_deleting_a_tag_keeps_a_child_another_tag_reaches_through_nested_indexes(reg):
    """Tag keep -> index N -> index C -> image M; tag go -> index G -> M, X. Deleting go used to
    look one level below the staying tags (N -> C), so it deleted M and broke keep."""
    repo = name("nestdel")
    pusher = reg.pusher()
    shared, own = build_image(), build_image()
    for image in (shared, own):
        pusher.push_image(repo, image.digest, image)
    inner = _index_of((shared.digest, shared.media_type, len(shared.manifest)))
    pusher.put_manifest(repo, sha256_digest(inner), inner, OCI_INDEX)
    outer = _index_of((sha256_digest(inner), OCI_INDEX, len(inner)))
    pusher.put_manifest(repo, "keep", outer, OCI_INDEX)
    going = _index_of(
        (shared.digest, shared.media_type, len(shared.manifest)),
        (own.digest, own.media_type, len(own.manifest)),
    )
    pusher.put_manifest(repo, "go", going, OCI_INDEX)

    plan = deletes.delete_tag("tester", repo, "go")

    assert plan.method == deletes.BY_DIGEST
    assert list(plan.children) == [own.digest]
    assert pusher.head_manifest(repo, shared.digest) == shared.digest
    assert pusher.head_manifest(repo, own.digest) is None


@pytest.mark.django_db(transaction=True)
def test_a_tag_pushed_again_mid_run_is_not_deleted_and_a_sibling_added_behind_the_index_stays(reg):
    repo = name("race")
    pusher = reg.pusher()
    first, second, newer = build_image(), build_image(), build_image()
    pusher.push_image(repo, "a", first)
    pusher.push_image(repo, "b", second)
    targets = [
        deletes.TagToDelete(repo, "a", first.digest),
        deletes.TagToDelete(repo, "b", second.digest),
    ]

    def push_again(done, outcome):
        if done == 1:
            pusher.push_image(repo, "b", newer)  # b moves while the run goes on
            pusher.push_image(repo, "c", second)  # ... and c is the old image's new sibling

    outcomes = deletes.delete_tags("tester", targets, on_progress=push_again)

    assert [o.state for o in outcomes] == [deletes.DELETED, deletes.FAILED]
    assert outcomes[0].method == deletes.BY_DIGEST
    assert pusher.head_manifest(repo, "b") == newer.digest
    assert pusher.head_manifest(repo, "c") == second.digest

    # Resolved before a sibling appears; the delete re-reads the tags and keeps the image.
    live = deletes.LiveRepository.resolve(repo)
    pusher.push_image(repo, "d", newer)
    plan = deletes.delete_tag("tester", repo, "b", newer.digest, live=live)
    assert plan.method == deletes.BY_PLACEHOLDER
    assert pusher.tags(repo) == ["c", "d"]
    assert pusher.head_manifest(repo, "d") == newer.digest


@pytest.mark.django_db(transaction=True)
def test_a_forged_placeholder_annotation_never_deletes_a_sibling(reg):
    """Issue #14 item 5: a pusher's manifest carrying the portal's annotation, under two tags."""

    repo = name("forged")
    image = build_image()
    manifest = json.loads(image.manifest)
    manifest["annotations"] = {
        "io.oyster.placeholder": "forged",
        "io.oyster.placeholder.replaces": "sha256:" + "0" * 64,
    }
    body = json.dumps(manifest).encode()
    pusher = reg.pusher()
    for blob in image.blobs:
        pusher.push_blob(repo, blob)
    for tag in ("one", "two"):
        pusher.put_manifest(repo, tag, body, image.media_type)

    plan = deletes.delete_tag("tester", repo, "one")

    assert plan.method == deletes.BY_PLACEHOLDER
    assert pusher.tags(repo) == ["two"]


@pytest.mark.django_db(transaction=True)
def test_the_real_collector_refuses_unless_the_registry_is_read_only_or_really_stopped(reg):
    # 2.8's collector fails on a storage without repositories ("Path not found"); the write
    # check no longer creates one as a side effect, so the test holds an image of its own.
    reg.pusher().push_image(name("state"), "v1", build_image())
    with pytest.raises(collector.CollectorError, match="read-only"):
        collector.collect("tester", dry_run=False)
    with pytest.raises(collector.CollectorError, match="still answers"):
        collector.collect("tester", dry_run=False, registry_stopped=True)
    assert collector.registry_state()[0] == "writable"
    # Deletes disabled is not read-only: it answers uploads differently.
    config = yaml.safe_load(reg.config_path.read_text())
    config["storage"]["delete"]["enabled"] = False
    reg.restart(config)
    try:
        assert collector.registry_state()[0] == "writable"
    finally:
        config["storage"]["delete"]["enabled"] = True
        reg.restart(config)
    set_read_only(reg, True)
    try:
        assert collector.registry_state()[0] == "read-only"
    finally:
        set_read_only(reg, False)
    reg.stop()
    try:
        assert collector.registry_state()[0] == "unreachable"
        with pytest.raises(collector.CollectorError, match="--registry-stopped"):
            collector.collect("tester", dry_run=False)
        result = collector.collect("tester", dry_run=False, registry_stopped=True)
        assert result.freed_bytes is not None
    finally:
        reg.restart()


@pytest.mark.django_db(transaction=True)
def test_forged_push_events_dated_2099_change_nothing_retention_deletes(reg, client):
    """Issue #14 item 3: a leaked notification token cannot steer retention."""
    repo = name("forge")
    pusher = reg.pusher()
    images = {}
    for day, tag in enumerate(["old", "mid", "new"], start=1):
        images[tag] = build_image(created=f"2020-01-0{day}T00:00:00Z")
        pusher.push_image(repo, tag, images[tag])
        index.upsert_tag(repo, tag, images[tag].digest, timezone.now())
    harness.wait_for_quiet_notifications()
    registry_client = registry.get_client()
    for tag, image in images.items():
        reconcile.store_details(
            image.digest, reconcile.fetch_details(registry_client, repo, image.digest)
        )
    RetentionRule.objects.create(name="two", repository_pattern=repo, keep_latest=2)
    honest = io.StringIO()
    call_command("retention", "--dry-run", stdout=honest)

    forged = [
        make_registry_event(repository=repo, tag=tag, digest="sha256:" + digit * 64)
        | {"timestamp": "2099-01-01T00:00:00Z"}
        for tag, digit in (("fake1", "1"), ("fake2", "2"))
    ]
    for event in forged:
        response = client.post(
            EVENTS_PATH,
            make_envelope(event),
            content_type="application/vnd.docker.distribution.events.v1+json",
            HTTP_AUTHORIZATION=f"Bearer {harness.NOTIFICATIONS_TOKEN}",
        )
        assert response.status_code == 200
    assert not AuditEvent.objects.filter(timestamp__gt=timezone.now()).exists()
    assert Tag.objects.filter(repository__name=repo, name="fake1").exists()  # the index believed it

    dry = io.StringIO()
    call_command("retention", "--dry-run", stdout=dry)
    planned = re.findall(r"^\s{4}delete\s+(\S+)", dry.getvalue(), re.MULTILINE)
    assert planned == re.findall(r"^\s{4}delete\s+(\S+)", honest.getvalue(), re.MULTILINE)
    assert planned == ["old"]
    assert "last tag on its image" in dry.getvalue()

    call_command("retention", stdout=io.StringIO())

    assert pusher.tags(repo) == ["mid", "new"]


@pytest.mark.django_db(transaction=True)
def test_the_unused_report_says_what_deleting_the_tag_and_collecting_frees(reg):
    # The report promises "what deleting that tag alone would free": its manifest (and an
    # index's platform manifests) are blobs the collector frees too, not only configs and layers.
    single, multi = name("report"), name("reportmulti")
    pusher = reg.pusher()
    pusher.push_image(single, "only", big_image())
    pusher.push_image(multi, "only", build_index())
    harness.wait_for_quiet_notifications()
    reconcile.reconcile()
    collect_for_real(reg)  # nothing else reclaimable: what follows frees only these tags
    for repo in (single, multi):
        report = {(t.repository, t.tag): t for t in unused.unused_report(0).tags}
        expected = report[(repo, "only")].unique_bytes
        assert expected is not None, f"{repo}: the report does not know its bytes"
        deletes.delete_tag("tester", repo, "only")
        untagged.prune("tester")  # an index's children go with it, as the README says
        freed = collect_for_real(reg).freed_bytes
        assert freed == expected, repo
