"""The Quotas page (under Storage): every quota with its usage; admins set and remove them."""

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from .. import quotas
from ..models import Quota
from ..roles import MANAGE_USERS, require

PAGE = "registry_admin:quotas"
# Longer than any pattern (255) or size; more is not a mistake a person makes.
MAX_FIELD = 300


@never_cache
def quota_page(request, form=None, error="", status=200):
    return render(
        request,
        "registry_admin/storage/quotas.html",
        {
            "quotas": [(quota, quotas.sparkline(quota)) for quota in Quota.objects.all()],
            "enforced": settings.REGISTRY_AUTH_MODE == "token",
            "form": form or {},
            "error": error,
        },
        status=status,
    )


@require(MANAGE_USERS)
@require_POST
def quota_save(request):
    pattern = request.POST.get("pattern", "")[:MAX_FIELD]
    size = request.POST.get("size", "")[:MAX_FIELD]
    warn = request.POST.get("warn_percent", "").strip()[:MAX_FIELD] or None
    try:
        quota = quotas.set_quota(request.user.get_username(), pattern, size, warn)
    except quotas.QuotaError as exc:
        # The form keeps what was typed, so a typo costs nothing.
        form = {"pattern": pattern, "size": size, "warn": warn or ""}
        return quota_page(request, form=form, error=str(exc), status=400)
    messages.success(request, f"Quota on {quota.pattern} saved.")
    return redirect(PAGE)


@require(MANAGE_USERS)
@require_POST
def quota_remove(request):
    pattern = request.POST.get("pattern", "")[:MAX_FIELD]
    if quotas.remove_quota(request.user.get_username(), pattern):
        messages.success(request, f"Quota on {pattern} removed.")
    else:
        messages.error(request, f"No quota on {pattern[:80]!r}.")
    return redirect(PAGE)
