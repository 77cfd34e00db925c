""" "Recently deleted" in Debian's Chromium on the real registry: restore one item, then several
at once, one of whose tags a client pushed again meanwhile (left alone, and the page says so)."""

import uuid

import pytest
from playwright.sync_api import expect

from registry_admin import deletes
from registry_admin.models import BinItem

from .images import build_image, build_index
from .test_deletes_browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_restore_one_then_several_with_a_tag_pushed_again(
    page, live_server, admin_user, registry, settings
):
    settings.RECYCLE_BIN_DAYS = 7
    base = f"binbrowser/{uuid.uuid4().hex[:8]}"
    single, multi, again = f"{base}/single", f"{base}/multi", f"{base}/again"
    pusher = registry.pusher()
    single_digest = pusher.push_image(single, "v1", build_image())
    multi_digest = pusher.push_image(multi, "v1", build_index())
    again_digest = pusher.push_image(again, "v1", build_image())
    for repository in (single, multi, again):
        deletes.delete_tag("alice", repository, "v1")
    newer = pusher.push_image(again, "v1", build_image())  # a client pushes the tag again

    log_in(page, live_server, admin_user, "/deleted/")
    expect(page.get_by_role("heading", name="Recently deleted")).to_be_visible()
    expect(page.locator("#bin-items tbody tr[data-state=held]")).to_have_count(3)

    # One: filtered by repository, ticked, restored.
    page.get_by_label("Repository").fill(single)
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#bin-items tbody tr")).to_have_count(1)
    page.get_by_label(f"Select {single}@{single_digest}").check()
    page.get_by_role("button", name="Restore selected").click()
    expect(page.get_by_role("heading", name="Restored")).to_be_visible()
    expect(page.locator("#restore-results tr[data-state=restored]")).to_have_count(1)
    assert pusher.head_manifest(single, "v1") == single_digest

    # Several: the multi-platform image comes back whole; the tag pushed again stays the
    # client's.
    page.get_by_role("button", name="Back to Recently deleted").click()
    expect(page.locator("#bin-items tbody tr[data-state=held]")).to_have_count(2)
    page.get_by_label(f"Select {multi}@{multi_digest}").check()
    page.get_by_label(f"Select {again}@{again_digest}").check()
    page.get_by_role("button", name="Restore selected").click()
    expect(page.locator("#restore-results tr[data-state=restored]")).to_have_count(2)
    expect(page.get_by_text(f"{again}:v1 was pushed again since")).to_be_visible()
    assert pusher.head_manifest(multi, "v1") == multi_digest
    assert pusher.head_manifest(again, "v1") == newer
    assert pusher.head_manifest(again, again_digest) == again_digest
    assert set(BinItem.objects.values_list("state", flat=True)) == {BinItem.State.RESTORED}

    page.get_by_role("button", name="Back to Recently deleted").click()
    expect(page.locator("#bin-empty")).to_have_text("The recycle bin is empty.")
