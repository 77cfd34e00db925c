"""The reconcile (`sync` job, `manage.py sync_registry`) and the details job, on the real registry."""

import uuid
from datetime import timedelta
from io import StringIO

import pytest
import requests
from django.core.management import CommandError, call_command
from django.utils import timezone

from registry_admin import image_details, index, reconcile, worker
from registry_admin.models import Manifest, Repository, Run, Tag
from registry_admin.registry import RegistryUnreachable

from .harness import PUSH_PASSWORD, PUSH_USER, free_port, wait_for_quiet_notifications
from .images import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, build_image, build_index

pytestmark = pytest.mark.django_db(transaction=True)


def _unique(prefix="sync"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _delete_digest(registry, repository, digest):
    response = requests.delete(
        f"{registry.url}/v2/{repository}/manifests/{digest}",
        auth=(PUSH_USER, PUSH_PASSWORD),
        timeout=5,
    )
    assert response.status_code == 202, response.text


def test_reconcile_reads_all_four_manifest_types(registry):
    base = _unique()
    pusher = registry.pusher()
    oci = build_image(created="2023-05-06T07:08:09Z", labels={"team": "<b>ops</b>"})
    docker = build_image(docker=True, created="2022-01-01T00:00:00.123456789Z")
    oci_index = build_index()
    docker_list = build_index(
        docker=True, platforms=(("linux", "amd64", None), ("linux", "arm", "v7"))
    )
    pushed = {
        f"{base}/oci": (oci, OCI_MANIFEST),
        f"{base}/docker": (docker, DOCKER_MANIFEST),
        f"{base}/index": (oci_index, OCI_INDEX),
        f"{base}/list": (docker_list, DOCKER_LIST),
    }
    for name, (image, _) in pushed.items():
        pusher.push_image(name, "v1.0", image)

    wait_for_quiet_notifications()
    result = reconcile.reconcile()

    assert result.errors == []
    for name, (image, media_type) in pushed.items():
        tag = Tag.objects.select_related("manifest", "repository").get(
            repository__name=name, name="v1.0"
        )
        assert tag.digest == pusher.head_manifest(name, "v1.0") == image.digest
        manifest = tag.manifest
        assert manifest.media_type == media_type
        assert manifest.details_fetched_at is not None
        assert manifest.manifest_size == len(image.manifest)
        assert tag.repository.tag_count == 1
        assert not tag.repository.is_empty
    oci_row = Manifest.objects.get(digest=oci.digest)
    assert oci_row.size == oci.size == tag_size(oci)
    assert oci_row.created.isoformat() == "2023-05-06T07:08:09+00:00"
    assert oci_row.labels == {"team": "<b>ops</b>"}
    assert oci_row.layer_count == 1
    assert oci_row.layers[0]["size"] == len(oci.layers[0])
    assert oci_row.platforms == [{"os": "linux", "architecture": "amd64"}]
    assert oci_row.config["cmd"] == ["/bin/sh"]
    assert oci_row.config["working_dir"] == "/srv"
    assert oci_row.config["exposed_ports"] == ["8080/tcp"]
    assert oci_row.config["history"][0]["created_by"].startswith("/bin/sh -c")
    docker_row = Manifest.objects.get(digest=docker.digest)
    assert docker_row.created.year == 2022 and docker_row.size == docker.size
    index_row = Manifest.objects.get(digest=oci_index.digest)
    assert index_row.is_index
    assert index_row.size == sum(child.size for child in oci_index.children)
    assert [(p["os"], p["architecture"], p["variant"]) for p in index_row.platforms] == [
        ("linux", "amd64", ""),
        ("linux", "arm64", "v8"),
    ]
    assert [p["digest"] for p in index_row.platforms] == [c.digest for c in oci_index.children]
    assert [p["size"] for p in index_row.platforms] == [c.size for c in oci_index.children]
    list_row = Manifest.objects.get(digest=docker_list.digest)
    assert [(p["architecture"], p["variant"]) for p in list_row.platforms] == [
        ("amd64", ""),
        ("arm", "v7"),
    ]
    assert Repository.objects.get(name=f"{base}/index").total_size == index_row.size


def tag_size(image):
    return len(image.config) + sum(len(layer) for layer in image.layers)


def test_reconcile_is_idempotent_and_fetches_details_only_for_new_digests(registry):
    base = _unique()
    pusher = registry.pusher()
    shared = build_image()
    for number in range(3):
        for tag in ("latest", "1.0", "1.0.1"):
            pusher.push_image(f"{base}/r{number}", tag, shared)
    wait_for_quiet_notifications()
    first = reconcile.reconcile(concurrency=4)
    assert first.errors == []
    # One image under nine tags: read once.
    assert Manifest.objects.get(digest=shared.digest).details_fetched_at is not None
    before = list(Tag.objects.order_by("pk").values_list("pk", "digest", "pushed_at", "updated_at"))
    second = reconcile.reconcile(concurrency=4)
    assert (
        second.details_fetched,
        second.tags_added,
        second.tags_changed,
        second.tags_removed,
    ) == (
        0,
        0,
        0,
        0,
    )
    assert second.repositories_removed == 0
    assert second.heads == second.tags
    after = list(Tag.objects.order_by("pk").values_list("pk", "digest", "pushed_at", "updated_at"))
    assert after == before


def test_sequential_and_concurrent_reconciles_build_the_same_index(registry):
    base = _unique()
    pusher = registry.pusher()
    for number in range(4):
        pusher.push_image(f"{base}/r{number}", "v1", build_image())
        pusher.push_image(f"{base}/r{number}", "v2", build_index())

    def snapshot():
        return sorted(
            Tag.objects.filter(repository__name__startswith=base).values_list(
                "repository__name", "name", "digest", "manifest__size"
            )
        )

    wait_for_quiet_notifications()
    reconcile.reconcile(concurrency=1)
    sequential = snapshot()
    Repository.objects.filter(name__startswith=base).delete()
    Manifest.objects.all().delete()
    reconcile.reconcile(concurrency=8)
    assert snapshot() == sequential
    assert len(sequential) == 8 and all(size for *_, size in sequential)


def test_tags_removed_behind_the_portals_back_disappear_and_empty_repositories_are_marked(
    registry, index_updates_off
):
    # Notifications lost (the registry restarted with events queued): only the reconcile sees.
    name = _unique() + "/app"
    pusher = registry.pusher()
    one, two = build_image(), build_image()
    pusher.push_image(name, "keep", one)
    pusher.push_image(name, "drop", two)
    pusher.push_image(name, "drop-too", two)
    wait_for_quiet_notifications()
    reconcile.reconcile()
    assert Repository.objects.get(name=name).tag_count == 3

    _delete_digest(registry, name, two.digest)
    wait_for_quiet_notifications()
    assert Repository.objects.get(name=name).tag_count == 3
    result = reconcile.reconcile()
    assert result.tags_removed >= 2
    assert list(Tag.objects.filter(repository__name=name).values_list("name", flat=True)) == [
        "keep"
    ]

    _delete_digest(registry, name, one.digest)
    wait_for_quiet_notifications()
    reconcile.reconcile()
    repository = Repository.objects.get(name=name)
    assert (repository.is_empty, repository.tag_count, repository.total_size) == (True, 0, 0)


def test_vanished_repositories_go_but_ones_created_during_the_reconcile_stay(registry):
    ghost = Repository.objects.create(name=_unique("ghost"))
    Repository.objects.filter(pk=ghost.pk).update(first_seen_at=timezone.now() - timedelta(days=1))
    orphan = Manifest.objects.create(digest="sha256:" + uuid.uuid4().hex * 2)
    Manifest.objects.filter(pk=orphan.pk).update(first_seen_at=timezone.now() - timedelta(days=1))
    fresh_name = _unique("fresh")
    # Deleted from the registry before the catalog was read, pushed again before the removal.
    returning = Repository.objects.create(name=_unique("returning"))
    Repository.objects.filter(pk=returning.pk).update(
        first_seen_at=timezone.now() - timedelta(days=1)
    )

    original = reconcile._Reconcile._remove_vanished

    def notification_arrives_meanwhile(self, names, started):
        index.upsert_tag(fresh_name, "v1", "sha256:" + "f" * 64, timezone.now())
        index.upsert_tag(returning.name, "v2", "sha256:" + "e" * 64, timezone.now())
        return original(self, names, started)

    reconcile._Reconcile._remove_vanished = notification_arrives_meanwhile
    try:
        result = reconcile.reconcile()
    finally:
        reconcile._Reconcile._remove_vanished = original
    assert result.repositories_removed >= 1
    assert not Repository.objects.filter(pk=ghost.pk).exists()
    assert not Manifest.objects.filter(pk=orphan.pk).exists()
    assert Tag.objects.filter(repository__name=fresh_name, name="v1").exists()
    assert Tag.objects.filter(repository=returning, name="v2").exists()


def test_a_tag_moved_by_a_notification_after_listing_is_not_undone(registry):
    name = _unique() + "/app"
    old, new = build_image(), build_image()
    registry.pusher().push_image(name, "v1", old)
    wait_for_quiet_notifications()
    listed_at = timezone.now()
    index.upsert_tag(name, "v1", new.digest, timezone.now())
    found = {"v1": reconcile.registry.ManifestRef(old.digest, OCI_MANIFEST, len(old.manifest))}
    counts = reconcile.apply_repository(name, found, listed_at)
    assert (counts["added"], counts["changed"], counts["removed"]) == (0, 0, 0)
    assert Tag.objects.get(repository__name=name, name="v1").digest == new.digest


def test_unreachable_registry_fails_the_run_and_keeps_the_index(settings):
    index.upsert_tag("kept/app", "v1", "sha256:" + "a" * 64, timezone.now())
    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnreachable):
        reconcile.reconcile()
    run = worker.run_now("sync")
    assert run.state == Run.State.FAILED
    assert "unreachable" in run.error
    assert Tag.objects.filter(repository__name="kept/app").exists()
    with pytest.raises(CommandError, match="unreachable"):
        call_command("sync_registry")


