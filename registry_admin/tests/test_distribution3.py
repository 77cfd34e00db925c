"""distribution 3.x behaviours Oyster depends on, against fixtures recorded from the upstream
source (distribution3/README.md cites file and commit for each). The 2.8.2 side of the same
code is tested on the real registry elsewhere (test_registry_client, test_index_events)."""

import json

import pytest
from django.test import Client

from registry_admin import registry
from registry_admin.models import AuditEvent, Tag

from .distribution3 import TagsServer, envelope

V2_MEDIA_TYPE = "application/vnd.docker.distribution.events.v2+json"
TOKEN = "test-notifications-token-0123456789"
DIGEST = "sha256:4027e11c941ab3690802e542baf3b491f12f993e3a013ca5f9068e9da998e78e"


@pytest.fixture
def tags_server(request):
    servers = []

    def start(version, tags, maxtags=1000):
        server = TagsServer(version, tags, maxtags=maxtags)
        servers.append(server)
        return server, registry.RegistryClient(server.url, timeout=5, retries=0)

    yield start
    for server in servers:
        server.stop()


def names(count, prefix="t"):
    return [f"{prefix}{number:05d}" for number in range(count)]


@pytest.mark.parametrize(
    ("version", "maxtags", "count", "requests"),
    [
        ("2.8.2", 1000, 2500, 1),  # ignores n: everything at once
        ("3.0.0", 0, 2500, 3),  # pages of the n asked for
        ("3.1.1", 1000, 2500, 3),
        ("3.1.1", 100, 2500, 26),  # n clamped to 100: 25 full pages, each with Link, then null
        ("3.1.1", 1000, 2000, 3),  # a full last page: Link, then {"tags": null}
        ("3.1.0", 1000, 2000, 3),
        ("3.1.0", 100, 250, 2),  # n > maxtags: 400, then once without n
        ("3.1.1", 7, 20, 3),
    ],
)
def test_tag_listing_follows_link_with_any_page_size(
    tags_server, version, maxtags, count, requests
):
    tags = names(count)[::-1]
    server, client = tags_server(version, {"team/app": tags}, maxtags=maxtags)
    listed = client.list_tags("team/app")
    assert sorted(listed) == sorted(tags)
    assert len(listed) == len(set(listed)) == count
    assert len(server.requests) == requests
    assert server.requests[0] == "/v2/team/app/tags/list?n=1000"


def test_the_3_1_0_refusal_falls_back_once_and_other_errors_stay_errors(tags_server):
    server, client = tags_server("3.1.0", {"team/app": names(30)}, maxtags=10)
    assert len(client.list_tags("team/app")) == 30
    assert server.requests == ["/v2/team/app/tags/list?n=1000", "/v2/team/app/tags/list"]
    # A repository 3.x no longer knows (every tag deleted) is 404 NAME_UNKNOWN.
    with pytest.raises(registry.RegistryNotFound, match="repository gone/app"):
        client.list_tags("gone/app")


@pytest.mark.parametrize(
    "link",
    [
        '<http://evil.example/v2/team/app/tags/list?last=t00001&n=2>; rel="next"',
        '</v2/other/app/tags/list?last=t00001&n=2>; rel="next"',
        '</v2/_catalog?n=2>; rel="next"',
        '</v2/team/app/tags/list>; rel="next"',
        '<javascript:alert(1)>; rel="next"',
        "<" + "x" * 10000 + '>; rel="next"',
    ],
)
def test_a_link_elsewhere_is_not_followed(tags_server, link):
    server, client = tags_server("3.1.1", {"team/app": names(2)})
    server.answer = lambda path: (200, {"Link": link}, {"name": "team/app", "tags": ["a", "b"]})
    assert client.list_tags("team/app") == ["a", "b"]
    assert len(server.requests) == 1


def test_a_link_loop_ends(tags_server):
    server, client = tags_server("3.1.1", {"team/app": names(2)})
    loop = '</v2/team/app/tags/list?last=a&n=1>; rel="next"'
    server.answer = lambda path: (200, {"Link": loop}, {"name": "team/app", "tags": ["a"]})
    assert client.list_tags("team/app") == ["a"]
    assert len(server.requests) == 2


