from django.core.exceptions import PermissionDenied
from django.utils.cache import patch_cache_control

from .roles import VIEW


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
