"""Outgoing event hooks: the endpoint rules, queuing from portal actions and registry events,
the four formats as received by a real HTTP server, order and retries, pages and command with
hostile input, and a skopeo push reaching a CloudEvents receiver on the real registry."""

import hashlib
import hmac
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from registry_admin import access, event_hooks
from registry_admin.models import AuditEvent, EventHook, EventKind, HookDelivery, PortalAction

from . import harness
from .harness import serving

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_cache():
    event_hooks.forget_cached()
    yield
    event_hooks.forget_cached()


class Receiver(BaseHTTPRequestHandler):
    """Records every POST; answers `status` (a list: one per request, the last repeats)."""

    received = []
    statuses = [200]

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append((dict(self.headers), body))
        type(self).paths.append(self.path)
        status = self.statuses[0] if len(self.statuses) == 1 else self.statuses.pop(0)
        self.send_response(status)
        if status in (301, 302):
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def receiver_class(statuses=(200,)):
    return type("R", (Receiver,), {"received": [], "paths": [], "statuses": list(statuses)})


@pytest.fixture
def allow_private(settings):
    settings.EVENT_HOOKS_ALLOW_PRIVATE = True


def add(name, url, fmt="generic", events=(), pattern=""):
    return event_hooks.save_hook("admin", name, url, fmt, events, pattern)


# --- the endpoint rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
    ],
)
def test_loopback_private_and_metadata_addresses_are_refused(url):
    with pytest.raises(event_hooks.HookError) as error:
        add("h", url)
    assert "EVENT_HOOKS_ALLOW_PRIVATE" in str(error.value)
    assert not EventHook.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/x",
        "gopher://8.8.8.8/",
        "https://user:pw@8.8.8.8/x",
        "http://",
        "not a url",
        "https://8.8.8.8:99999/x",
        "https://" + "a" * 3000,
    ],
)
def test_other_schemes_credentials_and_broken_urls_are_refused(url):
    with pytest.raises(event_hooks.HookError):
        add("h", url)


def test_a_public_address_is_accepted_and_private_ones_with_the_setting(settings):
    add("public", "https://8.8.8.8/hook")
    settings.EVENT_HOOKS_ALLOW_PRIVATE = True
    add("local", "http://127.0.0.1:1/hook")
    assert set(EventHook.objects.values_list("name", flat=True)) == {"public", "local"}


def test_names_formats_kinds_and_patterns_are_checked(allow_private):
    for name, fmt, events, pattern in [
        ("", "generic", [], ""),
        ("bad name", "generic", [], ""),
        ("x" * 65, "generic", [], ""),
        ("h", "xml", [], ""),
        ("h", "generic", ["push", "nonsense"], ""),
        ("h", "generic", [], "Team/*"),
        ("h", "generic", [], "../x"),
    ]:
        with pytest.raises(event_hooks.HookError):
            add(name, "http://127.0.0.1:1/", fmt, events, pattern)
    assert not EventHook.objects.exists()
    add("h", "http://127.0.0.1:1/")
    with pytest.raises(event_hooks.HookError):
        add("h", "http://127.0.0.1:2/")


def test_a_name_that_resolves_to_a_private_address_later_is_refused_at_send_time(
    allow_private, settings
):
    hook, _ = add("h", "http://127.0.0.1:1/hook")
    settings.EVENT_HOOKS_ALLOW_PRIVATE = False
    event_hooks.send_test(hook)
    event_hooks.send_due()
    delivery = HookDelivery.objects.get()
    assert delivery.state == HookDelivery.State.PENDING and delivery.attempts == 1
    assert "EVENT_HOOKS_ALLOW_PRIVATE" in delivery.last_error


