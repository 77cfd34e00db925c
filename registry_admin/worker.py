"""Background jobs: the registry of job kinds, requesting runs, and executing them one at a time.

A job is a plain function `job(run) -> dict` living in its area's module. It reports progress
with `report_progress(run, done, total, message)` (which also renews the lease) and returns a
small JSON-able summary stored in `run.result`; raising marks the run failed with the error's
text. `run.options` carries what the requester asked for (e.g. {"dry_run": true}).

To add a kind, name it in models.JobKind and add one line to JOBS below: the dotted path of the
function, its label, and the name of the setting holding its interval in seconds (None: only on
request; a setting whose value is 0 or false disables the schedule).

The worker (`python manage.py run_worker`) loops: for each kind, a requested run or a due
schedule is claimed through the kind's JobLease row with one conditional UPDATE, so several
workers or portal instances never run the same kind twice at once. The worker's heartbeat thread
renews the leases it holds; a worker killed mid-job stops renewing, and once its lease has
expired the next worker marks that run failed and requests it again (once), so the work is taken
over rather than lost.
"""

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.module_loading import import_string

from . import db
from .models import JobKind, JobLease, MetricCounter, Run, WorkerHeartbeat

logger = logging.getLogger(__name__)

# A lease not renewed for this long is taken over: its worker died (WORKER_LEASE_SECONDS).
LEASE_SECONDS = 300
# A run taken over from a dead worker says so in its result; dying again is not retried, so a job
# that kills its worker (out of memory, say) does not take every worker down in turn.
TAKES_OVER = "takes_over"
# A worker process stamps its heartbeat this often, from a thread of its own so that a long
# job does not look like a dead worker; four missed beats and the dashboard says it is gone.
HEARTBEAT_SECONDS = 15
HEARTBEAT_STALE_SECONDS = 4 * HEARTBEAT_SECONDS
# Rows of workers gone for this long are dropped (each restart is a new host:pid).
HEARTBEAT_FORGET_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Job:
    function: str
    label: str
    interval_setting: str | None = None
    enabled_setting: str | None = None

    def interval(self):
        """Seconds between scheduled runs, or None when the kind runs only on request."""
        if self.enabled_setting and not getattr(settings, self.enabled_setting, False):
            return None
        if not self.interval_setting:
            return None
        seconds = getattr(settings, self.interval_setting, 0) or 0
        return seconds if seconds > 0 else None

    def load(self):
        return import_string(self.function)


JOBS = {
    JobKind.NOOP: Job("registry_admin.worker.noop_job", JobKind.NOOP.label),
    JobKind.AUDIT_PRUNE: Job(
        "registry_admin.audit.prune_audit_events", JobKind.AUDIT_PRUNE.label, "AUDIT_PRUNE_INTERVAL"
    ),
    JobKind.SYNC: Job(
        "registry_admin.reconcile.reconcile_job", JobKind.SYNC.label, "SYNC_INTERVAL"
    ),
    JobKind.DETAILS: Job("registry_admin.reconcile.details_job", JobKind.DETAILS.label),
    JobKind.STORAGE_SCAN: Job(
        "registry_admin.usage.storage_scan_job",
        JobKind.STORAGE_SCAN.label,
        interval_setting="STORAGE_SCAN_INTERVAL",
    ),
    JobKind.PRUNE_UNTAGGED: Job("registry_admin.untagged.prune_job", JobKind.PRUNE_UNTAGGED.label),
    JobKind.GARBAGE_COLLECT: Job(
        "registry_admin.collector.garbage_collect_job", JobKind.GARBAGE_COLLECT.label
    ),
    JobKind.ONLINE_GC: Job(
        "registry_admin.online_gc.online_gc_job",
        JobKind.ONLINE_GC.label,
        interval_setting="ONLINE_GC_INTERVAL",
        enabled_setting="ONLINE_GC_SCHEDULE_ENABLED",
    ),
    JobKind.GC_RESTORE: Job("registry_admin.online_gc.restore_job", JobKind.GC_RESTORE.label),
    JobKind.RETENTION: Job(
        "registry_admin.retention.retention_job",
        JobKind.RETENTION.label,
        interval_setting="RETENTION_INTERVAL",
        enabled_setting="RETENTION_SCHEDULE_ENABLED",
    ),
    JobKind.BIN_PURGE: Job(
        "registry_admin.recycle_bin.purge_job",
        JobKind.BIN_PURGE.label,
        interval_setting="BIN_PURGE_INTERVAL",
    ),
    JobKind.DELETE_REPOSITORY: Job(
        "registry_admin.repository_delete.delete_repository_job", JobKind.DELETE_REPOSITORY.label
    ),
}


