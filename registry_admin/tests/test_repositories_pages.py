"""The repositories list and repository page, read from the index (no registry needed)."""

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from registry_admin import browse, index
from registry_admin.models import Manifest, Repository, Tag

from .harness import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def registry_down(settings):
    """Nothing listens: the pages must work from the index alone."""
    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"
    settings.REGISTRY_TIMEOUT = 1
    cache.clear()


def _digest(n):
    return f"sha256:{n:064x}"


def _image(n, size, created=None, platforms=None, labels=None):
    Manifest.objects.update_or_create(
        digest=_digest(n),
        defaults={
            "media_type": "application/vnd.oci.image.manifest.v1+json",
            "size": size,
            "created": created,
            "platforms": platforms or [{"os": "linux", "architecture": "amd64"}],
            "labels": labels or {},
            "details_fetched_at": timezone.now(),
        },
    )


def _seed():
    now = timezone.now()
    _image(1, 1000, now - timedelta(days=3))
    _image(2, 5000, now - timedelta(days=1))
    _image(3, 300, now - timedelta(days=2))
    index.upsert_tag("alpha/app", "1.9.0", _digest(1), now - timedelta(hours=5))
    index.upsert_tag("alpha/app", "1.10.0", _digest(2), now - timedelta(hours=1))
    index.upsert_tag("alpha/app", "latest", _digest(2), now - timedelta(hours=1))
    index.upsert_tag("alpha/app", "1.10.0-rc.1", _digest(3), now - timedelta(hours=3))
    index.upsert_tag("beta/tool", "v1", _digest(3), now - timedelta(hours=2))
    index.upsert_tag("gamma", "v1", _digest(1), now - timedelta(days=9))
    index.upsert_tag("gamma", "v2", _digest(2), now - timedelta(days=8))
    index.upsert_tag("ghost/empty", "gone", _digest(1), now)
    index.forget_tags("ghost/empty", ["gone"])
    return now


def _names(response):
    return re.findall(r'class="mono">([^<]+)</a>', response.content.decode())


def test_the_list_sorts_searches_counts_and_hides_empty_repositories(viewer_client):
    _seed()
    response = viewer_client.get("/repositories/")
    assert response.status_code == 200
    assert _names(response) == ["alpha/app", "beta/tool", "gamma"]
    assert b'data-count="repositories">3<' in response.content
    assert b'data-count="tags">7<' in response.content
    assert b'data-count="empty">1<' in response.content
    assert b"The registry is unreachable" in response.content

    assert _names(viewer_client.get("/repositories/?sort=size")) == [
        "alpha/app",
        "gamma",
        "beta/tool",
    ]
    assert _names(viewer_client.get("/repositories/?sort=tags")) == [
        "alpha/app",
        "gamma",
        "beta/tool",
    ]
    assert _names(viewer_client.get("/repositories/?sort=push")) == [
        "alpha/app",
        "beta/tool",
        "gamma",
    ]
    assert _names(viewer_client.get("/repositories/?q=AmM")) == ["gamma"]
    assert _names(viewer_client.get("/repositories/?q=p")) == ["alpha/app"]
    assert _names(viewer_client.get("/repositories/?q=ta/")) == ["beta/tool"]
    with_empty = viewer_client.get("/repositories/?empty=on")
    assert "ghost/empty" in _names(with_empty)
    assert b'badge-warn">empty' in with_empty.content
    # Distinct images count once in a repository's size: 1000 + 5000 + 300.
    assert Repository.objects.get(name="alpha/app").total_size == 6300


