"""The storage page: the latest scan's figures, charts, all repositories, GC guidance.

It reads snapshots only; the scan itself runs in the worker ("Scan now" requests one).
"""

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from .. import collector, online_gc, recycle_bin, storage, untagged, usage, worker
from ..forms.storage import SORTS, PruneForm, RepositoryTableForm
from ..models import JobKind, Quota
from ..roles import DELETE_IMAGES, require

ROWS_PER_PAGE = 100
COLUMNS = [
    ("name", "Repository"),
    ("referenced", "Referenced"),
    ("unique", "Unique"),
    ("shared", "Shared"),
    ("reclaimable", "Reclaimable"),
    ("blobs", "Blobs"),
    ("manifests", "Manifests"),
]


def storage_page(request):
    snapshot = usage.latest_snapshot()
    form = RepositoryTableForm(request.GET)
    form.is_valid()  # an invalid field is dropped (and said); the valid ones still apply
    filters = form.cleaned_data
    sort = filters.get("sort") or "-referenced"
    rows = snapshot.repositories.filter(name__icontains=filters.get("q", "")) if snapshot else None
    if rows is not None:
        column = SORTS[sort.lstrip("-")]
        rows = rows.order_by(f"-{column}" if sort.startswith("-") else column, "name")
    query = request.GET.copy()
    query.pop("page", None)
    query.pop("sort", None)
    return render(
        request,
        "registry_admin/storage/storage.html",
        {
            "snapshot": snapshot,
            "form": form,
            "sort": sort,
            "page": Paginator(rows, ROWS_PER_PAGE).get_page(request.GET.get("page"))
            if rows is not None
            else None,
            "query_string": query.urlencode(),
            "columns": _columns(sort),
            "filter_query": filters.get("q", ""),
            "scan_run": worker.latest_run(JobKind.STORAGE_SCAN),
            "scan_kind": JobKind.STORAGE_SCAN,
            "failed_run": usage.failed_run_since(snapshot),
            "configuration_problem": storage.configuration_problem(),
            "charts": usage.chart_data(snapshot),
            "untagged": untagged.summary_by_repository(snapshot) if snapshot else [],
            "untagged_run": worker.latest_run(JobKind.PRUNE_UNTAGGED),
            "gc_run": worker.latest_run(JobKind.GARBAGE_COLLECT),
            "bin_warning": recycle_bin.offline_gc_warning(),
            "read_only_howto": collector.READ_ONLY_HOWTO,
            "restart_reminder": collector.RESTART_REMINDER,
            "online": _online_gc_context(),
            "quotas": Quota.objects.all(),
            "quota_enforced": settings.REGISTRY_AUTH_MODE == "token",
            **usage.gc_guidance_context(snapshot),
        },
    )


@require_POST
@require(DELETE_IMAGES)
@never_cache
def untagged_prune(request):
    """First POST: the confirmation listing the untagged manifests; second: the worker job."""
    form = PruneForm(request.POST)
    if not form.is_valid():
        messages.error(request, "; ".join(e for errors in form.errors.values() for e in errors))
        return redirect("registry_admin:storage")
    pattern = form.cleaned_data["repository"]
    if request.POST.get("confirm") != "yes":
        rows = untagged.latest_rows(pattern)
        return render(
            request,
            "registry_admin/storage/confirm_prune.html",
            {
                "rows": rows[:1000],
                "more": max(0, len(rows) - 1000),
                "total_bytes": sum(row.reclaimable_bytes for row in rows),
                "pattern": pattern,
                "grace_minutes": settings.UNTAGGED_GRACE_MINUTES,
            },
        )
    run = worker.request_run(
        JobKind.PRUNE_UNTAGGED, user=request.user, options={"repository": pattern}
    )
    messages.info(
        request,
        f"Untagged cleanup #{run.pk} is {run.get_state_display().lower()}: each manifest is "
        "checked against the registry again right before it is removed.",
    )
    return redirect("registry_admin:storage")