class JobBusy(Exception):
    """Another process holds the kind's lease."""


def _owner():
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_seconds():
    return max(1, int(getattr(settings, "WORKER_LEASE_SECONDS", LEASE_SECONDS) or LEASE_SECONDS))


def _serialize_requests(kind):
    """On PostgreSQL two portal instances asked at once must not both create a run: the
    check-then-insert below is serialized per kind with a transaction-scoped advisory lock.
    SQLite has a single writer and no such lock; there the race only ever queues a second run,
    which still runs after the first, never beside it."""
    db.hold_transaction_lock(db.job_kind_key(kind))


def request_run(kind, user=None, options=None):
    """Ask the worker for a run of `kind`; returns the pending or running run if there is one."""
    if kind not in JOBS:
        raise ValueError(f"unknown job kind {kind!r}")
    with transaction.atomic():
        _serialize_requests(kind)
        active = (
            Run.objects.filter(kind=kind, state__in=[Run.State.REQUESTED, Run.State.RUNNING])
            .order_by("-requested_at")
            .first()
        )
        if active and (active.options or {}) == (options or {}):
            return active
        return Run.objects.create(
            kind=kind,
            options=options or {},
            requested_by=getattr(user, "username", "") or "",
        )


def latest_run(kind):
    return Run.objects.filter(kind=kind).order_by("-requested_at").first()


def last_finished_run(kind, state=Run.State.DONE):
    return Run.objects.filter(kind=kind, state=state).order_by("-finished_at").first()


def _lease_row(kind):
    try:
        return JobLease.objects.get_or_create(kind=kind)[0]
    except IntegrityError:
        return JobLease.objects.get(kind=kind)


def claim_lease(kind, owner=None):
    """Take the kind's lease if it is free or expired; True when this process holds it now."""
    _lease_row(kind)
    now = timezone.now()
    claimed = (
        JobLease.objects.filter(kind=kind)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(
            owner=owner or _owner(),
            lease_until=now + timedelta(seconds=lease_seconds()),
            last_started_at=now,
        )
    )
    return claimed == 1


def release_lease(kind, finished=True):
    now = timezone.now()
    updates = {"lease_until": None, "owner": ""}
    if finished:
        updates["last_finished_at"] = now
    JobLease.objects.filter(kind=kind).update(**updates)


def report_progress(run, done=None, total=None, message=None):
    """Store progress (visible in the UI) and renew the lease."""
    fields = ["heartbeat_at"]
    run.heartbeat_at = timezone.now()
    if done is not None:
        run.done, fields = done, [*fields, "done"]
    if total is not None:
        run.total, fields = total, [*fields, "total"]
    if message is not None:
        run.message, fields = message[:500], [*fields, "message"]
    Run.objects.filter(pk=run.pk).update(**{f: getattr(run, f) for f in fields})
    JobLease.objects.filter(kind=run.kind).update(
        lease_until=run.heartbeat_at + timedelta(seconds=lease_seconds())
    )