def test_a_name_rebound_to_loopback_between_the_check_and_the_connection_is_refused(
    settings, monkeypatch
):
    """DNS rebinding: the name answers a public address when checked and 127.0.0.1 when the
    connection resolves it. The receiver listens there and must hear nothing."""
    settings.EVENT_HOOKS_ALLOW_PRIVATE = False
    real_getaddrinfo = socket.getaddrinfo
    answers = []

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.example":
            return real_getaddrinfo(host, port, *args, **kwargs)
        # Public when the hook is saved and when the send checks it, loopback when connecting.
        address = "93.184.216.34" if len(answers) < 2 else "127.0.0.1"
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    handler = receiver_class()
    with serving(handler) as server:
        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        hook, _ = add("h", f"http://rebind.example:{server.server_port}/hook")
        event_hooks.send_test(hook)
        assert event_hooks.send_due() == 0
    delivery = HookDelivery.objects.get(hook=hook)
    assert delivery.state == HookDelivery.State.PENDING and delivery.attempts == 1
    assert "127.0.0.1" in delivery.last_error and "EVENT_HOOKS_ALLOW_PRIVATE" in delivery.last_error
    assert handler.received == []
    assert answers == ["93.184.216.34", "93.184.216.34", "127.0.0.1"]


# --- queuing and formats --------------------------------------------------------------------


def test_portal_actions_are_queued_for_the_hooks_that_want_them(allow_private):
    add("all", "http://127.0.0.1:1/")
    add("access-only", "http://127.0.0.1:1/", events=["access"])
    add("pushes", "http://127.0.0.1:1/", events=["push"])
    add("team-access", "http://127.0.0.1:1/", events=["access"], pattern="team/*")
    HookDelivery.objects.all().delete()  # the hooks' own audit rows (not a hook kind) queue none
    access.grant("admin", "dev", "team/*", "pull,push")
    queued = {(d.hook.name, d.kind) for d in HookDelivery.objects.select_related("hook")}
    # An access change has no repository of its own in the event: the pattern lets it through.
    assert queued == {("all", "access"), ("access-only", "access"), ("team-access", "access")}
    event = HookDelivery.objects.first().event
    assert event["action"] == PortalAction.ACCESS_GRANTED and event["actor"] == "admin"


def test_registry_events_are_described_without_the_portals_own_reads(settings):
    from registry_admin import notifications

    from .factories import make_envelope, make_registry_event

    push = make_registry_event(action="push", repository="team/app", tag="v1")
    pull = make_registry_event(action="pull", repository="team/app", tag="v1")
    own = make_registry_event(action="pull", repository="team/app", tag="v1")
    own["actor"]["name"] = settings.REGISTRY_USERNAME
    head = make_registry_event(action="pull", repository="team/app", tag="v1")
    head["request"]["method"] = "HEAD"
    rows = notifications.record(notifications.parse_envelope(make_envelope(push, pull, own, head)))
    described = [event_hooks.describe_registry_event(row) for row in rows]
    assert [d and d[0] for d in described] == [EventKind.PUSH, EventKind.PULL, None, None]
    assert described[0][1]["repository"] == "team/app" and described[0][1]["tag"] == "v1"