# --- notifications: v2 envelopes and empty delete digests -------------------------------------


@pytest.fixture
def deliver(settings):
    settings.NOTIFICATIONS_TOKEN = TOKEN
    client = Client()

    def post(body):
        response = client.post(
            "/api/registry/events",
            data=body,
            content_type=V2_MEDIA_TYPE,
            HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
        )
        assert response.status_code == 200, response.content
        return response

    return post


def retagged(name, tag, event_id):
    body = json.loads(envelope(name))
    body["events"][0]["target"]["tag"] = tag
    body["events"][0]["id"] = event_id
    return json.dumps(body).encode()


@pytest.mark.django_db
def test_a_v2_push_and_pull_are_stored_and_indexed(deliver):
    deliver(envelope("push-manifest-tagged.json"))
    deliver(envelope("pull-manifest.json"))
    tag = Tag.objects.select_related("repository", "manifest").get()
    assert (tag.repository.name, tag.name, tag.digest) == ("alpha/app", "v1", DIGEST)
    assert tag.manifest.manifest_size == 578
    push, pull = AuditEvent.objects.order_by("timestamp")
    assert (push.action, push.kind, push.actor, push.tag) == ("push", "manifest", "alice", "v1")
    assert (pull.action, pull.kind, pull.actor, pull.is_head) == ("pull", "manifest", "bob", False)


@pytest.mark.django_db
def test_a_tag_delete_with_an_empty_digest_removes_only_that_tag(deliver):
    deliver(envelope("push-manifest-tagged.json"))
    deliver(
        retagged("push-manifest-tagged.json", "v1-alias", "b0a3c3f2-aaaa-4a57-bf51-0d0b1e1c7d01")
    )
    assert Tag.objects.count() == 2
    deliver(envelope("delete-tag.json"))
    (left,) = Tag.objects.all()
    assert (left.name, left.digest) == ("v1-alias", DIGEST)
    event = AuditEvent.objects.get(action="delete")
    assert (event.kind, event.tag, event.digest, event.media_type) == ("tag", "v1", "", "")
    # The same delivery again (the registry retries the same id) changes nothing.
    deliver(envelope("delete-tag.json"))
    assert AuditEvent.objects.filter(action="delete").count() == 1
    assert Tag.objects.count() == 1


@pytest.mark.django_db
def test_a_manifest_delete_with_an_empty_media_type_removes_its_tags(deliver):
    deliver(envelope("push-manifest-tagged.json"))
    deliver(
        retagged("push-manifest-tagged.json", "v1-alias", "b0a3c3f2-aaaa-4a57-bf51-0d0b1e1c7d01")
    )
    deliver(envelope("delete-manifest.json"))
    assert not Tag.objects.exists()
    event = AuditEvent.objects.get(action="delete")
    assert (event.kind, event.digest, event.tag) == ("manifest", DIGEST, "")


@pytest.mark.django_db
def test_a_repository_delete_is_audited_and_leaves_the_index_alone(deliver):
    deliver(envelope("push-manifest-tagged.json"))
    deliver(envelope("delete-repository.json"))
    event = AuditEvent.objects.get(action="delete")
    assert (event.kind, event.repository, event.digest, event.tag) == (
        "repository",
        "alpha/app",
        "",
        "",
    )
    assert Tag.objects.count() == 1  # the next reconcile finds out; nothing was guessed


@pytest.mark.django_db
def test_gc_guidance_says_which_flags_are_safe_on_which_version(admin_client):
    html = admin_client.get("/storage/").content.decode()
    assert "<strong>Never add <code>--delete-untagged</code></strong> on registry 2.8" in html
    assert "On registry 3.x it keeps the children of tagged indexes" in html
    assert "<code>--dry-run</code> is safe on both" in html
    assert "/etc/distribution/config.yml" in html
