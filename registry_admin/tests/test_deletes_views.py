"""The delete pages: one tag, one image, bulk; POST-only, admin-only, CSRF, confirmed, audited."""

import re
import uuid

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from registry_admin import index
from registry_admin.models import AuditEvent, BinItem, PortalAction, Tag

from . import harness
from .images import build_image

TAG_URL = "registry_admin:tag-delete"
IMAGE_URL = "registry_admin:image-delete"
BULK_URL = "registry_admin:tags-bulk-delete"


def unique_repo():
    return f"delview/{uuid.uuid4().hex[:10]}"


def push_tags(reg, repo, tags, image=None):
    """Push `image` under every tag, and index them as the notifications would."""
    image = image or build_image()
    pusher = reg.pusher()
    for tag in tags:
        pusher.push_image(repo, tag, image)
        index.upsert_tag(repo, tag, image.digest, timezone.now())
    return image


def indexed_tags(repo):
    harness.wait_for_quiet_notifications()
    return sorted(Tag.objects.filter(repository__name=repo).values_list("name", flat=True))


def portal_actions(action, repo):
    return list(
        AuditEvent.objects.filter(source=AuditEvent.Source.PORTAL, action=action, repository=repo)
    )


@pytest.mark.django_db(transaction=True)
def test_deleting_one_tag_asks_first_then_keeps_its_siblings(registry, admin_client, admin_user):
    repo = unique_repo()
    image = push_tags(registry, repo, ["a", "b", "c"])
    form = {"repository": repo, "tag": "b", "digest": image.digest}

    asked = admin_client.post(reverse(TAG_URL), form)

    assert asked.status_code == 200
    page = asked.content.decode()
    assert f"Delete the tag <code>b</code> of {repo}?" in page
    assert 'data-sibling="a"' in page and 'data-sibling="c"' in page
    assert 'name="confirm" value="yes"' in page
    assert registry.pusher().tags(repo) == ["a", "b", "c"]

    tag_page = reverse("registry_admin:tag", args=[repo, "b"])
    done = admin_client.post(reverse(TAG_URL), {**form, "confirm": "yes", "next": tag_page})

    assert done.status_code == 200
    page = done.content.decode()
    assert 'data-state="deleted"' in page
    # "Back" leads to the repository, not to the page of the tag that is gone.
    repository_page = reverse("registry_admin:repository", args=[repo])
    assert f'href="{repository_page}">Back</a>' in page
    assert f'href="{tag_page}"' not in page
    assert "python manage.py garbage_collect --dry-run" in page
    assert "Restart the registry" in page
    assert "--delete-untagged" in page
    pusher = registry.pusher()
    assert pusher.tags(repo) == ["a", "c"]
    assert pusher.head_manifest(repo, "a") == image.digest
    assert pusher.head_manifest(repo, "c") == image.digest
    assert indexed_tags(repo) == ["a", "c"]
    [row] = portal_actions(PortalAction.TAG_DELETED, repo)
    assert (row.actor, row.tag, row.digest) == (admin_user.username, "b", image.digest)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("days", [7, 0])
def test_the_last_tags_confirmation_says_when_the_bytes_come_back(
    registry, admin_client, settings, days
):
    """With the recycle bin on, deleting a last tag frees nothing until the bin lets it go: the
    confirmation and the result say so, rather than promising the bytes at the next collection."""
    settings.RECYCLE_BIN_DAYS = days
    repo = unique_repo()
    push_tags(registry, repo, ["only"])
    form = {"repository": repo, "tag": "only"}
    held = "after 7 days in the recycle bin (restorable until then)"

    asked = admin_client.post(reverse(TAG_URL), form).content.decode()
    done = admin_client.post(reverse(TAG_URL), {**form, "confirm": "yes"}).content.decode()

    assert 'data-method="digest"' in asked
    assert (held in asked, held in done) == (bool(days), bool(days))
    assert "become reclaimable" in asked and "become reclaimable" in done


