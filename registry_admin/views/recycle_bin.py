"""The "Recently deleted" page: what Oyster's deletes put in the recycle bin (every role reads
it), and restoring one or several items (admins: a POST with the CSRF token)."""

import logging

from django.conf import settings
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from .. import recycle_bin, references
from ..models import BinItem
from ..roles import DELETE_IMAGES, VIEW, require

logger = logging.getLogger(__name__)

# Rows on the page; `manage.py recycle_bin list --json` lists more.
ROWS_SHOWN = 500


@require_GET
@require(VIEW)
def recycle_bin_page(request):
    repository = request.GET.get("repository", "").strip()
    show_all = request.GET.get("show") == "all"
    error = ""
    rows = BinItem.objects.all() if show_all else BinItem.objects.holding()
    if repository:
        if len(repository) > 255 or not references.is_valid_repository(repository):
            error = "Not a repository name: write it as the registry spells it (team/app)."
            rows = rows.none()
        else:
            rows = rows.filter(repository=repository)
    repositories = (
        BinItem.objects.holding().order_by("repository").values_list("repository", flat=True)
    )
    return render(
        request,
        "registry_admin/recycle_bin/bin.html",
        {
            "items": list(rows[:ROWS_SHOWN]),
            "repository": repository if not error else "",
            "repositories": sorted(set(repositories)),
            "show_all": show_all,
            "error": error,
            "days": settings.RECYCLE_BIN_DAYS,
            "rows_shown": ROWS_SHOWN,
        },
        status=400 if error else 200,
    )


@require_POST
@require(DELETE_IMAGES)
@never_cache
def recycle_bin_restore(request):
    """Restore the posted items one after the other, each reported."""
    raw = request.POST.getlist("item")
    ids = []
    for value in raw[: recycle_bin.MAX_ITEMS + 1]:
        if not (value.isascii() and value.isdigit() and len(value) <= 18):
            return _refused(request, "The selection is not valid: reload the page.")
        ids.append(int(value))
    ids = list(dict.fromkeys(ids))
    if not ids:
        return _refused(request, "Select at least one item to restore.")
    if len(raw) > recycle_bin.MAX_ITEMS:
        return _refused(request, f"Select at most {recycle_bin.MAX_ITEMS} items at once.")
    items = {item.pk: item for item in BinItem.objects.filter(pk__in=ids)}
    actor = request.user.get_username()
    results = []
    for pk in ids:
        item = items.get(pk)
        if item is None:
            results.append((None, False, f"Item {pk} is not in the recycle bin."))
            continue
        try:
            outcome = recycle_bin.restore(actor, item)
        except recycle_bin.BinError as exc:
            logger.warning("restore of bin item %s failed: %s", pk, exc)
            results.append((item, False, str(exc)))
            continue
        results.append((item, True, outcome.message))
    failed = sum(1 for _, ok, _ in results if not ok)
    return render(
        request,
        "registry_admin/recycle_bin/results.html",
        {"results": results, "failed_count": failed, "restored_count": len(results) - failed},
    )


def _refused(request, error):
    return render(request, "registry_admin/recycle_bin/results.html", {"error": error}, status=400)
