"""GET /metrics: who may scrape, what each counter counts, and that nothing secret is shown.

The end-to-end check (promtool, gunicorn with 2 workers, a real registry) is
tests/test_metrics_gunicorn.py.
"""

import base64
import time

import pytest
from django.core.cache import cache
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from registry_admin import checks, ingest, worker
from registry_admin.models import (
    JobKind,
    MetricCounter,
    RepositoryStorage,
    Run,
    StorageSnapshot,
)

from .factories import TEST_PASSWORD, make_envelope, make_registry_event, make_user
from .harness import NOTIFICATIONS_TOKEN, free_port

pytestmark = pytest.mark.django_db

URL = "/metrics"
METRICS_TOKEN = "metrics-token-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(autouse=True)
def closed_registry(settings):
    """A registry address nothing listens on, and no ping or top-N remembered from another
    test."""
    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_ADDRESSES = ["127.0.0.1", "::1"]
    cache.clear()
    yield
    cache.clear()


def scrape(client=None, **extra):
    return (client or Client()).get(URL, **extra)


def samples(response):
    """{(name, frozenset(labels)): value} of a 200 answer."""
    assert response.status_code == 200, response.content[:500]
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(response, name, **labels):
    return samples(response)[(name, frozenset(labels.items()))]


# --- who may scrape ------------------------------------------------------------------------


def test_it_answers_loopback_without_a_token_in_prometheus_format():
    response = scrape()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert value(response, "oyster_registry_up") == 0
    assert "no-cache" in response["Cache-Control"] or "no-store" in response["Cache-Control"]


