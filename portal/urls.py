from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from registry_admin.views import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("django-admin/", admin.site.urls),
    path("", include("registry_admin.urls")),
]
