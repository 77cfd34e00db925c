"""Signatures and SBOMs in Debian's Chromium: the repository page shows two images, the first
badged; the filter shows the referrer tags; the tag page lists the attached artifacts."""

import uuid

import pytest
from playwright.sync_api import expect

from . import referrer_payloads as payloads
from .factories import TEST_PASSWORD
from .referrer_payloads import cosign_tag
from .test_referrers import index_repository, push_signed_repository

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_signed_image_badges_filter_and_attached_artifacts(
    page, live_server, viewer_user, registry
):
    repo = f"signedui/{uuid.uuid4().hex[:8]}"
    pushed = push_signed_repository(registry, repo)
    index_repository(repo)
    page.goto(f"{live_server.url}/login/?next=/repositories/{repo}/")
    page.get_by_label("Username").fill(viewer_user.username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name=repo)).to_be_visible()

    rows = page.locator("table.tag-table tbody tr")
    expect(rows).to_have_count(2)
    signed = page.locator('tr[data-tag="1.0"]')
    expect(signed.locator('[data-badge="signed"]')).to_have_text("signed")
    expect(signed.locator('[data-badge="SBOM"]')).to_have_text("SBOM")
    expect(page.locator('tr[data-tag="2.0"] [data-badge]')).to_have_count(0)

    page.get_by_label("Show signature, SBOM and attestation tags").check()
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(4)
    expect(page.locator(f'tr[data-tag="{cosign_tag(pushed["a"].digest)}"]')).to_contain_text(
        "signature"
    )

    page.locator('tr[data-tag="1.0"]').get_by_role("link", name="1.0").click()
    expect(page.get_by_role("heading", name="Attached artifacts (2)")).to_be_visible()
    artifacts = page.locator("table.artifacts-table tbody tr")
    expect(artifacts).to_have_count(2)
    signature = page.locator(f'tr[data-artifact="{pushed["sig"].digest}"]')
    signature.get_by_text("dev.sigstore.cosign/certificate").click()
    expect(signature.locator("pre.annotation").first).to_contain_text("BEGIN CERTIFICATE")
    expect(page.locator(f'tr[data-artifact="{pushed["sbom"].digest}"]')).to_contain_text(
        payloads.SPDX
    )
