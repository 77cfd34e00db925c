from django.contrib.auth.decorators import login_not_required
from django.urls import path, register_converter
from drf_spectacular.views import SpectacularJSONAPIView

from . import admin_views, views
from .docs import reference_page

app_name = "api"


class AnyPath:
    """Like `path`, with line breaks too: a hostile name must reach the view's 400, not miss
    every pattern (Django's `path` is `.+`, which stops at a newline)."""

    regex = r"[\s\S]+"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(AnyPath, "anypath")


class SchemaView(SpectacularJSONAPIView):
    """The OpenAPI document: no data in it, so readable without a token."""

    authentication_classes = []
    permission_classes = []
    throttle_classes = []


urlpatterns = [
    path("schema/", login_not_required(SchemaView.as_view()), name="schema"),
    path("docs/", reference_page, name="docs"),
    path("repositories/", views.RepositoryList.as_view(), name="repositories"),
    # `/-/` ends the repository name, as on the pages (no name component can be `-`).
    path("repositories/<anypath:repository>/-/tags/", views.TagList.as_view(), name="tags"),
    path(
        "repositories/<anypath:repository>/-/tags/<str:tag>", views.TagDetail.as_view(), name="tag"
    ),
    path(
        "repositories/<anypath:repository>/-/bulk-delete",
        views.BulkDelete.as_view(),
        name="bulk-delete",
    ),
    path(
        "repositories/<anypath:repository>/-/delete",
        admin_views.RepositoryDelete.as_view(),
        name="repository-delete",
    ),
    path("unused/", admin_views.UnusedReport.as_view(), name="unused"),
    path("audit-events/", views.AuditEventList.as_view(), name="audit-events"),
    path("audit-events/export.csv", views.AuditExport.as_view(), name="audit-export"),
    path("runs/<slug:kind>/", views.RunStatus.as_view(), name="run"),
    path("untagged/prune", views.UntaggedPrune.as_view(), name="untagged-prune"),
    path("users/", admin_views.UserList.as_view(), name="users"),
    path("users/<str:username>", admin_views.UserDetail.as_view(), name="user"),
    path("users/<str:username>/password", admin_views.UserPassword.as_view(), name="user-password"),
    path("quotas/", admin_views.QuotaList.as_view(), name="quotas"),
    path("recycle-bin/", admin_views.BinList.as_view(), name="recycle-bin"),
    path(
        "recycle-bin/<int:item_id>/restore",
        admin_views.BinRestore.as_view(),
        name="recycle-bin-restore",
    ),
    path("storage/", admin_views.StorageSummary.as_view(), name="storage"),
    path("access/rules/", admin_views.AccessRuleList.as_view(), name="access-rules"),
    path("retention-rules/", admin_views.RetentionRuleList.as_view(), name="retention-rules"),
    path(
        "retention-rules/<int:rule_id>",
        admin_views.RetentionRuleDetail.as_view(),
        name="retention-rule",
    ),
    path("access/groups/", admin_views.GroupList.as_view(), name="access-groups"),
    path("access/robots/", admin_views.RobotList.as_view(), name="robots"),
    path("event-hooks/", admin_views.HookList.as_view(), name="event-hooks"),
    path("event-hooks/<str:name>", admin_views.HookDetail.as_view(), name="event-hook"),
    path("access/robots/<str:username>", admin_views.RobotDetail.as_view(), name="robot"),
]
