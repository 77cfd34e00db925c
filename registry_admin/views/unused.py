"""The unused-images report: what nobody pulled for N days, and what it costs to keep."""

from django.shortcuts import render

from .. import unused
from ..forms.unused import UnusedForm

DEFAULT_DAYS = 90
# Rows per table on the page; `manage.py unused --json` lists everything.
ROWS_SHOWN = 500


def unused_report(request):
    form = UnusedForm(request.GET)
    days = DEFAULT_DAYS
    if form.is_valid() and form.cleaned_data["days"] is not None:
        days = form.cleaned_data["days"]
    report = unused.unused_report(days)
    unused_tags = report.unused_tags
    no_data = report.no_data_tags
    return render(
        request,
        "registry_admin/unused.html",
        {
            "form": form,
            "days": days,
            "report": report,
            "unused_tags": unused_tags[:ROWS_SHOWN],
            "unused_tag_count": len(unused_tags),
            "no_data_tags": no_data[:ROWS_SHOWN],
            "no_data_count": len(no_data),
            "rows_shown": ROWS_SHOWN,
        },
        status=200 if form.is_valid() or not request.GET else 400,
    )
