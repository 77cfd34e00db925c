"""The signed-in person's page: who they are, and (token mode, directory accounts) their CLI
secrets for docker login."""

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from .. import cli_secrets
from ..forms.profile import CliSecretForm, RevokeForm
from ..models import DirectoryIdentity

PAGE = "registry_admin:profile"


def _identity(request):
    return DirectoryIdentity.objects.filter(user=request.user).first()


def _render(request, form=None, new_secret=None, status=200):
    identity = _identity(request)
    context = {
        "identity": identity,
        "token_mode": settings.REGISTRY_AUTH_MODE == "token",
        "secrets": list(cli_secrets.active(identity)) if identity else [],
        "form": form or CliSecretForm(),
        "new_secret": new_secret,
        "registry_host": settings.REGISTRY_PUBLIC_HOST or "<registry>",
        "proposed_name": cli_secrets.registry_name_for(request.user.get_username()),
    }
    return render(request, "registry_admin/profile.html", context, status=status)


@never_cache
def profile(request):
    return _render(request)


@never_cache
@require_POST
def secret_create(request):
    identity = _identity(request)
    form = CliSecretForm(request.POST)
    if identity is None or settings.REGISTRY_AUTH_MODE != "token":
        messages.error(request, "CLI secrets are for directory accounts in token mode.")
        return redirect(PAGE)
    if not form.is_valid():
        return _render(request, form, status=400)
    try:
        _row, secret = cli_secrets.create(
            identity, form.cleaned_data["name"], form.cleaned_data["days"]
        )
    except cli_secrets.SecretError as exc:
        form.add_error(None, str(exc))
        return _render(request, form, status=400)
    # Shown in this one answer only: never stored, never in a message or a redirect.
    return _render(request, new_secret=secret)


@require_POST
def secret_revoke(request):
    identity = _identity(request)
    form = RevokeForm(request.POST)
    if (
        identity is None
        or not form.is_valid()
        or not cli_secrets.revoke(identity, form.cleaned_data["secret"])
    ):
        messages.error(request, "No such secret of yours to revoke.")
    else:
        messages.success(request, "Secret revoked: docker logins with it stop working now.")
    return redirect(PAGE)