def test_sync_registry_command_and_worker_run_report_progress(registry):
    name = _unique() + "/app"
    registry.pusher().push_image(name, "v1", build_image())
    wait_for_quiet_notifications()
    out = StringIO()
    call_command("sync_registry", "--concurrency", "2", stdout=out)
    assert "Reconciled" in out.getvalue()
    assert Tag.objects.filter(repository__name=name).exists()
    run = Run.objects.filter(kind="sync").latest("requested_at")
    assert run.state == Run.State.DONE
    assert run.total == run.done == run.result["repositories"]
    assert run.requested_by == "manage.py sync_registry"

    requested = worker.request_run("sync")
    executed = worker.tick(["sync"])
    assert [r.pk for r in executed] == [requested.pk]
    assert executed[0].state == Run.State.DONE


@pytest.mark.parametrize("value", ["0", "65", "-1"])
def test_sync_registry_rejects_bad_concurrency(value):
    with pytest.raises(CommandError, match="between 1 and 64"):
        call_command("sync_registry", "--concurrency", value)


def test_sync_registry_refuses_while_another_runs(registry):
    assert worker.claim_lease("sync", owner="someone-else")
    try:
        with pytest.raises(CommandError, match="already running"):
            call_command("sync_registry")
    finally:
        worker.release_lease("sync")


