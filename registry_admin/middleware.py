from django.core.exceptions import PermissionDenied

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
