"""The audit log and the dashboard's activity chart in Debian's Chromium."""

import re

import pytest
from playwright.sync_api import expect

from registry_admin import notifications
from registry_admin.models import AuditEvent, PortalAction
from registry_admin.tests.factories import TEST_PASSWORD, make_envelope, make_registry_event

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, live_server, user, path="/"):
    page.goto(live_server.url + path)
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()


def store(**kwargs):
    body = make_envelope(make_registry_event(**kwargs))
    return notifications.record(notifications.parse_envelope(body))[0]


def test_the_dashboard_draws_the_activity_chart(page, live_server, viewer_user):
    store(repository="chart/app")
    store(repository="chart/app", action="pull")
    log_in(page, live_server, viewer_user)
    chart = page.locator("#audit-activity-chart")
    expect(chart).to_have_attribute("data-rendered", "true")
    assert page.evaluate("window.Chart.getChart('audit-activity-chart').data.datasets.length") == 2
    expect(page.get_by_role("heading", name="Most active repositories")).to_be_visible()


def test_filter_the_log_with_the_keyboard_and_open_an_event(page, live_server, admin_user):
    wanted = store(repository="kbd/wanted", tag="<b>v1</b>")
    store(repository="kbd/other")
    AuditEvent.objects.log_portal_action(
        "alice", PortalAction.USER_CREATED, detail={"username": "bob"}
    )
    log_in(page, live_server, admin_user, "/audit/")
    expect(page).to_have_title("Audit log · Oyster")

    page.get_by_label("Repository (prefix)").fill("kbd/w")
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"repository=kbd%2Fw"))
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("kbd/wanted:<b>v1</b>")  # shown as text, not markup
    rows.first.get_by_role("link", name="Details").click()
    expect(page.get_by_role("heading", name="Raw event")).to_be_visible()
    expect(page.locator("pre.audit-raw")).to_contain_text(wanted.event_id)
    page.get_by_role("link", name="Audit log").first.click()
    page.get_by_role("link", name="Registry notification settings").click()
    expect(page.locator("#registry-config-yaml")).to_contain_text("/api/registry/events")
    expect(page.locator("#registry-config-yaml")).to_contain_text("Bearer <NOTIFICATIONS_TOKEN>")
