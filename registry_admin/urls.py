from django.urls import path

from .views import access as access_views
from .views import api_tokens as api_token_views
from .views import audit, dashboard, profile, repositories, runs, token, unused, users, webhooks
from .views import deletes as delete_views
from .views import hooks as hook_views
from .views import quotas as quota_views
from .views import recycle_bin as bin_views
from .views import retention as retention_views
from .views import storage as storage_views

app_name = "registry_admin"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("repositories/", repositories.repository_list, name="repositories"),
    # `/-/` cannot occur in a repository name (components start with a letter or digit), so it
    # separates the greedy <path:name> from what follows.
    path("repositories/<path:name>/-/tags/<str:tag>/", repositories.tag_detail, name="tag"),
    path(
        "repositories/<path:name>/-/manifests/<str:digest>/",
        repositories.manifest_detail,
        name="manifest",
    ),
    path("repositories/<path:name>/", repositories.repository_detail, name="repository"),
    path("unused/", unused.unused_report, name="unused"),
    path("users/", users.users, name="users"),
    path("users/new/", users.user_create, name="user-create"),
    path("users/password/", users.user_password, name="user-password"),
    path("users/delete/", users.user_delete, name="user-delete"),
    path("users/service/repair/", users.service_repair, name="user-service-repair"),
    path("storage/", storage_views.storage_page, name="storage"),
    path("storage/untagged/prune/", storage_views.untagged_prune, name="untagged-prune"),
    path("storage/garbage-collect/", storage_views.garbage_collect, name="garbage-collect"),
    path("storage/collect-online/", storage_views.online_collect, name="online-collect"),
    path("storage/quotas/", quota_views.quota_page, name="quotas"),
    path("storage/quotas/set/", quota_views.quota_save, name="quota-save"),
    path("storage/quotas/remove/", quota_views.quota_remove, name="quota-remove"),
    path("audit/", audit.audit_log, name="audit"),
    path("audit/<int:pk>/", audit.audit_event, name="audit-event"),
    path("audit/export.csv", audit.audit_export, name="audit-export"),
    path("audit/rejected/", audit.rejected_deliveries, name="audit-rejected"),
    path("settings/notifications/", audit.notification_settings, name="notification-settings"),
    path("settings/hooks/", hook_views.hooks_page, name="event-hooks"),
    path("settings/hooks/add/", hook_views.hook_save, name="event-hook-save"),
    path("settings/hooks/remove/", hook_views.hook_remove, name="event-hook-remove"),
    path("settings/hooks/test/", hook_views.hook_test, name="event-hook-test"),
    path("settings/hooks/retry/", hook_views.hook_retry, name="event-hook-retry"),
    path("auth/token", token.token, name="token"),
    path("profile/", profile.profile, name="profile"),
    path("profile/secrets/", profile.secret_create, name="profile-secret-create"),
    path("profile/secrets/revoke/", profile.secret_revoke, name="profile-secret-revoke"),
    path("access/", access_views.access_page, name="access"),
    path("access/rules/", access_views.rule_save, name="access-rule-save"),
    path("access/rules/remove/", access_views.rule_delete, name="access-rule-remove"),
    path("access/groups/", access_views.group_save, name="access-group-save"),
    path("access/robots/", access_views.robot_create, name="access-robot-create"),
    path("access/robots/remove/", access_views.robot_delete, name="access-robot-remove"),
    path("api/registry/events", webhooks.registry_events, name="registry-events"),
    path("deletes/tag/", delete_views.tag_delete, name="tag-delete"),
    path("deletes/image/", delete_views.image_delete, name="image-delete"),
    path("deletes/tags/", delete_views.tags_bulk_delete, name="tags-bulk-delete"),
    path("deletes/repository/", delete_views.repository_delete_view, name="repository-delete"),
    path(
        "deletes/repository/run/",
        delete_views.repository_delete_run,
        name="repository-delete-run",
    ),
    path("deleted/", bin_views.recycle_bin_page, name="recycle-bin"),
    path("deleted/restore/", bin_views.recycle_bin_restore, name="recycle-bin-restore"),
    path("retention/", retention_views.rules, name="retention"),
    path("retention/new/", retention_views.rule_create, name="retention-rule-create"),
    path("retention/<int:pk>/edit/", retention_views.rule_edit, name="retention-rule-edit"),
    path("retention/<int:pk>/delete/", retention_views.rule_delete, name="retention-rule-delete"),
    path("retention/run/", retention_views.run, name="retention-run"),
    path("account/tokens/", api_token_views.tokens_page, name="api-tokens"),
    path("account/tokens/revoke/", api_token_views.token_revoke, name="api-token-revoke"),
    path("runs/<slug:kind>/request", runs.run_request, name="run-request"),
    path("runs/<slug:kind>/status", runs.run_status, name="run-status"),
]
