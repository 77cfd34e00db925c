"""The dashboard answers "is my registry healthy, and how full is it?": storage, notifications,
the worker's heartbeat and failed jobs, each from real components (a real registry, a real
storage scan, `run_worker` as a real process)."""

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from registry_admin import notifications, worker
from registry_admin.management.commands.run_worker import Command as RunWorker
from registry_admin.models import AuditEvent, WorkerHeartbeat

from . import harness
from .factories import make_envelope, make_registry_event
from .images import build_image
from .test_settings_and_checks import run_python

DASHBOARD = reverse("registry_admin:dashboard")


def page(client):
    response = client.get(DASHBOARD)
    assert response.status_code == 200
    return response.content.decode()


def start_worker():
    from django.conf import settings

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings_test",
        "DATA_DIR": str(settings.DATA_DIR),
        "DATABASE_URL": harness.child_database_url(),
        "WORKER_POLL_SECONDS": "0.2",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_worker", "--kind", "noop"],
        cwd=harness.REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = ""
    while "Worker started" not in out and proc.poll() is None:
        out += proc.stdout.readline()
    assert "Worker started" in out, out
    # The first beat is written right after the banner.
    deadline = time.monotonic() + 20
    while not WorkerHeartbeat.objects.filter(owner__endswith=f":{proc.pid}").exists():
        assert time.monotonic() < deadline, "the worker wrote no heartbeat"
        time.sleep(0.1)
    return proc


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_says_when_the_worker_stops_or_dies(viewer_client):
    assert 'data-warning="worker-never"' in page(viewer_client)

    proc = start_worker()
    try:
        content = page(viewer_client)
        assert 'data-worker-state="alive"' in content
        assert "Worker running" in content
        proc.terminate()
        proc.communicate(timeout=30)
        assert proc.returncode == 0
        # A clean stop is on the very next page load.
        content = page(viewer_client)
        assert 'data-warning="worker-stopped"' in content
        assert "python manage.py run_worker" in content

        proc = start_worker()
        assert 'data-worker-state="alive"' in page(viewer_client)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        # A killed worker cannot say goodbye: it stops beating. Rather than sleep a minute,
        # every stamp is moved back past the staleness limit (what a minute of silence leaves).
        gone = timedelta(seconds=worker.HEARTBEAT_STALE_SECONDS + 1)
        WorkerHeartbeat.objects.update(last_seen_at=F("last_seen_at") - gone)
        WorkerHeartbeat.objects.exclude(stopped_at=None).update(stopped_at=F("stopped_at") - gone)
        content = page(viewer_client)
        assert 'data-warning="worker-silent"' in content
        assert "No worker heartbeat" in content
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_beats_while_a_job_holds_the_loop(monkeypatch):
    monkeypatch.setattr(worker, "HEARTBEAT_SECONDS", 0.05)
    command = RunWorker()
    command.started_at = timezone.now()
    command._beat()
    first = WorkerHeartbeat.objects.get().last_seen_at
    stop = threading.Event()
    heart = threading.Thread(target=command._heartbeat, args=(stop,))
    heart.start()
    time.sleep(0.5)  # the main thread is "busy in a job"
    stop.set()
    heart.join(timeout=5)
    assert WorkerHeartbeat.objects.get().last_seen_at > first
    worker.stop_beating()
    assert worker.worker_status().state == "stopped"


@pytest.mark.django_db(transaction=True)
def test_storage_used_reclaimable_and_the_scan_age_from_a_real_scan(admin_client, registry):
    assert "No storage scan yet." in page(admin_client)
    registry.pusher().push_image("health/app", "v1", build_image(seed="health"))
    run = worker.run_now("storage_scan")
    assert run.state == run.State.DONE, run.error
    content = page(admin_client)
    snapshot = run.result
    assert f'data-storage-used="{snapshot["total_bytes"]}"' in content
    assert 'data-storage-reclaimable="' in content
    assert "Latest scan:" in content and "0\xa0minutes ago" in content
    assert 'href="/storage/"' in content
    assert 'data-warning="scan-failed"' not in content
    assert "data-no-failed-runs" in content


