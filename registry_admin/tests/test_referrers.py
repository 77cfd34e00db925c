"""Recognising referrers (signatures, SBOMs, attestations): the pure classification over the
formats' own examples, and the index and registry-side discovery on the real registry."""

import json
import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from registry_admin import image_details, reconcile, referrers
from registry_admin.deletes import LiveRepository
from registry_admin.models import Manifest, Repository, Tag
from registry_admin.registry import get_client

from . import referrer_payloads as payloads
from .harness import wait_for_quiet_notifications
from .images import OCI_INDEX, OCI_MANIFEST, build_image, wait_for
from .referrer_payloads import (
    build_cosign_signature,
    build_fallback_index,
    build_oci_sbom,
    cosign_tag,
    fallback_tag,
    push_artifact,
)

SUBJECT = payloads.SPEC_SUBJECT
HEX = SUBJECT.split(":")[1]


# --- The pure functions ----------------------------------------------------------------------


def test_cosign_tags_are_referrers_only_when_their_subject_is_in_the_repository():
    data = payloads.COSIGN_SIGNATURE_MANIFEST
    got = referrers.classify(data, OCI_MANIFEST, f"sha256-{HEX}.sig", lambda d: d == SUBJECT)
    assert got == referrers.Recognised(
        SUBJECT, referrers.SIGNATURE, "cosign-tag", payloads.SIMPLESIGNING
    )
    attestation = referrers.classify(
        payloads.COSIGN_ATTESTATION_MANIFEST, OCI_MANIFEST, f"sha256-{HEX}.att"
    )
    assert attestation.kind == referrers.ATTESTATION
    assert referrers.classify({}, OCI_MANIFEST, f"sha256-{HEX}.sbom").kind == referrers.SBOM
    # Subject absent: an ordinary tag that happens to be named so.
    assert referrers.classify(data, OCI_MANIFEST, f"sha256-{HEX}.sig", lambda d: False) is None
    for name in (f"sha256-{HEX}.sig2", f"sha256-{HEX[:-1]}.sig", f"sha512-{HEX}.sig", "1.0"):
        assert referrers.classify(data, OCI_MANIFEST, name) is None, name


def test_oci_manifests_with_a_subject_are_referrers_of_the_kind_their_types_say():
    cases = {
        "spdx": (payloads.OCI_SPDX_SBOM, referrers.SBOM, payloads.SPDX),
        "cyclonedx": (payloads.OCI_CYCLONEDX_SBOM, referrers.SBOM, payloads.CYCLONEDX),
        "in-toto": (payloads.OCI_IN_TOTO, referrers.ATTESTATION, payloads.IN_TOTO),
        # No artifactType: the config's media type says it (image-spec's fallback).
        "legacy": (payloads.OCI_LEGACY_SBOM, referrers.SBOM, payloads.SPDX),
    }
    for name, (data, kind, artifact_type) in cases.items():
        got = referrers.classify(data, OCI_MANIFEST, tag="")
        assert got == referrers.Recognised(SUBJECT, kind, "subject", artifact_type), name
    # A subject with an unknown artifact type is still a referrer ("other"); the tag is ignored.
    other = {**payloads.OCI_SPDX_SBOM, "artifactType": "application/vnd.example+type"}
    layerless = {**other, "layers": []}
    assert referrers.classify(layerless, OCI_MANIFEST, "release").kind == referrers.OTHER
    # A plain image is not one, nor is a subject that is no digest.
    assert referrers.classify(json.loads(build_image().manifest), OCI_MANIFEST, "1.0") is None
    bad = {**payloads.OCI_SPDX_SBOM, "subject": {"digest": "sha256:nothex"}}
    assert referrers.classify(bad, OCI_MANIFEST) is None


def test_the_fallback_index_tag_lists_its_referrers():
    got = referrers.classify(payloads.FALLBACK_INDEX, OCI_INDEX, f"sha256-{HEX}")
    assert got == referrers.Recognised(SUBJECT, referrers.INDEX, "fallback-index")
    # Not an index under that name: not the fallback.
    assert (
        referrers.classify(json.loads(build_image().manifest), OCI_MANIFEST, f"sha256-{HEX}")
        is None
    )
    entries = referrers.fallback_entries(payloads.FALLBACK_INDEX)
    assert [(e.digest[:11], e.kind) for e in entries] == [
        ("sha256:a1a1", referrers.SBOM),
        ("sha256:a2a2", referrers.SIGNATURE),
        ("sha256:a3a3", referrers.OTHER),
    ]
    assert entries[1].annotations["org.example.signature.fingerprint"] == "abcd"
    assert referrers.fallback_tag(SUBJECT) == f"sha256-{HEX}"
    assert referrers.cosign_tags(SUBJECT) == [f"sha256-{HEX}.{s}" for s in ("sig", "att", "sbom")]