def test_the_list_pages_by_links(viewer_client):
    for number in range(120):
        index.upsert_tag(f"many/r{number:03d}", "v1", _digest(1), timezone.now())
    first = viewer_client.get("/repositories/")
    assert len(_names(first)) == 50
    assert b"120 repositories, 50 on this page." in first.content
    assert b'rel="prev"' not in first.content
    after = re.search(r'after=([^"&]+)" rel="next"', first.content.decode()).group(1)
    second = viewer_client.get(f"/repositories/?q=many&after={after}")
    assert _names(second) == [f"many/r{n:03d}" for n in range(50, 100)]
    assert b"q=many&amp;after=" in second.content and b'rel="prev"' in second.content
    last = viewer_client.get("/repositories/?q=many&page=last")
    assert _names(last) == [f"many/r{n:03d}" for n in range(70, 120)]
    assert b'rel="next"' not in last.content
    # A numbered page (a link saved by an earlier version) says so and shows the first page.
    old = viewer_client.get("/repositories/?page=3")
    assert b"Pages are no longer numbered" in old.content and len(_names(old)) == 50


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?q=" + "x" * 300, b"at most 255 characters"),
        ("?q=a%00b", b"Null characters are not allowed"),
        ("?q=a%07b", b"Control characters are not allowed"),
        ("?sort=name;DROP TABLE", b"Select a valid choice"),
        ("?sort=%3Cscript%3E", b"Select a valid choice"),
    ],
)
def test_bad_list_parameters_give_a_message_and_still_list(viewer_client, query, message):
    _seed()
    response = viewer_client.get("/repositories/" + query)
    assert response.status_code == 200
    assert message in response.content
    assert _names(response) == ["alpha/app", "beta/tool", "gamma"]


def test_hostile_search_text_is_escaped(viewer_client):
    _seed()
    response = viewer_client.get("/repositories/?q=%3Cscript%3Ealert(1)%3C/script%3E%27%22")
    assert response.status_code == 200
    assert b"<script>alert(1)" not in response.content
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in response.content
    unicode = viewer_client.get("/repositories/?q=%E2%9C%93%F0%9F%90%B3")
    assert unicode.status_code == 200 and "✓🐳".encode() in unicode.content


def _tag_order(response):
    return re.findall(r'<tr data-tag="([^"]+)"', response.content.decode())


def test_the_repository_page_sorts_filters_and_groups_tags(viewer_client):
    _seed()
    page = viewer_client.get("/repositories/alpha/app/")
    assert page.status_code == 200
    # Created, newest first; the two tags on digest 2 are adjacent and list each other.
    assert _tag_order(page) == ["1.10.0", "latest", "1.10.0-rc.1", "1.9.0"]
    body = page.content.decode()
    assert "same image as latest" in body and "same image as 1.10.0" in body
    assert body.count("digest-group digest-group-") == 2
    assert _digest(2)[:19] in body
    assert "4.9\xa0KB" in body  # 5000 bytes
    assert "linux/amd64" in body
    assert _tag_order(viewer_client.get("/repositories/alpha/app/?sort=name")) == [
        "1.9.0",
        "1.10.0-rc.1",
        "1.10.0",
        "latest",
    ]
    assert _tag_order(viewer_client.get("/repositories/alpha/app/?sort=-name")) == [
        "latest",
        "1.10.0",
        "1.10.0-rc.1",
        "1.9.0",
    ]
    assert _tag_order(viewer_client.get("/repositories/alpha/app/?sort=size")) == [
        "1.10.0",
        "latest",
        "1.9.0",
        "1.10.0-rc.1",
    ]
    assert _tag_order(viewer_client.get("/repositories/alpha/app/?sort=pushed"))[-1] == "1.9.0"
    assert _tag_order(viewer_client.get("/repositories/alpha/app/?q=1.10")) == [
        "1.10.0",
        "1.10.0-rc.1",
    ]
    assert b"No tag contains" in viewer_client.get("/repositories/alpha/app/?q=zzz").content
    junk = viewer_client.get("/repositories/alpha/app/?sort=bogus&q=%01")
    assert junk.status_code == 200 and b"Select a valid choice" in junk.content


