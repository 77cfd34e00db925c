"""The repository delete in Debian's Chromium on the real registry: the button on the repository
page, the confirmation stating what goes, a wrong name refused, the right one deleting it (the
catalog no longer lists it), then a restore from "Recently deleted" bringing it back."""

import uuid

import pytest
from playwright.sync_api import expect

from registry_admin import registry as registry_client
from registry_admin import worker
from registry_admin.models import JobKind, Repository

from .images import build_image
from .test_deletes_browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_delete_a_repository_with_its_name_typed_then_restore_it(
    page, live_server, admin_user, registry, settings
):
    settings.RECYCLE_BIN_DAYS = 7
    repository = f"repobrowser/{uuid.uuid4().hex[:8]}"
    pusher = registry.pusher()
    digest = pusher.push_image(repository, "v1", build_image())
    pusher.push_image(repository, "v2", build_image())
    Repository.objects.get_or_create(name=repository)

    log_in(page, live_server, admin_user, f"/repositories/{repository}/")
    page.get_by_role("button", name="Delete repository…").click()
    expect(page.get_by_role("heading", name=f"Delete the repository {repository}?")).to_be_visible()
    expect(page.locator('#repository-plan [data-count="tags"]')).to_have_text("2")
    expect(page.locator('#repository-plan [data-count="images"]')).to_have_text("2")

    # A wrong name deletes nothing and says so.
    page.get_by_label("to confirm").fill(repository + "-typo")
    page.get_by_role("button", name=f"Delete {repository}").click()
    expect(page.locator("#typed-name-error")).to_contain_text("Nothing was deleted")
    assert repository in registry_client.get_client().list_repositories()

    page.get_by_label("to confirm").fill(repository)
    page.get_by_role("button", name=f"Delete {repository}").click()
    expect(page.locator("#repository-delete-run")).to_be_visible()
    (run,) = worker.tick(kinds=[JobKind.DELETE_REPOSITORY])  # the worker's part
    assert run.result["deleted"] is True, run.error
    # The page follows the run and shows its outcome once it ends.
    expect(page.locator("#repository-delete-result")).to_have_attribute(
        "data-state", "deleted", timeout=15000
    )
    assert repository not in registry_client.get_client().list_repositories()

    # Restored from the bin: the repository is back with the same digest.
    page.goto(f"{live_server.url}/deleted/?repository={repository}")
    page.get_by_label(f"Select {repository}@{digest}").check()
    page.get_by_role("button", name="Restore selected").click()
    expect(page.locator("#restore-results tr[data-state=restored]")).to_have_count(1)
    assert repository in registry_client.get_client().list_repositories()
    assert pusher.head_manifest(repository, "v1") == digest
