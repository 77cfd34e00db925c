from django.contrib import admin
from django.urls import include, path

from registry_admin.views import health, login, metrics

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path(
        "login/",
        login.LoginView.as_view(),
        name="login",
    ),
    path("login/oidc/", login.oidc_start, name="oidc-start"),
    path("login/oidc/callback/", login.oidc_callback, name="oidc-callback"),
    path("logout/", login.LogoutView.as_view(), name="logout"),
    path("django-admin/", admin.site.urls),
    path("api/v1/", include("registry_admin.api.urls")),
    path("", include("registry_admin.urls")),
]

handler404 = "registry_admin.api.problems.not_found"