def test_it_refuses_an_address_not_allowed(settings):
    response = scrape(REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 403
    assert b"METRICS_ALLOWED_ADDRESSES" in response.content

    settings.METRICS_ALLOWED_ADDRESSES = ["127.0.0.1", "10.0.0.0/8"]
    assert scrape(REMOTE_ADDR="10.1.2.3").status_code == 200
    assert scrape(REMOTE_ADDR="192.168.1.1").status_code == 403


def test_the_allow_list_reads_the_address_behind_proxy_count(settings):
    settings.METRICS_ALLOWED_ADDRESSES = ["203.0.113.7"]
    settings.PROXY_COUNT = 1
    # The front end appended the client's address; what the client wrote further left is
    # ignored.
    forwarded = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "127.0.0.1, 203.0.113.7"}
    assert scrape(**forwarded).status_code == 200
    forged = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.7, 198.51.100.1"}
    assert scrape(**forged).status_code == 403
    settings.PROXY_COUNT = 0
    # Without proxies the header is never read.
    assert scrape(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 403


def test_with_a_token_it_wants_the_token_from_every_address(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN

    missing = scrape()  # loopback, allowed without a token, but a token is set
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert scrape(HTTP_AUTHORIZATION="Bearer wrong-token").status_code == 401
    assert scrape(HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}x").status_code == 401
    assert scrape(HTTP_AUTHORIZATION=METRICS_TOKEN).status_code == 401
    assert scrape(HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").status_code == 200
    assert scrape(HTTP_AUTHORIZATION=f"bearer {METRICS_TOKEN}").status_code == 200
    # Any address with the token, none without it.
    right = {"HTTP_AUTHORIZATION": f"Bearer {METRICS_TOKEN}", "REMOTE_ADDR": "198.51.100.9"}
    assert scrape(**right).status_code == 200
    assert scrape(REMOTE_ADDR="198.51.100.9").status_code == 401


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ("Bearer " + "a" * 100_000, 400),
        ("x" * 5000, 400),
        ("Basic " + base64.b64encode(b"admin:" + METRICS_TOKEN.encode()).decode(), 401),
        (f"Basic {METRICS_TOKEN}", 401),
        ("Bearer", 401),
        ("Bearer ", 401),
        ("\x00\x01\x02", 401),
        ("Bearer \u00e9\u00e8\u00ff" + METRICS_TOKEN, 401),
        ("Bearer " + METRICS_TOKEN + "\r\nX-Injected: 1", 401),
        ("Negotiate <script>alert(1)</script>", 401),
    ],
)
def test_hostile_authorization_headers_get_a_clear_4xx(settings, authorization, status):
    settings.METRICS_TOKEN = METRICS_TOKEN
    response = scrape(HTTP_AUTHORIZATION=authorization)
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/plain")
    assert b"oyster_" not in response.content
    assert b"<script>" not in response.content


def test_hostile_addresses_are_refused_not_failed(settings):
    for address in ("", "not-an-address", "999.1.1.1", "::ffff:10.0.0.1", "\x00"):
        assert scrape(REMOTE_ADDR=address).status_code == 403, address
    # An IPv4 client seen on an IPv6 socket is still that IPv4 address.
    assert scrape(REMOTE_ADDR="::ffff:127.0.0.1").status_code == 200


def test_only_get_is_answered():
    assert Client().post(URL).status_code == 405
    assert Client().head(URL).status_code in (200, 405)


# --- what the counters count ---------------------------------------------------------------


def post_events(body, token=NOTIFICATIONS_TOKEN):
    return Client().post(
        "/api/registry/events",
        data=body,
        content_type="application/vnd.docker.distribution.events.v1+json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_notifications_are_counted_by_action_once_and_refusals_by_reason(settings):
    push = make_registry_event(action="push")
    pull = make_registry_event(action="pull", tag="")
    assert post_events(make_envelope(push, pull)).status_code == 200
    assert post_events(make_envelope(push)).status_code == 200  # a redelivery: counted once
    assert post_events(make_envelope(push), token="wrong").status_code == 401
    assert post_events(b"not json").status_code == 200  # kept as a rejected delivery
    settings.NOTIFICATIONS_MAX_BODY = 100
    assert post_events(make_envelope(make_registry_event())).status_code == 413

    response = scrape()
    assert value(response, "oyster_notifications_received_total", action="push") == 1
    assert value(response, "oyster_notifications_received_total", action="pull") == 1
    assert value(response, "oyster_notifications_received_total", action="delete") == 0
    for reason in ("unauthorized", "unreadable", "too_large"):
        assert value(response, "oyster_notifications_rejected_total", reason=reason) == 1
    assert value(response, "oyster_notifications_pending") == 0
    assert value(response, "oyster_notifications_apply_lag_seconds") == 0
    assert value(response, "oyster_notifications_last_received_timestamp_seconds") > 0


def test_the_pending_queue_and_its_lag(settings, monkeypatch):
    settings.NOTIFICATIONS_APPLY_DELAY = 0.25  # batched: stored now, applied by the worker
    # No applier thread: its connection would keep the test database open (PostgreSQL).
    monkeypatch.setattr(ingest, "wake", lambda: None)
    assert post_events(make_envelope(make_registry_event())).status_code == 200
    time.sleep(0.3)

    response = scrape()
    assert value(response, "oyster_notifications_pending") == 1
    assert value(response, "oyster_notifications_apply_lag_seconds") >= 0.3
    # Counted once applied, not when stored.
    assert value(response, "oyster_notifications_received_total", action="push") == 0

    assert ingest.catch_up() == 1
    response = scrape()
    assert value(response, "oyster_notifications_pending") == 0
    assert value(response, "oyster_notifications_apply_lag_seconds") == 0
    assert value(response, "oyster_notifications_received_total", action="push") == 1


def test_job_runs_and_their_durations_by_kind(monkeypatch):
    worker.run_now(JobKind.NOOP, options={"seconds": 0.2})
    worker.run_now(JobKind.NOOP)

    def fail(run):
        raise RuntimeError("a job that fails")

    monkeypatch.setattr(worker, "noop_job", fail)
    assert worker.run_now(JobKind.NOOP).state == Run.State.FAILED

    response = scrape()
    runs = Run.objects.filter(kind=JobKind.NOOP)
    done, failed = runs.filter(state="done").count(), runs.filter(state="failed").count()
    assert value(response, "oyster_job_runs_total", kind="noop", outcome="done") == done
    assert value(response, "oyster_job_runs_total", kind="noop", outcome="failed") == failed
    assert value(response, "oyster_job_duration_seconds_count", kind="noop") == done + failed
    seconds = sum((run.finished_at - run.started_at).total_seconds() for run in runs)
    assert value(response, "oyster_job_duration_seconds_sum", kind="noop") == pytest.approx(
        seconds, abs=0.001
    )
    assert value(response, "oyster_job_runs_total", kind="sync", outcome="done") == 0


def test_a_run_whose_worker_died_counts_as_failed():
    # Running, never started by a live worker, no lease: what a killed worker leaves.
    Run.objects.create(kind=JobKind.NOOP, state=Run.State.RUNNING)
    assert worker.recover_stale_runs() == 1
    assert value(scrape(), "oyster_job_runs_total", kind="noop", outcome="failed") == 1


def test_storage_figures_come_from_the_latest_snapshot(settings):
    settings.METRICS_TOP_REPOSITORIES = 2
    old = make_snapshot(total=1, reclaimable=1, repositories={"old/one": 1})
    latest = make_snapshot(
        total=5000, reclaimable=1200, repositories={"a/small": 10, "b/big": 3000, "c/mid": 900}
    )
    assert old.pk != latest.pk

    response = scrape()
    assert value(response, "oyster_storage_bytes") == 5000
    assert value(response, "oyster_storage_reclaimable_bytes") == 1200
    assert value(response, "oyster_storage_scan_timestamp_seconds") == pytest.approx(
        latest.created_at.timestamp()
    )
    per_repository = {
        dict(labels)["repository"]: v
        for (name, labels), v in samples(response).items()
        if name == "oyster_storage_repository_bytes"
    }
    assert per_repository == {"b/big": 3000, "c/mid": 900}


def make_snapshot(total, reclaimable, repositories):
    snapshot = StorageSnapshot.objects.create(
        backend="filesystem",
        total_bytes=total,
        blob_count=1,
        reclaimable_bytes=reclaimable,
        reclaimable_count=1,
        repository_count=len(repositories),
    )
    for name, size in repositories.items():
        RepositoryStorage.objects.create(
            snapshot=snapshot,
            name=name,
            referenced_bytes=size,
            unique_bytes=size,
            shared_bytes=0,
            reclaimable_bytes=0,
            blob_count=1,
            manifest_count=1,
        )
    return snapshot


def test_repositories_and_tags_are_the_kept_totals():
    push = make_registry_event(action="push", repository="team/app", tag="v1")
    push2 = make_registry_event(action="push", repository="team/app", tag="v2")
    push3 = make_registry_event(action="push", repository="team/other", tag="v1")
    assert post_events(make_envelope(push, push2, push3)).status_code == 200

    response = scrape()
    assert value(response, "oyster_repositories") == 2
    assert value(response, "oyster_tags") == 3
    assert value(response, "oyster_repositories_empty") == 0


def test_quotas_and_event_hook_queues(settings):
    from registry_admin import event_hooks, quotas
    from registry_admin.models import HookDelivery, Quota

    settings.EVENT_HOOKS_ALLOW_PRIVATE = True
    quotas.set_quota("admin", "team/*", "1000")
    quotas.set_quota("admin", "ci/**", "5000")
    Quota.objects.filter(pattern="team/*").update(pushed_bytes=1200)
    quotas.update_levels()
    hook, _ = event_hooks.save_hook("admin", "chat", "http://127.0.0.1:1/x", "slack")
    for _ in range(3):
        event_hooks.send_test(hook)
    HookDelivery.objects.filter(pk=HookDelivery.objects.order_by("id").first().pk).update(
        state=HookDelivery.State.FAILED
    )
    response = scrape()
    assert value(response, "oyster_quota_usage_bytes", pattern="team/*") == 1200
    assert value(response, "oyster_quota_limit_bytes", pattern="ci/**") == 5000
    assert value(response, "oyster_quota_exceeded", pattern="team/*") == 1
    assert value(response, "oyster_quota_exceeded", pattern="ci/**") == 0
    assert value(response, "oyster_event_hook_deliveries", hook="chat", state="pending") == 2
    assert value(response, "oyster_event_hook_deliveries", hook="chat", state="failed") == 1
    assert b"127.0.0.1:1" not in response.content  # a hook's URL may hold its key


def test_token_requests_are_counted_by_outcome(settings, tmp_path):
    settings.REGISTRY_AUTH_MODE = "token"
    settings.TOKEN_KEY_DIR = str(tmp_path / "keys")
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    client = Client()
    service = settings.TOKEN_SERVICE
    assert client.get("/auth/token", {"service": "other"}).status_code == 400
    assert client.get("/auth/token", {"service": service}).status_code == 200  # anonymous
    wrong = "Basic " + base64.b64encode(b"nobody:wrong-password").decode()
    assert (
        client.get("/auth/token", {"service": service}, HTTP_AUTHORIZATION=wrong).status_code == 401
    )

    response = scrape()
    assert value(response, "oyster_token_requests_total", outcome="bad_request") == 1
    assert value(response, "oyster_token_requests_total", outcome="issued") == 1
    assert value(response, "oyster_token_requests_total", outcome="refused") == 1
    assert value(response, "oyster_token_requests_total", outcome="throttled") == 0


def test_failed_logins_are_counted_without_their_names():
    make_user("metrics-admin")
    client = Client()
    client.post("/login/", {"username": "metrics-admin", "password": "wrong-password-1"})
    client.post("/login/", {"username": "someone-unknown", "password": "wrong-password-2"})
    client.post("/login/", {"username": "metrics-admin", "password": TEST_PASSWORD})

    response = scrape()
    assert value(response, "oyster_login_failures_total") == 2
    assert b"metrics-admin" not in response.content
    assert b"someone-unknown" not in response.content


def test_the_counters_are_the_database_rows_whoever_answers():
    """What makes them right with several workers and instances: a scrape reads the kept
    totals, so a second process (here: a row written behind the first's back) agrees."""
    first = value(scrape(), "oyster_login_failures_total")
    MetricCounter.objects.add({"login_failures": 5})
    assert value(scrape(), "oyster_login_failures_total") == first + 5


def test_a_registry_that_never_answers_costs_the_scrape_at_most_its_timeout(settings, silent_port):
    settings.REGISTRY_URL = f"http://127.0.0.1:{silent_port}"
    settings.METRICS_REGISTRY_TIMEOUT = 0.5
    started = time.monotonic()
    response = scrape()
    first = time.monotonic() - started
    started = time.monotonic()
    scrape()
    second = time.monotonic() - started

    assert value(response, "oyster_registry_up") == 0
    # One connection attempt plus the adapter's retries, each bounded by the short timeout.
    assert first < 3, first
    assert second < 0.3, second  # the ping is remembered for a while


def test_nothing_secret_is_in_the_output(settings, tmp_path):
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.REGISTRY_PASSWORD = "registry-password-do-not-show"
    settings.NOTIFICATIONS_TOKEN = NOTIFICATIONS_TOKEN
    make_user("portal-user-with-a-name")
    client = Client()
    client.post("/login/", {"username": "portal-user-with-a-name", "password": "guess-1"})
    post_events(make_envelope(make_registry_event()), token="guessed-token-123")

    body = scrape(HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").content.decode()
    for secret in (
        METRICS_TOKEN,
        NOTIFICATIONS_TOKEN,
        "guessed-token-123",
        "registry-password-do-not-show",
        "portal-user-with-a-name",
        "guess-1",
        settings.SECRET_KEY,
        "bob",  # the registry user of the refused delivery
        "127.0.0.1",
    ):
        assert secret not in body, secret
    assert all(
        line.startswith(("# HELP oyster_", "# TYPE oyster_", "oyster_"))
        for line in body.splitlines()
    )


def test_the_system_checks_name_a_bad_setting(settings):
    settings.METRICS_ALLOWED_ADDRESSES = ["127.0.0.1", "10.0.0.0/8", "localhost"]
    settings.METRICS_TOKEN = "short"
    settings.METRICS_REGISTRY_TIMEOUT = 0
    ids = [problem.id for problem in checks.check_metrics_settings(None)]
    assert ids == ["oyster.E060", "oyster.W060", "oyster.E061"]

    settings.METRICS_ALLOWED_ADDRESSES = ["127.0.0.1", "::1", "10.0.0.0/8"]
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.METRICS_REGISTRY_TIMEOUT = 1
    assert checks.check_metrics_settings(None) == []