def test_the_four_formats_as_a_receiver_gets_them(allow_private):
    handler = receiver_class()
    with serving(handler) as server:
        generic, key = add("generic", server.url + "/g")
        add("ce", server.url + "/c", "cloudevents")
        add("slack", server.url + "/s", "slack")
        add("teams", server.url + "/t", "teams")
        HookDelivery.objects.all().delete()
        AuditEvent.objects.log_portal_action(
            "admin",
            PortalAction.TAG_DELETED,
            repository="team/app",
            tag="v1",
            digest="sha256:" + "a" * 64,
        )
        assert event_hooks.send_due() == 4
    assert sorted(handler.paths) == ["/c", "/g", "/s", "/t"]
    by_path = dict(zip(handler.paths, handler.received, strict=True))
    headers, body = by_path["/g"]
    stamp, signature = (part.split("=", 1)[1] for part in headers["X-Oyster-Signature"].split(","))
    expected = hmac.new(key.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    event = json.loads(body)
    assert event["kind"] == "delete" and event["repository"] == "team/app" and event["tag"] == "v1"
    assert headers["X-Oyster-Delivery"] == event["id"]
    cloud_headers, cloud_body = by_path["/c"]
    cloud = json.loads(cloud_body)
    assert cloud_headers["Content-Type"].startswith("application/cloudevents+json")
    assert {"specversion", "id", "source", "type", "time", "data"} <= set(cloud)
    assert cloud["type"] == "io.oyster.delete" and cloud["subject"] == "team/app:v1"
    assert cloud["id"] == event["id"]  # one event, one id, whichever hook
    texts = [json.loads(by_path[path][1]) for path in ("/s", "/t")]
    assert texts[1]["@type"] == "MessageCard" and set(texts[0]) == {"text"}
    assert all("team/app:v1 deleted by admin" in t["text"] for t in texts)
    assert generic.secret == key


def test_in_order_per_hook_retried_with_backoff_then_delivered_once_each(
    allow_private, monkeypatch
):
    monkeypatch.setattr(event_hooks, "_backoff", lambda attempts: 0)
    handler = receiver_class([503, 503, 200])
    with serving(handler) as server:
        hook, _ = add("h", server.url + "/h", "cloudevents")
        HookDelivery.objects.all().delete()
        for n in range(3):
            access.grant("admin", f"user{n}", "team/*", "pull")
        assert event_hooks.send_due() == 0  # the head failed: the rest wait behind it
        assert HookDelivery.objects.filter(state=HookDelivery.State.DELIVERED).count() == 0
        assert event_hooks.send_due() == 0
        assert event_hooks.send_due() == 3
    subjects = [json.loads(b)["data"]["detail"]["subject"] for _, b in handler.received]
    assert subjects == ["user0", "user0", "user0", "user1", "user2"]
    ids = [json.loads(b)["id"] for _, b in handler.received]
    assert len(set(ids)) == 3  # the retries carry the same id
    head = HookDelivery.objects.order_by("id").first()
    assert head.attempts == 3 and head.last_status == 200


def test_a_redirect_is_not_followed_and_a_hopeless_delivery_gives_up_then_retries(
    allow_private, monkeypatch
):
    monkeypatch.setattr(event_hooks, "_backoff", lambda attempts: 0)
    monkeypatch.setattr(event_hooks, "MAX_ATTEMPTS", 2)
    handler = receiver_class([302])
    with serving(handler) as server:
        hook, _ = add("h", server.url + "/h")
        event_hooks.send_test(hook)
        event_hooks.send_test(hook)
        event_hooks.send_due()
        event_hooks.send_due()
        first, second = HookDelivery.objects.order_by("id")
        assert (
            first.state == HookDelivery.State.FAILED
            and "redirects are not followed" in first.last_error
        )
        assert len(handler.received) == 2  # never the Location
        handler.statuses[:] = [200]
        event_hooks.send_due()
        second.refresh_from_db()
        assert second.state == HookDelivery.State.DELIVERED
        assert event_hooks.retry([first.pk]) == 1
        event_hooks.send_due()
        first.refresh_from_db()
        assert first.state == HookDelivery.State.DELIVERED


# --- pages and command ----------------------------------------------------------------------


@pytest.fixture
def clients(admin_user, viewer_user):
    admin, viewer = Client(), Client()
    admin.force_login(admin_user)
    viewer.force_login(viewer_user)
    return admin, viewer


def test_the_page_is_for_admins_and_never_shows_a_hooks_path(clients, allow_private):
    admin, viewer = clients
    assert viewer.get("/settings/hooks/").status_code == 403
    assert viewer.post("/settings/hooks/add/", {"name": "x"}).status_code == 403
    page = admin.post(
        "/settings/hooks/add/",
        {
            "name": "chat",
            "url": "http://127.0.0.1:1/services/T000/B000/SECRETPATH",
            "format": "generic",
            "events": ["push", "delete"],
        },
    )
    assert page.status_code == 200 and b'id="hook-secret"' in page.content
    key = EventHook.objects.get().secret
    assert key.encode() in page.content  # shown this once
    later = admin.get("/settings/hooks/")
    assert key.encode() not in later.content and b"SECRETPATH" not in later.content
    assert b"http://127.0.0.1:1/" in later.content
    assert admin.post("/settings/hooks/test/", {"name": "chat"}).status_code == 302
    assert HookDelivery.objects.get().kind == EventKind.TEST
    assert admin.post("/settings/hooks/remove/", {"name": "chat"}).status_code == 302
    assert not EventHook.objects.exists()


@pytest.mark.parametrize(
    "form",
    [
        {"name": "<script>x</script>", "url": "http://127.0.0.1:1/", "format": "generic"},
        {"name": "a", "url": "javascript:alert(1)", "format": "generic"},
        {"name": "a", "url": "http://127.0.0.1:1/", "format": "<b>"},
        {"name": "a", "url": "http://127.0.0.1:1/", "format": "slack", "events": ["<img>"]},
        {"name": "a" * 5000, "url": "http://" + "b" * 5000, "format": "generic"},
        {},
    ],
)
def test_hostile_hook_forms_are_refused_with_a_sentence(clients, allow_private, form):
    admin, _ = clients
    page = admin.post("/settings/hooks/add/", form)
    assert page.status_code == 400 and b'id="hook-error"' in page.content
    assert b"<script>x" not in page.content and b"<img>" not in page.content
    assert not EventHook.objects.exists()


def test_forms_need_csrf_and_retry_takes_only_numbers(admin_user, allow_private):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post("/settings/hooks/add/", {"name": "a"}).status_code == 403
    admin = Client()
    admin.force_login(admin_user)
    page = admin.post("/settings/hooks/retry/", {"delivery": ["1; DROP", "9" * 40, "-1"]})
    assert page.status_code == 302
    assert admin.post("/settings/hooks/test/", {"name": "nope"}).status_code == 404


def run_command(*args):
    out = io.StringIO()
    call_command("event_hook", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_the_command_adds_lists_tests_and_removes(allow_private):
    added = run_command(
        "add", "ci", "http://127.0.0.1:1/x", "--format", "generic", "--events", "push,delete"
    )
    assert "Signing key (shown once):" in added
    listed = json.loads(run_command("list", "--json"))
    assert listed == [
        {
            "name": "ci",
            "endpoint": "http://127.0.0.1:1/…",
            "format": "generic",
            "events": ["push", "delete"],
            "repository_pattern": "all",
            "pending": 0,
            "failed": 0,
        }
    ]
    assert "queued" in run_command("test", "ci")
    assert "removed" in run_command("remove", "ci")
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {PortalAction.HOOK_SAVED, PortalAction.HOOK_REMOVED} <= actions


@pytest.mark.parametrize(
    "args",
    [
        ("add", "x", "http://127.0.0.1:1/", "--format", "generic", "--events", "push,bogus"),
        ("add", "x", "ftp://a/", "--format", "slack"),
        ("add", "x" * 500, "http://127.0.0.1:1/", "--format", "teams"),
        ("add", "x", "http://127.0.0.1:1/", "--format", "generic", "--events", "p," * 500),
        ("remove", "nothing"),
        ("test", "nothing"),
    ],
)
def test_the_command_refuses_bad_input(allow_private, args):
    with pytest.raises(CommandError):
        run_command(*args)
    assert not EventHook.objects.exists()


# --- end to end -----------------------------------------------------------------------------


@pytest.fixture
def sender():
    stop = threading.Event()
    thread = threading.Thread(target=event_hooks.run_sender, args=(stop,), daemon=True)
    thread.start()
    yield
    stop.set()
    event_hooks.wake()
    thread.join(timeout=10)


def test_a_skopeo_push_reaches_a_cloudevents_receiver_and_an_outage_only_delays_it(
    registry, skopeo, tmp_path, allow_private, sender, monkeypatch
):
    from .images import build_image, wait_for, write_oci_layout

    handler = receiver_class()
    with serving(handler) as server:
        add("ce", server.url + "/events", "cloudevents", events=["push"], pattern="hooks/*")
        image = build_image()
        write_oci_layout(tmp_path / "layout", image, "v1")
        pushed_at = time.monotonic()
        done = skopeo.copy_to_registry(
            tmp_path / "layout", "v1", "hooks/app", harness.PUSH_USER, harness.PUSH_PASSWORD
        )
        assert done.returncode == 0, done.stderr
        deadline = pushed_at + 2.0
        while not handler.received and time.monotonic() < deadline:
            time.sleep(0.02)
        assert handler.received, "no CloudEvent within 2 s of the push"
        cloud = json.loads(handler.received[0][1])
        assert cloud["type"] == "io.oyster.push" and cloud["subject"] == "hooks/app:v1"
        assert cloud["data"]["digest"] == image.digest

    # The receiver is down (nothing listens on its port) for the next push's first attempts.
    monkeypatch.setattr(event_hooks, "_backoff", lambda attempts: 0.5)
    port = harness.free_port()
    HookDelivery.objects.all().delete()
    EventHook.objects.all().delete()
    add(
        "down", f"http://127.0.0.1:{port}/events", "cloudevents", events=["push"], pattern="hooks/*"
    )
    write_oci_layout(tmp_path / "layout2", build_image(), "v2")
    done = skopeo.copy_to_registry(
        tmp_path / "layout2", "v2", "hooks/app", harness.PUSH_USER, harness.PUSH_PASSWORD
    )
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: HookDelivery.objects.filter(attempts__gte=2).exists(), message="failed attempts"
    )
    assert HookDelivery.objects.get().state == HookDelivery.State.PENDING
    from http.server import ThreadingHTTPServer

    late = receiver_class()
    server = ThreadingHTTPServer(("127.0.0.1", port), late)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wait_for(lambda: late.received, timeout=10, message="delivery after the outage")
        time.sleep(1.5)  # a second copy would arrive within a pass or two
    finally:
        server.shutdown()
        server.server_close()
    assert len(late.received) == 1
    assert json.loads(late.received[0][1])["subject"] == "hooks/app:v2"
    assert HookDelivery.objects.get().state == HookDelivery.State.DELIVERED


def test_a_quota_crossing_its_limit_is_sent_to_quota_hooks(allow_private):
    from registry_admin import quotas
    from registry_admin.models import Quota

    add("quota-watch", "http://127.0.0.1:1/q", "slack", events=["quota"])
    quota = quotas.set_quota("admin", "team/*", "100")
    Quota.objects.filter(pk=quota.pk).update(pushed_bytes=150)
    quotas.update_levels()
    [delivery] = HookDelivery.objects.filter(kind=EventKind.QUOTA)
    assert (
        delivery.event["detail"]["pattern"] == "team/*"
        and delivery.event["detail"]["to"] == "exceeded"
    )
    body, _ = event_hooks.render(delivery.hook, delivery.event)
    assert json.loads(body)["text"] == "Quota team/* is now exceeded: 150 of 100 bytes"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EVENT_HOOKS_TIMEOUT", "0"),
        ("EVENT_HOOKS_TIMEOUT", "soon"),
        ("EVENT_HOOKS_KEEP_DAYS", "-1"),
        ("EVENT_HOOKS_ALLOW_PRIVATE", "perhaps"),
    ],
)
def test_a_bad_hook_setting_stops_startup_naming_it(tmp_path, name, value):
    from .test_settings_and_checks import run_python

    result = run_python(
        "import django; django.setup()",
        DEBUG="0",
        DATA_DIR=str(tmp_path),
        SECRET_KEY="k" * 50,
        **{name: value},
    )
    assert result.returncode != 0
    assert name in result.stderr