def renew_leases(owner=None):
    """Extend every lease this process holds (from the worker's heartbeat thread): a job that
    reports no progress for longer than the lease is still alive and must not be taken over."""
    return JobLease.objects.filter(owner=owner or _owner(), lease_until__isnull=False).update(
        lease_until=timezone.now() + timedelta(seconds=lease_seconds())
    )


def execute(run):
    """Run `run` in this process (the caller holds the lease). Returns the finished run."""
    job = JOBS[run.kind]
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, started_at=now, heartbeat_at=now)
    run.state, run.started_at = Run.State.RUNNING, now
    try:
        result = job.load()(run) or {}
    except Exception as exc:  # noqa: BLE001  (any failure of a job is recorded, never fatal)
        logger.exception("job %s #%s failed", run.kind, run.pk)
        run.state, run.error = Run.State.FAILED, str(exc) or exc.__class__.__name__
        run.result = {}
    else:
        run.state, run.result = Run.State.DONE, result
    run.finished_at = timezone.now()
    with transaction.atomic():
        Run.objects.filter(pk=run.pk).update(
            state=run.state, error=run.error, result=run.result, finished_at=run.finished_at
        )
        # Kept totals for /metrics: Run rows are many (a details run per new push), and
        # summing their durations at every scrape would read them all.
        MetricCounter.objects.add(
            {
                f"job_runs:{run.kind}:{run.state}": 1,
                f"job_runs_timed:{run.kind}": 1,
                f"job_seconds:{run.kind}": (run.finished_at - now).total_seconds(),
            }
        )
    return run


def run_now(kind, user=None, options=None):
    """Run `kind` synchronously in this process (management commands). Raises JobBusy."""
    if not claim_lease(kind):
        raise JobBusy(f"A {JOBS[kind].label.lower()} is already running in another process.")
    try:
        run = Run.objects.create(
            kind=kind,
            options=options or {},
            requested_by=getattr(user, "username", "") or (user if isinstance(user, str) else ""),
        )
        return execute(run)
    finally:
        release_lease(kind)


def _due(kind, job):
    interval = job.interval()
    if interval is None:
        return False
    lease = _lease_row(kind)
    last = lease.last_started_at
    return last is None or timezone.now() - last >= timedelta(seconds=interval)


def _claim_requested(kind):
    """The oldest requested run of `kind`, marked running atomically, or None."""
    for run in Run.objects.filter(kind=kind, state=Run.State.REQUESTED).order_by("requested_at"):
        if Run.objects.filter(pk=run.pk, state=Run.State.REQUESTED).update(
            state=Run.State.RUNNING, started_at=timezone.now()
        ):
            run.refresh_from_db()
            return run
    return None


