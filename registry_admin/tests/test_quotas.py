"""Quotas without a registry: sizes, covers, usage bookkeeping, levels, the token endpoint's
withholding, the command and the pages with hostile input. The real registry with skopeo:
test_quotas_registry.py."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from registry_admin import access, quotas
from registry_admin.models import AuditEvent, CollectedBlob, PortalAction, Quota
from registry_admin.storage.scan import _group_bytes

from .factories import make_envelope, make_registry_event

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    quotas.forget_cached()
    yield
    quotas.forget_cached()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", 1048576),
        ("500MB", 500 * 10**6),
        ("500 mb", 500 * 10**6),
        ("20GB", 20 * 10**9),
        ("1.5TiB", int(1.5 * 2**40)),
        ("1MiB", 2**20),
        ("1k", 1000),
        (" 7 ", 7),
    ],
)
def test_sizes_in_bytes_and_with_decimal_or_binary_units(text, expected):
    assert quotas.parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "0.1",
        "-5",
        "5XB",
        "1e9",
        "MB",
        "1.5.5GB",
        "99999999999999999999TB",
        "x" * 5000,
        "1\x00GB",
        "<script>",
        "1,000",
    ],
)
def test_sizes_that_are_not_sizes_get_a_sentence(text):
    with pytest.raises(quotas.QuotaError) as error:
        quotas.parse_size(text)
    assert str(error.value)


def test_the_most_specific_quota_counts_a_repository_and_no_other():
    quotas.set_quota("admin", "team/*", "1MB")
    quotas.set_quota("admin", "team/special", "10MB")
    quotas.set_quota("admin", "**", "1GB")
    covers = quotas.load_covers()
    assert quotas.covering(covers, "team/special").pattern == "team/special"
    assert quotas.covering(covers, "team/app").pattern == "team/*"
    assert quotas.covering(covers, "team/app/deep").pattern == "**"
    assert quotas.covering(covers, "other").pattern == "**"
    assert [c.pattern for c in covers] == ["team/special", "team/*", "**"]


def test_set_refuses_bad_patterns_sizes_and_thresholds_and_changes_nothing():
    for pattern, size, warn in [
        ("Team/*", "1MB", None),
        ("team/../x", "1MB", None),
        ("", "1MB", None),
        ("a" * 300, "1MB", None),
        ("team/*", "lots", None),
        ("team/*", "1MB", "0"),
        ("team/*", "1MB", "101"),
        ("team/*", "1MB", "eighty"),
    ]:
        with pytest.raises(quotas.QuotaError):
            quotas.set_quota("admin", pattern, size, warn)
    assert not Quota.objects.exists()
    assert not AuditEvent.objects.filter(action=PortalAction.QUOTA_SET).exists()


def push_events(*pushes):
    """Store blob push events (repository, digest, size) as the registry would send them."""
    from registry_admin import notifications

    events = []
    for repository, digest, size in pushes:
        event = make_registry_event(action="push", repository=repository, digest=digest)
        event["timestamp"] = timezone.now().isoformat()
        event["target"]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        event["target"]["size"] = event["target"]["length"] = size
        event["target"]["url"] = f"http://127.0.0.1:5000/v2/{repository}/blobs/{digest}"
        event["target"].pop("tag", None)
        events.append(event)
    return notifications.record(notifications.parse_envelope(make_envelope(*events)))


def digest(n):
    return f"sha256:{n:064x}"


def test_pushes_add_to_their_quota_once_per_blob_and_cross_the_levels_with_audit_rows():
    quota = quotas.set_quota("admin", "team/*", "1000", warn_percent=80)
    assert quota.usage_bytes == 0 and quota.is_partial
    stored = push_events(("team/a", digest(1), 500), ("other/x", digest(2), 5000))
    assert all(e.kind == AuditEvent.Kind.BLOB for e in stored)
    quota.refresh_from_db()
    assert quota.pushed_bytes == 500 and quota.level == Quota.Level.OK
    # The same blob again (a retried upload) and in the same batch twice counts once.
    push_events(("team/b", digest(3), 300), ("team/b", digest(3), 300))
    quota.refresh_from_db()
    assert quota.usage_bytes == 800 and quota.level == Quota.Level.WARNING
    push_events(("team/c", digest(4), 200))
    quota.refresh_from_db()
    assert quota.usage_bytes == 1000 and quota.level == Quota.Level.EXCEEDED
    levels = [
        json.loads(e.raw)["to"]
        for e in AuditEvent.objects.filter(action=PortalAction.QUOTA_LEVEL).order_by("id")
    ]
    assert levels == ["warning", "exceeded"]
    # A recount from the audit log agrees with what the notifications added.
    Quota.objects.update(pushed_bytes=0)
    quotas.recount()
    quota.refresh_from_db()
    assert quota.pushed_bytes == 1000


def test_a_scan_sets_the_baseline_and_what_the_collector_took_since_counts_off():
    quota = quotas.set_quota("admin", "team/*", "10000")
    started = timezone.now()
    push_events(("team/a", digest(1), 700))  # before the scan's start: in the scan's figure
    AuditEvent.objects.update(received_at=started - timedelta(seconds=5))
    quotas.record_scan({quota.pk: 4000}, {quota.pk}, started)
    quota.refresh_from_db()
    assert (quota.scanned_bytes, quota.pushed_bytes, quota.freed_bytes) == (4000, 0, 0)
    assert not quota.is_partial
    push_events(("team/b", digest(2), 1000))
    CollectedBlob.objects.create(
        digest=digest(9),
        size=1500,
        state=CollectedBlob.State.TRASHED,
        unlinked_from=["team/a", "other/x"],
        trashed_at=timezone.now(),
    )
    quotas.after_collection()
    quota.refresh_from_db()
    assert quota.usage_bytes == 4000 + 1000 - 1500


def test_a_quota_the_scan_did_not_know_keeps_its_partial_figure():
    started = timezone.now()
    late = quotas.set_quota("admin", "late/*", "10000")
    quotas.record_scan({}, set(), started)
    late.refresh_from_db()
    assert late.is_partial


def test_the_scan_counts_each_groups_blobs_once():
    sizes = [100, 200, 400, 800]
    names = ["team/a", "team/b", "other/x", "loose"]
    linked = [[0, 1], [1, 2], [2, 3], [3]]
    groups = {"team/a": "team", "team/b": "team", "other/x": "other"}
    totals = _group_bytes(names, linked, sizes, groups.get)
    # team: blobs 0, 1, 2 (blob 1 shared inside the group counts once); other: 2 and 3.
    assert totals == {"team": 700, "other": 1200}


def exceed(pattern="team/*"):
    quota = quotas.set_quota("admin", pattern, "1")
    push_events((pattern.replace("*", "a"), digest(77), 10))
    quota.refresh_from_db()
    assert quota.level == Quota.Level.EXCEEDED
    return quota


def grant(name, actions):
    return {"type": "repository", "name": name, "actions": list(actions)}


def test_an_exceeded_quota_withholds_push_only_and_never_from_the_service_account(settings):
    exceed()
    quotas.set_quota("admin", "team/special", "1GB")
    user = access.Principal("dev")
    granted = [
        grant("team/app", ["pull", "push", "delete"]),
        grant("team/special", ["pull", "push"]),
        grant("other/x", ["pull", "push"]),
        grant("team/pushonly", ["push"]),
    ]
    kept, refused = quotas.withhold_push(user, granted)
    assert kept == [
        grant("team/app", ["pull", "delete"]),
        grant("team/special", ["pull", "push"]),
        grant("other/x", ["pull", "push"]),
    ]
    assert [c.pattern for c in refused] == ["team/*"]
    service = access.Principal(settings.REGISTRY_USERNAME)
    assert quotas.withhold_push(service, granted) == (granted, [])


def test_refusals_write_one_audit_row_per_window(token_mode_client):
    exceed()
    for _ in range(5):
        token_mode_client()
    rows = AuditEvent.objects.filter(action=PortalAction.QUOTA_REFUSED)
    assert rows.count() == 1
    detail = json.loads(rows.get().raw)
    assert detail["pattern"] == "team/*" and "exceeded" in detail["reason"]
    Quota.objects.update(refusal_logged_at=timezone.now() - quotas.REFUSAL_WINDOW * 2)
    token_mode_client()
    # This process asks the database again only after REFUSAL_RECHECK_SECONDS: as if it passed.
    assert rows.count() == 1
    quotas.forget_cached()
    token_mode_client()
    assert rows.count() == 2


@pytest.fixture
def token_mode_client(client, settings, tmp_path):
    """A push token request by a registry user allowed to push on team/*."""
    from registry_admin import htpasswd

    settings.REGISTRY_AUTH_MODE = "token"
    settings.TOKEN_KEY_DIR = str(tmp_path / "keys")
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    htpasswd.add_user("dev", "a-long-enough-password", rounds=4)
    access.grant("admin", "dev", "team/*", "pull,push,delete")

    def ask(scope="repository:team/app:pull,push"):
        import base64

        credentials = base64.b64encode(b"dev:a-long-enough-password").decode()
        response = client.get(
            "/auth/token",
            {"service": settings.TOKEN_SERVICE, "scope": scope},
            HTTP_AUTHORIZATION=f"Basic {credentials}",
        )
        assert response.status_code == 200, response.content
        return response

    return ask


def test_the_token_grants_pull_without_push_while_the_quota_is_exceeded(
    token_mode_client, settings
):
    from registry_admin import tokens

    def actions(response):
        claims = tokens.verify(response.json()["token"], settings.TOKEN_SERVICE)
        return {a["name"]: a["actions"] for a in claims["access"]}

    assert actions(token_mode_client()) == {"team/app": ["pull", "push"]}
    exceed()
    assert actions(token_mode_client()) == {"team/app": ["pull"]}
    assert actions(token_mode_client("repository:team/app:push")) == {}
    assert actions(token_mode_client("repository:team/app:delete")) == {"team/app": ["delete"]}
    quotas.set_quota("admin", "team/*", "1GB")
    quotas.forget_cached()
    assert actions(token_mode_client()) == {"team/app": ["pull", "push"]}


def run_command(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("quota", *args, stdout=out, stderr=err)
    return out.getvalue()


def test_the_command_sets_lists_and_removes():
    assert "No quotas." in run_command("list")
    assert "(500,000,000 bytes)" in run_command("set", "team/*", "500MB")
    assert "80 %" in run_command("set", "team/*", "1GiB", "--warn", "80")
    listed = json.loads(run_command("list", "--json"))
    assert listed[0]["pattern"] == "team/*" and listed[0]["limit_bytes"] == 2**30
    assert listed[0]["partial"] is True
    assert "removed" in run_command("remove", "team/*")
    assert not Quota.objects.exists()
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {PortalAction.QUOTA_SET, PortalAction.QUOTA_REMOVED} <= actions


@pytest.mark.parametrize(
    "args",
    [
        ("set", "team/*", "huge"),
        ("set", "BAD PATTERN", "1MB"),
        ("set", "team/*", "1MB", "--warn", "500"),
        ("set", "x" * 10000, "1MB"),
        ("remove", "nothing/*"),
    ],
)
def test_the_command_refuses_bad_input_with_a_sentence(args):
    with pytest.raises(CommandError) as error:
        run_command(*args)
    assert str(error.value) and "Traceback" not in str(error.value)
    assert not Quota.objects.exists()


def test_the_page_lists_for_viewers_and_sets_for_admins(admin_user, viewer_user):
    from django.test import Client

    admin_client, viewer_client = Client(), Client()
    admin_client.force_login(admin_user)
    viewer_client.force_login(viewer_user)
    page = viewer_client.get("/storage/quotas/")
    assert page.status_code == 200 and b"No quotas." in page.content
    assert b"quota-form" not in page.content
    assert (
        viewer_client.post("/storage/quotas/set/", {"pattern": "a/*", "size": "1MB"}).status_code
        == 403
    )
    saved = admin_client.post(
        "/storage/quotas/set/", {"pattern": "team/*", "size": "2GB", "warn_percent": "90"}
    )
    assert saved.status_code == 302
    quota = Quota.objects.get()
    assert (quota.limit_bytes, quota.warn_percent) == (2 * 10**9, 90)
    assert quota.created_by == admin_user.username
    page = viewer_client.get("/storage/quotas/")
    assert b"team/*" in page.content and b"partial" in page.content
    assert b"team/*" in viewer_client.get("/storage/").content
    assert viewer_client.post("/storage/quotas/remove/", {"pattern": "team/*"}).status_code == 403
    assert admin_client.post("/storage/quotas/remove/", {"pattern": "team/*"}).status_code == 302
    assert not Quota.objects.exists()


@pytest.mark.parametrize(
    "form",
    [
        {"pattern": "<script>alert(1)</script>", "size": "1MB"},
        {"pattern": "team/*", "size": "<b>big</b>"},
        {"pattern": "team/*", "size": "1MB", "warn_percent": "-1"},
        {"pattern": "team/*" * 1000, "size": "1" * 5000},
        {},
    ],
)
def test_the_page_refuses_hostile_input_keeps_what_was_typed_and_escapes_it(admin_client, form):
    page = admin_client.post("/storage/quotas/set/", form)
    assert page.status_code == 400
    assert b'id="quota-error"' in page.content
    assert b"<script>alert" not in page.content and b"<b>big" not in page.content
    assert not Quota.objects.exists()


def test_the_forms_need_csrf(admin_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post("/storage/quotas/set/", {"pattern": "a/*", "size": "1MB"}).status_code == 403
    assert not Quota.objects.exists()


def test_the_dashboard_and_repository_page_say_which_quota_blocks_pushes(admin_client, settings):
    from registry_admin.models import Repository

    settings.REGISTRY_AUTH_MODE = "token"
    exceed()
    Repository.objects.create(name="team/a")
    page = admin_client.get("/")
    assert (
        b'data-quota-alert="team/*"' in page.content
        and b"pushes to its repositories are refused" in page.content
    )
    detail = admin_client.get("/repositories/team/a/")
    assert b'data-quota="team/*"' in detail.content and b"pushes here are refused" in detail.content


def test_each_scan_leaves_a_sample_and_the_page_draws_usage_over_time(admin_client):
    from registry_admin.models import QuotaSample

    quota = quotas.set_quota("admin", "team/*", "10000")
    for n, figure in enumerate([1000, 4000, 2500]):
        quotas.record_scan({quota.pk: figure}, {quota.pk}, timezone.now())
        assert QuotaSample.objects.filter(quota=quota).count() == n + 1
    assert list(quota.samples.order_by("taken_at").values_list("usage_bytes", flat=True)) == [
        1000,
        4000,
        2500,
    ]
    page = admin_client.get("/storage/quotas/")
    assert b'data-samples="3"' in page.content and b"<polyline" in page.content


def test_samples_are_capped_per_quota(monkeypatch):
    from registry_admin.models import QuotaSample

    monkeypatch.setattr(quotas, "HISTORY_SAMPLES", 3)
    quota = quotas.set_quota("admin", "team/*", "10000")
    for figure in range(6):
        quotas.record_scan({quota.pk: figure}, {quota.pk}, timezone.now())
    assert sorted(QuotaSample.objects.values_list("usage_bytes", flat=True)) == [3, 4, 5]


def test_a_repository_delete_under_a_quota_asks_for_a_scan():
    from registry_admin.models import JobKind, Run

    quotas.set_quota("admin", "team/*", "1MB")
    assert not quotas.after_repository_delete("other/app")
    assert not Run.objects.filter(kind=JobKind.STORAGE_SCAN).exists()
    assert quotas.after_repository_delete("team/app")
    assert Run.objects.filter(kind=JobKind.STORAGE_SCAN, state=Run.State.REQUESTED).count() == 1