def test_details_job_fills_pending_digests_and_records_missing_ones(registry):
    name = _unique() + "/app"
    image = build_image()
    registry.pusher().push_image(name, "v1", image)
    wait_for_quiet_notifications()
    index.upsert_tag(name, "v1", image.digest, timezone.now())
    index.upsert_tag(name, "ghost", "sha256:" + "e" * 64, timezone.now())
    result = reconcile.details_job(worker.request_run("details"))
    assert result["fetched"] >= 1
    manifest = Manifest.objects.get(digest=image.digest)
    assert manifest.size == image.size and manifest.details_fetched_at
    assert Repository.objects.get(name=name).total_size == image.size
    ghost = Manifest.objects.get(digest="sha256:" + "e" * 64)
    assert ghost.details_fetched_at is None
    assert "no manifest" in ghost.details_error


@pytest.mark.parametrize(
    "manifest",
    [
        {"schemaVersion": 2, "layers": 5, "config": "x"},
        {"schemaVersion": 2, "layers": ["a", None, {"digest": 1, "size": "big"}], "config": {}},
        {"schemaVersion": 2, "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json"}},
        {"schemaVersion": 1, "fsLayers": "x", "history": "y"},
        {"schemaVersion": 1, "fsLayers": [{"blobSum": "sha256:" + "a" * 64}], "history": [{}]},
        {"schemaVersion": 1, "fsLayers": [], "history": [{"v1Compatibility": "{not json"}]},
    ],
)
def test_odd_manifests_give_partial_details_not_errors(manifest):
    """Artifacts and malformed documents: no registry call (no image config), no exception."""
    document = reconcile.registry.ManifestDocument(
        digest="sha256:" + "d" * 64, media_type="application/x-odd", raw=b"{}", data=manifest
    )
    fields = image_details.details_from_document(
        client=None, repository="odd/app", document=document
    )
    assert fields["details_fetched_at"] is not None
    assert isinstance(fields["layers"], list)


