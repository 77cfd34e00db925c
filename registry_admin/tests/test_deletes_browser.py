"""Deleting from the repository page in Debian's Chromium: ticked checkboxes outside the form
(joined with form="tag-bulk-form") reach the confirmation, and one tag goes alone."""

import uuid

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from registry_admin import index

from .factories import TEST_PASSWORD
from .images import build_image

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, live_server, user, path):
    page.goto(f"{live_server.url}/login/?next={path}")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_bulk_delete_of_ticked_tags_then_one_tag_from_its_row(
    page, live_server, admin_user, registry
):
    repo = f"browserdel/{uuid.uuid4().hex[:8]}"
    image = build_image()
    pusher = registry.pusher()
    for tag in ("a", "b", "c", "d"):
        pusher.push_image(repo, tag, image)
        index.upsert_tag(repo, tag, image.digest, timezone.now())
    log_in(page, live_server, admin_user, f"/repositories/{repo}/")
    expect(page.get_by_role("heading", name=repo)).to_be_visible()

    page.get_by_label("Select b").check()
    page.get_by_label("Select c").check()
    page.get_by_role("button", name="Delete selected tags…").click()
    expect(page.get_by_role("heading", name=f"Delete 2 tags of {repo}?")).to_be_visible()
    page.get_by_role("button", name="Delete 2 tags").click()

    expect(page.locator("#delete-results tr[data-state=deleted]")).to_have_count(2)
    expect(page.get_by_role("heading", name="Reclaiming space: garbage collection")).to_be_visible()
    assert pusher.tags(repo) == ["a", "d"]

    page.get_by_role("link", name="Back").first.click()
    page.get_by_role("button", name="Delete the tag d").click()
    expect(page.get_by_role("heading", name=f"Delete the tag d of {repo}?")).to_be_visible()
    expect(page.locator("[data-sibling=a]")).to_be_visible()
    page.get_by_role("button", name=f"Delete {repo}:d").click()

    expect(page.locator("#delete-results tr[data-state=deleted]")).to_have_count(1)
    assert pusher.tags(repo) == ["a"]
    assert pusher.head_manifest(repo, "a") == image.digest
