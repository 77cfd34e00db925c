"""The dashboard's audit sections: activity chart, most active, last event, token warning."""

import json
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from registry_admin import notifications
from registry_admin.models import AuditEvent, DeliveryCounter, PortalAction, RejectedDelivery
from registry_admin.views.audit import ACTIVITY_CACHE_KEY

from .factories import make_envelope, make_registry_event
from .harness import free_port

DASHBOARD = reverse("registry_admin:dashboard")


def store(days_ago=0, action="push", repository="team/app", actor="bob", method=None, **target):
    event = make_registry_event(action=action, repository=repository, **target)
    if method:
        event["request"]["method"] = method
    event["timestamp"] = (timezone.now() - timedelta(days=days_ago)).isoformat()
    event["actor"] = {"name": actor}
    [row] = notifications.record(notifications.parse_envelope(make_envelope(event)))
    return row


def chart_data(content):
    match = re.search(
        r'<script id="audit-activity-data" type="application/json">(.*?)</script>', content
    )
    return json.loads(match.group(1))


@pytest.fixture(autouse=True)
def fresh_activity():
    """The 30-day aggregates are cached for minutes; each test starts without them."""
    cache.delete(ACTIVITY_CACHE_KEY)
    yield
    cache.delete(ACTIVITY_CACHE_KEY)


@pytest.fixture
def unreachable(settings):
    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"


@pytest.mark.django_db
def test_the_chart_counts_manifest_pushes_and_pulls_per_day(viewer_client, unreachable):
    store(0)
    store(0)
    store(0, action="pull")
    store(0, action="pull", method="HEAD")  # noise: not counted
    store(0, action="pull", mediaType="application/octet-stream", url="")  # a blob: not counted
    store(3, action="pull")
    store(45)  # older than 30 days
    AuditEvent.objects.log_portal_action(
        "alice", PortalAction.TAG_DELETED, repository="team/app", tag="v1"
    )

    content = viewer_client.get(DASHBOARD).content.decode()

    data = chart_data(content)
    assert len(data["labels"]) == 30
    assert data["labels"][-1] == timezone.localdate().isoformat()
    assert (data["pushes"][-1], data["pulls"][-1]) == (2, 1)
    assert (data["pushes"][-4], data["pulls"][-4]) == (0, 1)
    assert sum(data["pushes"]) == 2 and sum(data["pulls"]) == 2
    # No inline code: every script is a static file or a JSON data block.
    for tag in re.findall(r"<script[^>]*>", content):
        assert "src=" in tag or 'type="application/json"' in tag
    assert "registry_admin/audit-chart.js" in content
    assert "vendor/chartjs-4.6.1/chart.umd.min.js" in content


@pytest.mark.django_db
def test_it_lists_the_most_active_repositories_and_users(viewer_client, unreachable):
    for _ in range(3):
        store(repository="busy/app", actor="carol")
    store(repository="quiet/app", actor="dave")
    store(repository="<b>odd</b>", actor="<i>eve</i>")
    for _ in range(5):  # the portal's own reads (reconcile, details) are not user activity
        store(repository="quiet/app", actor=settings.REGISTRY_USERNAME)

    response = viewer_client.get(DASHBOARD)

    assert response.context["audit_top_repositories"][0] == ("busy/app", 3)
    assert response.context["audit_top_actors"][0] == ("carol", 3)
    assert settings.REGISTRY_USERNAME not in dict(response.context["audit_top_actors"])
    assert dict(response.context["audit_top_repositories"])["quiet/app"] == 1
    content = response.content.decode()
    assert "&lt;b&gt;odd&lt;/b&gt;" in content and "<b>odd</b>" not in content


@pytest.mark.django_db
def test_it_shows_rejected_deliveries_and_warns_about_a_wrong_token(admin_client, unreachable):
    store(days_ago=1)
    RejectedDelivery.objects.create(error="not JSON", body=b"x")
    DeliveryCounter.objects.create(
        name=DeliveryCounter.UNAUTHORIZED,
        count=7,
        last_seen=timezone.now(),
        last_addr="10.9.9.9",
        last_event_id="evt-1",
        repeats=7,
    )

    content = admin_client.get(DASHBOARD).content.decode()

    assert 'data-rejected-count="1"' in content
    assert 'data-warning="wrong-token"' in content
    assert "its queue is blocked" in content
    assert "10.9.9.9" in content


@pytest.mark.django_db
def test_the_token_warning_goes_once_events_arrive_again(viewer_client, unreachable):
    DeliveryCounter.objects.create(
        name=DeliveryCounter.UNAUTHORIZED,
        count=7,
        last_seen=timezone.now() - timedelta(minutes=5),
        repeats=7,
    )
    store()
    assert 'data-warning="wrong-token"' not in viewer_client.get(DASHBOARD).content.decode()


@pytest.mark.django_db
def test_no_silence_warning_while_the_registry_is_unreachable(viewer_client, unreachable):
    content = viewer_client.get(DASHBOARD).content.decode()
    assert "Last event received: <strong>never</strong>" in content
    assert 'data-warning="silent"' not in content


@pytest.mark.django_db(transaction=True)
def test_it_warns_when_a_reachable_registry_sent_nothing_for_too_long(
    viewer_client, registry, settings
):
    settings.NOTIFICATIONS_SILENCE_WARNING = 2 * 3600
    # Only events of this test matter: the session registry may have sent others already.
    AuditEvent.objects.filter(source=AuditEvent.Source.REGISTRY).update(
        received_at=timezone.now() - timedelta(hours=3)
    )
    assert 'data-warning="silent"' in viewer_client.get(DASHBOARD).content.decode()

    store()
    content = viewer_client.get(DASHBOARD).content.decode()
    assert 'data-warning="silent"' not in content
    assert 'data-state="reachable"' in content


@pytest.mark.django_db
def test_the_activity_is_cached_but_the_last_event_is_live(viewer_client, unreachable):
    store()
    assert sum(chart_data(viewer_client.get(DASHBOARD).content.decode())["pushes"]) == 1
    latest = store()
    response = viewer_client.get(DASHBOARD)
    assert sum(chart_data(response.content.decode())["pushes"]) == 1
    assert response.context["audit_last_received"] == latest.received_at


@pytest.mark.django_db(transaction=True)
def test_a_new_install_that_never_received_an_event_says_so_rather_than_a_duration(
    viewer_client, registry
):
    AuditEvent.objects.filter(source=AuditEvent.Source.REGISTRY).delete()
    content = viewer_client.get(DASHBOARD).content.decode()
    assert 'data-warning="silent"' in content
    assert "no notification has arrived yet" in content
    assert "no event arrived for more than" not in content
