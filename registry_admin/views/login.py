"""The login and logout pages: Django's views with the limits that keep failed logins cheap."""

from django.contrib.auth import views as auth_views
from django.shortcuts import render
from django.urls import reverse

from .. import accounts


def _refused(request, reason):
    return render(request, "registration/login_refused.html", {"reason": reason}, status=429)


class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True

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