def recover_stale_runs():
    """Take over runs whose worker died: running, with no live lease on their kind and no sign
    of life for a whole lease. Each is marked failed and, unless it was itself a takeover,
    requested again. Returns how many runs were marked failed."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=lease_seconds())
    live_kinds = JobLease.objects.filter(lease_until__gte=now).values("kind")
    stale = (
        Run.objects.filter(state=Run.State.RUNNING)
        .exclude(kind__in=live_kinds)
        .filter(
            Q(heartbeat_at__lt=cutoff)
            | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
            | Q(heartbeat_at__isnull=True, started_at__isnull=True)
        )
    )
    recovered = 0
    for run in stale:
        retry = run.kind in JOBS and not (run.result or {}).get(TAKES_OVER)
        with transaction.atomic():
            # Conditional, so two workers recovering at once fail and retry it only once.
            if not Run.objects.filter(pk=run.pk, state=Run.State.RUNNING).update(
                state=Run.State.FAILED,
                error="The worker stopped while this run was in progress.",
                finished_at=now,
            ):
                continue
            recovered += 1
            # A failed run too, though of unknown duration (its worker died).
            MetricCounter.objects.add({f"job_runs:{run.kind}:{Run.State.FAILED}": 1})
            if retry:
                again = Run.objects.create(
                    kind=run.kind,
                    options=run.options,
                    requested_by=run.requested_by,
                    result={TAKES_OVER: run.pk},
                )
                Run.objects.filter(pk=run.pk).update(
                    error="The worker stopped while this run was in progress; "
                    f"run #{again.pk} takes it over."
                )
                logger.warning("run %s #%s taken over by #%s", run.kind, run.pk, again.pk)
    return recovered


def tick(kinds=None):
    """One pass of the worker loop: run at most one requested or due run per kind."""
    executed = []
    recover_stale_runs()
    for kind, job in JOBS.items():
        if kinds and kind not in kinds:
            continue
        has_request = Run.objects.filter(kind=kind, state=Run.State.REQUESTED).exists()
        due = _due(kind, job)  # before claiming: the claim stamps last_started_at
        if not has_request and not due:
            continue
        if not claim_lease(kind):
            continue
        try:
            run = _claim_requested(kind)
            if run is None and due:
                run = Run.objects.create(kind=kind, requested_by="schedule")
            if run is not None:
                executed.append(execute(run))
        finally:
            release_lease(kind)
    return executed


# The longest a no-op run may be asked to last (options {"seconds": N}); only code and tests set
# options for it, never a page.
NOOP_MAX_SECONDS = 60


def noop_job(run):
    """A job that does nothing (for `seconds`, if asked), so the worker's machinery, including
    one-at-a-time across workers and takeover after a kill, can be checked end to end."""
    try:
        seconds = min(max(float((run.options or {}).get("seconds", 0)), 0.0), NOOP_MAX_SECONDS)
    except (TypeError, ValueError):
        seconds = 0.0
    time.sleep(seconds)  # no progress report on purpose: only the heartbeat keeps the lease
    report_progress(run, done=1, total=1, message="nothing to do")
    return {"ok": True}


# --- Worker heartbeats ------------------------------------------------------------------------


def beat(owner=None, started_at=None):
    """Stamp this worker process as alive now."""
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(
        owner=owner or _owner(),
        defaults={"last_seen_at": now, "stopped_at": None},
        create_defaults={"started_at": started_at or now, "last_seen_at": now},
    )
    WorkerHeartbeat.objects.filter(
        last_seen_at__lt=now - timedelta(seconds=HEARTBEAT_FORGET_SECONDS)
    ).delete()


def stop_beating(owner=None):
    """A clean exit: the dashboard says the worker stopped, rather than waiting for staleness."""
    now = timezone.now()
    WorkerHeartbeat.objects.filter(owner=owner or _owner()).update(last_seen_at=now, stopped_at=now)


@dataclass(frozen=True)
class WorkerStatus:
    state: str  # "alive", "stopped" (clean exit), "silent" (no beat for too long) or "never"
    heartbeat: WorkerHeartbeat | None
    alive_count: int


def worker_status():
    """Is a worker running? From the newest heartbeat of any worker process."""
    cutoff = timezone.now() - timedelta(seconds=HEARTBEAT_STALE_SECONDS)
    alive = WorkerHeartbeat.objects.filter(stopped_at__isnull=True, last_seen_at__gte=cutoff)
    count = alive.count()
    if count:
        return WorkerStatus("alive", alive.order_by("-last_seen_at").first(), count)
    latest = WorkerHeartbeat.objects.order_by("-last_seen_at").first()
    if latest is None:
        return WorkerStatus("never", None, 0)
    return WorkerStatus("stopped" if latest.stopped_at else "silent", latest, 0)


def failed_runs():
    """For each job kind whose latest finished run failed: that run (newest first)."""
    failed = []
    for kind in JOBS:
        run = (
            Run.objects.filter(kind=kind, state__in=[Run.State.DONE, Run.State.FAILED])
            .order_by("-finished_at", "-pk")
            .first()
        )
        if run is not None and run.state == Run.State.FAILED:
            failed.append(run)
    return sorted(failed, key=lambda r: r.finished_at or r.requested_at, reverse=True)