@pytest.mark.django_db(transaction=True)
def test_deleting_the_image_lists_every_tag_that_goes_with_it(registry, admin_client):
    repo = unique_repo()
    image = push_tags(registry, repo, ["a", "b", "c"])
    other = push_tags(registry, repo, ["other"])
    form = {"repository": repo, "digest": image.digest}

    asked = admin_client.post(reverse(IMAGE_URL), form)

    page = asked.content.decode()
    assert asked.status_code == 200
    for tag in ("a", "b", "c"):
        assert f'<code data-tag="{tag}">{repo}:{tag}</code>' in page
    assert 'data-tag="other"' not in page
    assert "every one of these 3 tags disappears with it" in page

    done = admin_client.post(
        reverse(IMAGE_URL), {**form, "confirm": "yes", "confirmed_tag": ["a", "b", "c"]}
    )

    assert done.status_code == 200
    assert registry.pusher().tags(repo) == ["other"]
    assert registry.pusher().head_manifest(repo, "other") == other.digest
    assert indexed_tags(repo) == ["other"]
    [row] = portal_actions(PortalAction.IMAGE_DELETED, repo)
    assert row.digest == image.digest
    assert '"tags": ["a", "b", "c"]' in row.raw


@pytest.mark.django_db(transaction=True)
def test_an_image_whose_tags_changed_since_the_confirmation_is_not_deleted(registry, admin_client):
    repo = unique_repo()
    image = push_tags(registry, repo, ["a", "b"])
    # The admin confirmed a and b; meanwhile someone tagged the image as c too.
    push_tags(registry, repo, ["c"], image)

    response = admin_client.post(
        reverse(IMAGE_URL),
        {"repository": repo, "digest": image.digest, "confirm": "yes", "confirmed_tag": ["a", "b"]},
    )

    assert response.status_code == 200
    assert 'data-state="tags-changed"' in response.content.decode()
    assert 'data-tag="c"' in response.content.decode()
    assert registry.pusher().tags(repo) == ["a", "b", "c"]
    assert portal_actions(PortalAction.IMAGE_DELETED, repo) == []


@pytest.mark.django_db(transaction=True)
def test_bulk_delete_confirms_then_reports_each_tag(registry, admin_client):
    repo = unique_repo()
    image = push_tags(registry, repo, ["a", "b", "c", "d"])
    selected = {"repository": repo, "tag": ["b", "c", "ghost"]}

    asked = admin_client.post(reverse(BULK_URL), selected)

    page = asked.content.decode()
    assert asked.status_code == 200
    assert "Delete 3 tags of" in page
    assert f'name="expect" value="b@{image.digest}"' in page
    assert registry.pusher().tags(repo) == ["a", "b", "c", "d"]

    done = admin_client.post(
        reverse(BULK_URL),
        {**selected, "confirm": "yes", "expect": [f"b@{image.digest}", f"c@{image.digest}"]},
    )

    page = done.content.decode()
    assert 'data-tag="b" data-state="deleted"' in page
    assert 'data-tag="c" data-state="deleted"' in page
    assert 'data-tag="ghost" data-state="already gone"' in page
    assert registry.pusher().tags(repo) == ["a", "d"]
    assert registry.pusher().head_manifest(repo, "a") == image.digest
    assert sorted(r.tag for r in portal_actions(PortalAction.TAG_DELETED, repo)) == ["b", "c"]
    # Held in the recycle bin as tags (the image stays for a and d), by the admin, as a bulk.
    held = BinItem.objects.filter(repository=repo).order_by("tags")
    assert [(i.tags, i.kind, i.reason, i.digest) for i in held] == [
        (["b"], "tag", "bulk", image.digest),
        (["c"], "tag", "bulk", image.digest),
    ]
    assert {i.actor for i in held} == {"alice"}


@pytest.mark.django_db(transaction=True)
def test_bulk_delete_skips_a_tag_pushed_again_since_it_was_shown(registry, admin_client):
    repo = unique_repo()
    old = push_tags(registry, repo, ["a", "b"])
    new = push_tags(registry, repo, ["b"], build_image())

    done = admin_client.post(
        reverse(BULK_URL),
        {
            "repository": repo,
            "tag": ["a", "b"],
            "confirm": "yes",
            "expect": [f"a@{old.digest}", f"b@{old.digest}"],
        },
    )

    page = done.content.decode()
    assert 'data-tag="a" data-state="deleted"' in page
    assert 'data-tag="b" data-state="failed"' in page
    assert f"now points at {new.digest}" in page
    assert registry.pusher().tags(repo) == ["b"]


@pytest.fixture
def no_delete_registry(live_server, tmp_path, settings):
    reg = harness.start_registry(tmp_path, live_server.url, delete_enabled=False)
    harness.registry_settings(settings, reg)
    yield reg
    harness.wait_for_quiet_notifications()
    reg.stop()