def test_odd_configs_are_summarized_safely():
    summary = image_details.summarize_config(
        {
            "created": "not a date",
            "history": {"a": 1},
            "config": {
                "Env": "PATH=/bin",
                "Cmd": None,
                "ExposedPorts": ["80"],
                "Labels": {"k": ["v"], "<b>": None},
                "WorkingDir": 7,
            },
        }
    )
    assert summary["env"] == ["PATH=/bin"]
    assert summary["cmd"] == [] and summary["exposed_ports"] == [] and summary["history"] == []
    assert summary["labels"] == {"k": "['v']", "<b>": ""}
    assert summary["working_dir"] == "7"
    assert image_details._datetime("not a date") is None
    assert image_details._datetime("0001-01-01T00:00:00Z") is None
    assert image_details._datetime("2024-01-02T03:04:05.123456789+02:00").hour == 3


def _catalog_stub(tags_status):
    import json as _json

    routes = {
        ("GET", "/v2/_catalog"): (
            200,
            {},
            _json.dumps({"repositories": ["ok/one", "bad/two"]}).encode(),
        ),
        ("GET", "/v2/ok/one/tags/list"): (200, {}, b'{"name": "ok/one", "tags": null}'),
        ("GET", "/v2/bad/two/tags/list"): (tags_status, {}, b'{"errors": [{"message": "boom"}]}'),
    }
    if tags_status == 500:
        routes[("GET", "/v2/ok/one/tags/list")] = (500, {}, b"{}")
    return routes


def test_a_registry_failing_every_repository_fails_the_run(settings):
    from .test_registry_client import _stub_server

    index.upsert_tag("bad/two", "v1", "sha256:" + "b" * 64, timezone.now())
    with _stub_server(_catalog_stub(500)) as url:
        settings.REGISTRY_URL = url
        run = worker.run_now("sync")
    assert run.state == Run.State.FAILED
    assert "No repository could be read" in run.error
    assert Tag.objects.filter(repository__name="bad/two").exists()


def test_one_unreadable_repository_keeps_its_rows_and_is_reported(settings):
    from .test_registry_client import _stub_server

    index.upsert_tag("bad/two", "v1", "sha256:" + "b" * 64, timezone.now())
    with _stub_server(_catalog_stub(503)) as url:
        settings.REGISTRY_URL = url
        run = worker.run_now("sync")
    assert run.state == Run.State.DONE
    assert run.result["errors"] and run.result["errors"][0].startswith("bad/two: ")
    assert "1 repositories could not be read" in run.message
    assert Tag.objects.filter(repository__name="bad/two").exists()
    assert Repository.objects.get(name="ok/one").is_empty