def test_semver_and_natural_tag_order():
    names = ["latest", "v2", "1.0.0", "1.0.0-rc.2", "1.0.0-rc.10", "v1.2", "build-10", "build-9"]
    assert sorted(names, key=browse.tag_name_key) == [
        "1.0.0-rc.2",
        "1.0.0-rc.10",
        "1.0.0",
        "v1.2",
        "v2",
        "build-9",
        "build-10",
        "latest",
    ]


def test_an_empty_repository_page_says_so(viewer_client):
    _seed()
    page = viewer_client.get("/repositories/ghost/empty/")
    assert page.status_code == 200
    assert b"This repository has no tags" in page.content


def test_names_with_slashes_dots_and_dashes_route(viewer_client):
    _image(7, 10)
    index.upsert_tag("org/team/sub.app_x", "1.2.3-beta.1_b", _digest(7), timezone.now())
    page = viewer_client.get("/repositories/org/team/sub.app_x/")
    assert page.status_code == 200
    assert b"/repositories/org/team/sub.app_x/-/tags/1.2.3-beta.1_b/" in page.content


@pytest.mark.parametrize(
    "path",
    [
        "/repositories/a/../b/",
        "/repositories/../etc/passwd/",
        "/repositories/a/%2E%2E/b/",
        "/repositories/UPPER/",
        "/repositories/a//b/",
        "/repositories/%3Cscript%3E/",
        "/repositories/" + "a" * 300 + "/",
        "/repositories/a%00b/",
        "/repositories/alpha/app/-/tags/..%2F..%2Fx/",
        "/repositories/alpha/app/-/tags/-rm/",
        "/repositories/alpha/app/-/tags/" + "t" * 129 + "/",
        "/repositories/alpha/app/-/manifests/sha256:nothex/",
        "/repositories/a/../b/-/tags/v1/",
    ],
)
def test_invalid_names_are_rejected_with_a_message(viewer_client, path):
    response = viewer_client.get(path)
    assert response.status_code == 400
    assert b"is not a valid repository, tag or digest" in response.content
    assert b"<script>" not in response.content


def test_an_unknown_repository_is_a_404_with_a_message(viewer_client):
    response = viewer_client.get("/repositories/not/there/")
    assert response.status_code == 404
    assert b"The index has no repository named" in response.content


def test_pages_need_a_login(client):
    for path in ("/repositories/", "/repositories/alpha/app/", "/repositories/a/-/tags/v1/"):
        response = client.get(path)
        assert response.status_code == 302
        assert "/login" in response["Location"]


def test_the_sync_widget_and_refresh_button_show_for_admins(admin_client):
    _seed()
    for path in ("/repositories/", "/repositories/alpha/app/"):
        page = admin_client.get(path)
        assert b'data-run-kind="sync"' in page.content
        assert b"Refresh now" in page.content


def test_viewers_see_progress_without_the_button(viewer_client):
    _seed()
    page = viewer_client.get("/repositories/")
    assert b'data-run-kind="sync"' in page.content
    assert b"Refresh now" not in page.content


def test_tags_do_not_leak_between_repositories(viewer_client):
    _seed()
    page = viewer_client.get("/repositories/beta/tool/")
    assert _tag_order(page) == ["v1"]
    assert Tag.objects.filter(repository__name="beta/tool").count() == 1


def test_a_large_repository_pages_its_tags_in_semver_order(viewer_client):
    _image(1, 10)
    now = timezone.now()
    for minor in range(15):
        for patch in range(10):
            index.upsert_tag("big/app", f"1.{minor}.{patch}", _digest(1), now)
    first = viewer_client.get("/repositories/big/app/?sort=-name")
    assert _tag_order(first)[:3] == ["1.14.9", "1.14.8", "1.14.7"]
    assert len(_tag_order(first)) == 50
    last = viewer_client.get("/repositories/big/app/?sort=-name&page=3")
    assert _tag_order(last)[-1] == "1.0.0"
    assert len(_tag_order(last)) == 50
    assert b"sort=-name&amp;page=2" in last.content
