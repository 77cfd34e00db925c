"""The worker's claiming, scheduling and failure handling, on the real database."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from registry_admin import worker
from registry_admin.models import JobLease, Run


def failing_job(run):
    raise RuntimeError("the registry said no")


@pytest.fixture
def jobs(monkeypatch):
    """The worker's job table with a test-only failing kind and a scheduled no-op."""
    table = dict(worker.JOBS)
    table["failing"] = worker.Job("registry_admin.tests.test_worker.failing_job", "Failing")
    table["scheduled"] = worker.Job(
        "registry_admin.worker.noop_job", "Scheduled", interval_setting="SYNC_INTERVAL"
    )
    monkeypatch.setattr(worker, "JOBS", table)
    return table


@pytest.mark.django_db
def test_a_requested_run_is_executed_once(jobs, settings):
    settings.SYNC_INTERVAL = 0
    run = worker.request_run("noop")
    assert worker.request_run("noop").pk == run.pk  # no duplicate while one is pending
    executed = worker.tick(["noop"])
    assert [r.pk for r in executed] == [run.pk]
    run.refresh_from_db()
    assert run.state == Run.State.DONE
    assert run.result == {"ok": True}
    assert (run.done, run.total) == (1, 1)
    assert worker.tick(["noop"]) == []


@pytest.mark.django_db
def test_a_failing_job_is_recorded_not_raised(jobs):
    worker.request_run("failing")
    (run,) = worker.tick(["failing"])
    assert run.state == Run.State.FAILED
    assert Run.objects.get(pk=run.pk).error == "the registry said no"
    assert JobLease.objects.get(kind="failing").lease_until is None


@pytest.mark.django_db
def test_a_held_lease_blocks_a_second_runner(jobs):
    assert worker.claim_lease("noop", owner="other-host:1")
    worker.request_run("noop")
    assert worker.tick(["noop"]) == []
    with pytest.raises(worker.JobBusy):
        worker.run_now("noop")
    worker.release_lease("noop")
    assert len(worker.tick(["noop"])) == 1


@pytest.mark.django_db
def test_an_expired_lease_is_taken_over(jobs):
    assert worker.claim_lease("noop", owner="dead-host:1")
    JobLease.objects.filter(kind="noop").update(lease_until=timezone.now() - timedelta(seconds=1))
    assert worker.claim_lease("noop")


@pytest.mark.django_db
def test_the_schedule_runs_when_due_and_not_before(jobs, settings):
    settings.SYNC_INTERVAL = 600
    (run,) = worker.tick(["scheduled"])
    assert run.requested_by == "schedule"
    assert worker.tick(["scheduled"]) == []
    JobLease.objects.filter(kind="scheduled").update(
        last_started_at=timezone.now() - timedelta(seconds=601)
    )
    assert len(worker.tick(["scheduled"])) == 1


@pytest.mark.django_db
def test_a_run_whose_worker_died_is_marked_failed(jobs):
    run = Run.objects.create(
        kind="noop",
        state=Run.State.RUNNING,
        heartbeat_at=timezone.now() - timedelta(seconds=worker.LEASE_SECONDS + 1),
    )
    worker.recover_stale_runs()
    run.refresh_from_db()
    assert run.state == Run.State.FAILED
    assert "worker stopped" in run.error


@pytest.mark.django_db
def test_a_run_whose_worker_was_killed_is_taken_over_once_its_lease_expires(jobs, settings):
    settings.WORKER_LEASE_SECONDS = 30
    long_ago = timezone.now() - timedelta(seconds=31)
    run = Run.objects.create(
        kind="noop", state=Run.State.RUNNING, options={"seconds": 0}, heartbeat_at=long_ago
    )
    JobLease.objects.create(kind="noop", owner="dead:1", lease_until=timezone.now())
    # Lease still live (not yet expired): nothing is taken over.
    JobLease.objects.filter(kind="noop").update(lease_until=timezone.now() + timedelta(seconds=5))
    assert worker.recover_stale_runs() == 0
    JobLease.objects.filter(kind="noop").update(lease_until=long_ago)
    (again,) = worker.tick(["noop"])
    run.refresh_from_db()
    assert run.state == Run.State.FAILED
    assert f"run #{again.pk} takes it over" in run.error
    assert again.state == Run.State.DONE and again.options == {"seconds": 0}
    # Only once: the takeover dying as well is not requested a third time.
    Run.objects.filter(pk=again.pk).update(
        state=Run.State.RUNNING, result={worker.TAKES_OVER: run.pk}, heartbeat_at=long_ago
    )
    assert worker.recover_stale_runs() == 1
    assert not Run.objects.filter(state=Run.State.REQUESTED).exists()