def test_annotations_come_from_the_manifest_and_its_layers_capped():
    fields = referrers.manifest_fields(payloads.COSIGN_SIGNATURE_MANIFEST)
    assert fields["subject_digest"] == ""
    assert fields["artifact_kind"] == referrers.SIGNATURE
    assert fields["annotations"]["dev.sigstore.cosign/certificate"] == payloads.SPEC_CERTIFICATE
    assert fields["annotations"]["dev.cosignproject.cosign/signature"] == payloads.SPEC_SIGNATURE
    hostile = {
        "annotations": {f"k{i}": "v" * 10_000 for i in range(500)},
        "layers": [{"annotations": {"x": 5}}, "junk", {"annotations": "junk"}],
        "subject": ["not", "a", "descriptor"],
        "artifactType": 7,
    }
    fields = referrers.manifest_fields(hostile)
    assert fields["subject_digest"] == ""
    assert len(fields["annotations"]) == 40
    assert max(len(v) for v in fields["annotations"].values()) == 4000
    for junk in (None, [], "text", {"manifests": "x"}):
        assert referrers.classify(junk, OCI_INDEX, f"sha256-{HEX}.sig2") is None
        assert referrers.fallback_entries(junk) == []


def test_badges_count_each_kind_in_a_fixed_order():
    artifacts = [{"kind": k} for k in ("sbom", "signature", "signature", "index", "attestation")]
    assert referrers.badge_counts(artifacts) == [("signed", 2), ("SBOM", 1), ("attestation", 1)]
    assert referrers.badge_counts([]) == []


# --- The real registry -----------------------------------------------------------------------


def push_signed_repository(reg, repo):
    """Image A (tag 1.0) with a cosign signature tag, an OCI 1.1 SBOM pushed by digest and its
    fallback index tag; image B (tag 2.0), unrelated. Returns the pieces."""
    pusher = reg.pusher()
    image_a, image_b = build_image(), build_image()
    pusher.push_image(repo, "1.0", image_a)
    pusher.push_image(repo, "2.0", image_b)
    signature = build_cosign_signature(image_a.digest, repo)
    push_artifact(pusher, repo, cosign_tag(image_a.digest), signature)
    sbom = build_oci_sbom(image_a)
    push_artifact(pusher, repo, sbom.digest, sbom)
    fallback = build_fallback_index([sbom])
    push_artifact(pusher, repo, fallback_tag(image_a.digest), fallback)
    return {"a": image_a, "b": image_b, "sig": signature, "sbom": sbom, "index": fallback}


def index_repository(repo):
    """Reconcile, then fetch the details of every manifest of `repo` (the details job's work)."""
    wait_for_quiet_notifications()
    result = reconcile.reconcile()
    assert result.errors == []
    client = get_client()
    for digest in set(Tag.objects.filter(repository__name=repo).values_list("digest", flat=True)):
        reconcile.store_details(digest, image_details.fetch_details(client, repo, digest))


