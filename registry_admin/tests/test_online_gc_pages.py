"""The Storage page's "Collect now (registry stays online)" section and the dashboard's last
online collection: roles, CSRF, the dry run a real run needs, an unsafe setup, progress with its
ETA, hostile POSTs. The job itself runs in test_online_gc.py; in the browser, in
test_online_gc_browser.py."""

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from registry_admin import online_gc
from registry_admin.models import CollectedBlob, JobKind, Run
from registry_admin.templatetags.oyster import eta, seconds_left

from .factories import make_admin

pytestmark = pytest.mark.django_db

STORAGE = reverse("registry_admin:storage")
COLLECT = reverse("registry_admin:online-collect")
DASHBOARD = reverse("registry_admin:dashboard")
UNSAFE = "each registry process keeps its own blob cache"


@pytest.fixture(autouse=True)
def safe_setup(settings):
    settings.REGISTRY_BLOB_CACHE = "inmemory"
    settings.REGISTRY_INSTANCES = 1
    settings.GC_GRACE_MINUTES = 60
    settings.GC_TRASH_HOURS = 24
    settings.ONLINE_GC_SCHEDULE_ENABLED = False


def finished_run(dry_run, ago=timedelta(minutes=5), options=None, **figures):
    """An online run that finished `ago`, with an OnlineGcResult made of `figures`."""
    now = timezone.now()
    return Run.objects.create(
        kind=JobKind.ONLINE_GC,
        options={"dry_run": dry_run} if options is None else options,
        state=Run.State.DONE,
        started_at=now - ago - timedelta(seconds=3),
        finished_at=now - ago,
        requested_by="bob",
        result=online_gc.OnlineGcResult(dry_run=dry_run, **figures).as_dict(),
    )


def trash(*sizes):
    for number, size in enumerate(sizes):
        CollectedBlob.objects.create(
            digest=f"sha256:{number:064x}",
            size=size,
            state=CollectedBlob.State.TRASHED,
            trashed_at=timezone.now(),
        )


def section(client):
    html = client.get(STORAGE).content.decode()
    start = html.index('<section aria-labelledby="online-gc-title"')
    return html[start : html.index("</section>", start)]


