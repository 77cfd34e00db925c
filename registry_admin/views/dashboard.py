from datetime import timedelta

from django.conf import settings
from django.shortcuts import render
from django.utils import timezone

from .. import online_gc, quotas, registry, usage, worker
from ..models import JobKind
from . import audit

# Where an operator acts on a failed run of each job kind.
JOB_PAGES = {
    JobKind.SYNC: ("registry_admin:repositories", "Repositories"),
    JobKind.DETAILS: ("registry_admin:repositories", "Repositories"),
    JobKind.STORAGE_SCAN: ("registry_admin:storage", "Storage"),
    JobKind.ONLINE_GC: ("registry_admin:storage", "Storage"),
    JobKind.GC_RESTORE: ("registry_admin:storage", "Storage"),
    JobKind.RETENTION: ("registry_admin:retention", "Retention rules"),
    JobKind.AUDIT_PRUNE: ("registry_admin:audit", "Audit log"),
}


def _storage_context():
    snapshot = usage.latest_snapshot()
    interval = settings.STORAGE_SCAN_INTERVAL
    return {
        "storage_snapshot": snapshot,
        # Two missed scheduled scans mean the figures are old: say so beside them.
        "storage_stale": bool(
            snapshot
            and interval > 0
            and timezone.now() - snapshot.created_at > timedelta(seconds=2 * interval)
        ),
        "storage_failed_run": usage.failed_run_since(snapshot),
        "online_collection": online_gc.last_finished(dry_run=False),
        "quota_alerts": quotas.alerts(),
        "quota_enforced": settings.REGISTRY_AUTH_MODE == "token",
    }


def _jobs_context():
    return {
        "worker_status": worker.worker_status(),
        "worker_stale_seconds": worker.HEARTBEAT_STALE_SECONDS,
        "failed_runs": [
            (run, worker.JOBS[run.kind].label, *JOB_PAGES.get(run.kind, (None, None)))
            for run in worker.failed_runs()
        ],
    }


def dashboard(request):
    ping = registry.get_client().ping()
    context = {"ping": ping}
    context.update(audit.dashboard_context(ping))
    context.update(_storage_context())
    context.update(_jobs_context())
    return render(request, "registry_admin/dashboard.html", context)
