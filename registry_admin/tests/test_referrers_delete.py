"""Deletes follow the subject: an image's signatures, SBOMs and attestations go with it (and
come back with it from the recycle bin); a tag other tags keep leaves them. Real registry."""

import json
import uuid

import pytest
from django.urls import reverse

from registry_admin import deletes, recycle_bin, referrers
from registry_admin.models import AuditEvent, BinItem, PortalAction

from .images import OCI_INDEX, OCI_MANIFEST, build_image
from .referrer_payloads import build_cosign_signature, cosign_tag, fallback_tag, push_artifact
from .test_free_space import skopeo_pull
from .test_referrers import index_repository, push_signed_repository

pytestmark = pytest.mark.django_db(transaction=True)


def gone(reg, repo, digests):
    pusher = reg.pusher()
    return {digest: pusher.head_manifest(repo, digest) is None for digest in digests}


def test_deleting_the_last_tag_deletes_the_referrers_and_the_other_image_still_pulls(
    registry, admin_client, tmp_path, settings
):
    settings.RECYCLE_BIN_DAYS = 7
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pushed = push_signed_repository(registry, repo)
    index_repository(repo)
    a = pushed["a"].digest
    attached = [pushed["sig"].digest, pushed["sbom"].digest, pushed["index"].digest]

    # The confirmation page lists what goes with the image, asked of the registry.
    page = admin_client.post(
        reverse("registry_admin:tag-delete"), {"repository": repo, "tag": "1.0"}
    )
    assert page.status_code == 200
    text = page.content.decode()
    assert 'data-method="digest"' in text
    for digest in attached:
        assert f'data-referrer="{digest}"' in text
    assert cosign_tag(a) in text and fallback_tag(a) in text
    bulk = admin_client.post(
        reverse("registry_admin:tags-bulk-delete"), {"repository": repo, "tag": ["1.0", "2.0"]}
    ).content.decode()
    assert 'data-referrers="3"' in bulk
    assert f"with its attached signature {cosign_tag(a)}" in bulk
    assert registry.pusher().head_manifest(repo, "1.0") == a  # nothing deleted yet

    plan = deletes.delete_tag("alice", repo, "1.0")

    assert plan.method == deletes.BY_DIGEST
    assert sorted(r.kind for r in plan.referrers) == ["index", "sbom", "signature"]
    assert registry.pusher().tags(repo) == ["2.0"]
    assert gone(registry, repo, [a, *attached]) == dict.fromkeys([a, *attached], True)
    skopeo_pull(registry, repo, "2.0", tmp_path / "b")
    row = AuditEvent.objects.get(action=PortalAction.TAG_DELETED, repository=repo)
    assert sorted(r["digest"] for r in json.loads(row.raw)["referrers"]) == sorted(attached)
    # Each referrer is held in the bin as one of the image.
    held = BinItem.objects.filter(repository=repo, reason=recycle_bin.referrer_reason(a))
    assert sorted(held.values_list("digest", flat=True)) == sorted(attached)

    # Restoring the image brings its referrers back, tags and all.
    image_item = BinItem.objects.get(repository=repo, digest=a)
    outcome = recycle_bin.restore("alice", image_item)
    assert "With it 3 attached artifacts" in outcome.message
    pusher = registry.pusher()
    assert pusher.head_manifest(repo, "1.0") == a
    assert pusher.head_manifest(repo, cosign_tag(a)) == pushed["sig"].digest
    assert pusher.head_manifest(repo, fallback_tag(a)) == pushed["index"].digest
    assert pusher.head_manifest(repo, pushed["sbom"].digest) == pushed["sbom"].digest
    skopeo_pull(registry, repo, "1.0", tmp_path / "a")


def test_deleting_one_tag_of_an_image_other_tags_keep_leaves_its_referrers(registry):
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pusher = registry.pusher()
    image = build_image()
    pusher.push_image(repo, "1.0", image)
    pusher.push_image(repo, "latest", image)
    signature = build_cosign_signature(image.digest, repo)
    push_artifact(pusher, repo, cosign_tag(image.digest), signature)
    index_repository(repo)

    plan = deletes.delete_tag("alice", repo, "latest")

    assert plan.method == deletes.BY_PLACEHOLDER
    assert pusher.tags(repo) == sorted(["1.0", cosign_tag(image.digest)])
    assert pusher.head_manifest(repo, cosign_tag(image.digest)) == signature.digest


def test_deleting_an_image_by_digest_lists_and_deletes_its_referrers(registry, admin_client):
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pushed = push_signed_repository(registry, repo)
    index_repository(repo)
    a = pushed["a"].digest

    page = admin_client.post(
        reverse("registry_admin:image-delete"), {"repository": repo, "digest": a}
    )
    text = page.content.decode()
    assert page.status_code == 200
    assert f'data-referrer="{pushed["sig"].digest}"' in text
    assert f'data-referrer="{pushed["sbom"].digest}"' in text

    done = admin_client.post(
        reverse("registry_admin:image-delete"),
        {"repository": repo, "digest": a, "confirmed_tag": ["1.0"], "confirm": "yes"},
    )
    assert done.status_code == 200
    assert registry.pusher().tags(repo) == ["2.0"]
    doomed = [pushed[k].digest for k in ("sig", "sbom", "index")]
    assert gone(registry, repo, doomed) == dict.fromkeys(doomed, True)
    assert not [
        t for t in registry.pusher().tags(repo) if referrers.referrer_tag_parts(t) is not None
    ]


def test_a_hostile_cosign_tag_or_fallback_index_never_takes_another_image_down(registry):
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pusher = registry.pusher()
    image, bystander, loner = build_image(), build_image(), build_image()
    pusher.push_image(repo, "1.0", image)
    pusher.push_image(repo, "2.0", bystander)
    # cosign's name for 1.0's signature, on the bystander's manifest; a fallback index listing
    # the bystander and an untagged image whose subject is not 1.0.
    pusher.put_manifest(repo, cosign_tag(image.digest), bystander.manifest, bystander.media_type)
    pusher.push_image(repo, loner.digest, loner)
    listing = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d.digest, "size": len(d.manifest)}
            for d in (bystander, loner)
        ],
    }
    pusher.put_manifest(repo, fallback_tag(image.digest), json.dumps(listing).encode(), OCI_INDEX)
    index_repository(repo)

    plan = deletes.delete_tag("alice", repo, "1.0")

    assert [(r.kind, r.tag) for r in plan.referrers] == [("index", fallback_tag(image.digest))]
    assert pusher.head_manifest(repo, "2.0") == bystander.digest
    assert pusher.head_manifest(repo, cosign_tag(image.digest)) == bystander.digest
    assert pusher.head_manifest(repo, loner.digest) == loner.digest
    assert pusher.head_manifest(repo, fallback_tag(image.digest)) is None