def said(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def online_runs():
    return list(Run.objects.filter(kind=JobKind.ONLINE_GC).order_by("pk"))


# --- What the page shows ---


def test_an_admin_sees_the_assumptions_and_a_dry_run_button_but_no_collect_yet(admin_client):
    html = section(admin_client)
    assert "Collect now (registry stays online)" in html
    assert f'action="{COLLECT}"' in html
    assert 'value="dry-run"' in html and 'value="run"' not in html
    assert "Run a dry run first" in html
    for expected in ("<code>inmemory</code>", "REGISTRY_INSTANCES", "60 min", "24 h", "off"):
        assert expected in html
    assert 'data-online-dry="none"' in html and 'data-online-collected="none"' in html
    assert 'data-online-trash="0"' in html
    # The section's progress widget has no button of its own: the generic endpoint would only
    # start a dry run, which the section's own button does.
    assert f'action="/runs/{JobKind.ONLINE_GC}/request"' not in html


def test_the_figures_of_the_last_dry_run_real_run_and_trash(admin_client, settings):
    settings.ONLINE_GC_SCHEDULE_ENABLED = True
    settings.ONLINE_GC_INTERVAL = 12 * 3600
    collected = finished_run(
        False,
        ago=timedelta(hours=3),
        trashed_count=7,
        trashed_bytes=7_340_032,
        kept_count=2,
        restored_count=1,
        restored_bytes=1024,
        purged_count=4,
        purged_bytes=4096,
        seconds=12.5,
    )
    dry = finished_run(
        True,
        unreferenced_count=9,
        unreferenced_bytes=9_437_184,
        young_count=3,
        young_bytes=3_145_728,
        in_use_count=1,
        candidate_count=5,
        candidate_bytes=5_242_880,
    )
    trash(1000, 2000, 3000)

    html = section(admin_client)

    assert f'data-online-dry="{dry.pk}"' in html
    for value in (9_437_184, 3_145_728, 5_242_880):
        assert f'data-bytes="{value}"' in html
    assert "9 blobs no linked manifest uses" in html and "3 blobs, kept this time" in html
    assert '<div data-figure="online-in-use"><dt>In use</dt><dd>1<small>' in html
    assert "5 blobs into the trash" in html
    assert f'data-online-collected="{collected.pk}"' in html
    for value in (7_340_032, 1024, 4096):
        assert f'data-bytes="{value}"' in html
    assert "<dd>2<small>blobs a push needed again" in html
    assert "in 12.5 s" in html and "by bob" in html
    assert 'data-online-trash="3"' in html and 'data-bytes="6000"' in html
    assert "every 12 h" in html
    # A fresh dry run: Collect is offered.
    assert 'value="run"' in html and "data-collect-refusal" not in html


def test_a_scheduled_run_without_options_counts_as_a_collection(admin_client):
    run = finished_run(False, options={}, trashed_bytes=5000)
    assert f'data-online-collected="{run.pk}"' in section(admin_client)
    assert 'data-online-trashed="5000"' in admin_client.get(DASHBOARD).content.decode()


def test_a_viewer_sees_the_figures_without_the_buttons(viewer_client):
    finished_run(True, candidate_count=5, candidate_bytes=5_242_880)
    finished_run(False, trashed_count=5, trashed_bytes=5_242_880)
    html = section(viewer_client)
    assert 'data-figure="online-candidate"' in html and 'data-figure="online-trashed"' in html
    assert f'action="{COLLECT}"' not in html and "<button" not in html
    assert "data-collect-refusal" not in html


def test_an_old_or_failed_dry_run_offers_no_collect(admin_client):
    finished_run(True, ago=timedelta(minutes=61))
    html = section(admin_client)
    assert 'value="run"' not in html and "more than an hour ago" in html

    Run.objects.create(
        kind=JobKind.ONLINE_GC,
        options={"dry_run": True},
        state=Run.State.FAILED,
        finished_at=timezone.now(),
        error="Azure said no",
    )
    html = section(admin_client)
    assert 'value="run"' not in html and "The last dry run failed" in html


def test_progress_shows_the_phase_a_bar_and_an_eta(admin_client):
    now = timezone.now()
    Run.objects.create(
        kind=JobKind.ONLINE_GC,
        options={"dry_run": False},
        state=Run.State.RUNNING,
        started_at=now - timedelta(minutes=10),
        heartbeat_at=now,
        done=250,
        total=1000,
        message="Moving into the trash",
    )
    html = section(admin_client)
    assert "Running: 250 / 1000 — Moving into the trash" in html
    assert '<progress value="250" max="1000"' in html
    # 250 in 10 minutes: 750 more take 30.
    assert "about 30\xa0minutes left" in html
    status = admin_client.get(reverse("registry_admin:run-status", args=[JobKind.ONLINE_GC]))
    assert status.json()["run"]["eta"] == "about 30\xa0minutes left"


# --- The ETA helper ---


def running(done, total, started_minutes_ago, heartbeat_minutes_ago=0, state=Run.State.RUNNING):
    now = timezone.now()
    return Run(
        kind=JobKind.ONLINE_GC,
        state=state,
        started_at=now - timedelta(minutes=started_minutes_ago),
        heartbeat_at=now - timedelta(minutes=heartbeat_minutes_ago),
        done=done,
        total=total,
    )


def test_the_eta_follows_the_rate_since_the_start():
    now = timezone.now()
    assert seconds_left(running(100, 400, 2), now) == 360
    # Counted from the last report: a minute since then is a minute less.
    assert seconds_left(running(100, 300, 3, heartbeat_minutes_ago=1), now) == 180
    assert eta(running(1, 2, 0.5), now) == "less than a minute left"
    assert eta(running(1, 2, 90), now) == "about 1\xa0hour, 30\xa0minutes left"


@pytest.mark.parametrize(
    "run",
    [
        None,
        running(0, 100, 5),  # nothing done yet: no rate
        running(100, 100, 5),  # all done: the phase is finishing
        running(5, None, 5),  # a listing: no total
        running(5, 0, 5),
        running(5, 10, 0),  # no time has passed
        running(5, 10, 5, state=Run.State.REQUESTED),
        running(5, 10, 5, state=Run.State.DONE),
    ],
)
def test_no_eta_without_anything_to_go_on(run):
    assert seconds_left(run) is None and eta(run) == ""


def test_a_late_report_gives_no_negative_eta():
    assert seconds_left(running(50, 100, 10, heartbeat_minutes_ago=9)) == 0


# --- Starting runs ---


def test_a_dry_run_is_queued_for_the_worker(admin_client):
    response = admin_client.post(COLLECT, {"mode": "dry-run"})
    assert response.status_code == 302 and response["Location"] == STORAGE
    (run,) = online_runs()
    assert run.options == {"dry_run": True} and run.requested_by == "alice"
    assert any("dry run, deletes nothing" in m for m in said(response))


def test_collect_is_refused_without_a_dry_run(admin_client):
    response = admin_client.post(COLLECT, {"mode": "run"})
    assert response.status_code == 302
    assert online_runs() == []
    assert any("Run a dry run first" in m for m in said(response))


@pytest.mark.parametrize(
    "state, ago, refusal",
    [
        (Run.State.DONE, timedelta(minutes=61), "more than an hour ago"),
        (Run.State.FAILED, timedelta(minutes=5), "The last dry run failed"),
        (Run.State.RUNNING, None, "has not finished yet"),
        (Run.State.REQUESTED, None, "has not finished yet"),
    ],
)
def test_collect_is_refused_unless_the_latest_dry_run_finished_within_the_hour(
    admin_client, state, ago, refusal
):
    # An older dry run that was fine does not stand in for the latest one.
    finished_run(True, ago=timedelta(minutes=30))
    Run.objects.create(
        kind=JobKind.ONLINE_GC,
        options={"dry_run": True},
        state=state,
        finished_at=timezone.now() - ago if ago else None,
    )
    before = online_runs()
    response = admin_client.post(COLLECT, {"mode": "run"})
    assert online_runs() == before
    assert any(refusal in m for m in said(response))


def test_collect_after_a_recent_dry_run_queues_a_real_run(admin_client):
    finished_run(True, ago=timedelta(minutes=59))
    response = admin_client.post(COLLECT, {"mode": "run"})
    run = online_runs()[-1]
    assert run.options == {"dry_run": False} and run.state == Run.State.REQUESTED
    assert any("the registry stays online" in m for m in said(response))


def test_an_unsafe_setup_greys_out_the_buttons_and_refuses_both(admin_client, settings):
    settings.REGISTRY_INSTANCES = 2
    finished_run(True)
    html = section(admin_client)
    assert 'data-problem="online-gc-unsafe"' in html and UNSAFE in html
    assert 'value="dry-run" class="secondary" disabled' in html
    assert 'value="run" class="contrast" disabled' in html

    before = online_runs()
    for mode in ("run", "dry-run"):
        response = admin_client.post(COLLECT, {"mode": mode})
        assert any(UNSAFE in m for m in said(response)), mode
    assert online_runs() == before


@pytest.mark.parametrize("cache", ["none", "redis"])
def test_several_instances_are_fine_with_a_shared_cache_or_none(admin_client, settings, cache):
    settings.REGISTRY_INSTANCES = 3
    settings.REGISTRY_BLOB_CACHE = cache
    finished_run(True)
    html = section(admin_client)
    assert "online-gc-unsafe" not in html and "disabled" not in html
    admin_client.post(COLLECT, {"mode": "run"})
    assert online_runs()[-1].options == {"dry_run": False}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"mode": ""},
        {"mode": "RUN"},
        {"mode": "run "},
        {"mode": "dry_run"},
        {"mode": "x" * 10_000},
        {"mode": "run\x00"},
        {"mode": "<script>alert(1)</script>"},
        {"mode": ["dry-run", "run"]},
    ],
)
def test_hostile_modes_start_nothing(admin_client, data):
    finished_run(True)
    before = online_runs()
    response = admin_client.post(COLLECT, data, follow=True)
    assert response.status_code == 200
    assert online_runs() == before
    assert "<script>alert(1)</script>" not in response.content.decode()


