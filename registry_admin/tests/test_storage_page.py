"""The storage page: figures, charts' data, the sortable table, hostile input, roles."""

import json
import re

import pytest
from django.urls import reverse

from registry_admin import storage, usage
from registry_admin.models import Run, StorageSnapshot
from registry_admin.tests.storage_trees import StorageTree

pytestmark = pytest.mark.django_db

URL = reverse("registry_admin:storage")


def scan_snapshot(root):
    backend = storage.FilesystemStorage(root)
    _, result = storage.scan_storage(backend)
    return usage.record_snapshot(result, backend)


@pytest.fixture
def snapshot(tmp_path, settings):
    """A scan of a tree with three repositories of different sizes and a shared base layer."""
    settings.STORAGE_BACKEND = "filesystem"
    settings.STORAGE_FILESYSTEM_ROOT = str(tmp_path / "storage")
    tree = StorageTree(tmp_path / "storage")
    base = b"base" * 500
    tree.image("big/app", [base, b"big" * 3000], tag="v1")
    tree.image("small", [base, b"s" * 10], tag="v1")
    deleted, _, _ = tree.image("mid", [b"m" * 5000], tag="v1")
    tree.unlink_revision("mid", deleted)
    tree.upload("small", b"partial" * 3)
    return scan_snapshot(tree.root)


def table_names(html):
    return re.findall(r'<tr data-repository="([^"]+)">', html)


def test_the_page_shows_the_latest_figures(admin_client, snapshot):
    html = admin_client.get(URL).content.decode()

    for figure in ("total_bytes", "linked_bytes", "reclaimable_bytes", "upload_bytes"):
        assert f'data-bytes="{getattr(snapshot, figure)}"' in html
    assert snapshot.reclaimable_bytes > 0 and snapshot.upload_count == 1
    assert table_names(html) == ["big/app", "mid", "small"]  # largest first
    data = json.loads(re.search(r'id="storage-chart-data"[^>]*>(.*?)</script>', html).group(1))
    assert data["top"]["labels"] == ["big/app", "mid", "small"]
    big = snapshot.repositories.get(name="big/app")
    assert (data["top"]["unique"][0], data["top"]["shared"][0]) == (
        big.unique_bytes,
        big.shared_bytes,
    )
    assert data["history"]["total"] == [snapshot.total_bytes]
    # Charts come from static files; the only inline <script> is the JSON data.
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag
    assert "chartjs-4.6.1/chart.umd.min.js" in html
    assert "registry_admin/storage.js" in html
    # GC guidance with the snapshot's reclaimable bytes.
    assert f'data-reclaimable-bytes="{snapshot.reclaimable_bytes}"' in html
    assert "--dry-run" in html and "--delete-untagged" in html
    assert 'action="/runs/storage_scan/request"' in html


def test_history_lists_every_snapshot_in_order(admin_client, snapshot, tmp_path):
    newer = scan_snapshot(tmp_path / "storage")
    data = admin_client.get(URL).context["charts"]
    assert data["history"]["total"] == [snapshot.total_bytes, newer.total_bytes]
    assert data["history"]["labels"] == [s.created_at.isoformat() for s in (snapshot, newer)]


@pytest.mark.parametrize(
    ("sort", "key"),
    [
        ("name", lambda r: r.name),
        ("-name", lambda r: r.name),
        ("unique", lambda r: (r.unique_bytes, r.name)),
        ("-unique", lambda r: (r.unique_bytes, r.name)),
        ("-shared", lambda r: (r.shared_bytes, r.name)),
        ("reclaimable", lambda r: (r.reclaimable_bytes, r.name)),
        ("-reclaimable", lambda r: (r.reclaimable_bytes, r.name)),
        ("blobs", lambda r: (r.blob_count, r.name)),
        ("-manifests", lambda r: (r.manifest_count, r.name)),
        ("referenced", lambda r: (r.referenced_bytes, r.name)),
    ],
)
def test_every_figure_sorts_the_table(viewer_client, snapshot, sort, key):
    html = viewer_client.get(URL, {"sort": sort}).content.decode()
    rows = list(snapshot.repositories.all())
    descending = sort.startswith("-")
    expected = sorted(rows, key=key, reverse=descending)
    if descending and sort != "-name":  # ties stay in name order
        expected = sorted(rows, key=lambda r: (-key(r)[0], r.name))
    assert table_names(html) == [r.name for r in expected]
    column = sort.lstrip("-")
    assert re.search(
        rf'aria-sort="{"descending" if descending else "ascending"}"><a [^>]*data-sort="[-]?{column}"',
        html,
    )


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        "../../etc/passwd",
        "' OR 1=1; DROP TABLE registry_admin_repositorystorage;--",
        "ünïcödé/名前",
        "%00%0d%0a",
        "x" * 300,
        "tab\there",
        "nul\x00byte",
    ],
)
def test_hostile_filters_and_sorts_are_answered_plainly(admin_client, snapshot, hostile):
    response = admin_client.get(URL, {"q": hostile, "sort": hostile, "page": hostile})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "Unknown sort order" in html
    if len(hostile) > 255 or any(ord(c) < 32 for c in hostile):
        assert 'aria-invalid="true"' in html
        assert table_names(html) == ["big/app", "mid", "small"]  # the filter is ignored
    else:
        assert table_names(html) == []
        assert "No repository name contains" in html
    assert StorageSnapshot.objects.count() == 1  # nothing was touched


