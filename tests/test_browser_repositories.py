"""Browsing repositories in Debian's Chromium: a push shows up without a reconcile, search and
sort with the keyboard, the tag page and its copy button."""

import re
import uuid

import pytest
from playwright.sync_api import expect

from registry_admin.tests.factories import TEST_PASSWORD
from registry_admin.tests.harness import wait_for_quiet_notifications
from registry_admin.tests.images import build_image, build_index

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, live_server, user, path="/"):
    page.goto(live_server.url + path)
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_a_push_appears_and_the_tag_page_copies_the_pull_command(
    page, live_server, viewer_user, registry
):
    base = f"browse-{uuid.uuid4().hex[:6]}"
    log_in(page, live_server, viewer_user, "/repositories/")
    expect(page).to_have_title("Repositories · Oyster")

    image = build_image(labels={"title": "<img src=x onerror=alert(1)>"})
    registry.pusher().push_image(f"{base}/web", "2.0.0", image)
    registry.pusher().push_image(f"{base}/web", "10.0.0", image)
    registry.pusher().push_image(f"{base}/multi", "latest", build_index())
    # The notification alone puts the tag in the index: reload until the row shows.
    search = page.get_by_role("searchbox", name="Search")
    search.fill(base)
    page.keyboard.press("Enter")
    # Let the search's own navigation finish before reloading (a reload racing it detaches).
    expect(page).to_have_url(re.compile(rf"q={base}"))
    page.wait_for_load_state()
    rows = page.locator("table.repository-table tbody tr")
    for _ in range(50):
        if rows.count() == 2:
            break
        page.wait_for_timeout(100)
        page.reload()
    expect(rows).to_have_count(2)

    page.get_by_label("Sort by").select_option("tags")
    page.get_by_role("button", name="Search").click()
    expect(rows.first).to_contain_text(f"{base}/web")
    rows.first.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"{base}/web")
    tag_rows = page.locator("table.tag-table tbody tr")
    expect(tag_rows).to_have_count(2)
    expect(tag_rows.first).to_contain_text("same image as")

    page.get_by_label("Sort by").select_option("-name")
    page.get_by_role("button", name="Apply").click()
    expect(tag_rows.first).to_have_attribute("data-tag", "10.0.0")

    wait_for_quiet_notifications()
    tag_rows.first.get_by_role("link", name="10.0.0").click()
    expect(page).to_have_title(f"{base}/web:10.0.0 · Oyster")
    expect(page.locator("code.digest").first).to_have_text(image.digest)
    # The hostile label is text, not markup.
    expect(page.locator("table.label-table")).to_contain_text("<img src=x onerror=alert(1)>")
    assert page.locator("table.label-table img").count() == 0

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy").last.click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == f"docker pull {registry.url.split('://')[1]}/{base}/web@{image.digest}"


def test_the_list_pages_forward_and_back_through_ties_by_its_links(page, live_server, viewer_user):
    """120 repositories with the same tag count: every page after the first starts inside that
    run of ties, and the links must neither skip nor repeat a name."""
    from registry_admin import index

    names = [f"ties/r{number:03d}" for number in range(120)]
    for name in names:
        index.upsert_tag(name, "v1", "sha256:" + "1" * 64, None)
        index.upsert_tag(name, "v2", "sha256:" + "1" * 64, None)
    log_in(page, live_server, viewer_user, "/repositories/?sort=tags&q=ties")
    expect(page.locator("[data-count=repositories]")).to_have_text("120")
    rows = page.locator("table.repository-table tbody tr td:first-child a")

    def shown():
        return rows.all_inner_texts()

    seen = shown()
    next_link = page.get_by_role("link", name="Next →")
    while next_link.count():
        next_link.click()
        page.wait_for_load_state()
        seen += shown()
    assert seen == names
    expect(page.get_by_role("link", name="Last »")).to_have_count(0)
    page.get_by_role("link", name="← Previous").click()
    expect(rows.first).to_have_text(names[50])
    page.get_by_role("link", name="« First").click()
    expect(rows.first).to_have_text(names[0])
    page.get_by_role("link", name="Last »").click()
    expect(rows.last).to_have_text(names[-1])
    expect(page).to_have_url(re.compile(r"sort=tags.*page=last|page=last.*sort=tags"))
