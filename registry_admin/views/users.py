"""Registry users: the htpasswd file the registry reads, listed by everyone, changed by admins.

The changes themselves (audit row, then the file, in one transaction) live in `registry_users`,
which `manage.py htpasswd` shares.
"""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.db.models import Max
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from .. import htpasswd, registry_users
from ..forms.htpasswd import PasswordForm, UserCreateForm
from ..models import AuditEvent
from ..references import RegistryAction
from ..roles import MANAGE_USERS, require

logger = logging.getLogger(__name__)

LIST = "registry_admin:users"


@dataclass(frozen=True)
class UserRow:
    entry: htpasswd.Entry
    is_service: bool
    last_push: object = None
    last_pull: object = None


def users(request):
    """The list: every entry with its hash scheme, problems, and last push/pull seen."""
    try:
        listing = htpasswd.read_users()
    except htpasswd.CredentialsError as exc:
        logger.warning("Cannot list registry users: %s", exc)
        return render(request, "registry_admin/users/list.html", {"error": str(exc)})
    activity = _last_activity([e.username for e in listing.entries])
    rows = [
        UserRow(
            entry=e,
            is_service=e.username == settings.REGISTRY_USERNAME,
            last_push=activity.get((e.username, RegistryAction.PUSH)),
            last_pull=activity.get((e.username, RegistryAction.PULL)),
        )
        for e in listing.entries
    ]
    service = _service_state(listing)
    context = {
        "listing": listing,
        "rows": rows,
        "service": service,
        "service_username": settings.REGISTRY_USERNAME,
        "service_repairable": service in ("missing", "rejected", "mismatch")
        and bool(settings.REGISTRY_PASSWORD),
    }
    return render(request, "registry_admin/users/list.html", context)


@sensitive_post_parameters("password1", "password2")
@sensitive_variables("password")
@require(MANAGE_USERS)
@never_cache
def user_create(request):
    existing = _existing_names()
    form = UserCreateForm(_posted(request), existing=existing)
    if request.method == "POST" and form.is_valid():
        name, password = form.cleaned_data["username"], form.cleaned_data["password"]
        try:
            registry_users.create(_actor(request), name, password, generated=form.generated)
        except htpasswd.CredentialsError as exc:
            logger.warning("Creating registry user %r failed: %s", name, exc)
            form.add_error(None, str(exc))
        else:
            return _done(request, f"Created the registry user {name}.", name, password, form)
    return render(request, "registry_admin/users/create.html", {"form": form})


@sensitive_post_parameters("password1", "password2")
@sensitive_variables("password")
@require(MANAGE_USERS)
@never_cache
def user_password(request):
    entry = _managed_entry_or_redirect(request, "change its password")
    if not isinstance(entry, htpasswd.Entry):
        return entry
    name = entry.username
    form = PasswordForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        password = form.cleaned_data["password"]
        try:
            registry_users.change_password(
                _actor(request), name, password, generated=form.generated
            )
        except htpasswd.CredentialsError as exc:
            logger.warning("Changing the password of registry user %r failed: %s", name, exc)
            form.add_error(None, str(exc))
        else:
            return _done(request, f"Changed the password of {name}.", name, password, form)
    return render(request, "registry_admin/users/password.html", {"form": form, "entry": entry})


@require(MANAGE_USERS)
def user_delete(request):
    entry = _managed_entry_or_redirect(request, "delete it")
    if not isinstance(entry, htpasswd.Entry):
        return entry
    name = entry.username
    if request.method == "POST":
        return _apply(
            request,
            f"Deleting registry user {name!r}",
            f"Deleted the registry user {name}.",
            registry_users.delete,
            name,
        )
    return render(request, "registry_admin/users/delete.html", {"entry": entry})


@require_POST
@require(MANAGE_USERS)
def service_repair(request):
    """Write REGISTRY_PASSWORD into the file for the service account: restores, never locks out."""
    name = settings.REGISTRY_USERNAME
    if not settings.REGISTRY_PASSWORD:
        messages.error(request, "REGISTRY_PASSWORD is not set, so there is nothing to write.")
        return redirect(LIST)
    return _apply(
        request,
        f"Writing the service account {name!r}",
        f"The service account {name} now matches REGISTRY_PASSWORD.",
        registry_users.write_service_account,
        name,
        settings.REGISTRY_PASSWORD,
        source="REGISTRY_PASSWORD",
    )


def _apply(request, doing, done, change, *args, **kwargs):
    """One registry_users change from a button, then back to the list with how it went."""
    try:
        change(_actor(request), *args, **kwargs)
    except htpasswd.CredentialsError as exc:
        logger.warning("%s failed: %s", doing, exc)
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect(LIST)


def _actor(request):
    return request.user.get_username()


@sensitive_variables("password")
def _done(request, message, name, password, form):
    """Back to the list, or the one page that shows a generated password."""
    if not form.generated:
        messages.success(request, message)
        return redirect(LIST)
    context = {"message": message, "name": name, "password": password}
    # The views are never_cache'd: the password must not outlive this response in any cache.
    return render(request, "registry_admin/users/password_once.html", context)


def _managed_entry_or_redirect(request, verb):
    """The entry named by ?name=, or a redirect to the list with a message saying why not."""
    name = request.GET.get("name", "")
    if name == settings.REGISTRY_USERNAME:
        messages.error(
            request,
            f"{name} is the portal's own service account: you cannot {verb} from the portal, "
            "or the portal would lose access to the registry. Rotate it with "
            "`python manage.py htpasswd rotate-service`.",
        )
        return redirect(LIST)
    try:
        htpasswd.validate_username(name)
        entry = htpasswd.read_users().get(name)
    except htpasswd.CredentialsError as exc:
        messages.error(request, str(exc))
        return redirect(LIST)
    if entry is None:
        messages.error(request, f"There is no registry user {name}.")
        return redirect(LIST)
    return entry


def _existing_names():
    try:
        return {e.username for e in htpasswd.read_users().entries}
    except htpasswd.CredentialsError:
        return set()  # the write reports the problem with its own message


def _service_state(listing):
    """'missing', 'rejected' (not bcrypt), 'mismatch', 'ok', or 'unknown' (no REGISTRY_PASSWORD)."""
    entry = listing.get(settings.REGISTRY_USERNAME)
    if entry is None:
        return "missing"
    if not entry.accepted_by_registry:
        return "rejected"
    if not settings.REGISTRY_PASSWORD:
        return "unknown"
    try:
        ok = htpasswd.check_password(settings.REGISTRY_USERNAME, settings.REGISTRY_PASSWORD)
    except htpasswd.CredentialsError:
        return "unknown"
    return "ok" if ok else "mismatch"


def _last_activity(usernames):
    """{(user, "push"|"pull"): latest timestamp} from the registry's events in the audit trail."""
    if not usernames:
        return {}
    rows = (
        AuditEvent.objects.filter(
            source=AuditEvent.Source.REGISTRY,
            actor__in=usernames,
            action__in=(RegistryAction.PUSH, RegistryAction.PULL),
            noise=False,
        )
        .values("actor", "action")
        .annotate(last=Max("timestamp"))
    )
    return {(r["actor"], r["action"]): r["last"] for r in rows}


def _posted(request):
    """The POST data, or None for a GET: an empty POST is still a submission to validate."""
    return request.POST if request.method == "POST" else None
