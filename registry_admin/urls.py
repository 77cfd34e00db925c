from django.urls import path

from .views import dashboard, placeholders, runs

app_name = "registry_admin"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("repositories/", placeholders.repositories, name="repositories"),
    path("users/", placeholders.users, name="users"),
    path("storage/", placeholders.storage, name="storage"),
    path("audit/", placeholders.audit, name="audit"),
    path("runs/<slug:kind>/request", runs.run_request, name="run-request"),
    path("runs/<slug:kind>/status", runs.run_status, name="run-status"),
]