@pytest.mark.django_db(transaction=True)
def test_with_deletes_disabled_the_page_says_what_to_set_and_nothing_changes(
    no_delete_registry, admin_client
):
    repo = unique_repo()
    image = push_tags(no_delete_registry, repo, ["a", "b"])
    pusher = no_delete_registry.pusher()

    tag_page = admin_client.post(
        reverse(TAG_URL), {"repository": repo, "tag": "b", "digest": image.digest, "confirm": "yes"}
    )
    bulk_page = admin_client.post(
        reverse(BULK_URL), {"repository": repo, "tag": ["a", "b"], "confirm": "yes"}
    )
    image_page = admin_client.post(
        reverse(IMAGE_URL),
        {"repository": repo, "digest": image.digest, "confirm": "yes", "confirmed_tag": ["a", "b"]},
    )

    for response in (tag_page, bulk_page, image_page):
        page = response.content.decode()
        assert response.status_code == 200
        assert 'data-state="deletes-disabled"' in page
        assert "REGISTRY_STORAGE_DELETE_ENABLED=true" in page
        assert "garbage-collect" not in page or "Nothing deleted" in page
    assert 'data-tag="b" data-state="not attempted"' in bulk_page.content.decode()
    assert pusher.tags(repo) == ["a", "b"]
    assert pusher.head_manifest(repo, "a") == image.digest
    assert pusher.head_manifest(repo, "b") == image.digest
    assert indexed_tags(repo) == ["a", "b"]
    assert not AuditEvent.objects.filter(source=AuditEvent.Source.PORTAL, repository=repo).exists()


@pytest.mark.django_db(transaction=True)
def test_a_viewer_gets_403_and_changes_nothing(registry, viewer_client):
    repo = unique_repo()
    image = push_tags(registry, repo, ["a", "b"])
    for name, form in (
        (TAG_URL, {"repository": repo, "tag": "b", "confirm": "yes"}),
        (
            IMAGE_URL,
            {
                "repository": repo,
                "digest": image.digest,
                "confirm": "yes",
                "confirmed_tag": ["a", "b"],
            },
        ),
        (BULK_URL, {"repository": repo, "tag": ["a", "b"], "confirm": "yes"}),
    ):
        assert viewer_client.post(reverse(name), form).status_code == 403
    assert registry.pusher().tags(repo) == ["a", "b"]


@pytest.mark.django_db(transaction=True)
def test_get_on_every_delete_url_changes_nothing(registry, admin_client):
    repo = unique_repo()
    image = push_tags(registry, repo, ["a", "b"])
    query = {"repository": repo, "tag": "b", "digest": image.digest, "confirm": "yes"}
    for name in (TAG_URL, IMAGE_URL, BULK_URL, "registry_admin:retention-run"):
        assert admin_client.get(reverse(name), query).status_code == 405
    assert registry.pusher().tags(repo) == ["a", "b"]


