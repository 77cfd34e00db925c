"""A person at a keyboard, in Debian's Chromium: log in, move around, log out."""

import re

import pytest
from playwright.sync_api import expect

from registry_admin.tests.factories import TEST_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_log_in_with_the_keyboard_and_visit_every_area(page, live_server, admin_user, registry):
    page.goto(live_server.url + "/repositories/")
    expect(page).to_have_title("Log in · Oyster")
    # Keyboard only: the username field has focus, Tab moves to the password, Enter submits.
    assert page.evaluate("document.activeElement.id") == "id_username"
    page.keyboard.type(admin_user.username)
    page.keyboard.press("Tab")
    page.keyboard.type(TEST_PASSWORD)
    page.keyboard.press("Enter")
    # `next` brings the user back to the page asked for.
    expect(page).to_have_url(re.compile(r"/repositories/$"))
    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("[data-state=reachable]")).to_be_visible()
    for area in ["Repositories", "Users", "Storage", "Audit log"]:
        page.get_by_role("navigation", name="Main").get_by_role("link", name=area).click()
        expect(page).to_have_title(re.compile(r".+ · Oyster$"))
        assert page.locator("h1").count() >= 1
    page.get_by_role("button", name=re.compile("Log out")).click()
    expect(page).to_have_title("Log in · Oyster")


def test_a_wrong_password_is_said_plainly(page, live_server, admin_user):
    page.goto(live_server.url + "/login/")
    page.get_by_label("Username").fill(admin_user.username)
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")