@pytest.mark.django_db
def test_a_live_worker_renews_its_leases_so_a_quiet_job_is_not_taken_over(jobs, settings):
    settings.WORKER_LEASE_SECONDS = 30
    assert worker.claim_lease("noop", owner=worker._owner())
    JobLease.objects.filter(kind="noop").update(lease_until=timezone.now())
    assert worker.renew_leases() == 1
    lease = JobLease.objects.get(kind="noop")
    assert lease.lease_until > timezone.now() + timedelta(seconds=25)
    assert not worker.claim_lease("noop", owner="other:2")


@pytest.mark.django_db
@pytest.mark.parametrize("seconds", [-5, "x", None, [1], 1e308])
def test_the_noop_duration_is_clamped(jobs, seconds, monkeypatch):
    slept = []
    monkeypatch.setattr(worker.time, "sleep", slept.append)
    run = Run.objects.create(kind="noop", options={"seconds": seconds})
    worker.noop_job(run)
    assert 0 <= slept[0] <= worker.NOOP_MAX_SECONDS


@pytest.mark.django_db
def test_unknown_kinds_are_refused(jobs):
    with pytest.raises(ValueError):
        worker.request_run("../../etc")


@pytest.mark.django_db
def test_admin_requests_a_run_and_reads_its_status(admin_client):
    response = admin_client.post(
        reverse("registry_admin:run-request", args=["noop"]), {"next": "/repositories/"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/repositories/"
    status = admin_client.get(reverse("registry_admin:run-status", args=["noop"])).json()
    assert status["run"]["state"] == "requested"


@pytest.mark.django_db
def test_run_request_refuses_offsite_redirects_and_unknown_kinds(admin_client):
    response = admin_client.post(
        reverse("registry_admin:run-request", args=["noop"]), {"next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("registry_admin:dashboard")
    assert admin_client.post("/runs/nope/request").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("back", ["%00", "dashboard", "registry_admin:users", "", "a\r\nb"])
def test_run_request_goes_to_the_dashboard_for_a_next_that_is_no_path(admin_client, back):
    """`next` is a path of ours or nothing: never a view name for redirect() to reverse (a
    word that names no view was a 500)."""
    response = admin_client.post(
        reverse("registry_admin:run-request", args=["noop"]), {"next": back}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("registry_admin:dashboard")


@pytest.mark.django_db
def test_viewers_cannot_request_runs(viewer_client):
    assert (
        viewer_client.post(reverse("registry_admin:run-request", args=["noop"])).status_code == 403
    )
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_get_on_run_request_changes_nothing(admin_client):
    assert admin_client.get(reverse("registry_admin:run-request", args=["noop"])).status_code == 405
    assert not Run.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_run_worker_once_executes_requested_runs():
    worker.request_run("noop")
    call_command("run_worker", "--once", "--kind", "noop")
    assert Run.objects.get().state == Run.State.DONE


def test_run_worker_stops_on_sigterm(tmp_path):
    env_db = f"sqlite:///{tmp_path / 'w.sqlite3'}"
    env = {"DATABASE_URL": env_db, "WORKER_POLL_SECONDS": "0.2", "PATH": "/usr/bin:/bin"}
    base = [sys.executable, "manage.py"]
    full_env = {
        **os.environ,
        **env,
        "DJANGO_SETTINGS_MODULE": "portal.settings_test",
        "PYTHONUNBUFFERED": "1",
    }
    subprocess.run([*base, "migrate", "-v0"], env=full_env, check=True, timeout=120)
    proc = subprocess.Popen(
        [*base, "run_worker", "--kind", "noop"],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # "Worker started" comes once the handlers are installed; a fixed sleep was too short for
    # Django's start-up on a busy machine (the default SIGTERM action killed it: -15).
    started = ""
    while "Worker started" not in started and proc.poll() is None:
        started += proc.stdout.readline()
    assert "Worker started" in started, started
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, started + out
    assert "Worker stopped." in out