def test_extra_fields_do_not_turn_a_dry_run_into_a_real_one(admin_client):
    admin_client.post(COLLECT, {"mode": "dry-run", "dry_run": "false", "options": '{"x": 1}'})
    (run,) = online_runs()
    assert run.options == {"dry_run": True}


def test_viewers_get_and_anonymous_posts_change_nothing(viewer_client, client):
    finished_run(True)
    before = online_runs()
    assert viewer_client.post(COLLECT, {"mode": "dry-run"}).status_code == 403
    assert viewer_client.post(COLLECT, {"mode": "run"}).status_code == 403
    viewer_client.logout()
    assert client.post(COLLECT, {"mode": "run"}).status_code in (302, 403)
    admin = Client()
    admin.force_login(make_admin("gc-admin"))
    assert admin.get(COLLECT).status_code == 405
    assert online_runs() == before


def test_a_post_without_the_csrf_token_is_refused():
    finished_run(True)
    before = online_runs()
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_admin("gc-admin"))
    assert client.post(COLLECT, {"mode": "dry-run"}).status_code == 403
    assert client.post(COLLECT, {"mode": "run"}).status_code == 403
    assert online_runs() == before


# --- The dashboard ---


def test_the_dashboard_shows_the_last_online_collection_not_a_dry_run(admin_client):
    html = admin_client.get(DASHBOARD).content.decode()
    assert 'data-online-collection="none"' in html
    collected = finished_run(False, ago=timedelta(hours=2), trashed_bytes=7_340_032)
    finished_run(True, candidate_bytes=99)
    html = admin_client.get(DASHBOARD).content.decode()
    assert f'data-online-collection="{collected.pk}"' in html
    assert 'data-online-trashed="7340032"' in html and "7.0\xa0MB" in html
    assert f'{STORAGE}#online-gc-title"' in html
    assert collected.finished_at.strftime("%Y-%m-%d %H:%M") in html


def test_a_failed_online_run_on_the_dashboard_links_to_the_storage_page(admin_client):
    Run.objects.create(
        kind=JobKind.ONLINE_GC,
        options={"dry_run": False},
        state=Run.State.FAILED,
        finished_at=timezone.now(),
        error="REGISTRY_INSTANCES=2 with REGISTRY_BLOB_CACHE=inmemory",
    )
    html = admin_client.get(DASHBOARD).content.decode()
    failed = html[html.index('data-failed-run="online_gc"') :]
    assert f'<a href="{STORAGE}">Storage</a>' in failed[: failed.index("</li>")]
