"""`manage.py scan_storage [--json]`: a snapshot, printed exactly; failures are errors."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from registry_admin import usage, worker
from registry_admin.models import Run, StorageSnapshot
from registry_admin.tests.storage_trees import StorageTree, blob_data_sizes

pytestmark = pytest.mark.django_db


@pytest.fixture
def tree(tmp_path, settings):
    settings.STORAGE_BACKEND = "filesystem"
    settings.STORAGE_FILESYSTEM_ROOT = str(tmp_path / "storage")
    tree = StorageTree(tmp_path / "storage")
    tree.image("team/web", [b"shared" * 100, b"web" * 1000], tag="v1")
    tree.image("team/api", [b"shared" * 100, b"api" * 2000], tag="v1")
    return tree


def run_command(*args):
    out = StringIO()
    call_command("scan_storage", *args, stdout=out)
    return out.getvalue()


def test_the_summary_prints_exact_bytes(tree):
    output = run_command()
    total = sum(blob_data_sizes(tree.root).values())
    snapshot = StorageSnapshot.objects.get()
    assert snapshot.total_bytes == total
    assert f"{total:,} bytes" in output
    api = snapshot.repositories.get(name="team/api")
    assert (
        f"team/api: {api.referenced_bytes:,} / {api.unique_bytes:,} / {api.shared_bytes:,}"
        in output
    )
    # Largest first.
    assert output.index("team/api:") < output.index("team/web:")
    assert Run.objects.get(kind="storage_scan").state == Run.State.DONE


def test_json_has_totals_repositories_and_reclaimable(tree):
    data = json.loads(run_command("--json"))
    snapshot = StorageSnapshot.objects.get()
    assert data == usage.snapshot_as_dict(snapshot)
    assert data["total_bytes"] == sum(blob_data_sizes(tree.root).values())
    assert data["reclaimable"] == {"bytes": 0, "count": 0}
    assert [r["name"] for r in data["repositories"]] == ["team/api", "team/web"]
    web = data["repositories"][1]
    assert web["shared_bytes"] == len(b"shared" * 100)
    assert web["unique_bytes"] + web["shared_bytes"] == web["referenced_bytes"]


def test_top_limits_the_listing_and_rejects_negatives(tree):
    output = run_command("--top", "1")
    assert "team/api:" in output and "team/web:" not in output
    with pytest.raises(CommandError, match="--top must be 0"):
        run_command("--top", "-3")
    assert StorageSnapshot.objects.count() == 1


def test_a_failed_scan_is_an_error_and_a_failed_run(tree, settings):
    settings.STORAGE_FILESYSTEM_ROOT = str(tree.root / "missing")
    with pytest.raises(CommandError, match="The storage scan failed: The storage root"):
        run_command("--json")
    assert Run.objects.get(kind="storage_scan").state == Run.State.FAILED
    assert not StorageSnapshot.objects.exists()


def test_a_running_scan_elsewhere_blocks_the_command(tree):
    assert worker.claim_lease("storage_scan", owner="other-host:1")
    with pytest.raises(CommandError, match="already running"):
        run_command()
    assert not StorageSnapshot.objects.exists()


def test_the_scheduled_worker_runs_it(tree, settings):
    settings.STORAGE_SCAN_INTERVAL = 3600
    (run,) = worker.tick(["storage_scan"])
    assert run.state == Run.State.DONE, run.error
    assert run.requested_by == "schedule"
    assert run.result["snapshot_id"] == StorageSnapshot.objects.get().pk
    assert run.total == run.done  # progress reached its end
    assert worker.tick(["storage_scan"]) == []  # not due again for an hour
