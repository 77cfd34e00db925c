"""The index follows notifications: real 2.8.2 payloads through the webhook, and a live push."""

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from registry_admin import index, worker
from registry_admin.models import AuditEvent, Manifest, Repository, Run, Tag

from .factories import make_envelope, make_registry_event
from .harness import wait_for_quiet_notifications
from .images import build_image, build_index, wait_for

PAYLOADS = Path(__file__).parent / "payloads"
URL = "/api/registry/events"
TOKEN = "test-notifications-token-0123456789"
V1 = "application/vnd.docker.distribution.events.v1+json"
OCI_DIGEST = "sha256:4027e11c941ab3690802e542baf3b491f12f993e3a013ca5f9068e9da998e78e"


@pytest.fixture
def deliver(settings):
    settings.NOTIFICATIONS_TOKEN = TOKEN
    client = Client()

    def post(body):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        response = client.post(
            URL, data=body, content_type=V1, HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
        )
        assert response.status_code == 200, response.content
        return response

    return post


def _payload(name):
    return (PAYLOADS / name).read_bytes()


@pytest.mark.django_db
def test_a_tagged_manifest_push_upserts_the_tag_and_requests_details(deliver):
    deliver(_payload("push-manifest-oci.json"))
    tag = Tag.objects.select_related("repository", "manifest").get()
    assert (tag.repository.name, tag.name, tag.digest) == ("alpha/app", "v1", OCI_DIGEST)
    # The captured event is older than EVENT_TIME_TOLERANCE: no older than that before its
    # receipt (test_forged_times.py); a recent event keeps its own time.
    received = AuditEvent.objects.get().received_at
    assert tag.pushed_at == received - index.EVENT_TIME_TOLERANCE
    assert tag.manifest.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert tag.manifest.manifest_size == 578
    assert tag.manifest.details_fetched_at is None
    repository = tag.repository
    assert (repository.tag_count, repository.is_empty, repository.last_push_at) == (
        1,
        False,
        tag.pushed_at,
    )
    assert Run.objects.filter(kind="details", state=Run.State.REQUESTED).count() == 1
    # A redelivery changes nothing and asks for nothing more.
    deliver(_payload("push-manifest-oci.json"))
    assert Tag.objects.count() == 1
    assert Run.objects.filter(kind="details").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    [
        "push-blob.json",
        "mount.json",
        "pull-manifest.json",
        "pull-manifest-head.json",
        "pull-blob.json",
        "pull-index.json",
        "push-index-child-untagged.json",
        "delete-blob.json",
    ],
)
def test_blobs_mounts_pulls_and_untagged_pushes_leave_the_index_alone(deliver, name):
    deliver(_payload(name))
    assert not Tag.objects.exists()
    assert not Repository.objects.exists()
    assert not Run.objects.filter(kind="details").exists()


@pytest.mark.django_db
def test_each_push_payload_kind_lands_in_the_index(deliver):
    for name in (
        "push-manifest-oci.json",
        "push-manifest-docker-v2.json",
        "push-index-oci.json",
        "push-manifest-list-docker.json",
        "push-manifest-put-by-curl.json",
    ):
        deliver(_payload(name))
    for name in (
        "push-manifest-docker-v2.json",
        "push-index-oci.json",
        "push-manifest-list-docker.json",
    ):
        target = json.loads(_payload(name))["events"][0]["target"]
        tag = Tag.objects.get(repository__name=target["repository"], name=target["tag"])
        assert tag.digest == target["digest"]
        assert tag.manifest.media_type == target["mediaType"]


@pytest.mark.django_db
def test_a_delete_by_digest_sequence_removes_the_digests_tags(deliver):
    sequence = json.loads(_payload("delete-by-digest-sequence.json"))
    digest = sequence[0]["events"][0]["target"]["digest"]
    tags = [envelope["events"][0]["target"]["tag"] for envelope in sequence[1:]]
    for tag in [*tags, "survivor"]:
        deliver(
            make_envelope(
                make_registry_event(
                    repository="alpha/app",
                    tag=tag,
                    digest=digest if tag != "survivor" else "sha256:" + "5" * 64,
                    timestamp="2026-11-27T17:00:00Z",
                )
            )
        )
    assert Repository.objects.get(name="alpha/app").tag_count == len(tags) + 1
    deliver(json.dumps(sequence[0]).encode())
    assert list(Tag.objects.values_list("name", flat=True)) == ["survivor"]
    for envelope in sequence[1:]:  # the per-tag events that follow are no-ops now
        deliver(json.dumps(envelope).encode())
    repository = Repository.objects.get(name="alpha/app")
    assert (repository.tag_count, repository.is_empty) == (1, False)


@pytest.mark.django_db
def test_a_tag_delete_event_removes_the_tag_and_empties_the_repository(deliver):
    deliver(make_envelope(make_registry_event(repository="alpha/app", tag="v2-alias2")))
    deliver(_payload("delete-tag.json"))
    target = json.loads(_payload("delete-tag.json"))["events"][0]["target"]
    assert target == {"repository": "alpha/app", "tag": "v2-alias2"}
    assert not Tag.objects.exists()
    assert Repository.objects.get(name="alpha/app").is_empty