@pytest.mark.django_db
def test_a_failed_scan_is_shown_with_its_reason_and_a_link(viewer_client, settings, tmp_path):
    settings.STORAGE_FILESYSTEM_ROOT = str(tmp_path / "missing")
    run = worker.run_now("storage_scan")
    assert run.state == run.State.FAILED
    content = page(viewer_client)
    assert 'data-warning="scan-failed"' in content
    assert 'data-failed-run="storage_scan"' in content
    assert "Storage scan" in content and 'href="/storage/">Storage</a>' in content
    assert str(tmp_path / "missing") in content  # the run's reason names the path


@pytest.mark.django_db
def test_an_old_scan_is_flagged(viewer_client, settings, registry):
    run = worker.run_now("storage_scan")
    assert run.state == run.State.DONE, run.error
    settings.STORAGE_SCAN_INTERVAL = 3600
    assert 'data-warning="scan-stale"' not in page(viewer_client)
    from registry_admin.models import StorageSnapshot

    StorageSnapshot.objects.update(created_at=timezone.now() - timedelta(hours=3))
    assert 'data-warning="scan-stale"' in page(viewer_client)


@pytest.mark.django_db(transaction=True)
def test_silence_uses_notifications_silence_warning(viewer_client, registry, settings):
    settings.NOTIFICATIONS_SILENCE_WARNING = 90 * 60
    # One event received long ago (a registry that went quiet, not one that never spoke).
    notifications.record(notifications.parse_envelope(make_envelope(make_registry_event())))
    AuditEvent.objects.filter(source=AuditEvent.Source.REGISTRY).update(
        received_at=timezone.now() - timedelta(minutes=91)
    )
    content = page(viewer_client)
    assert 'data-warning="silent"' in content
    assert "no event arrived for more than 90 minutes" in content


SETTING = "from django.conf import settings; print(settings.NOTIFICATIONS_SILENCE_WARNING)"


@pytest.mark.parametrize(
    "env,seconds",
    [
        ({}, 86400.0),
        ({"NOTIFICATIONS_SILENCE_WARNING": "90m"}, 5400.0),
        ({"NOTIFICATIONS_SILENCE_WARNING": "3600"}, 3600.0),
        ({"NOTIFICATIONS_SILENCE_WARNING": " 2D "}, 172800.0),
        # The older name keeps working, and the new one wins when both are set.
        ({"NOTIFICATIONS_SILENCE_WARNING_HOURS": "2"}, 7200.0),
        (
            {"NOTIFICATIONS_SILENCE_WARNING": "30s", "NOTIFICATIONS_SILENCE_WARNING_HOURS": "2"},
            30.0,
        ),
    ],
)
def test_the_silence_setting_reads_durations(env, seconds):
    env = {"NOTIFICATIONS_SILENCE_WARNING": "", "NOTIFICATIONS_SILENCE_WARNING_HOURS": "", **env}
    result = run_python(SETTING, SECRET_KEY="x" * 50, **env)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == seconds


@pytest.mark.parametrize(
    "name,value",
    [
        ("NOTIFICATIONS_SILENCE_WARNING", "soon"),
        ("NOTIFICATIONS_SILENCE_WARNING", "0"),
        ("NOTIFICATIONS_SILENCE_WARNING", "-5h"),
        ("NOTIFICATIONS_SILENCE_WARNING", "9" * 5000),
        ("NOTIFICATIONS_SILENCE_WARNING", "4000d"),
        ("NOTIFICATIONS_SILENCE_WARNING", "1e9"),
        ("NOTIFICATIONS_SILENCE_WARNING", "24h\n<script>"),
        ("NOTIFICATIONS_SILENCE_WARNING_HOURS", "a day"),
    ],
)
def test_a_bad_silence_setting_stops_the_start_with_a_sentence(name, value):
    result = run_python(SETTING, SECRET_KEY="x" * 50, **{name: value})
    assert result.returncode != 0
    assert f"{name}=" in result.stderr
    assert "is not a duration: write seconds (86400)" in result.stderr
    assert "9" * 100 not in result.stderr  # the message quotes only the start of the value