@pytest.mark.django_db
def test_anonymous_posts_go_to_the_login_page(client):
    response = client.post(reverse(TAG_URL), {"repository": "a", "tag": "b", "confirm": "yes"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_a_post_without_the_csrf_token_is_refused(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post(reverse(TAG_URL), {"repository": "a", "tag": "b", "confirm": "yes"})
    assert response.status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    "form,message",
    [
        ({"repository": "../../etc", "tag": "a"}, "is not a valid repository name"),
        ({"repository": "team/app", "tag": "../a"}, "is not a valid tag"),
        ({"repository": "team/app", "tag": "<script>alert(1)</script>"}, "is not a valid tag"),
        ({"repository": "team/app", "tag": "x" * 129}, "at most 128 characters"),
        ({"repository": "team/app", "tag": "a\x00b"}, "is not a valid tag"),
        ({"repository": "team/app", "tag": "ünïcode"}, "is not a valid tag"),
        ({"repository": "team/app", "tag": "a'; DROP TABLE x;--"}, "is not a valid tag"),
        ({"repository": "x" * 300, "tag": "a"}, "at most 255 characters"),
        ({"repository": "team/app", "tag": "a", "digest": "sha256:<b>"}, "not a valid digest"),
        ({"repository": "", "tag": "a"}, "A repository name is required"),
    ],
)
def test_hostile_tag_delete_input_is_refused_with_a_clear_message(admin_client, form, message):
    response = admin_client.post(reverse(TAG_URL), {**form, "confirm": "yes"})
    assert response.status_code == 400
    page = response.content.decode()
    assert message in page
    assert "<script>alert" not in page


@pytest.mark.django_db
def test_hostile_bulk_and_image_input_is_refused(admin_client):
    too_many = admin_client.post(
        reverse(BULK_URL), {"repository": "team/app", "tag": [f"t{i}" for i in range(1001)]}
    )
    assert too_many.status_code == 400
    assert "at most 1000 tags" in too_many.content.decode()
    none = admin_client.post(reverse(BULK_URL), {"repository": "team/app"})
    assert none.status_code == 400
    bad = admin_client.post(reverse(BULK_URL), {"repository": "team/app", "tag": ["ok", "<x>"]})
    assert bad.status_code == 400
    image = admin_client.post(reverse(IMAGE_URL), {"repository": "team/app", "digest": "../x"})
    assert image.status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize(
    "back", ["javascript:alert(1)", "https://evil.example/", "//evil.example/x", "\\\\evil"]
)
def test_the_back_link_never_leaves_the_portal(admin_client, back):
    response = admin_client.post(reverse(TAG_URL), {"repository": "../x", "tag": "a", "next": back})
    assert f'href="{reverse("registry_admin:repositories")}"' in response.content.decode()


@pytest.mark.django_db
def test_an_unreachable_registry_is_a_message_not_a_500(admin_client, settings):
    settings.REGISTRY_URL = f"http://127.0.0.1:{harness.free_port()}"
    settings.REGISTRY_TIMEOUT = 1
    tag = admin_client.post(
        reverse(TAG_URL), {"repository": "team/app", "tag": "a", "confirm": "yes"}
    )
    assert tag.status_code == 200
    assert "unreachable" in tag.content.decode()
    image = admin_client.post(
        reverse(IMAGE_URL), {"repository": "team/app", "digest": "sha256:" + "a" * 64}
    )
    assert image.status_code == 200
    assert "unreachable" in image.content.decode()


@pytest.mark.django_db(transaction=True)
def test_delete_controls_show_for_admins_only(registry, client, admin_user, viewer_user):
    repo = unique_repo()
    image = push_tags(registry, repo, ["a", "b"])
    pages = [
        reverse("registry_admin:repository", args=[repo]),
        reverse("registry_admin:tag", args=[repo, "a"]),
        reverse("registry_admin:manifest", args=[repo, image.digest]),
    ]
    for user, shown in ((admin_user, True), (viewer_user, False)):
        client.force_login(user)
        html = ""
        for url in pages:
            response = client.get(url)
            assert response.status_code == 200
            html += response.content.decode()
        for action in ("delete-tag", "delete-image", "delete-selected"):
            assert (f'data-action="{action}"' in html) is shown, (user, action)
        assert ('form="tag-bulk-form"' in html) is shown
        assert (reverse(TAG_URL) in html) is shown


@pytest.mark.django_db(transaction=True)
def test_the_repository_page_checkboxes_feed_the_bulk_form(registry, admin_client):
    """The page's own form and checkbox names drive a bulk delete end to end."""
    repo = unique_repo()
    push_tags(registry, repo, ["a", "b", "c"])
    html = admin_client.get(reverse("registry_admin:repository", args=[repo])).content.decode()
    assert 'id="tag-bulk-form"' in html
    for tag in ("a", "b", "c"):
        assert f'name="tag" value="{tag}" form="tag-bulk-form"' in html

    asked = admin_client.post(reverse(BULK_URL), {"repository": repo, "tag": ["a", "c"]})
    hidden = re.findall(
        r'<input type="hidden" name="(\w+)" value="([^"]*)">', asked.content.decode()
    )
    form = {}
    for key, value in hidden:
        form.setdefault(key, []).append(value)
    done = admin_client.post(reverse(BULK_URL), form)

    assert done.status_code == 200
    assert registry.pusher().tags(repo) == ["b"]


@pytest.mark.django_db(transaction=True)
def test_after_a_delete_the_page_shows_what_garbage_collection_would_reclaim(
    registry, admin_client
):
    from registry_admin import worker
    from registry_admin.models import StorageSnapshot

    repo = unique_repo()
    doomed = push_tags(registry, repo, ["old"])
    push_tags(registry, repo, ["a", "b"])
    admin_client.post(
        reverse(IMAGE_URL),
        {"repository": repo, "digest": doomed.digest, "confirm": "yes", "confirmed_tag": ["old"]},
    )
    scan = worker.run_now("storage_scan", user="test")
    assert scan.state == scan.State.DONE, scan.error
    snapshot = StorageSnapshot.objects.latest("created_at")
    # The deleted image's layer is now unreferenced: the scan counts it as reclaimable.
    assert snapshot.reclaimable_bytes >= len(doomed.layers[0])

    done = admin_client.post(reverse(TAG_URL), {"repository": repo, "tag": "b", "confirm": "yes"})

    assert f'data-reclaimable-bytes="{snapshot.reclaimable_bytes}"' in done.content.decode()
