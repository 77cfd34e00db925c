"""Retention rules: the list with a live dry run, rule editing and the confirmed "run now"."""

import logging

from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from .. import retention, worker
from ..forms.retention import RetentionRuleForm
from ..models import JobKind, RetentionRule
from ..roles import DELETE_IMAGES, require

logger = logging.getLogger(__name__)

LIST = "registry_admin:retention"
# Repositories shown per rule on the page; the CLI dry run lists them all.
SHOWN_REPOSITORIES = 50


def rules(request):
    """Every rule, what the enabled ones would delete now (from the index), and the last run."""
    plan = retention.build_plan()
    for rule in RetentionRule.objects.exclude(keep_regex=""):
        if problem := rule.keep_regex_error:
            messages.warning(
                request,
                f"The rule “{rule.name}” keeps every tag until its keep expression is fixed: "
                f"{problem}",
            )
    context = {
        "rules": RetentionRule.objects.all(),
        "plan": plan,
        "shown_repositories": SHOWN_REPOSITORIES,
        "latest_run": worker.latest_run(JobKind.RETENTION),
        "retention_schedule_enabled": settings.RETENTION_SCHEDULE_ENABLED,
    }
    return render(request, "registry_admin/retention/rules.html", context)


@require(DELETE_IMAGES)
@never_cache
def rule_create(request):
    return _edit(request, RetentionRule())


@require(DELETE_IMAGES)
@never_cache
def rule_edit(request, pk):
    return _edit(request, get_object_or_404(RetentionRule, pk=pk))


def _edit(request, rule):
    form = RetentionRuleForm(request.POST if request.method == "POST" else None, instance=rule)
    if request.method == "POST" and form.is_valid():
        rule = retention.save_rule(request.user.get_username(), form.save(commit=False))
        messages.success(request, f"Saved the retention rule “{rule.name}”.")
        return redirect(LIST)
    return render(request, "registry_admin/retention/rule_form.html", {"form": form, "rule": rule})


@require(DELETE_IMAGES)
def rule_delete(request, pk):
    """GET asks, POST deletes the rule (never any tag)."""
    rule = get_object_or_404(RetentionRule, pk=pk)
    if request.method != "POST":
        return render(request, "registry_admin/retention/rule_delete.html", {"rule": rule})
    retention.delete_rule(request.user.get_username(), rule)
    messages.success(request, f"Deleted the retention rule “{rule.name}”; no tag was touched.")
    return redirect(LIST)


@require_POST
@require(DELETE_IMAGES)
@never_cache
def run(request):
    """First POST: confirm with the planned deletes. Second (confirm=yes): ask the worker."""
    plan = retention.build_plan()
    if request.POST.get("confirm") != "yes":
        return render(request, "registry_admin/retention/run_confirm.html", {"plan": plan})
    queued = worker.request_run(JobKind.RETENTION, user=request.user, options={"dry_run": False})
    messages.info(
        request,
        f"Retention run #{queued.pk} is {queued.get_state_display().lower()}: the worker deletes "
        f"the tags the rules select when it starts ({plan.delete_count} as of now).",
    )
    return redirect(LIST)
