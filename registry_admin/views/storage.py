"""The storage page: the latest scan's figures, charts, all repositories, GC guidance.

It reads snapshots only; the scan itself runs in the worker ("Scan now" requests one).
"""

from django import forms
from django.core.paginator import Paginator
from django.shortcuts import render

from .. import storage, usage, worker

ROWS_PER_PAGE = 100
# Sort keys offered in the table's headers: key -> (column, ORM ordering).
SORTS = {
    "name": "name",
    "referenced": "referenced_bytes",
    "unique": "unique_bytes",
    "shared": "shared_bytes",
    "reclaimable": "reclaimable_bytes",
    "blobs": "blob_count",
    "manifests": "manifest_count",
}
SORT_CHOICES = [(key, key) for key in SORTS] + [(f"-{key}", f"-{key}") for key in SORTS]
COLUMNS = [
    ("name", "Repository"),
    ("referenced", "Referenced"),
    ("unique", "Unique"),
    ("shared", "Shared"),
    ("reclaimable", "Reclaimable"),
    ("blobs", "Blobs"),
    ("manifests", "Manifests"),
]


class RepositoryTableForm(forms.Form):
    q = forms.CharField(label="Filter repositories", required=False, max_length=255)
    sort = forms.ChoiceField(required=False, choices=SORT_CHOICES)

    def clean_q(self):
        text = self.cleaned_data["q"]
        if any(ord(char) < 32 or ord(char) == 127 for char in text):
            raise forms.ValidationError("Control characters are not allowed.", code="control")
        return text.strip()


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
            "scan_run": worker.latest_run(usage.JOB_KIND),
            "failed_run": usage.failed_run_since(snapshot),
            "configuration_problem": storage.configuration_problem(),
            "charts": usage.chart_data(snapshot),
            **usage.gc_guidance_context(snapshot),
        },
    )


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
