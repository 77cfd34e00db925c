"""The API reference page renders the OpenAPI document in Debian's Chromium from the portal's
own static files, under the portal's strict Content-Security-Policy, without a login."""

import pytest
from playwright.sync_api import expect

from registry_admin.middleware import CONTENT_SECURITY_POLICY

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_reference_page_renders_under_the_csp(page, live_server):
    violations, outside = [], []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith(live_server.url) else None,
    )
    response = page.goto(live_server.url + "/api/v1/docs/")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    expect(page.get_by_text("Oyster API", exact=False).first).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/-/tags/").first).to_be_visible()
    page.locator(".opblock-delete .opblock-summary", has_text="/-/tags/{tag}").first.click()
    expect(page.get_by_text("expected_digest").first).to_be_visible()
    assert violations == [] and outside == []