@pytest.mark.django_db(transaction=True)
def test_the_registry_keeps_subject_and_artifact_type_and_the_index_marks_the_referrers(registry):
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pushed = push_signed_repository(registry, repo)
    client = get_client()
    # registry 2.8.2 stores OCI 1.1 fields it does not know byte for byte.
    stored = client.get_manifest(repo, pushed["sbom"].digest)
    assert stored.raw == pushed["sbom"].manifest
    assert stored.data["subject"]["digest"] == pushed["a"].digest
    assert stored.data["artifactType"] == payloads.SPDX

    index_repository(repo)

    marks = dict(
        (name, (subject, kind))
        for name, subject, kind in Tag.objects.filter(repository__name=repo).values_list(
            "name", "subject_digest", "referrer_kind"
        )
    )
    a = pushed["a"].digest
    assert marks == {
        "1.0": ("", ""),
        "2.0": ("", ""),
        cosign_tag(a): (a, referrers.SIGNATURE),
        fallback_tag(a): (a, referrers.INDEX),
    }
    assert Repository.objects.get(name=repo).tag_count == 2
    sig_row = Manifest.objects.get(digest=pushed["sig"].digest)
    assert sig_row.artifact_kind == referrers.SIGNATURE
    assert sig_row.annotations["dev.sigstore.cosign/certificate"] == payloads.SPEC_CERTIFICATE
    index_row = Manifest.objects.get(digest=pushed["index"].digest)
    assert [(p["digest"], p["kind"]) for p in index_row.platforms] == [
        (pushed["sbom"].digest, referrers.SBOM)
    ]

    # The registry itself, as deletes ask it: the signature, the fallback index and the SBOM.
    live = LiveRepository.resolve(repo)
    found = referrers.discover(live.refs, a, live.document)
    assert sorted((r.kind, r.tag, r.digest) for r in found) == sorted(
        [
            (referrers.SIGNATURE, cosign_tag(a), pushed["sig"].digest),
            (referrers.INDEX, fallback_tag(a), pushed["index"].digest),
            (referrers.SBOM, "", pushed["sbom"].digest),
        ]
    )
    assert referrers.discover(live.refs, pushed["b"].digest, live.document) == []

    # The subject's last tag goes behind the portal's back: the signature tag is an orphan,
    # an ordinary tag again (it is counted, retention and prune see it).
    registry.pusher().session.delete(f"{registry.url}/v2/{repo}/manifests/{a}", timeout=10)
    index_repository(repo)
    assert Tag.objects.get(repository__name=repo, name=cosign_tag(a)).referrer_kind == ""


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_marks_the_referrer_tags_already_indexed():
    """Migration 0025: cosign's and the fallback index's tags stored before it are marked, the
    tag count leaves them out, and their manifests are read again by the details job."""
    before = [("registry_admin", "0024_directory_identity")]
    after = [("registry_admin", "0025_referrers")]
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    image, stranger = "sha256:" + "1" * 64, "sha256:" + "6" * 64
    now = timezone.now()
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        old = executor.loader.project_state(before).apps
        repo = old.get_model("registry_admin", "Repository").objects.create(
            name="team/upgraded", tag_count=5, is_empty=False
        )
        manifests = old.get_model("registry_admin", "Manifest").objects
        tags = old.get_model("registry_admin", "Tag").objects
        for name, digest, media_type in (
            ("1.0", image, OCI_MANIFEST),
            (f"sha256-{'1' * 64}.sig", "sha256:" + "3" * 64, OCI_MANIFEST),
            (f"sha256-{'1' * 64}", "sha256:" + "4" * 64, OCI_INDEX),
            # Named after a digest the repository does not hold: an ordinary tag.
            (f"sha256-{'2' * 64}.sig", "sha256:" + "5" * 64, OCI_MANIFEST),
            ("2.0", stranger, OCI_MANIFEST),
        ):
            manifest = manifests.create(
                digest=digest, media_type=media_type, details_fetched_at=now
            )
            tags.create(repository=repo, name=name, digest=digest, manifest=manifest)
        MigrationExecutor(connection).migrate(after)
        marks = dict(
            (name, (subject, kind))
            for name, subject, kind in Tag.objects.filter(
                repository__name="team/upgraded"
            ).values_list("name", "subject_digest", "referrer_kind")
        )
        assert marks == {
            "1.0": ("", ""),
            "2.0": ("", ""),
            f"sha256-{'1' * 64}.sig": (image, referrers.SIGNATURE),
            f"sha256-{'1' * 64}": (image, referrers.INDEX),
            f"sha256-{'2' * 64}.sig": ("", ""),
        }
        assert Repository.objects.get(name="team/upgraded").tag_count == 3
        refetch = set(
            Manifest.objects.filter(details_fetched_at__isnull=True).values_list(
                "digest", flat=True
            )
        )
        assert refetch == {"sha256:" + d * 64 for d in "345"}
    finally:
        MigrationExecutor(connection).migrate(latest)


@pytest.mark.django_db(transaction=True)
def test_notifications_alone_mark_cosign_and_fallback_tags(registry):
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pushed = push_signed_repository(registry, repo)
    wait_for_quiet_notifications()
    a = pushed["a"].digest

    def marked():
        return dict(Tag.objects.filter(repository__name=repo).values_list("name", "referrer_kind"))

    wait_for(lambda: len(marked()) == 4, message="the four pushed tags indexed")
    assert marked() == {
        "1.0": "",
        "2.0": "",
        cosign_tag(a): referrers.SIGNATURE,
        fallback_tag(a): referrers.INDEX,
    }
    assert Repository.objects.get(name=repo).tag_count == 2
