"""The audit log page, event detail, CSV export, rejected deliveries and notification settings."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from registry_admin import notifications
from registry_admin.models import AuditEvent, DeliveryCounter, PortalAction, RejectedDelivery
from registry_admin.views.audit import PAGE_SIZE

from .factories import make_envelope, make_registry_event

pytestmark = pytest.mark.django_db

LOG = reverse("registry_admin:audit")
EXPORT = reverse("registry_admin:audit-export")

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def store(minutes=0, method=None, url=None, media_type=None, actor="bob", addr=None, **kwargs):
    """Store one registry event through the real parser (timestamps BASE + minutes)."""
    event = make_registry_event(**kwargs)
    event["timestamp"] = (BASE + timedelta(minutes=minutes)).isoformat()
    event["actor"] = {"name": actor}
    if method:
        event["request"]["method"] = method
    if url is not None:
        event["target"]["url"] = url
    if media_type is not None:
        event["target"]["mediaType"] = media_type
    if addr:
        event["request"]["addr"] = addr
    [row] = notifications.record(notifications.parse_envelope(make_envelope(event)))
    return row


def blob(minutes=0, **kwargs):
    return store(
        minutes,
        media_type="application/octet-stream",
        url="http://r/v2/team/app/blobs/sha256:" + "cd" * 32,
        tag="",
        **kwargs,
    )


def ids(response):
    return [e.event_id for e in response.context["page"]["events"]]


def test_the_log_shows_manifest_level_events_newest_first_by_default(viewer_client):
    old = store(0)
    head = store(1, method="HEAD", action="pull")
    layer = blob(2)
    new = store(3, action="pull")
    portal = AuditEvent.objects.log_portal_action(
        "alice", PortalAction.USER_CREATED, detail={"username": "bob"}
    )

    response = viewer_client.get(LOG)

    assert response.status_code == 200
    assert ids(response) == [portal.event_id, new.event_id, old.event_id]
    everything = viewer_client.get(LOG, {"all": "1"})
    assert ids(everything) == [
        portal.event_id,
        new.event_id,
        layer.event_id,
        head.event_id,
        old.event_id,
    ]


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"action": "pull"}, ["pull"]),
        ({"kind": "tag"}, ["tagdel", "portal"]),
        ({"repository": "team/"}, ["push", "pull", "tagdel", "portal"]),
        ({"repository": "team/ap"}, ["push", "pull", "tagdel", "portal"]),
        ({"repository": "other"}, ["other"]),
        ({"repository": "%"}, []),
        ({"repository": "_eam"}, []),
        ({"tag": "v2"}, ["pull"]),
        ({"actor": "carol"}, ["other"]),
        ({"addr": "10.1.2.3"}, ["pull"]),
        ({"addr": "10.1.2.3:4444"}, ["pull"]),
        ({"addr": "10.1.2"}, []),
        ({"q": "SKOPEO"}, ["push", "pull", "tagdel", "other"]),
        ({"q": "carol"}, ["other"]),
        ({"q": "tagged-by-portal"}, ["portal"]),
        ({"source": "portal"}, ["portal"]),
        ({"source": "registry", "repository": "team"}, ["push", "pull", "tagdel"]),
        ({"since": "2026-03-02"}, ["pull", "tagdel", "other", "portal"]),
        ({"until": "2026-03-01"}, ["push"]),
        ({"since": "2026-03-02", "until": "2026-03-02"}, ["pull", "tagdel", "other"]),
    ],
)
def test_each_filter(viewer_client, params, expected):
    day = 24 * 60
    rows = {
        "push": store(0, tag="v1"),
        "pull": store(day, action="pull", tag="v2", addr="10.1.2.3:4444"),
        "tagdel": store(
            day + 1, action="delete", tag="v3", url="", media_type="", digest="", size=None
        ),
        "other": store(day + 2, repository="other/app", actor="carol"),
    }
    rows["portal"] = AuditEvent.objects.log_portal_action(
        "alice",
        PortalAction.TAG_DELETED,
        repository="team/app",
        tag="x",
        detail={"note": "tagged-by-portal"},
    )
    AuditEvent.objects.filter(pk=rows["portal"].pk).update(timestamp=BASE + timedelta(days=5))
    response = viewer_client.get(LOG, params)
    assert response.status_code == 200
    by_id = {row.event_id: name for name, row in rows.items()}
    assert sorted(by_id[i] for i in ids(response)) == sorted(expected)


def test_keyset_pages_walk_forward_and_back_without_gaps(viewer_client):
    # Equal timestamps across a page boundary must neither repeat nor drop rows.
    stored = [store(minutes=i // 3) for i in range(PAGE_SIZE * 2 + 7)]
    expected = [e.event_id for e in sorted(stored, key=lambda e: (e.timestamp, e.pk), reverse=True)]

    seen, pages, params = [], [], {}
    while True:
        response = viewer_client.get(LOG, params)
        page = response.context["page"]
        pages.append(page)
        seen += ids(response)
        if not page["older"]:
            break
        params = {"after": page["older"]}
    assert seen == expected
    assert len(pages) == 3

    back = viewer_client.get(LOG, {"before": pages[2]["newer"]})
    assert ids(back) == expected[PAGE_SIZE : 2 * PAGE_SIZE]
    assert back.context["page"]["newer"] and back.context["page"]["older"]
    first = viewer_client.get(LOG, {"before": back.context["page"]["newer"]})
    assert ids(first) == expected[:PAGE_SIZE]
    assert not first.context["page"]["newer"]


def test_paging_keeps_the_filters(viewer_client):
    for i in range(PAGE_SIZE + 1):
        store(i, repository="keep/this")
    store(500, repository="drop/that")
    response = viewer_client.get(LOG, {"repository": "keep"})
    older = response.context["page"]["older"]
    assert f"repository=keep&amp;after={older}" in response.content.decode()


@pytest.mark.parametrize(
    "params",
    [
        {"after": "garbage"},
        {"after": "1.2.3"},
        {"before": "99999999999999999999999.1"},
        {"after": "-" * 40},
        {"since": "2026-13-45"},
        {"since": "2026-03-05", "until": "2026-03-01"},
        {"kind": "<script>"},
        {"repository": "a" * 300},
        {"q": "line\nbreak"},
        {"actor": "\x00"},
    ],
)
def test_bad_filters_get_a_clear_error_not_a_500(viewer_client, params):
    store(0)
    response = viewer_client.get(LOG, params)
    assert response.status_code == 200
    assert response.context["page"] is None
    assert response.context["form"].errors
    assert b'role="alert"' in response.content


def test_hostile_values_are_escaped_on_the_page(viewer_client):
    store(0, repository="evil/repo", actor="<script>alert(1)</script>", tag="<img src=x>")
    content = viewer_client.get(LOG).content.decode()
    assert "<script>alert(1)" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content
    assert "<img src=x>" not in content


def test_hostile_filter_input_is_escaped_and_harmless(viewer_client):
    store(0)
    response = viewer_client.get(LOG, {"q": "'; DROP TABLE registry_admin_auditevent; --<script>"})
    assert response.status_code == 200
    assert b"<script>" not in response.content
    assert AuditEvent.objects.count() == 1


def test_the_event_detail_shows_the_raw_json_escaped_and_its_request_siblings(viewer_client):
    digest_delete = store(0, action="delete", tag="", url="", media_type="")
    tag_delete = store(0, action="delete", tag="<b>v1</b>", url="", media_type="", digest="")
    AuditEvent.objects.filter(pk=tag_delete.pk).update(request_id=digest_delete.request_id)

    response = viewer_client.get(reverse("registry_admin:audit-event", args=[digest_delete.pk]))

    assert response.status_code == 200
    content = response.content.decode()
    assert json.loads(response.context["pretty_raw"]) == json.loads(digest_delete.raw)
    assert '"action": "delete"' in response.context["pretty_raw"]
    assert "&lt;b&gt;v1&lt;/b&gt;" in content and "<b>v1</b>" not in content
    assert [e.pk for e in response.context["related"]] == [tag_delete.pk]


def test_a_missing_event_is_a_404(viewer_client):
    assert (
        viewer_client.get(reverse("registry_admin:audit-event", args=[999999])).status_code == 404
    )


def read_csv(response):
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_export_streams_the_filtered_view_with_one_row_per_event(viewer_client, monkeypatch):
    monkeypatch.setattr("registry_admin.audit_export.EXPORT_CHUNK", 7)  # several chunks
    stored = [store(i, repository="exp/app", tag=f"v{i}") for i in range(30)]
    blob(40, repository="exp/app")
    store(50, repository="elsewhere")

    rows = read_csv(viewer_client.get(EXPORT, {"repository": "exp/"}))

    assert [r["event_id"] for r in rows] == [e.event_id for e in reversed(stored)]
    assert rows[0]["tag"] == "v29" and rows[0]["action"] == "push" and rows[0]["actor"] == "bob"
    assert rows[0]["timestamp"].startswith("2026-03-01T12:29:00")
    assert len(read_csv(viewer_client.get(EXPORT, {"repository": "exp/", "all": "1"}))) == 31


def test_the_export_ignores_page_cursors(viewer_client):
    for i in range(PAGE_SIZE + 5):
        store(i)
    page = viewer_client.get(LOG).context["page"]
    assert len(read_csv(viewer_client.get(EXPORT, {"after": page["older"]}))) == PAGE_SIZE + 5


def test_the_export_defuses_spreadsheet_formulas(viewer_client):
    store(0, actor='=HYPERLINK("http://evil")', tag="+cmd", repository="team/app")
    AuditEvent.objects.log_portal_action("@SUM(A1)", PortalAction.USER_DELETED)
    rows = read_csv(viewer_client.get(EXPORT))
    assert {r["actor"] for r in rows} == {'\'=HYPERLINK("http://evil")', "'@SUM(A1)"}
    assert "'+cmd" in {r["tag"] for r in rows}


def test_the_export_refuses_bad_filters_with_a_message(viewer_client):
    response = viewer_client.get(EXPORT, {"since": "yesterday"})
    assert response.status_code == 400
    assert b"since" in response.content


def test_anonymous_users_are_sent_to_login(client):
    for url in (LOG, EXPORT, reverse("registry_admin:audit-rejected")):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]


def test_rejected_deliveries_are_not_for_viewers(viewer_client):
    assert viewer_client.get(reverse("registry_admin:audit-rejected")).status_code == 403


def test_rejected_deliveries_are_shown_to_admins_escaped(admin_client):
    RejectedDelivery.objects.create(
        error="the body is not JSON: <script>x</script>",
        body=b"<script>alert(1)</script>\xff",
        content_type="application/json",
        remote_addr="10.0.0.9",
    )
    DeliveryCounter.objects.create(name=DeliveryCounter.UNAUTHORIZED, count=4, last_addr="10.0.0.8")
    url = reverse("registry_admin:audit-rejected")

    response = admin_client.get(url)
    content = response.content.decode()
    assert response.status_code == 200
    assert "the body is not JSON: &lt;script&gt;x&lt;/script&gt;" in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\ufffd" in content
    assert "<script>alert" not in content
    assert 'data-unauthorized-count="4"' in content


def test_the_settings_page_shows_the_registry_config_without_the_token(admin_client, settings):
    settings.NOTIFICATIONS_TOKEN = "very-secret-token-value"
    url = reverse("registry_admin:notification-settings")
    response = admin_client.get(url, {"url": "https://portal.example.com", "ignore_blobs": "on"})
    content = response.content.decode()
    assert response.status_code == 200
    yaml_text, env_text = response.context["texts"]
    assert "url: https://portal.example.com/api/registry/events" in yaml_text
    assert "- Bearer <NOTIFICATIONS_TOKEN>" in yaml_text
    assert "application/octet-stream" in yaml_text
    assert "REGISTRY_NOTIFICATIONS_ENDPOINTS=" in env_text
    assert "very-secret-token-value" not in content


def test_the_settings_page_defaults_to_this_portal_and_refuses_bad_urls(admin_client):
    url = reverse("registry_admin:notification-settings")
    default = admin_client.get(url)
    assert "http://testserver/api/registry/events" in default.context["texts"][0]
    named = admin_client.get(url, {"url": "http://portal:8000/oyster/"})
    assert "url: http://portal:8000/oyster/api/registry/events" in named.context["texts"][0]
    for bad in (
        "javascript:alert(1)",
        "ftp://x",
        "http://" + "a" * 600,
        "<script>",
        "http://a b",
        "http://x:99999",
        "http://user:pw@host",
        "http://host/\x00",
        "http://ho_st",
        "",
    ):
        response = admin_client.get(url, {"url": bad})
        assert response.status_code == 200
        assert response.context["texts"] is None
        assert response.context["form"].errors


def test_the_settings_page_is_for_admins(viewer_client):
    assert viewer_client.get(reverse("registry_admin:notification-settings")).status_code == 403


@pytest.mark.parametrize("busy_rows", [1, 10_000])
def test_the_repository_prefix_gives_the_same_rows_for_busy_and_quiet_prefixes(
    viewer_client, monkeypatch, busy_rows
):
    """A busy prefix is filtered by an expression the repository index cannot serve (SQLite
    would sort all its rows); the result must not change."""
    monkeypatch.setattr("registry_admin.models.audit.BUSY_PREFIX_ROWS", busy_rows)
    inside = [store(i, repository=name) for i, name in enumerate(["ns/a", "ns/b", "ns/a/c", "ns"])]
    for name in ["nt/a", "n", "ns-x/a", "NS/a"]:
        store(10, repository=name)
    response = viewer_client.get(LOG, {"repository": "ns/"})
    assert ids(response) == [e.event_id for e in reversed(inside[:3])]
    exported = read_csv(viewer_client.get(EXPORT, {"repository": "ns/"}))
    assert [r["event_id"] for r in exported] == ids(response)
