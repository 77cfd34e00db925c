"""Referrers on the pages: the tag list hides them (a filter shows them) and badges the image,
the tag page lists what is attached, the repository list counts real tags. Real registry."""

import json
import re
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from registry_admin import api_tokens
from registry_admin.models import Repository

from . import referrer_payloads as payloads
from .factories import make_viewer
from .harness import PUSH_USER
from .images import build_image
from .referrer_payloads import build_oci_sbom, cosign_tag, fallback_tag, push_artifact
from .test_referrers import index_repository, push_signed_repository

pytestmark = pytest.mark.django_db(transaction=True)


def rows(html):
    return re.findall(r'<tr data-tag="([^"]+)"', html)


def row_html(html, tag):
    start = html.index(f'<tr data-tag="{tag}"')
    return html[start : html.index("</tr>", start)]


def test_the_repository_page_shows_two_images_the_first_signed_with_an_sbom(
    registry, viewer_client
):
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pushed = push_signed_repository(registry, repo)
    index_repository(repo)
    a = pushed["a"].digest
    url = reverse("registry_admin:repository", args=[repo])

    html = viewer_client.get(url).content.decode()

    assert sorted(rows(html)) == ["1.0", "2.0"]
    assert '<span data-count="tags">2</span> tags' in html
    first = row_html(html, "1.0")
    assert 'data-badge="signed" data-count="1"' in first
    assert 'data-badge="SBOM" data-count="1"' in first
    assert "data-badge" not in row_html(html, "2.0")
    # Searching and sorting never bring referrer tags back; the filter does.
    assert rows(viewer_client.get(url, {"q": "sha256", "sort": "name"}).content.decode()) == []
    shown = viewer_client.get(url, {"referrers": "on"}).content.decode()
    assert sorted(rows(shown)) == sorted(["1.0", "2.0", cosign_tag(a), fallback_tag(a)])
    assert 'data-referrer-kind="signature"' in row_html(shown, cosign_tag(a))
    # The repository list counts real tags.
    assert Repository.objects.get(name=repo).tag_count == 2
    listing = viewer_client.get(reverse("registry_admin:repositories"), {"q": repo}).content
    assert repo.encode() in listing

    # The tag page lists the attached artifacts with their annotations as text.
    page = viewer_client.get(reverse("registry_admin:tag", args=[repo, "1.0"])).content.decode()
    assert "Attached artifacts (2)" in page
    attached_bytes = sum(len(b) for k in ("sig", "sbom") for b in pushed[k].blobs)
    assert f'data-artifacts-bytes="{attached_bytes}"' in page
    assert f'data-artifact="{pushed["sig"].digest}" data-kind="signature"' in page
    assert f'data-artifact="{pushed["sbom"].digest}" data-kind="sbom"' in page
    assert payloads.SPEC_SIGNATURE in page
    # Who pushed them: the registry user of the signature's and the fallback index's pushes.
    assert page.count(f'data-pushed-by="{PUSH_USER}"') == 2
    assert "-----BEGIN CERTIFICATE-----" in page
    assert payloads.SPDX in page
    # The signature's own page says what it is attached to; the other image has nothing.
    sig_page = viewer_client.get(
        reverse("registry_admin:tag", args=[repo, cosign_tag(a)])
    ).content.decode()
    assert f'data-subject="{a}"' in sig_page
    other = viewer_client.get(reverse("registry_admin:tag", args=[repo, "2.0"])).content.decode()
    assert "Attached artifacts" not in other


def test_hostile_annotations_are_shown_as_escaped_text(registry, viewer_client):
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pusher = registry.pusher()
    image = build_image()
    pusher.push_image(repo, "1.0", image)
    sbom = build_oci_sbom(image)
    data = json.loads(sbom.manifest)
    data["annotations"] = {"org.example.note": "<script>alert(1)</script>" + "x" * 9000}
    sbom.manifest = json.dumps(data).encode()
    push_artifact(pusher, repo, "sbom-tagged", sbom)
    index_repository(repo)

    page = viewer_client.get(reverse("registry_admin:tag", args=[repo, "1.0"])).content.decode()

    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "x" * 4100 not in page  # capped


def test_the_audit_log_says_what_a_referrer_push_is_for(registry, admin_client):
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pushed = push_signed_repository(registry, repo)
    index_repository(repo)
    # The SBOM was pushed by digest (no tag): the fallback index says what it refers to.
    assert pushed["sbom"].digest

    html = admin_client.get(reverse("registry_admin:audit"), {"repository": repo}).content.decode()

    texts = re.findall(r"<small data-referrer-push>([^<]+)</small>", html)
    assert f"signature pushed for {repo}:1.0" in texts
    assert f"SBOM pushed for {repo}:1.0" in texts
    assert f"referrers index pushed for {repo}:1.0" in texts
    # The images' own pushes are plain pushes.
    assert len(texts) == 3


def test_the_api_lists_real_tags_unless_asked_for_referrers(registry):
    repo = f"signed/{uuid.uuid4().hex[:8]}"
    pushed = push_signed_repository(registry, repo)
    index_repository(repo)
    owner = make_viewer("api-reader")
    _, token = api_tokens.create("api-reader", owner, "dashboards", "read")
    url = f"/api/v1/repositories/{repo}/-/tags/"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    plain = Client().get(url, **auth).json()
    shown = Client().get(url, {"referrers": "true"}, **auth).json()

    assert sorted(r["name"] for r in plain["results"]) == ["1.0", "2.0"]
    a = pushed["a"].digest
    assert sorted(r["name"] for r in shown["results"]) == sorted(
        ["1.0", "2.0", cosign_tag(a), fallback_tag(a)]
    )
    assert Client().get(url, {"referrers": "maybe"}, **auth).status_code == 400
