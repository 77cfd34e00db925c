from django.urls import path

from .views import dashboard, placeholders, runs, webhooks

app_name = "registry_admin"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("repositories/", placeholders.repositories, name="repositories"),
    path("users/", placeholders.users, name="users"),
    path("storage/", placeholders.storage, name="storage"),
    path("audit/", placeholders.audit, name="audit"),
    path("api/registry/events", webhooks.registry_events, name="registry-events"),
    path("runs/<slug:kind>/request", runs.run_request, name="run-request"),
    path("runs/<slug:kind>/status", runs.run_status, name="run-status"),
]
