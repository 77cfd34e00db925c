"""The profile page's API tokens: each user makes and revokes their own; the token is shown once.

Any role may have tokens (a viewer's can only read). An admin sees and revokes every token."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from .. import api_tokens
from ..forms.api_tokens import ApiTokenForm
from ..models import ApiToken
from ..roles import is_admin


@never_cache
def tokens_page(request):
    form = ApiTokenForm(request.POST if request.method == "POST" else None, owner=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            token, text = api_tokens.create(
                request.user.get_username(),
                request.user,
                form.cleaned_data["name"],
                form.cleaned_data["scopes"],
                form.cleaned_data["days"],
            )
        except api_tokens.TokenError as exc:
            form.add_error(None, str(exc))
        else:
            return render(
                request, "registry_admin/api_tokens/created.html", {"token": token, "text": text}
            )
    mine = ApiToken.objects.filter(owner=request.user).order_by("-created_at")
    others = (
        ApiToken.objects.exclude(owner=request.user)
        .filter(revoked_at=None)
        .select_related("owner")
        .order_by("owner__username", "-created_at")
        if is_admin(request.user)
        else []
    )
    return render(
        request,
        "registry_admin/api_tokens/list.html",
        {
            "form": form,
            "tokens": mine,
            "others": others,
            "allowed": api_tokens.allowed_scopes(request.user),
        },
        status=400 if form.errors else 200,
    )


@require_POST
@never_cache
def token_revoke(request):
    prefix = request.POST.get("prefix", "")
    token = api_tokens.find(None, prefix)
    if token is None or (token.owner_id != request.user.pk and not is_admin(request.user)):
        raise PermissionDenied("No such token of yours.")
    if api_tokens.revoke(request.user.get_username(), token):
        messages.success(request, f"Token {token.name} ({token.prefix}) revoked.")
    else:
        messages.info(request, f"Token {token.name} ({token.prefix}) was already revoked.")
    return redirect("registry_admin:api-tokens")
