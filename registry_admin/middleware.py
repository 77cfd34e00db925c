from django.contrib.auth import login, logout
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.utils.cache import patch_cache_control

from . import accounts, app_service, directory
from .roles import VIEW

# The session keys of App Service sign-ins: the principal a session was signed in from, and
# the principal last refused (so a refused person's every request is not another audit row).
APP_SERVICE_SIGNED_IN = "oyster_app_service"
APP_SERVICE_REFUSED = "oyster_app_service_refused"


class AppServiceAuthMiddleware:
    """With APP_SERVICE_AUTH, the person App Service's front end signed in becomes the portal
    user (registry_admin/app_service.py says when the header is believed). A session is signed
    in again when the principal or its role claim changes; between changes a request costs no
    database write. Sits after AuthenticationMiddleware, before LoginRequiredMiddleware."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        found = app_service.principal(request)
        if found is not None:
            refused = self.sign_in(request, *found)
            if refused is not None:
                return refused
        return self.get_response(request)

    def sign_in(self, request, issuer, claims):
        mark = app_service.fingerprint(issuer, claims)
        session = request.session
        if request.user.is_authenticated and session.get(APP_SERVICE_SIGNED_IN) == mark:
            return None
        if session.get(APP_SERVICE_REFUSED) == mark:
            return self.refusal(request, session.get(APP_SERVICE_REFUSED + "_sentence", ""))
        try:
            user = directory.sign_in(issuer, claims, via="app-service")
        except directory.Refused as refused:
            if request.user.is_authenticated:
                logout(request)
            request.session[APP_SERVICE_REFUSED] = mark
            request.session[APP_SERVICE_REFUSED + "_sentence"] = refused.sentence
            return self.refusal(request, refused.sentence)
        login(request, user, backend=accounts.PASSWORD_BACKEND)
        request.session[APP_SERVICE_SIGNED_IN] = mark
        return None

    @staticmethod
    def refusal(request, sentence):
        return render(
            request, "registration/sign_in_refused.html", {"sentence": sentence}, status=403
        )


class RoleRequiredMiddleware:
    """A logged-in account without a role (neither viewer nor admin) sees nothing.

    Sits after Django's LoginRequiredMiddleware, which already sent anonymous users to the login
    page; views marked `login_not_required` (login, healthz, the webhook) are left alone.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not getattr(view_func, "login_required", True):
            return
        if getattr(getattr(view_func, "view_class", None), "role_not_required", False):
            return
        user = request.user
        if user.is_authenticated and not user.has_perm(VIEW):
            raise PermissionDenied("Your account has no role yet: ask an admin for one.")
        return


# Scripts, styles, images and fonts from the portal's own origin only; nothing inline (the
# templates keep every script and style in static files, data for charts in json_script blocks,
# which browsers never execute). data: images are Pico's inline SVG icons in its stylesheet.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class SecurityHeadersMiddleware:
    """A Content-Security-Policy on every response, and no caching of what a logged-in user sees
    (a shared or back-button cache must not keep registry users, audit rows or tokens)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            patch_cache_control(response, private=True, no_store=True)
        return response