@pytest.mark.django_db
def test_events_out_of_order_do_not_undo_a_newer_push(deliver):
    now = timezone.now()
    newer = make_registry_event(tag="v1", digest="sha256:" + "2" * 64)
    newer["timestamp"] = (now - timedelta(minutes=10)).isoformat()
    older = make_registry_event(tag="v1", digest="sha256:" + "1" * 64)
    older["timestamp"] = (now - timedelta(minutes=30)).isoformat()
    old_delete = make_registry_event(action="delete", tag="v1")
    old_delete["target"] = {"repository": "team/app", "tag": "v1"}
    old_delete["timestamp"] = (now - timedelta(minutes=20)).isoformat()
    deliver(make_envelope(newer))
    deliver(make_envelope(older))
    deliver(make_envelope(old_delete))
    assert Tag.objects.get(name="v1").digest == "sha256:" + "2" * 64


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("repository", "tag", "digest"),
    [
        ("../etc", "v1", "sha256:" + "a" * 64),
        ("Team/App", "v1", "sha256:" + "a" * 64),
        ("team/app", "<script>alert(1)</script>", "sha256:" + "a" * 64),
        ("team/app", "v1\x00", "sha256:" + "a" * 64),
        ("team/app", "v1", "sha256:zz' OR 1=1 --"),
        ("team/app", "é", "sha256:" + "a" * 64),
        ("a" * 300, "v1", "sha256:" + "a" * 64),
        ("team/app", "t" * 200, "sha256:" + "a" * 64),
    ],
)
def test_hostile_names_in_events_are_stored_for_audit_but_skipped_by_the_index(
    deliver, repository, tag, digest
):
    event = make_registry_event(repository=repository, tag=tag, digest=digest)
    response = deliver(make_envelope(event, make_registry_event(repository="ok/app", tag="v1")))
    assert response.json()["stored"] >= 1
    assert list(Tag.objects.values_list("repository__name", "name")) == [("ok/app", "v1")]


@pytest.mark.django_db(transaction=True)
def test_a_live_push_appears_without_a_reconcile_and_details_follow(registry, admin_client):
    """The registry notifies the live server; the tag row appears with no reconcile run."""
    name = f"live-{uuid.uuid4().hex[:8]}/app"
    image, multi = build_image(), build_index()
    registry.pusher().push_image(name, "1.2.3", image)
    registry.pusher().push_image(name, "multi", multi)
    tag = wait_for(
        lambda: Tag.objects.filter(repository__name=name, name="multi").first(),
        timeout=10,
        message="the pushed tag in the index",
    )
    assert tag.digest == multi.digest
    assert Tag.objects.get(repository__name=name, name="1.2.3").digest == image.digest
    assert not Run.objects.filter(kind="sync").exists()
    # Index children are pushed without a tag: they are not tags of the repository.
    assert Repository.objects.get(name=name).tag_count == 2
    page = admin_client.get(f"/repositories/{name}/")
    assert page.status_code == 200
    assert image.digest[:19].encode() in page.content

    wait_for_quiet_notifications()
    assert Run.objects.filter(kind="details", state=Run.State.REQUESTED).exists()
    worker.tick(["details"])
    manifest = Manifest.objects.get(digest=multi.digest)
    assert manifest.details_fetched_at is not None
    assert manifest.size == sum(child.size for child in multi.children)
    assert [p["architecture"] for p in manifest.platforms] == ["amd64", "arm64"]
    assert Repository.objects.get(name=name).total_size == image.size + manifest.size


@pytest.mark.django_db
def test_a_push_while_a_details_run_is_running_requests_another(deliver):
    Run.objects.create(kind="details", state=Run.State.RUNNING)
    deliver(_payload("push-manifest-oci.json"))
    assert Run.objects.filter(kind="details", state=Run.State.REQUESTED).count() == 1
    deliver(_payload("push-manifest-docker-v2.json"))
    assert Run.objects.filter(kind="details", state=Run.State.REQUESTED).count() == 1


@pytest.mark.django_db
def test_the_push_of_a_placeholder_the_portal_recorded_does_not_bring_the_deleted_tag_back(
    deliver,
):
    """Deleting one tag re-points it at a placeholder the portal records first; the registry's
    notification of that push arrives after the tag left the index and must not restore it (a
    page rendered before the placeholder's delete event would show the deleted tag)."""
    from registry_admin.models import PortalPlaceholder

    PortalPlaceholder.objects.create(
        repository="alpha/app", digest=OCI_DIGEST, tag="v1", replaces="sha256:" + "1" * 64
    )
    deliver(_payload("push-manifest-oci.json"))
    assert not Tag.objects.filter(repository__name="alpha/app", name="v1").exists()
    # The same push in another repository, where nothing was recorded, is indexed as usual.
    other = json.loads(_payload("push-manifest-oci.json"))
    for event in other["events"]:
        event["id"] = str(uuid.uuid4())
        event["target"]["repository"] = "beta/app"
    deliver(other)
    assert Tag.objects.filter(repository__name="beta/app", name="v1", digest=OCI_DIGEST).exists()
