"""Retention and the untagged cleanup follow the subject: referrer tags are never counted nor
deleted on their own, a live image's referrers are never pruned, orphans are. Real registry."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from registry_admin import deletes, retention, untagged, unused, usage
from registry_admin.models import RetentionRule

from .images import build_image
from .referrer_payloads import (
    build_cosign_signature,
    build_fallback_index,
    build_oci_sbom,
    cosign_tag,
    fallback_tag,
    push_artifact,
)
from .test_free_space import skopeo_pull
from .test_referrers import index_repository, push_signed_repository

pytestmark = pytest.mark.django_db(transaction=True)


def test_keep_the_two_newest_over_three_signed_releases_deletes_the_oldest_with_its_signature(
    registry, tmp_path
):
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pusher = registry.pusher()
    now = timezone.now()
    releases = {}
    for number, days in ((1, 30), (2, 20), (3, 10)):
        created = (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        image = build_image(created=created)
        pusher.push_image(repo, f"v{number}", image)
        signature = build_cosign_signature(image.digest, repo)
        push_artifact(pusher, repo, cosign_tag(image.digest), signature)
        releases[number] = (image, signature)
    index_repository(repo)
    rule = RetentionRule(
        name=f"keep2-{uuid.uuid4().hex[:6]}", repository_pattern=repo, keep_latest=2
    )
    rule.full_clean()
    rule.save()

    # The plan over the index and over the registry: the three releases only, the oldest goes.
    for live in (None, deletes.LiveRepositories()):
        plan = retention.build_plan([rule], live=live)
        decisions = {d.tag: d for d in plan.rules[0].repositories[0].decisions}
        assert set(decisions) == {"v1", "v2", "v3"}
        assert [t for t, d in decisions.items() if d.deletes] == ["v1"]
    summary = retention.dry_run_summary(plan, deletes.LiveRepositories())
    assert summary["planned"] == 1
    assert (
        "with its attached signature " + cosign_tag(releases[1][0].digest)
        in (summary["tags"][0]["message"])
    )

    retention.apply_plan(plan, "tester", live=deletes.LiveRepositories())

    expected = {"v2", "v3", *(cosign_tag(releases[n][0].digest) for n in (2, 3))}
    assert set(pusher.tags(repo)) == expected
    old_image, old_signature = releases[1]
    assert pusher.head_manifest(repo, old_image.digest) is None
    assert pusher.head_manifest(repo, old_signature.digest) is None
    skopeo_pull(registry, repo, "v3", tmp_path / "v3")
    skopeo_pull(registry, repo, cosign_tag(releases[3][0].digest), tmp_path / "sig")


def test_the_untagged_cleanup_keeps_a_live_images_referrers_and_removes_an_orphan(
    registry, settings
):
    settings.UNTAGGED_GRACE_MINUTES = 0
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pusher = registry.pusher()
    live_image, gone_image = build_image(), build_image()
    pusher.push_image(repo, "1.0", live_image)
    listed_sbom = build_oci_sbom(live_image)  # in the fallback index
    push_artifact(pusher, repo, listed_sbom.digest, listed_sbom)
    unlisted = build_oci_sbom(live_image, "application/vnd.cyclonedx+json")  # subject only
    push_artifact(pusher, repo, unlisted.digest, unlisted)
    push_artifact(
        pusher, repo, fallback_tag(live_image.digest), build_fallback_index([listed_sbom])
    )
    # An image deleted by a client that deleted its fallback index tag too (distribution-spec
    # says it MAY) and left the SBOM behind.
    pusher.push_image(repo, "old", gone_image)
    orphan = build_oci_sbom(gone_image)
    push_artifact(pusher, repo, orphan.digest, orphan)
    orphan_index = build_fallback_index([orphan])
    push_artifact(pusher, repo, fallback_tag(gone_image.digest), orphan_index)
    for digest in (gone_image.digest, orphan_index.digest):
        pusher.session.delete(f"{registry.url}/v2/{repo}/manifests/{digest}", timeout=10)
    usage.run_scan()

    result = untagged.prune("tester", repo)

    states = {item["digest"]: (item["state"], item["message"]) for item in result.items}
    kept = f"attached to {live_image.digest}, which is still present"
    assert states[unlisted.digest] == (untagged.KEPT, kept)
    # The one the fallback index lists is not even a candidate: a tag reaches it.
    assert states.get(listed_sbom.digest, (untagged.KEPT,))[0] == untagged.KEPT
    assert states[orphan.digest][0] == untagged.REMOVED
    assert pusher.head_manifest(repo, orphan.digest) is None
    for artifact in (listed_sbom, unlisted):
        assert pusher.head_manifest(repo, artifact.digest) == artifact.digest
    assert pusher.head_manifest(repo, "1.0") == live_image.digest


def test_the_unused_report_counts_referrers_under_their_image(registry):
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pushed = push_signed_repository(registry, repo)
    index_repository(repo)

    report = unused.unused_report(0)

    mine = {t.tag: t for t in report.tags if t.repository == repo}
    assert set(mine) == {"1.0", "2.0"}
    image_b = pushed["b"]
    assert mine["2.0"].unique_bytes == image_b.size + len(image_b.manifest)
    image_a, signature = pushed["a"], pushed["sig"]
    alone = image_a.size + len(image_a.manifest)
    signature_bytes = sum(len(b) for b in signature.blobs) + len(signature.manifest)
    # The image, its signature, the fallback index and the SBOM's own bytes.
    assert mine["1.0"].unique_bytes >= alone + signature_bytes + len(pushed["index"].manifest)
