"""A quota enforced by the token server on the real registry 2.8.2, with skopeo as the client
(the issue's "verified when"): pushes under the limit land, the push after it is refused, other
namespaces and pulls go on, and deleting plus Oyster's online collection lets pushes in again."""

import os

import pytest

from registry_admin import access, deletes, htpasswd, online_gc, quotas, usage
from registry_admin.models import AuditEvent, PortalAction, Quota

from . import harness
from .images import build_image, make_layer, wait_for, write_oci_layout
from .test_online_gc import age_storage
from .test_token_registry import PASSWORD, token_registry  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db(transaction=True)

IMAGE_BYTES = 600_000


def push(reg, tmp_path, repository, user="dev"):
    image = build_image(layers=[make_layer({"data.bin": os.urandom(IMAGE_BYTES)})])
    layout = tmp_path / f"layout-{repository.replace('/', '_')}"
    write_oci_layout(layout, image, "v1")
    done = harness.Skopeo(harness.SKOPEO_BINARY, reg.url).copy_to_registry(
        layout, "v1", repository, user, PASSWORD
    )
    return done, image


def level(pattern="team/*"):
    return Quota.objects.get(pattern=pattern).level


def test_a_full_namespace_refuses_pushes_until_space_comes_back(
    token_registry,  # noqa: F811
    tmp_path,
    settings,
    monkeypatch,
):
    harness.require_binary(harness.SKOPEO_BINARY, "apt-get install skopeo")
    reg = token_registry
    settings.RECYCLE_BIN_DAYS = 0
    settings.GC_SETTLE_SECONDS = 0.3
    settings.REGISTRY_BLOB_CACHE = "none"
    monkeypatch.setattr(quotas, "CACHE_SECONDS", 0)
    htpasswd.add_user("dev", PASSWORD, rounds=4)
    access.grant("test", "dev", "team/*", "pull,push,delete")
    access.grant("test", "dev", "other/*", "pull,push")

    quotas.set_quota("test", "team/*", "1MB", warn_percent=50)
    usage.run_scan()
    quota = Quota.objects.get()
    assert quota.scanned_bytes == 0 and not quota.is_partial

    first, _ = push(reg, tmp_path, "team/a")
    assert first.returncode == 0, first.stderr
    wait_for(lambda: Quota.objects.get().pushed_bytes > IMAGE_BYTES, message="first push counted")
    assert level() == Quota.Level.WARNING  # 600 KB of 1 MB: over 50 %
    # Under the limit when it starts: allowed, and it lands whole.
    second, _ = push(reg, tmp_path, "team/b")
    assert second.returncode == 0, second.stderr
    wait_for(lambda: level() == Quota.Level.EXCEEDED, message="quota exceeded")

    third, _ = push(reg, tmp_path, "team/c")
    assert third.returncode != 0
    said = third.stderr.lower()
    assert "denied" in said or "unauthorized" in said or "authentication required" in said, said
    refused = AuditEvent.objects.filter(action=PortalAction.QUOTA_REFUSED)
    assert refused.count() == 1 and "quota team/* exceeded" in refused.get().raw
    elsewhere, _ = push(reg, tmp_path, "other/x")
    assert elsewhere.returncode == 0, elsewhere.stderr
    pulled = harness.Skopeo(harness.SKOPEO_BINARY, reg.url).inspect("team/a", "v1", "dev", PASSWORD)
    assert pulled.returncode == 0, pulled.stderr

    # After a scan the figure is storage's own: the two images, each blob once.
    usage.run_scan()
    snapshot = usage.latest_snapshot()
    covered = snapshot.repositories.filter(name__startswith="team/")
    assert Quota.objects.get().usage_bytes == sum(r.referenced_bytes for r in covered)
    assert Quota.objects.get().level == Quota.Level.EXCEEDED

    # Deleting is allowed (the service account's delete path), and collecting frees the bytes.
    deletes.delete_tag("test", "team/a", "v1")
    age_storage(reg)
    collected = online_gc.collect_online("test", dry_run=False)
    assert collected.trashed_bytes > IMAGE_BYTES
    quota = Quota.objects.get()
    assert quota.freed_bytes > IMAGE_BYTES and quota.level != Quota.Level.EXCEEDED
    again, _ = push(reg, tmp_path, "team/c")
    assert again.returncode == 0, again.stderr
