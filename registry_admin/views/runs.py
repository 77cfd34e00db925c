from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from .. import worker
from ..models import JobKind
from ..roles import DELETE_IMAGES, RUN_JOBS, require
from ..templatetags.oyster import eta


def _kind_or_404(kind):
    if kind not in worker.JOBS:
        raise Http404("No such job.")
    return worker.JOBS[kind]


# Every kind is in exactly one of these two sets (a test holds JOBS to it), so a new kind is a
# decision, not a default. Kinds whose real run deletes images: here they need the delete
# permission and only ever start a dry run; each real run has its own page, with a confirmation
# (Retention → Run now, Storage → untagged cleanup, Storage → garbage collection, Storage →
# collect now, registry online).
DRY_RUN_ONLY = {
    JobKind.RETENTION,
    JobKind.PRUNE_UNTAGGED,
    JobKind.GARBAGE_COLLECT,
    JobKind.ONLINE_GC,
    # Its real run is requested by the repository page's confirmation, with the name typed.
    JobKind.DELETE_REPOSITORY,
}
# Kinds that remove nothing a user made: the reconcile and the details fetch rewrite the index
# from the registry; the scan replaces its own snapshot; the audit prune removes only what
# AUDIT_RETENTION_DAYS has already expired (the schedule would, a little later), takes no options
# and records itself in the trail; the trash restore only brings back blobs a push asked for; the
# recycle bin's purge releases only items RECYCLE_BIN_DAYS has already expired, as the schedule
# would (it takes no options; the shell's `--older-than` is not reachable from here).
ANY_RUN = {
    JobKind.NOOP,
    JobKind.SYNC,
    JobKind.DETAILS,
    JobKind.STORAGE_SCAN,
    JobKind.AUDIT_PRUNE,
    JobKind.GC_RESTORE,
    JobKind.BIN_PURGE,
}


@require_POST
@require(RUN_JOBS)
def run_request(request, kind):
    """'Refresh now' / 'Scan now': ask the worker for a run, then go back where the user was."""
    job = _kind_or_404(kind)
    options = None
    if kind not in ANY_RUN:
        # A kind in neither set gets the stricter treatment rather than a real run.
        if not request.user.has_perm(DELETE_IMAGES):
            raise PermissionDenied("Only admins may start a job that deletes images.")
        options = {"dry_run": True}
    run = worker.request_run(kind, user=request.user, options=options)
    dry = (run.options or {}).get("dry_run")
    label = f"{job.label} (dry run, deletes nothing)" if dry else job.label
    messages.info(request, f"{label}: run #{run.pk} is {run.get_state_display().lower()}.")
    back = request.POST.get("next", "")
    # Only a path of ours: redirect() would take any other word for a view name to reverse.
    if not back.startswith("/") or not url_has_allowed_host_and_scheme(
        back, {request.get_host()}, request.is_secure()
    ):
        back = reverse("registry_admin:dashboard")
    return redirect(back)


def run_as_dict(run):
    if run is None:
        return None
    return {
        "id": run.pk,
        "kind": run.kind,
        "state": run.state,
        "done": run.done,
        "total": run.total,
        "percent": run.percent,
        "message": run.message,
        # Worked out here, so the page and its polling say the same.
        "eta": eta(run),
        "error": run.error,
        "requested_at": run.requested_at.isoformat() if run.requested_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


@require_GET
def run_status(request, kind):
    """The latest run of a kind as JSON, polled by the progress widget."""
    _kind_or_404(kind)
    return JsonResponse({"run": run_as_dict(worker.latest_run(kind))})
