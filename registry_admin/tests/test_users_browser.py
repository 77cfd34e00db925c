"""The registry users pages in Debian's Chromium: generated passwords, the copy button, deletes."""

import re
import uuid

import pytest
import requests
from playwright.sync_api import expect

from registry_admin import htpasswd

from .factories import TEST_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, live_server, user):
    page.goto(live_server.url + "/login/?next=/users/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_title("Registry users · Oyster")


def test_generate_a_password_copy_it_and_log_in_with_it(page, live_server, admin_user, registry):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    name = f"browser-{uuid.uuid4().hex[:8]}"
    log_in(page, live_server, admin_user)
    page.get_by_role("button", name="Add a user").click()
    page.get_by_label("User name").fill(name)
    typed_fields = page.locator("[data-password-mode=typed]")
    expect(typed_fields).to_be_visible()
    page.get_by_label("Generate one and show it once").check()
    expect(typed_fields).to_be_hidden()  # nothing to type when the portal generates it
    page.get_by_role("button", name="Add the user").click()

    expect(page.get_by_role("heading", name=f"Password of {name}")).to_be_visible()
    password = page.locator("#generated-password").inner_text()
    assert re.fullmatch(r"[A-Za-z0-9]{24}", password)
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("[data-copy-status]")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == password
    auth = requests.get(f"{registry.url}/v2/", auth=(name, password), timeout=5)
    assert auth.status_code == 200

    page.get_by_role("link", name="Back to the registry users").click()
    assert password not in page.content()
    row = page.locator(f"tr[data-user='{name}']")
    row.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name=f"Delete {name}").click()
    expect(page.get_by_role("status").first).to_contain_text(f"Deleted the registry user {name}")
    assert htpasswd.read_users().get(name) is None
    assert requests.get(f"{registry.url}/v2/", auth=(name, password), timeout=5).status_code == 401


def test_typed_password_errors_are_shown_next_to_the_field(page, live_server, admin_user, registry):
    log_in(page, live_server, admin_user)
    page.get_by_role("button", name="Add a user").click()
    page.get_by_label("User name").fill("has space")
    page.get_by_label("New password", exact=True).fill("a" * 73)
    page.get_by_label("New password again").fill("a" * 73)
    page.get_by_role("button", name="Add the user").click()
    expect(page.get_by_text("cannot contain spaces")).to_be_visible()
    expect(page.get_by_text("limit of 72 bytes")).to_be_visible()
    assert "has space" not in registry.htpasswd_path.read_text()
