"""Acceptance on the real registry: its notifications reach the live portal and become the trail.

The session registry posts to this test server's /api/registry/events; each test uses its own
repository names and registry user and waits for its own events.
"""

import uuid

import pytest
from django.urls import reverse

from registry_admin import htpasswd
from registry_admin.models import AuditEvent, RejectedDelivery

from .images import RegistryPusher, build_image, sha256_digest, wait_for, write_oci_layout

pytestmark = pytest.mark.django_db(transaction=True)


def events_of(repository, **filters):
    return list(
        AuditEvent.objects.filter(repository=repository, **filters).order_by("timestamp", "id")
    )


def test_push_pull_and_delete_by_a_created_user_are_in_the_trail(
    registry, skopeo, tmp_path, admin_client
):
    user, password = f"audit-{uuid.uuid4().hex[:8]}", "audit-password-0123456789"
    htpasswd.add_user(user, password, rounds=4)
    repo = f"audit-{uuid.uuid4().hex[:8]}/app"
    image = build_image()
    write_oci_layout(tmp_path / "layout", image, "v1")

    pushed = skopeo.copy_to_registry(tmp_path / "layout", "v1", repo, user, password)
    assert pushed.returncode == 0, pushed.stderr
    [push] = wait_for(
        lambda: events_of(repo, action="push", kind="manifest"), message="the manifest push event"
    )
    assert (push.actor, push.tag, push.digest) == (user, "v1", image.digest)
    assert push.request_useragent.startswith("skopeo/")
    assert push.media_type == image.media_type
    # The layer and config uploads arrived as blob-level events, hidden by default.
    wait_for(lambda: len(events_of(repo, action="push", kind="blob")) == 2, message="blob pushes")

    inspected = skopeo.inspect(repo, "v1", user, password)
    assert inspected.returncode == 0, inspected.stderr
    pull = wait_for(
        lambda: events_of(repo, action="pull", kind="manifest", is_head=False, tag="v1"),
        message="the manifest pull event",
    )[0]
    assert pull.actor == user and pull.digest == image.digest

    # A second tag on the same digest; a DELETE by digest removes both.
    pusher = RegistryPusher(registry.url, user, password)
    pusher.put_manifest(repo, "v2", image.manifest, image.media_type)
    response = pusher.session.delete(
        f"{registry.url}/v2/{repo}/manifests/{image.digest}", timeout=10
    )
    assert response.status_code == 202
    deletes = wait_for(
        lambda: (lambda found: found if len(found) == 3 else None)(
            events_of(repo, action="delete")
        ),
        message="the digest delete and its two tag deletes",
    )
    assert len({d.request_id for d in deletes}) == 1 and deletes[0].request_id
    assert sorted((d.kind, d.tag, d.digest) for d in deletes) == [
        ("manifest", "", image.digest),
        ("tag", "v1", ""),
        ("tag", "v2", ""),
    ]
    assert {d.actor for d in deletes} == {user}
    assert not RejectedDelivery.objects.exists()

    # The page shows them for this repository; its detail links the deletes of the request.
    page = admin_client.get(reverse("registry_admin:audit"), {"repository": repo, "actor": user})
    shown = [(e.action, e.kind) for e in page.context["page"]["events"]]
    assert ("push", "manifest") in shown and ("pull", "manifest") in shown
    assert shown.count(("delete", "tag")) == 2
    assert ("push", "blob") not in shown
    digest_delete = next(d for d in deletes if d.kind == "manifest")
    detail = admin_client.get(reverse("registry_admin:audit-event", args=[digest_delete.pk]))
    assert sorted(e.tag for e in detail.context["related"]) == ["v1", "v2"]


def test_a_mount_is_recorded_with_its_origin(registry):
    source, target = (f"audit-{uuid.uuid4().hex[:8]}/{name}" for name in ("from", "to"))
    image = build_image()
    pusher = registry.pusher()
    pusher.push_image(source, "v1", image)
    layer_digest = sha256_digest(image.layers[0])
    mounted = pusher.session.post(
        f"{registry.url}/v2/{target}/blobs/uploads/",
        params={"mount": layer_digest, "from": source},
        timeout=10,
    )
    assert mounted.status_code == 201
    [mount] = wait_for(lambda: events_of(target, action="mount"), message="the mount event")
    assert (mount.from_repository, mount.digest, mount.kind) == (source, layer_digest, "blob")
