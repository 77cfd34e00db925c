"""The Storage page's "Collect now (registry stays online)" in Debian's Chromium: an admin clicks
Dry run, the worker runs it, the figures show; Collect, the worker runs it, the blobs are in the
trash and the page says so. And the progress widget follows a running collection (bar and ETA)
until it finishes. The filesystem tree is written by hand (storage_trees), aged past the grace
period; with REGISTRY_BLOB_CACHE=none the job calls no registry."""

import os
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from registry_admin import online_gc, storage, worker
from registry_admin.models import CollectedBlob, JobKind, Run
from registry_admin.tests.storage_trees import StorageTree, blob_data_sizes

from .factories import TEST_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def online_settings(settings, tmp_path):
    settings.STORAGE_BACKEND = "filesystem"
    settings.STORAGE_FILESYSTEM_ROOT = str(tmp_path / "storage")
    settings.REGISTRY_BLOB_CACHE = "none"
    settings.REGISTRY_INSTANCES = 1
    settings.GC_GRACE_MINUTES = 60
    settings.GC_SETTLE_SECONDS = 0
    settings.GC_TRASH_HOURS = 24
    return settings


def age(root, hours=2):
    when = time.time() - hours * 3600
    for directory, _, files in os.walk(root):
        for name in files:
            os.utime(Path(directory) / name, (when, when))


def watch_errors(page):
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
    page.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return errors


def log_in(page, base, user, path="/storage/"):
    page.goto(f"{base}/login/?next={path}")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_title("Storage · Oyster")


def test_dry_run_then_collect(page, live_server, admin_user, online_settings, tmp_path):
    tree = StorageTree(tmp_path / "storage")
    tree.image("web/front", [b"base" * 100, b"front" * 900], tag="v1")
    gone, _, _ = tree.image("web/old", [b"base" * 100, b"old layer" * 3000], tag="v1")
    tree.unlink_revision("web/old", gone)
    age(tree.root)
    _, scan = storage.scan_storage()
    assert scan.reclaimable_count == 3  # the old image's manifest, config and own layer
    stored_before = sum(blob_data_sizes(tree.root).values())
    errors = watch_errors(page)
    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(page, live_server.url, admin_user)

    online = page.locator("[data-online-gc]")
    expect(online.locator("[data-online-dry=none]")).to_be_visible()
    expect(online.get_by_role("button", name="Collect")).to_have_count(0)
    online.get_by_role("button", name="Dry run").click()
    expect(page.get_by_text(re.compile(r"Online collection #\d+ \(dry run"))).to_be_visible()
    status = online.locator(".run-status")
    expect(status).to_contain_text("Requested")

    (dry,) = worker.tick([JobKind.ONLINE_GC])
    assert dry.state == Run.State.DONE, dry.error
    assert dry.result["candidate_bytes"] == scan.reclaimable_bytes
    # The widget sees the run finish and reloads the page with its figures.
    candidate = online.locator(
        f'[data-figure=online-candidate] [data-bytes="{scan.reclaimable_bytes}"]'
    )
    expect(candidate).to_be_visible(timeout=15000)
    expect(online.locator("[data-figure=online-unreferenced]")).to_contain_text("3 blobs")
    expect(online.locator("[data-figure=online-young] [data-bytes='0']")).to_be_visible()
    # A dry run deletes nothing.
    assert sum(blob_data_sizes(tree.root).values()) == stored_before

    online.get_by_role("button", name="Collect").click()
    expect(
        page.get_by_text(re.compile(r"Online collection #\d+ \(the registry stays"))
    ).to_be_visible()
    expect(status).to_contain_text("Requested")
    (collected,) = worker.tick([JobKind.ONLINE_GC])
    assert collected.state == Run.State.DONE, collected.error
    assert collected.options == {"dry_run": False}

    trashed = online.locator(
        f'[data-figure=online-trashed] [data-bytes="{scan.reclaimable_bytes}"]'
    )
    expect(trashed).to_be_visible(timeout=15000)
    expect(online.locator("[data-figure=online-trashed]")).to_contain_text("3 blobs")
    expect(online.locator("[data-online-trash]")).to_have_attribute("data-online-trash", "3")
    expect(online.locator("[data-online-trash]")).to_contain_text("3 blobs")
    assert sum(blob_data_sizes(tree.root).values()) == stored_before - scan.reclaimable_bytes
    assert CollectedBlob.objects.filter(state=CollectedBlob.State.TRASHED).count() == 3
    assert len(list((tree.root / online_gc.TRASH_PREFIX).rglob("*/sha256/*"))) == 3

    # The dashboard's storage card has the collection, with a way to its figures.
    page.goto(live_server.url + "/")
    card = page.locator("[data-online-collection]")
    expect(card).to_have_attribute("data-online-collection", str(collected.pk))
    expect(card.locator(f'[data-bytes="{scan.reclaimable_bytes}"]')).to_be_visible()
    card.get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/storage/#online-gc-title$"))
    assert errors == []


def test_the_widget_follows_a_running_collection(page, live_server, admin_user, online_settings):
    now = timezone.now()
    run = Run.objects.create(
        kind=JobKind.ONLINE_GC,
        options={"dry_run": False},
        state=Run.State.RUNNING,
        started_at=now - timedelta(minutes=10),
        heartbeat_at=now,
        done=40000,
        message="Listed 40,000 objects (9,000 blobs)",
    )
    errors = watch_errors(page)
    log_in(page, live_server.url, admin_user)
    status = page.locator("[data-online-gc] .run-status")
    bar = status.locator("progress")
    # The mark's listing has no total: no bar, no ETA.
    expect(status.locator(".run-text")).to_have_text(re.compile(r"Running — Listed 40,000"))
    expect(bar).to_have_count(0)
    expect(status.locator(".run-eta")).to_have_text("")

    # A counted stage begins: the polling adds the bar and the ETA.
    Run.objects.filter(pk=run.pk).update(
        done=100, total=1000, heartbeat_at=timezone.now(), message="Unlinking"
    )
    expect(status.locator(".run-text")).to_have_text(
        re.compile(r"Running: 100 / 1000 — Unlinking"), timeout=10000
    )
    expect(bar).to_have_js_property("value", 100)
    expect(bar).to_have_attribute("aria-label", "Online garbage collection: progress")
    # 100 in 10 minutes: 900 more take 90 (less what passed since the report).
    expect(status.locator(".run-eta")).to_have_text(
        re.compile(r"about 1\s+hour, (29|30)\s+minutes left")
    )

    Run.objects.filter(pk=run.pk).update(
        done=500, heartbeat_at=timezone.now(), message="Moving into the trash"
    )
    expect(status.locator(".run-text")).to_have_text(
        re.compile(r"Running: 500 / 1000 — Moving into the trash"), timeout=10000
    )
    expect(bar).to_have_js_property("value", 500)
    expect(status.locator(".run-eta")).to_have_text(re.compile(r"about (9|10)\s+minutes? left"))

    Run.objects.filter(pk=run.pk).update(
        state=Run.State.DONE,
        finished_at=timezone.now(),
        result=online_gc.OnlineGcResult(
            dry_run=False, trashed_count=2, trashed_bytes=4096
        ).as_dict(),
    )
    # Finished: the page reloads and shows the collection's figures.
    expect(page.locator("[data-figure=online-trashed] [data-bytes='4096']")).to_be_visible(
        timeout=10000
    )
    expect(status.locator("progress")).to_have_count(0)
    assert errors == []