@require_POST
@require(DELETE_IMAGES)
@never_cache
def garbage_collect(request):
    """Ask the worker for a collector run: a dry run, or a real one (checked safe by the job)."""
    mode = request.POST.get("mode", "")
    if mode not in ("dry-run", "run", "run-stopped"):
        messages.error(request, "Choose a dry run or a real run.")
        return redirect("registry_admin:storage")
    run = worker.request_run(
        JobKind.GARBAGE_COLLECT,
        user=request.user,
        options={"dry_run": mode == "dry-run", "registry_stopped": mode == "run-stopped"},
    )
    messages.info(
        request,
        f"Garbage collection #{run.pk} ({'dry run' if mode == 'dry-run' else 'real run'}) is "
        f"{run.get_state_display().lower()}; its result shows below when it is done.",
    )
    return redirect("registry_admin:storage")


@require_POST
@require(DELETE_IMAGES)
@never_cache
def online_collect(request):
    """Ask the worker for an online collection: a dry run, or a real run once a dry run has
    finished within the hour (and never on a setup known to be unsafe)."""
    # One button is pressed at a time: two modes are a request no page sends.
    modes = request.POST.getlist("mode")
    mode = modes[0] if len(modes) == 1 else ""
    if mode not in ("dry-run", "run"):
        messages.error(request, "Choose a dry run or a collection.")
        return redirect("registry_admin:storage")
    dry_run = mode == "dry-run"
    # The job refuses an unsafe setup even for a dry run: say so now rather than queue a failure.
    refusal = online_gc.safety_problem() if dry_run else online_gc.collect_refusal()
    if refusal:
        messages.error(request, refusal)
        return redirect("registry_admin:storage")
    run = worker.request_run(JobKind.ONLINE_GC, user=request.user, options={"dry_run": dry_run})
    what = "dry run, deletes nothing" if dry_run else "the registry stays online"
    messages.info(
        request,
        f"Online collection #{run.pk} ({what}) is {run.get_state_display().lower()}; its "
        "progress and figures show under “Collect now”.",
    )
    return redirect("registry_admin:storage")


def _online_gc_context():
    """The "Collect now (registry stays online)" section: what a run assumes, the latest
    figures, the trash, and whether Collect is offered (the POST checks again)."""
    trash_count, trash_bytes = online_gc.trash_totals()
    interval = worker.JOBS[JobKind.ONLINE_GC].interval()
    return {
        "kind": JobKind.ONLINE_GC,
        "run": worker.latest_run(JobKind.ONLINE_GC),
        # A sentence when the setup is unsafe: both buttons are greyed out and refused.
        "problem": online_gc.safety_problem(),
        # A sentence until a dry run has finished within the hour: Collect is not offered.
        "dry_run_refusal": online_gc.dry_run_refusal(),
        "dry": online_gc.last_finished(dry_run=True),
        "collected": online_gc.last_finished(dry_run=False),
        "trash_count": trash_count,
        "trash_bytes": trash_bytes,
        "blob_cache": settings.REGISTRY_BLOB_CACHE,
        "instances": settings.REGISTRY_INSTANCES,
        "grace_minutes": settings.GC_GRACE_MINUTES,
        "trash_hours": settings.GC_TRASH_HOURS,
        "schedule_hours": interval / 3600 if interval else None,
    }


def _columns(sort):
    """Table headers: the sort each one links to (largest first, then toggling) and aria-sort."""
    columns = []
    for key, label in COLUMNS:
        current = sort.lstrip("-") == key
        descending = sort.startswith("-")
        if current:
            target = key if descending else f"-{key}"
        else:
            target = key if key == "name" else f"-{key}"
        aria = ("descending" if descending else "ascending") if current else None
        columns.append({"key": key, "label": label, "sort": target, "aria_sort": aria})
    return columns
