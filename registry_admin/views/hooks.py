"""Settings → Event hooks: endpoints, their recent deliveries, the test button and retries.
Admins only: a hook's URL is often its secret (Slack and Teams put the key in the path), so pages
show only its scheme and host."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from .. import event_hooks
from ..models import EventHook, HookDelivery
from ..roles import MANAGE_USERS, require

PAGE = "registry_admin:event-hooks"
RECENT = 50
MAX_FIELD = 2100


def _page(request, form=None, error="", status=200, secret=None):
    hooks = [(hook, event_hooks.display_url(hook.url)) for hook in EventHook.objects.all()]
    return render(
        request,
        "registry_admin/audit/hooks.html",
        {
            "hooks": hooks,
            "formats": EventHook.Format.choices,
            "kinds": event_hooks.HOOK_KINDS,
            "deliveries": HookDelivery.objects.select_related("hook").order_by("-id")[:RECENT],
            "failed": HookDelivery.objects.filter(state=HookDelivery.State.FAILED).count(),
            "form": form or {},
            "error": error,
            "secret": secret,
        },
        status=status,
    )


@never_cache
@require(MANAGE_USERS)
def hooks_page(request):
    return _page(request)


@require(MANAGE_USERS)
@require_POST
def hook_save(request):
    data = request.POST
    form = {
        "name": data.get("name", "")[:MAX_FIELD],
        "url": data.get("url", "")[:MAX_FIELD],
        "format": data.get("format", "")[:20],
        "events": [e[:20] for e in data.getlist("events")[:20]],
        "repository_pattern": data.get("repository_pattern", "")[:MAX_FIELD],
    }
    try:
        hook, secret = event_hooks.save_hook(
            request.user.get_username(),
            form["name"],
            form["url"],
            form["format"],
            form["events"],
            form["repository_pattern"],
        )
    except event_hooks.HookError as exc:
        return _page(request, form=form, error=str(exc), status=400)
    messages.success(request, f"Hook {hook.name} added.")
    # The generic format's signing key, shown this once (it is never shown again).
    return _page(request, secret=(hook.name, secret) if secret else None)


@require(MANAGE_USERS)
@require_POST
def hook_remove(request):
    name = request.POST.get("name", "")[:64]
    if event_hooks.remove_hook(request.user.get_username(), name):
        messages.success(request, f"Hook {name} removed.")
    else:
        messages.error(request, "No such hook.")
    return redirect(PAGE)


@require(MANAGE_USERS)
@require_POST
def hook_test(request):
    name = request.POST.get("name", "")
    hook = get_object_or_404(EventHook, name=name if event_hooks.valid_name(name) else "")
    event_hooks.send_test(hook)
    messages.success(request, f"A test delivery to {hook.name} is queued; it appears below.")
    return redirect(PAGE)


@require(MANAGE_USERS)
@require_POST
def hook_retry(request):
    ids = [int(i) for i in request.POST.getlist("delivery")[:500] if i.isdigit() and len(i) < 19]
    count = event_hooks.retry(ids) if ids else 0
    if count:
        messages.success(
            request, f"{count} failed deliver{'y' if count == 1 else 'ies'} queued again."
        )
    else:
        messages.error(request, "Nothing to retry: choose failed deliveries.")
    return redirect(PAGE)
