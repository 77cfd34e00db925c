"""Issue #14 item 8: a Content-Security-Policy without 'unsafe-inline' on every page, and Debian's
Chromium finds nothing on the portal's pages that it blocks (no inline script, style or handler)."""

import re

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from registry_admin.middleware import CONTENT_SECURITY_POLICY
from registry_admin.tests.factories import TEST_PASSWORD, make_envelope, make_registry_event
from registry_admin.tests.harness import NOTIFICATIONS_TOKEN, free_port

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAGES = [
    "/",
    "/repositories/",
    "/retention/",
    "/retention/new/",
    "/users/",
    "/storage/",
    "/audit/",
    "/settings/notifications/",
    "/django-admin/",
    "/django-admin/auth/user/",
    "/no-such-page/",
]


def test_no_page_breaks_the_content_security_policy(
    page, live_server, admin_user, settings, client
):
    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    # Some activity, so the dashboard draws its chart.
    client.post(
        reverse("registry_admin:registry-events"),
        data=make_envelope(make_registry_event()),
        content_type="application/vnd.docker.distribution.events.v1+json",
        HTTP_AUTHORIZATION=f"Bearer {NOTIFICATIONS_TOKEN}",
    )
    violations = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    headers = []
    page.on("response", lambda r: headers.append((r.url, r.headers.get("content-security-policy"))))

    page.goto(live_server.url + "/login/")
    page.get_by_label("Username").fill(admin_user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name=re.compile("Log out"))).to_be_visible()
    for path in PAGES:
        page.goto(live_server.url + path)
        page.wait_for_load_state("load")
    expect(page.locator("h1").first).to_be_visible()
    assert violations == []
    documents = [(url, csp) for url, csp in headers if "/static/" not in url]
    assert documents and all(csp == CONTENT_SECURITY_POLICY for _, csp in documents), documents

    # The check can see a violation: an inline style attribute added to the page is refused.
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color:red\">x</p>')")
    page.wait_for_timeout(200)
    assert any("style" in v for v in violations), violations