def test_filtering_keeps_the_sort_and_paginates(admin_client, snapshot, monkeypatch):
    from registry_admin.views import storage as storage_views

    monkeypatch.setattr(storage_views, "ROWS_PER_PAGE", 1)
    html = admin_client.get(URL, {"q": "i", "sort": "name"}).content.decode()
    assert table_names(html) == ["big/app"]
    assert 'name="sort" value="name"' in html
    assert 'href="?q=i&amp;sort=name&amp;page=2" rel="next"' in html
    html = admin_client.get(URL, {"q": "i", "sort": "name", "page": "2"}).content.decode()
    assert table_names(html) == ["mid"]
    assert 'href="?q=i&amp;sort=-name"' in html  # the current column's header flips the order


def test_without_a_snapshot_the_page_says_so(admin_client, settings, tmp_path):
    settings.STORAGE_FILESYSTEM_ROOT = str(tmp_path)
    html = admin_client.get(URL).content.decode()
    assert "No storage scan has completed yet." in html
    assert "storage-chart-data" not in html
    assert "chart.umd.min.js" not in html
    assert "Run a" in html  # the GC guidance asks for a scan


def test_a_viewer_reads_but_cannot_start_a_scan(viewer_client, snapshot):
    html = viewer_client.get(URL).content.decode()
    assert f'data-bytes="{snapshot.total_bytes}"' in html
    assert "Scan now" not in html
    response = viewer_client.post(reverse("registry_admin:run-request", args=["storage_scan"]))
    assert response.status_code == 403
    assert not Run.objects.filter(kind="storage_scan").exists()


def test_an_admin_requests_a_scan(admin_client, snapshot):
    response = admin_client.post(
        reverse("registry_admin:run-request", args=["storage_scan"]), {"next": URL}
    )
    assert response.status_code == 302 and response.url == URL
    run = Run.objects.get(kind="storage_scan")
    assert run.state == Run.State.REQUESTED
    html = admin_client.get(URL).content.decode()
    assert "Requested" in html


def test_anonymous_and_roleless_users_see_nothing(client, roleless_user, snapshot):
    response = client.get(URL)
    assert response.status_code == 302 and "/login/" in response.url
    client.force_login(roleless_user)
    assert client.get(URL).status_code == 403


def test_storage_summary_for_a_repository(snapshot):
    summary = usage.storage_summary_for_repository("big/app")
    row = snapshot.repositories.get(name="big/app")
    assert summary["referenced_bytes"] == row.referenced_bytes
    assert summary["unique_bytes"] + summary["shared_bytes"] == row.referenced_bytes
    assert summary["scanned_at"] == snapshot.created_at
    assert usage.storage_summary_for_repository("no/such") is None
    assert usage.storage_summary_for_repository("<script>") is None


def test_the_repository_include_renders_the_summary(snapshot):
    from django.template.loader import render_to_string

    html = render_to_string(
        "registry_admin/storage/_repository_usage.html",
        {"usage": usage.storage_summary_for_repository("small")},
    )
    row = snapshot.repositories.get(name="small")
    assert f'data-bytes="{row.unique_bytes}"' in html
    assert "Not in the latest" in render_to_string(
        "registry_admin/storage/_repository_usage.html", {"usage": None}
    )


def test_only_recent_snapshots_keep_repository_rows(snapshot, tmp_path):
    from registry_admin.models.storage import DETAILED_SNAPSHOTS_KEPT

    for _ in range(DETAILED_SNAPSHOTS_KEPT + 1):
        scan_snapshot(tmp_path / "storage")
    assert StorageSnapshot.objects.count() == DETAILED_SNAPSHOTS_KEPT + 2
    assert not snapshot.repositories.exists()
    assert StorageSnapshot.objects.latest_snapshot().repositories.count() == 3


def test_the_repository_page_shows_its_storage_figures(viewer_client, snapshot, settings):
    from registry_admin.models import Repository

    settings.REGISTRY_URL = "http://127.0.0.1:9"
    Repository.objects.create(name="big/app")
    Repository.objects.create(name="never/scanned")
    row = snapshot.repositories.get(name="big/app")
    html = viewer_client.get(
        reverse("registry_admin:repository", args=["big/app"])
    ).content.decode()
    assert 'id="repository-storage-title"' in html
    assert f'data-bytes="{row.unique_bytes}"' in html
    assert f'data-bytes="{row.shared_bytes}"' in html
    html = viewer_client.get(
        reverse("registry_admin:repository", args=["never/scanned"])
    ).content.decode()
    assert "Not in the latest" in html
