"""The login and logout pages: Django's views with the limits that keep failed logins cheap, and
the sign-in through the organisation's OpenID Provider (registry_admin/oidc.py)."""

import logging

from django.conf import settings
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import AuthenticationForm
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET

from .. import accounts, directory, oidc
from ..middleware import APP_SERVICE_SIGNED_IN

logger = logging.getLogger(__name__)

# Where the page asked for before the sign-in is kept while the person is at the provider.
NEXT_KEY = "oyster_oidc_next"
MAX_NEXT = 2000


def _refused(request, reason):
    return render(request, "registration/login_refused.html", {"reason": reason}, status=429)


def sign_in_context():
    return {
        "app_service_auth": settings.APP_SERVICE_AUTH,
        "oidc_enabled": oidc.enabled(),
        "oidc_provider_name": settings.OIDC_PROVIDER_NAME,
        "local_login": settings.LOCAL_LOGIN,
    }


class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        return super().get_context_data(**kwargs) | sign_in_context()

    def post(self, request, *args, **kwargs):
        # Checked before the form: a refused attempt costs a database read, not a hash. Again
        # once a slot is free, since the attempts queued meanwhile may have used up the limit.
        if accounts.address_locked(request):
            return _refused(request, "address")
        with accounts.hashing_slot() as acquired:
            if not acquired:
                return _refused(request, "busy")
            if accounts.address_locked(request):
                return _refused(request, "address")
            return super().post(request, *args, **kwargs)

    def get_redirect_url(self):
        # `?next=/login/` for someone already logged in would redirect to itself, which Django
        # reports as a loop (a 500); the dashboard is where they meant to go.
        url = super().get_redirect_url()
        if url and url.split("?", 1)[0] == reverse("login"):
            return ""
        return url


class LogoutView(auth_views.LogoutView):
    # An account without a role must still be able to leave.
    role_not_required = True

    def post(self, request, *args, **kwargs):
        # Signed in by App Service: its own session must end too, or the next request would
        # sign the person straight back in.
        from_app_service = APP_SERVICE_SIGNED_IN in request.session
        response = super().post(request, *args, **kwargs)
        if from_app_service:
            return redirect("/.auth/logout")
        return response


def _login_page(request, error, status):
    context = {"form": AuthenticationForm(request), "sign_in_error": error, "next": ""}
    return render(request, "registration/login.html", context | sign_in_context(), status=status)


def _safe_next(request, value):
    value = str(value or "")[:MAX_NEXT]
    safe = url_has_allowed_host_and_scheme(
        value, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return value if value and safe and value.split("?", 1)[0] != reverse("login") else ""


UNAVAILABLE = (
    "The identity provider could not be reached or gave an answer Oyster cannot use; try again "
    "in a few minutes, or ask the people who run Oyster."
)


@login_not_required
@require_GET
def oidc_start(request):
    """The link on the login page: off to the provider, with the state kept in the session.

    A link, not a form: the login page's Content-Security-Policy (`form-action 'self'`) stops
    a form's redirect to another origin. Nothing is changed by following it but this browser's
    session, and the sign-in it starts ends with the person who signs in at the provider."""
    if not oidc.enabled():
        raise Http404("Sign-in with an identity provider is not set up.")
    request.session[NEXT_KEY] = _safe_next(request, request.GET.get("next"))
    try:
        return oidc.begin(request, request.build_absolute_uri(reverse("oidc-callback")))
    except oidc.Unavailable as exc:
        logger.warning("OIDC provider unavailable at sign-in start: %s", exc)
        return _login_page(request, UNAVAILABLE, 503)


@login_not_required
@require_GET
def oidc_callback(request):
    """Where the provider sends the person back with a code: checked, exchanged, signed in."""
    if not oidc.enabled():
        raise Http404("Sign-in with an identity provider is not set up.")
    # Only a browser that started a sign-in leaves a mark in the audit trail: a stranger's
    # requests to this address must not fill it.
    # (A session cannot be iterated: it has keys() but no __iter__.)
    keys = request.session.keys()
    pending = any(key.startswith("_state_oidc_") for key in keys)
    try:
        claims = oidc.finish(request)
        user = directory.sign_in(oidc.issuer(), claims, via="oidc")
    except oidc.Unavailable as exc:
        logger.warning("OIDC provider unavailable at sign-in callback: %s", exc)
        return _login_page(request, UNAVAILABLE, 503)
    except directory.Refused as refused:
        if pending and not refused.audited:
            directory.audit_refusal(refused, via="oidc")
        logger.info("OIDC sign-in refused: %s", refused.code)
        return _login_page(request, refused.sentence, 403)
    next_url = request.session.pop(NEXT_KEY, "")
    auth_login(request, user, backend=accounts.PASSWORD_BACKEND)
    return redirect(next_url or settings.LOGIN_REDIRECT_URL)
