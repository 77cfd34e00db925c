"""Pull counters on the real registry: skopeo pulls count, a HEAD and the portal's own
reconcile do not, a multi-platform pull counts once, the unused report's bytes equal the storage
scan's, and a rebuild from the audit log equals the live counters."""

import json
import subprocess
import uuid
from io import StringIO

import pytest
import requests
from django.core.management import call_command

from registry_admin import htpasswd, pulls, reconcile, storage, unused, usage
from registry_admin.models import AuditEvent, PullCount, RepositoryStorage

from .harness import SKOPEO_BINARY, wait_for_quiet_notifications
from .images import ALL_MANIFEST_TYPES, build_image, build_index, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pull-password-0123456789"


def skopeo_pull(registry, repo, tag, user, destination, all_platforms=False):
    host = registry.url.split("://", 1)[1]
    return subprocess.run(
        [
            SKOPEO_BINARY,
            "--insecure-policy",
            "copy",
            *(["--all"] if all_platforms else []),
            "--src-creds",
            f"{user}:{PASSWORD}",
            "--src-tls-verify=false",
            f"docker://{host}/{repo}:{tag}",
            f"oci:{destination}:{tag}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def manifest_events(repo, **filters):
    return AuditEvent.objects.filter(repository=repo, action="pull", kind="manifest", **filters)


def tag_pulls(repo, tag):
    return sum(
        PullCount.objects.filter(scope="t", repository=repo, ref=tag).values_list(
            "pulls", flat=True
        )
    )


def test_real_pulls_count_and_checks_and_the_portal_do_not(registry, tmp_path, skopeo):
    user = f"puller-{uuid.uuid4().hex[:8]}"
    htpasswd.add_user(user, PASSWORD, rounds=4)
    repo = f"pulls-{uuid.uuid4().hex[:8]}/app"
    pusher = registry.pusher()
    single = build_image(labels={"n": "single"})
    other = build_image(labels={"n": "head-only"})
    multi = build_index()
    pusher.push_image(repo, "pulled", single)
    pusher.push_image(repo, "headonly", other)
    pusher.push_image(repo, "multi", multi)
    wait_for_quiet_notifications()

    # A real pull of one tag, with skopeo (GET of the manifest by tag, then its blobs).
    pulled = skopeo_pull(registry, repo, "pulled", user, tmp_path / "one")
    assert pulled.returncode == 0, pulled.stderr
    # A check of another: HEAD of the manifest by tag.
    head = requests.head(
        f"{registry.url}/v2/{repo}/manifests/headonly",
        auth=(user, PASSWORD),
        headers={"Accept": ALL_MANIFEST_TYPES},
        timeout=10,
    )
    assert head.status_code == 200
    # Every platform of the multi-platform tag: the index, then each child by digest.
    every = skopeo_pull(registry, repo, "multi", user, tmp_path / "multi", all_platforms=True)
    assert every.returncode == 0, every.stderr
    # The portal's reconcile reads every tag (HEAD) and the manifests it has not read (GET).
    reconcile.reconcile()
    wait_for(
        lambda: manifest_events(repo, is_head=True, tag="headonly", actor=user).exists(),
        message="the HEAD's pull event",
    )
    wait_for(
        lambda: manifest_events(repo, is_head=False, actor=registry_settings_user()).exists(),
        message="the reconcile's manifest reads",
    )
    child_digests = {child.digest for child in multi.children}
    wait_for(
        lambda: (
            set(
                manifest_events(repo, actor=user, digest__in=child_digests).values_list(
                    "digest", flat=True
                )
            )
            == child_digests
        ),
        message="the children's pull events",
    )
    wait_for_quiet_notifications()

    assert tag_pulls(repo, "pulled") == 1
    assert tag_pulls(repo, "headonly") == 0
    assert tag_pulls(repo, "multi") == 1
    for child in child_digests:
        assert not PullCount.objects.filter(repository=repo, ref=child).exists()
    # The skopeo user is the only puller; the service account's reads counted nowhere.
    assert set(PullCount.objects.filter(repository=repo).values_list("actor", flat=True)) == {user}
    assert (
        sum(PullCount.objects.filter(scope="r", repository=repo).values_list("pulls", flat=True))
        == 2
    )
    # The audit log's default view leaves the portal's reads out; `all` keeps them.
    own = manifest_events(repo, actor=registry_settings_user(), is_head=False)
    assert own.exists()
    assert not AuditEvent.objects.manifest_level().filter(pk__in=own.values("pk")).exists()

    out = StringIO()
    call_command("unused", "--days", "0", "--json", stdout=out)
    rows = {t["tag"]: t for t in json.loads(out.getvalue())["tags"] if t["repository"] == repo}
    assert rows["pulled"]["last_pulled"] is not None
    assert rows["headonly"]["last_pulled"] is None
    assert rows["multi"]["last_pulled"] is not None

    # Bytes: the report's repository figure is the storage scan's unique bytes.
    backend, result = storage.scan_storage()
    snapshot = usage.record_snapshot(result, backend)
    scanned = RepositoryStorage.objects.get(snapshot=snapshot, name=repo).unique_bytes
    assert scanned > 0
    report = unused.unused_report(0)
    [row] = [r for r in report.repositories if r.name == repo]
    assert row.unique_bytes == scanned

    # The counters rebuilt from the audit log equal the live ones.
    live = pulls.snapshot_counters()
    call_command("rebuild_pull_stats", stdout=StringIO())
    assert pulls.snapshot_counters() == live


def registry_settings_user():
    from django.conf import settings

    return settings.REGISTRY_USERNAME
