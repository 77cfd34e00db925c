"""notifications.parse_envelope / record: the real 2.8.2 payloads in tests/payloads/ (copied from
../shared/realenv/), redeliveries, and bodies that are not what the registry sends."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry_admin import notifications, signals
from registry_admin.models import AuditEvent, RejectedDelivery

from .factories import make_envelope, make_registry_event

PAYLOADS = Path(__file__).parent / "payloads"

M, B, T = AuditEvent.Kind.MANIFEST, AuditEvent.Kind.BLOB, AuditEvent.Kind.TAG

# file: (action, kind, is_head, repository, tag, method, user agent, size)
EXPECTED = {
    "push-blob.json": ("push", B, False, "alpha/app", "", "PUT", "skopeo/1.9.3", 124),
    "push-manifest-oci.json": ("push", M, False, "alpha/app", "v1", "PUT", "skopeo/1.9.3", 578),
    "push-manifest-docker-v2.json": (
        "push",
        M,
        False,
        "alpha/app",
        "v1-docker",
        "PUT",
        "skopeo/1.9.3",
        583,
    ),
    "push-index-oci.json": ("push", M, False, "alpha/app", "multi", "PUT", "skopeo/1.9.3", 517),
    "push-index-child-untagged.json": (
        "push",
        M,
        False,
        "alpha/app",
        "",
        "PUT",
        "skopeo/1.9.3",
        578,
    ),
    "push-manifest-list-docker.json": (
        "push",
        M,
        False,
        "alpha/app",
        "multi-docker",
        "PUT",
        "skopeo/1.9.3",
        529,
    ),
    "push-manifest-put-by-curl.json": (
        "push",
        M,
        False,
        "alpha/app",
        "v2-alias",
        "PUT",
        "curl/7.88.1",
        578,
    ),
    "mount.json": ("mount", B, False, "beta/tool", "", "POST", "skopeo/1.9.3", 124),
    "pull-blob-head-during-push.json": (
        "pull",
        B,
        True,
        "alpha/app",
        "",
        "HEAD",
        "skopeo/1.9.3",
        124,
    ),
    "pull-blob-head.json": ("pull", B, True, "alpha/app", "", "HEAD", "curl/7.88.1", 124),
    "pull-blob.json": ("pull", B, False, "alpha/app", "", "GET", "skopeo/1.9.3", 112),
    "pull-index.json": ("pull", M, False, "alpha/app", "multi", "GET", "skopeo/1.9.3", 517),
    "pull-manifest.json": ("pull", M, False, "alpha/app", "v1", "GET", "skopeo/1.9.3", 578),
    "pull-manifest-head.json": ("pull", M, True, "alpha/app", "v1", "HEAD", "curl/7.88.1", 578),
    "pull-manifest-by-digest.json": ("pull", M, False, "alpha/app", "", "GET", "curl/7.88.1", 578),
    "delete-manifest.json": ("delete", M, False, "alpha/app", "", "DELETE", "curl/7.88.1", None),
    "delete-tag.json": (
        "delete",
        T,
        False,
        "alpha/app",
        "v2-alias2",
        "DELETE",
        "curl/7.88.1",
        None,
    ),
    "delete-blob.json": ("delete", M, False, "delta/x", "", "DELETE", "curl/7.88.1", None),
}


def load(name):
    return (PAYLOADS / name).read_bytes()


def all_captured_bodies():
    with open(PAYLOADS / "all-captures.jsonl") as f:
        return [json.dumps(json.loads(line)["body"]).encode() for line in f]


def test_every_payload_file_is_covered():
    envelopes = {
        p.name for p in PAYLOADS.glob("*.json") if "events" in json.loads(p.read_text() or "{}")
    }
    assert envelopes == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_it_parses_each_real_payload(name):
    action, kind, is_head, repository, tag, method, useragent, size = EXPECTED[name]
    body = load(name)
    source = json.loads(body)["events"][0]

    envelope = notifications.parse_envelope(body)

    assert envelope.errors == []
    [event] = envelope.events
    assert event.event_id == source["id"]
    assert (event.action, event.kind, event.is_head) == (action, kind, is_head)
    assert event.noise == (is_head or kind == B)
    assert (event.repository, event.tag, event.request_method) == (repository, tag, method)
    assert event.request_useragent == useragent
    assert event.size == size
    assert event.digest == source["target"].get("digest", "")
    assert event.media_type == source["target"].get("mediaType", "")
    assert event.actor == "admin"
    assert event.request_id == source["request"]["id"]
    assert event.request_addr == source["request"]["addr"]
    assert event.request_host == "127.0.0.1:5000"
    assert event.source_addr == "registry-host:5000"
    assert event.source_instance == source["source"]["instanceID"]
    assert event.timestamp.tzinfo is not None
    assert json.loads(event.raw) == source


def test_it_keeps_the_mount_origin_and_nanosecond_timestamps():
    [event] = notifications.parse_envelope(load("mount.json")).events
    assert event.from_repository == "alpha/app"
    assert event.timestamp == datetime(2026, 11, 27, 17, 27, 26, 938814, tzinfo=UTC)


@pytest.mark.django_db
def test_replaying_every_capture_stores_each_event_once():
    bodies = all_captured_bodies()
    unique_ids = {json.loads(b)["events"][0]["id"] for b in bodies}
    assert len(bodies) == 175 and len(unique_ids) < len(bodies)  # the captures include retries

    stored = [
        len(notifications.record(notifications.parse_envelope(body), raw_body=body))
        for body in bodies
    ]

    assert sum(stored) == len(unique_ids)
    assert AuditEvent.objects.count() == len(unique_ids)
    assert not RejectedDelivery.objects.exists()
    # A second replay of everything stores nothing new.
    for body in bodies:
        assert notifications.record(notifications.parse_envelope(body), raw_body=body) == []
    assert AuditEvent.objects.count() == len(unique_ids)


@pytest.mark.django_db
def test_a_delete_by_digest_is_linked_by_request_id():
    for envelope in json.loads(load("delete-by-digest-sequence.json")):
        body = json.dumps(envelope).encode()
        notifications.record(notifications.parse_envelope(body), raw_body=body)
    events = AuditEvent.objects.filter(request_id="20b1f52c-d07d-46c1-9017-a67c2ea41a5f")
    assert sorted(events.values_list("kind", "tag")) == [
        (M, ""),
        (T, "v2"),
        (T, "v2-alias"),
        (T, "v2-alias2"),
    ]


@pytest.mark.django_db
def test_an_envelope_of_many_events_is_stored_at_once_and_deduplicated_inside():
    first, second = make_registry_event(), make_registry_event(action="pull")
    body = make_envelope(first, second, first)
    stored = notifications.record(notifications.parse_envelope(body), raw_body=body)
    assert sorted(e.event_id for e in stored) == sorted([first["id"], second["id"]])
    assert AuditEvent.objects.count() == 2


@pytest.mark.django_db
def test_handlers_see_only_newly_stored_events_inside_the_transaction():
    seen = []

    def handler(sender, events, **kwargs):
        from django.db import connection

        seen.append(([e.event_id for e in events], connection.in_atomic_block))

    event = make_registry_event()
    body = make_envelope(event)
    signals.events_recorded.connect(handler)
    try:
        notifications.record(notifications.parse_envelope(body))
        notifications.record(notifications.parse_envelope(body))
    finally:
        signals.events_recorded.disconnect(handler)
    assert seen == [([event["id"]], True), ([], True)]


@pytest.mark.django_db
def test_a_failing_handler_rolls_the_whole_delivery_back():
    def handler(sender, events, **kwargs):
        raise RuntimeError("index update failed")

    body = make_envelope(make_registry_event(), make_registry_event())
    signals.events_recorded.connect(handler)
    try:
        with pytest.raises(RuntimeError):
            notifications.record(notifications.parse_envelope(body))
    finally:
        signals.events_recorded.disconnect(handler)
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[" * 100000 + b"]" * 100000, "not JSON"),
        (b"1" * 5000, "not JSON"),
        (b'"<script>alert(1)</script>"', "not an envelope"),
        (b"[]", "not an envelope"),
        (b'{"events": {"id": "x"}}', "not an envelope"),
        (b'{"event": []}', "not an envelope"),
    ],
)
def test_it_refuses_bodies_that_are_not_envelopes(body, message):
    with pytest.raises(notifications.EnvelopeError, match=message):
        notifications.parse_envelope(body)


def bad(**changes):
    event = make_registry_event()
    for key, value in changes.items():
        if value is None:
            event.pop(key)
        else:
            event[key] = value
    return event


@pytest.mark.parametrize(
    "event, message",
    [
        ("just a string", "not an object"),
        (bad(id=None), "no id"),
        (bad(id=""), "no id"),
        (bad(id="x" * 300), "too long"),
        (bad(id=["list"]), "id is not a string"),
        (bad(action="tag"), "unknown action 'tag'"),
        (bad(action=None), "unknown action ''"),
        (bad(timestamp="yesterday"), "unreadable timestamp"),
        (bad(timestamp="9999-12-31T23:59:59-23:00"), "unreadable timestamp"),
        (bad(timestamp=12345), "no timestamp"),
        (bad(target="alpha/app"), "target is not an object"),
        (bad(target={"tag": "v1"}), "no target.repository"),
        (bad(target={"repository": {"$ne": 1}}), "repository is not a string"),
        (bad(actor="bob"), "actor is not an object"),
    ],
)
def test_it_reports_events_it_cannot_read_and_keeps_the_others(event, message):
    good = make_registry_event()
    envelope = notifications.parse_envelope(make_envelope(event, good))
    assert [e.event_id for e in envelope.events] == [good["id"]]
    assert len(envelope.errors) == 1
    assert envelope.errors[0].startswith("event 0: ")
    assert message in envelope.errors[0]


@pytest.mark.django_db
def test_hostile_and_oversized_values_are_stored_safely():
    event = make_registry_event(
        repository="../../etc/passwd\x00' OR 1=1; --",
        tag="<script>alert(1)</script>" + "t" * 500,
        mediaType="application/vnd.oci.image.manifest.v1+json",
        size=-5,
        length=2**70,
    )
    event["actor"] = {"name": "ünïcødé\u202e\x07"}
    event["request"]["useragent"] = "u" * 5000
    body = make_envelope(event)

    [stored] = notifications.record(notifications.parse_envelope(body), raw_body=body)

    stored.refresh_from_db()
    assert stored.repository == "../../etc/passwd' OR 1=1; --"
    assert stored.tag.startswith("<script>") and len(stored.tag) == 255
    assert stored.actor == "ünïcødé\u202e\x07"
    assert len(stored.request_useragent) == 500
    assert stored.size is None
    # The raw JSON is the event exactly, NUL included.
    assert json.loads(stored.raw)["target"]["repository"] == "../../etc/passwd\x00' OR 1=1; --"


@pytest.mark.django_db
def test_a_partly_bad_delivery_is_kept_as_a_rejected_delivery():
    good = make_registry_event()
    body = make_envelope(good, bad(action="explode"))
    stored = notifications.record(
        notifications.parse_envelope(body),
        raw_body=body,
        content_type="application/json",
        remote_addr="10.0.0.7",
    )
    assert [e.event_id for e in stored] == [good["id"]]
    rejected = RejectedDelivery.objects.get()
    assert "unknown action 'explode'" in rejected.error
    assert bytes(rejected.body) == body
    assert rejected.stored_events == 1
    assert (rejected.content_type, rejected.remote_addr) == ("application/json", "10.0.0.7")


@pytest.mark.django_db
def test_a_non_envelope_is_kept_with_its_error():
    notifications.record(None, raw_body=b"\x00\xffnot json", error="the body is not JSON: x")
    rejected = RejectedDelivery.objects.get()
    assert rejected.error == "the body is not JSON: x"
    assert bytes(rejected.body) == b"\x00\xffnot json"
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    "action, media_type, url, tag, digest, expected",
    [
        ("push", "", "http://r/v2/a/manifests/manifests/sha256:1", "", "sha256:1", M),
        ("push", "", "http://r/v2/a/blobs/x/manifests/v1", "v1", "", M),
        ("push", "", "http://r/v2/a/manifests/x/blobs/sha256:1", "", "sha256:1", B),
        ("push", "application/vnd.oci.image.layer.v1.tar+gzip", "", "", "sha256:1", B),
        ("push", "application/vnd.example.manifest.v9+json", "", "", "sha256:1", M),
        ("mount", "", "", "", "sha256:1", B),
        ("delete", "", "", "v1", "", T),
        ("delete", "", "", "", "", AuditEvent.Kind.REPOSITORY),
    ],
)
def test_it_derives_the_kind(action, media_type, url, tag, digest, expected):
    assert (
        notifications.derive_kind(action, media_type, url, repository="a", tag=tag, digest=digest)
        == expected
    )
