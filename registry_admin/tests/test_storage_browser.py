"""The storage page in Debian's Chromium: charts drawn, sorting by a header, "Scan now" with the
worker picking the run up and the page showing the new figures."""

import pytest
from playwright.sync_api import expect

from registry_admin import storage, usage, worker
from registry_admin.tests.storage_trees import StorageTree, blob_data_sizes

from .factories import TEST_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_charts_sorting_and_scan_now(page, live_server, admin_user, settings, tmp_path):
    settings.STORAGE_BACKEND = "filesystem"
    settings.STORAGE_FILESYSTEM_ROOT = str(tmp_path / "storage")
    tree = StorageTree(tmp_path / "storage")
    tree.image("web/front", [b"base" * 100, b"front" * 900], tag="v1")
    tree.image("web/back", [b"base" * 100, b"back" * 100], tag="v1")
    _, result = storage.scan_storage()
    usage.record_snapshot(result, storage.get_backend())
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )

    page.goto(live_server.url + "/login/?next=/storage/")
    page.get_by_label("Username").fill(admin_user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_title("Storage · Oyster")
    expect(page.locator("#storage-top-chart")).to_have_attribute("data-rendered", "true")
    expect(page.locator("#storage-history-chart")).to_have_attribute("data-rendered", "true")
    rows = page.locator("tr[data-repository]")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-repository", "web/front")

    page.get_by_role("link", name="Repository", exact=True).click()
    expect(rows.first).to_have_attribute("data-repository", "web/back")
    expect(page.locator("th[aria-sort=ascending]")).to_have_text("Repository")

    tree.image("web/new", [b"brand new layer" * 50], tag="v1")
    page.get_by_role("button", name="Scan now").click()
    expect(page.locator(".run-status[data-run-kind=storage_scan]")).to_contain_text("Requested")
    (run,) = worker.tick(["storage_scan"])
    assert run.state == run.State.DONE, run.error
    # The widget sees the run finish and reloads the page with the new snapshot.
    total = sum(blob_data_sizes(tree.root).values())
    expect(page.locator(f'[data-figure=total] [data-bytes="{total}"]')).to_be_visible(timeout=15000)
    expect(rows).to_have_count(3)
    assert errors == []
