"""/api/v1/ for the administration areas: registry users, quotas, the recycle bin, storage
usage. Thin over registry_users.py (with the pages' own forms' rules), quotas.py,
recycle_bin.py and usage.py; the audit rows name the token's owner."""

from django.conf import settings
from django.views.decorators.debug import sensitive_variables
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from .. import (
    access,
    event_hooks,
    htpasswd,
    quotas,
    recycle_bin,
    references,
    registry,
    registry_users,
    repository_delete,
    retention,
    storage,
    unused,
    usage,
    worker,
)
from ..forms.htpasswd import GENERATED, TYPED, PasswordForm, UserCreateForm
from ..forms.retention import RetentionRuleForm
from ..models import (
    AccessGroup,
    AccessRule,
    BinItem,
    EventHook,
    JobKind,
    Quota,
    RetentionRule,
    RobotAccount,
)
from .problems import Problem
from .serializers import RunSerializer
from .views import ApiView, problems

# --- serializers ------------------------------------------------------------------------------


class RegistryUserSerializer(serializers.Serializer):
    username = serializers.CharField()
    scheme = serializers.CharField(help_text="The hash scheme (the registry takes bcrypt only).")
    accepted_by_registry = serializers.BooleanField()
    manageable = serializers.BooleanField()
    service_account = serializers.BooleanField()


class UserCreateRequest(serializers.Serializer):
    username = serializers.CharField(max_length=64)
    password = serializers.CharField(
        required=False, allow_blank=False, max_length=200, trim_whitespace=False,
        help_text="Leave out to have one generated (answered once).",
    )  # fmt: skip


class PasswordRequest(serializers.Serializer):
    password = serializers.CharField(
        required=False, allow_blank=False, max_length=200, trim_whitespace=False,
        help_text="Leave out to have one generated (answered once).",
    )  # fmt: skip


class UserChangedSerializer(serializers.Serializer):
    username = serializers.CharField()
    generated_password = serializers.CharField(
        allow_null=True, help_text="The generated password, shown this once; null if typed."
    )


class QuotaSerializer(serializers.Serializer):
    pattern = serializers.CharField()
    limit_bytes = serializers.IntegerField()
    warn_percent = serializers.IntegerField()
    usage_bytes = serializers.IntegerField()
    partial = serializers.BooleanField(source="is_partial")
    level = serializers.CharField()
    scanned_bytes = serializers.IntegerField(allow_null=True)
    pushed_bytes = serializers.IntegerField()
    freed_bytes = serializers.IntegerField()


class QuotaRequest(serializers.Serializer):
    pattern = serializers.CharField(max_length=255)
    size = serializers.CharField(max_length=40, help_text="Bytes, or 500MB, 20GB, 1.5TiB.")
    warn_percent = serializers.IntegerField(required=False, min_value=1, max_value=100)


class BinItemSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    repository = serializers.CharField()
    digest = serializers.CharField()
    kind = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    state = serializers.CharField()
    reason = serializers.CharField()
    actor = serializers.CharField()
    deleted_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    size_bytes = serializers.IntegerField()
    note = serializers.CharField()


class RestoreSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    restored = serializers.BooleanField()
    message = serializers.CharField()


class StorageSerializer(serializers.Serializer):
    scanned_at = serializers.DateTimeField(allow_null=True)
    total_bytes = serializers.IntegerField(allow_null=True)
    blob_count = serializers.IntegerField(allow_null=True)
    reclaimable_bytes = serializers.IntegerField(allow_null=True)
    held_bytes = serializers.IntegerField(allow_null=True)
    repository_count = serializers.IntegerField(allow_null=True)


# --- registry users -----------------------------------------------------------------------------


def _credentials_problem(exc):
    return Problem(409, "registry-users", str(exc))


def _checked_password(data, form_class=PasswordForm, **form_kwargs):
    """The password the pages' form would accept (typed: its length rules; absent: generated),
    and whether it was generated. Raises ValidationError with the form's sentences."""
    password = data.get("password")
    fields = {"mode": GENERATED} if password is None else {"mode": TYPED}
    if password is not None:
        fields.update(password1=password, password2=password)
    if "username" in data:
        fields["username"] = data["username"]
    form = form_class(fields, **form_kwargs)
    if not form.is_valid():
        errors = {}
        for name, messages in form.errors.items():
            key = "password" if name.startswith("password") or name == "mode" else name
            errors.setdefault(key if key != "__all__" else "non_field_errors", []).extend(messages)
        raise ValidationError(errors)
    return form.cleaned_data["password"], password is None


def _read_users():
    try:
        return htpasswd.read_users()
    except htpasswd.CredentialsError as exc:
        raise Problem(503, "registry-users-unavailable", str(exc)) from exc


class UserList(ApiView):
    scopes = {"GET": "users", "POST": "users"}

    @extend_schema(
        operation_id="registry_users_list",
        responses={200: RegistryUserSerializer(many=True), **problems(503)},
    )
    def get(self, request):
        """The registry users of the htpasswd file, as the Users page lists them."""
        listing = _read_users()
        rows = [
            {
                "username": e.username,
                "scheme": e.scheme,
                "accepted_by_registry": e.accepted_by_registry,
                "manageable": e.manageable,
                "service_account": e.username == settings.REGISTRY_USERNAME,
            }
            for e in listing.entries
        ]
        return Response(RegistryUserSerializer(rows, many=True).data)

    @extend_schema(
        operation_id="registry_users_create",
        request=UserCreateRequest,
        responses={201: UserChangedSerializer, **problems(409, 413, 503)},
    )
    @sensitive_variables("password")
    def post(self, request):
        """Create a registry user (the Users page's rules); without `password`, one is
        generated and answered once."""
        body = UserCreateRequest(data=request.data)
        body.is_valid(raise_exception=True)
        existing = {e.username for e in _read_users().entries}
        password, generated = _checked_password(
            body.validated_data, UserCreateForm, existing=existing
        )
        name = body.validated_data["username"]
        try:
            registry_users.create(request.user.get_username(), name, password, api=True)
        except htpasswd.CredentialsError as exc:
            raise _credentials_problem(exc) from exc
        answer = {"username": name, "generated_password": password if generated else None}
        return Response(UserChangedSerializer(answer).data, status=201)


def _managed_user(name):
    if name == settings.REGISTRY_USERNAME:
        raise Problem(
            409,
            "service-account",
            f"{name} is the portal's own service account: rotate it with "
            "`python manage.py htpasswd rotate-service`.",
        )
    try:
        htpasswd.validate_username(name)
    except htpasswd.CredentialsError as exc:
        raise Problem(400, "bad-username", str(exc)) from exc
    entry = _read_users().get(name)
    if entry is None:
        raise Problem(404, "not-found", f"No registry user {name}.")
    if not entry.manageable:
        raise Problem(409, "not-manageable", f"{name} is edited by hand in the file, not here.")
    return entry


class UserDetail(ApiView):
    scopes = {"DELETE": "users"}

    @extend_schema(
        operation_id="registry_users_delete",
        responses={204: None, **problems(404, 409, 503)},
    )
    def delete(self, request, username):
        """Remove a registry user (never the portal's service account)."""
        entry = _managed_user(username)
        try:
            registry_users.delete(request.user.get_username(), entry.username, api=True)
        except htpasswd.CredentialsError as exc:
            raise _credentials_problem(exc) from exc
        return Response(status=204)


class UserPassword(ApiView):
    scopes = {"POST": "users"}

    @extend_schema(
        operation_id="registry_users_password",
        request=PasswordRequest,
        responses={200: UserChangedSerializer, **problems(404, 409, 413, 503)},
    )
    @sensitive_variables("password")
    def post(self, request, username):
        """Set a registry user's password; without `password`, one is generated and answered
        once."""
        entry = _managed_user(username)
        body = PasswordRequest(data=request.data)
        body.is_valid(raise_exception=True)
        password, generated = _checked_password(body.validated_data)
        try:
            registry_users.change_password(
                request.user.get_username(), entry.username, password, api=True
            )
        except htpasswd.CredentialsError as exc:
            raise _credentials_problem(exc) from exc
        answer = {"username": entry.username, "generated_password": password if generated else None}
        return Response(UserChangedSerializer(answer).data)


# --- quotas ---------------------------------------------------------------------------------------

PATTERN = OpenApiParameter(
    "pattern", OpenApiTypes.STR, description="The quota's repository pattern (team/*)."
)


class QuotaList(ApiView):
    scopes = {"GET": "read", "POST": "admin", "DELETE": "admin"}
    parameters = {"DELETE": {"pattern"}}

    @extend_schema(
        operation_id="quotas_list", responses={200: QuotaSerializer(many=True), **problems()}
    )
    def get(self, request):
        """Every quota with its usage (README, Quotas)."""
        return Response(QuotaSerializer(Quota.objects.all(), many=True).data)

    @extend_schema(
        operation_id="quotas_set",
        request=QuotaRequest,
        responses={200: QuotaSerializer, **problems(413)},
    )
    def post(self, request):
        """Create or change the quota on a pattern."""
        body = QuotaRequest(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            quota = quotas.set_quota(
                request.user.get_username(), data["pattern"], data["size"], data.get("warn_percent")
            )
        except quotas.QuotaError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(QuotaSerializer(quota).data)

    @extend_schema(
        operation_id="quotas_remove",
        parameters=[PATTERN],
        responses={204: None, **problems(404)},
    )
    def delete(self, request):
        """Remove the quota on `pattern`."""
        pattern = request.query_params.get("pattern", "")[:300]
        if not quotas.remove_quota(request.user.get_username(), pattern):
            raise Problem(404, "not-found", "No quota on that pattern.")
        return Response(status=204)


# --- recycle bin and storage ------------------------------------------------------------------------


class BinList(ApiView):
    parameters = {"GET": {"repository"}}

    @extend_schema(
        operation_id="recycle_bin_list",
        parameters=[OpenApiParameter("repository", OpenApiTypes.STR)],
        responses={200: BinItemSerializer(many=True), **problems()},
    )
    def get(self, request):
        """What the recycle bin holds, newest first (at most its page's number of items)."""
        rows = BinItem.objects.holding()
        repository = request.query_params.get("repository", "")
        if repository:
            if len(repository) > 255 or any(ord(c) < 32 for c in repository):
                raise ValidationError({"repository": ["Not a repository name."]})
            rows = rows.filter(repository=repository)
        return Response(BinItemSerializer(rows[: recycle_bin.MAX_ITEMS], many=True).data)


class BinRestore(ApiView):
    scopes = {"POST": "delete"}

    @extend_schema(
        operation_id="recycle_bin_restore",
        request=None,
        responses={200: RestoreSerializer, **problems(404, 409, 502, 503)},
    )
    def post(self, request, item_id):
        """Put one item back: its manifests (same digests), then each tag not pushed again
        since."""
        item = BinItem.objects.filter(pk=item_id).first()
        if item is None:
            raise Problem(404, "not-found", "No such item in the recycle bin.")
        try:
            outcome = recycle_bin.restore(request.user.get_username(), item)
        except recycle_bin.BinError as exc:
            raise Problem(409, "not-restored", str(exc)) from exc
        except registry.RegistryUnreachable as exc:
            raise Problem(503, "registry-unavailable", str(exc)) from exc
        except registry.RegistryError as exc:
            raise Problem(502, "registry-error", str(exc)) from exc
        return Response(
            RestoreSerializer({"id": item.pk, "restored": True, "message": outcome.message}).data
        )


class StorageSummary(ApiView):
    @extend_schema(
        operation_id="storage_retrieve", responses={200: StorageSerializer, **problems()}
    )
    def get(self, request):
        """The latest storage scan's totals (all null before the first scan)."""
        snapshot = usage.latest_snapshot()
        answer = {
            "scanned_at": snapshot.created_at if snapshot else None,
            "total_bytes": snapshot.total_bytes if snapshot else None,
            "blob_count": snapshot.blob_count if snapshot else None,
            "reclaimable_bytes": snapshot.reclaimable_bytes if snapshot else None,
            "held_bytes": snapshot.held_bytes if snapshot else None,
            "repository_count": snapshot.repository_count if snapshot else None,
        }
        return Response(StorageSerializer(answer).data)


# --- access rules and robots (token mode) -------------------------------------------------------


class AccessRuleSerializer(serializers.Serializer):
    subject = serializers.CharField()
    pattern = serializers.CharField()
    actions = serializers.ListField(child=serializers.CharField(), source="action_list")
    created_by = serializers.CharField()


class AccessRuleRequest(serializers.Serializer):
    subject = serializers.CharField(max_length=65, help_text="user, @group, * or anonymous")
    pattern = serializers.CharField(max_length=255, help_text="team/*, team/** or a name")
    actions = serializers.ListField(
        child=serializers.ChoiceField(choices=["pull", "push", "delete"]),
        allow_empty=True,
        max_length=3,
        help_text="Empty: the rule denies (and still wins when most specific).",
    )


class RobotSerializer(serializers.Serializer):
    username = serializers.CharField()
    description = serializers.CharField()
    expires_at = serializers.DateTimeField()
    created_by = serializers.CharField()


class RobotRequest(serializers.Serializer):
    name = serializers.CharField(max_length=64, help_text="robot- is added when missing")
    days = serializers.IntegerField(min_value=1, max_value=3650)
    description = serializers.CharField(max_length=200, required=False, default="")


class RobotCreatedSerializer(RobotSerializer):
    password = serializers.CharField(help_text="Shown this once.")


RULE_KEYS = [
    OpenApiParameter("subject", OpenApiTypes.STR, required=True),
    OpenApiParameter("pattern", OpenApiTypes.STR, required=True),
]


class AccessRuleList(ApiView):
    scopes = {"GET": "read", "POST": "users", "DELETE": "users"}
    parameters = {"DELETE": {"subject", "pattern"}}

    @extend_schema(
        operation_id="access_rules_list",
        responses={200: AccessRuleSerializer(many=True), **problems()},
    )
    def get(self, request):
        """Every access rule (the token server's; README, Access rules)."""
        return Response(AccessRuleSerializer(AccessRule.objects.all(), many=True).data)

    @extend_schema(
        operation_id="access_rules_grant",
        request=AccessRuleRequest,
        responses={200: AccessRuleSerializer, **problems(413)},
    )
    def post(self, request):
        """Create or replace the rule for (subject, pattern)."""
        body = AccessRuleRequest(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            rule = access.grant(
                request.user.get_username(), data["subject"], data["pattern"], data["actions"]
            )
        except access.AccessError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(AccessRuleSerializer(rule).data)

    @extend_schema(
        operation_id="access_rules_revoke",
        parameters=RULE_KEYS,
        responses={204: None, **problems(404)},
    )
    def delete(self, request):
        """Remove the rule for (subject, pattern)."""
        subject = request.query_params.get("subject", "")[:65]
        pattern = request.query_params.get("pattern", "")[:255]
        if not access.revoke(request.user.get_username(), subject, pattern):
            raise Problem(404, "not-found", "No rule for that subject and pattern.")
        return Response(status=204)


class RobotList(ApiView):
    scopes = {"GET": "users", "POST": "users"}

    @extend_schema(
        operation_id="robots_list", responses={200: RobotSerializer(many=True), **problems()}
    )
    def get(self, request):
        """Robot accounts with their expiry."""
        return Response(RobotSerializer(RobotAccount.objects.all(), many=True).data)

    @extend_schema(
        operation_id="robots_create",
        request=RobotRequest,
        responses={201: RobotCreatedSerializer, **problems(413, 503)},
    )
    def post(self, request):
        """Create a robot account; its generated password is answered this once."""
        body = RobotRequest(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            robot, password = access.create_robot(
                request.user.get_username(), data["name"], data["days"], data["description"]
            )
        except access.AccessError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        except htpasswd.CredentialsError as exc:
            raise Problem(503, "registry-users-unavailable", str(exc)) from exc
        answer = {**RobotSerializer(robot).data, "password": password}
        return Response(RobotCreatedSerializer(answer).data, status=201)


class RobotDetail(ApiView):
    scopes = {"DELETE": "users"}

    @extend_schema(operation_id="robots_delete", responses={204: None, **problems(404, 503)})
    def delete(self, request, username):
        """Remove a robot account, its rules and its htpasswd line."""
        try:
            access.delete_robot(request.user.get_username(), username[:64])
        except access.AccessError as exc:
            raise Problem(404, "not-found", str(exc)) from exc
        except htpasswd.CredentialsError as exc:
            raise Problem(503, "registry-users-unavailable", str(exc)) from exc
        return Response(status=204)


# --- retention rules ----------------------------------------------------------------------------


class RetentionRuleSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    name = serializers.CharField()
    repository_pattern = serializers.CharField()
    keep_latest = serializers.IntegerField(allow_null=True)
    keep_regex = serializers.CharField(allow_blank=True)
    delete_older_than_days = serializers.IntegerField(allow_null=True)
    not_pulled_for_days = serializers.IntegerField(allow_null=True)
    position = serializers.IntegerField()
    enabled = serializers.BooleanField()


class RetentionRuleRequest(serializers.Serializer):
    """The Retention page's form fields; its rules decide (RE2 keep expressions, patterns)."""

    name = serializers.CharField(max_length=100)
    repository_pattern = serializers.CharField(max_length=255)
    keep_latest = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    keep_regex = serializers.CharField(required=False, allow_blank=True, max_length=500)
    delete_older_than_days = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    not_pulled_for_days = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    position = serializers.IntegerField(required=False, default=100, min_value=0)
    enabled = serializers.BooleanField(required=False, default=True)


def _saved_rule(request, instance):
    body = RetentionRuleRequest(data=request.data)
    body.is_valid(raise_exception=True)
    fields = {k: v for k, v in body.validated_data.items() if v is not None}
    if not fields.get("enabled"):
        fields.pop("enabled", None)  # a form's unticked box is its absence
    form = RetentionRuleForm({k: str(v) for k, v in fields.items()}, instance=instance)
    if not form.is_valid():
        raise ValidationError(
            {("non_field_errors" if k == "__all__" else k): v for k, v in form.errors.items()}
        )
    return retention.save_rule(request.user.get_username(), form.save(commit=False))


class RetentionRuleList(ApiView):
    scopes = {"GET": "read", "POST": "delete"}

    @extend_schema(
        operation_id="retention_rules_list",
        responses={200: RetentionRuleSerializer(many=True), **problems()},
    )
    def get(self, request):
        """The retention rules in their order."""
        rules = RetentionRule.objects.order_by("position", "pk")
        return Response(RetentionRuleSerializer(rules, many=True).data)

    @extend_schema(
        operation_id="retention_rules_create",
        request=RetentionRuleRequest,
        responses={201: RetentionRuleSerializer, **problems(413)},
    )
    def post(self, request):
        """Add a rule (it deletes nothing until a retention run: `POST /runs/retention/`
        with `dry_run` shows what it would)."""
        rule = _saved_rule(request, RetentionRule())
        return Response(RetentionRuleSerializer(rule).data, status=201)


class RetentionRuleDetail(ApiView):
    scopes = {"GET": "read", "POST": "delete", "DELETE": "delete"}

    @staticmethod
    def _rule(rule_id):
        rule = RetentionRule.objects.filter(pk=rule_id).first()
        if rule is None:
            raise Problem(404, "not-found", "No such retention rule.")
        return rule

    @extend_schema(
        operation_id="retention_rules_retrieve",
        responses={200: RetentionRuleSerializer, **problems(404)},
    )
    def get(self, request, rule_id):
        return Response(RetentionRuleSerializer(self._rule(rule_id)).data)

    @extend_schema(
        operation_id="retention_rules_update",
        request=RetentionRuleRequest,
        responses={200: RetentionRuleSerializer, **problems(404, 413)},
    )
    def post(self, request, rule_id):
        """Replace a rule's settings (every field, as the page's form saves them)."""
        rule = _saved_rule(request, self._rule(rule_id))
        return Response(RetentionRuleSerializer(rule).data)

    @extend_schema(operation_id="retention_rules_delete", responses={204: None, **problems(404)})
    def delete(self, request, rule_id):
        """Delete a rule (never any tag)."""
        retention.delete_rule(request.user.get_username(), self._rule(rule_id))
        return Response(status=204)


# --- repository delete, unused report ------------------------------------------------------------


class RepositoryDeleteRequest(serializers.Serializer):
    dry_run = serializers.BooleanField(default=True)
    confirm = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=300,
        help_text="The repository's name again: a real delete needs it (as the page's typed name).",
    )  # fmt: skip


class RepositoryPlanSerializer(serializers.Serializer):
    repository = serializers.CharField()
    tags = serializers.DictField(child=serializers.CharField(), help_text="tag -> digest, live")
    images = serializers.IntegerField()
    revisions = serializers.ListField(child=serializers.CharField())
    layer_links = serializers.IntegerField()
    uploads = serializers.IntegerField()
    unique_bytes = serializers.IntegerField()
    scanned_at = serializers.DateTimeField(allow_null=True)


class RepositoryDeleteSerializer(serializers.Serializer):
    plan = RepositoryPlanSerializer()
    run = RunSerializer(allow_null=True, help_text="The worker's delete (real run).")


class RepositoryDelete(ApiView):
    scopes = {"POST": "delete"}

    @extend_schema(
        operation_id="repository_delete",
        request=RepositoryDeleteRequest,
        responses={
            200: RepositoryDeleteSerializer,
            202: RepositoryDeleteSerializer,
            **problems(404, 409, 413, 502, 503),
        },
    )
    def post(self, request, repository):
        """Delete a whole repository (README, Deleting a repository): the dry run answers what
        would go; a real delete (`confirm` = the name) is the worker's job, answered 202 with
        its run (`GET /runs/delete_repository/` follows it)."""
        body = RepositoryDeleteRequest(data=request.data)
        body.is_valid(raise_exception=True)
        if not references.is_valid_repository(repository):
            raise Problem(400, "bad-repository", "Not a valid repository name.")
        try:
            plan = repository_delete.plan(repository)
        except repository_delete.RepositoryDeleteError as exc:
            raise Problem(409, "not-deletable", str(exc)) from exc
        except registry.RegistryUnreachable as exc:
            raise Problem(503, "registry-unavailable", str(exc)) from exc
        except (registry.RegistryError, storage.StorageError) as exc:
            raise Problem(502, "registry-error", str(exc)) from exc
        answer = {"plan": plan.as_dict(), "run": None}
        if body.validated_data["dry_run"]:
            return Response(RepositoryDeleteSerializer(answer).data)
        if body.validated_data["confirm"] != repository:
            raise ValidationError({"confirm": ["Give the repository's name to confirm."]})
        answer["run"] = worker.request_run(
            JobKind.DELETE_REPOSITORY, user=request.user, options={"repository": repository}
        )
        return Response(RepositoryDeleteSerializer(answer).data, status=202)


class UnusedReport(ApiView):
    parameters = {"GET": {"days"}}

    @extend_schema(
        operation_id="unused_report",
        parameters=[OpenApiParameter("days", OpenApiTypes.INT, description="Default 90.")],
        responses={200: OpenApiTypes.OBJECT, **problems()},
    )
    def get(self, request):
        """The unused report (`manage.py unused --json`'s document): tags and repositories not
        pulled for `days` days, with their unique bytes and monthly cost."""
        text = request.query_params.get("days", "90")
        if not text.isdigit() or len(text) > 5 or not 0 <= int(text) <= 3650:
            raise ValidationError({"days": ["Whole days, 0 to 3650."]})
        return Response(unused.unused_report(int(text)).as_json())


# --- access groups, event hooks ---------------------------------------------------------------


class GroupSerializer(serializers.Serializer):
    name = serializers.CharField()
    members = serializers.ListField(child=serializers.CharField(), source="member_list")


class GroupRequest(serializers.Serializer):
    name = serializers.CharField(max_length=65)
    members = serializers.ListField(
        child=serializers.CharField(max_length=64), max_length=1000,
        help_text="Registry user names; empty removes the group.",
    )  # fmt: skip


class GroupList(ApiView):
    scopes = {"GET": "read", "POST": "users"}

    @extend_schema(
        operation_id="access_groups_list", responses={200: GroupSerializer(many=True), **problems()}
    )
    def get(self, request):
        """Access groups (`@name` subjects of the rules) and their members."""
        return Response(GroupSerializer(AccessGroup.objects.all(), many=True).data)

    @extend_schema(
        operation_id="access_groups_set",
        request=GroupRequest,
        responses={204: None, **problems(413)},
    )
    def post(self, request):
        """Create, change or (with no members) remove a group."""
        body = GroupRequest(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            access.set_group(
                request.user.get_username(),
                body.validated_data["name"],
                body.validated_data["members"],
            )
        except access.AccessError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(status=204)


class HookSerializer(serializers.Serializer):
    name = serializers.CharField()
    endpoint = serializers.SerializerMethodField(help_text="Scheme and host only.")
    format = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField(), source="kinds")
    repository_pattern = serializers.CharField(allow_blank=True)
    enabled = serializers.BooleanField()

    def get_endpoint(self, hook) -> str:
        return event_hooks.display_url(hook.url)


class HookRequest(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    url = serializers.CharField(max_length=2000)
    format = serializers.ChoiceField(choices=EventHook.Format.values)
    events = serializers.ListField(
        child=serializers.CharField(max_length=20), required=False, default=list, max_length=20
    )
    repository_pattern = serializers.CharField(
        max_length=255, required=False, default="", allow_blank=True
    )


class HookCreatedSerializer(HookSerializer):
    secret = serializers.CharField(
        allow_blank=True, help_text="The generic format's signing key, shown this once."
    )


class HookList(ApiView):
    scopes = {"GET": "admin", "POST": "admin"}

    @extend_schema(
        operation_id="event_hooks_list", responses={200: HookSerializer(many=True), **problems()}
    )
    def get(self, request):
        """The event hooks (their URLs' paths are not answered: they often hold a key)."""
        return Response(HookSerializer(EventHook.objects.all(), many=True).data)

    @extend_schema(
        operation_id="event_hooks_add",
        request=HookRequest,
        responses={201: HookCreatedSerializer, **problems(413)},
    )
    def post(self, request):
        """Add an event hook (README, Event hooks)."""
        body = HookRequest(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            hook, _secret = event_hooks.save_hook(
                request.user.get_username(),
                data["name"],
                data["url"],
                data["format"],
                data["events"],
                data["repository_pattern"],
            )
        except event_hooks.HookError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        # The model keeps the generic format's key (it signs with it); answered only here.
        return Response(HookCreatedSerializer(hook).data, status=201)


class HookDetail(ApiView):
    scopes = {"DELETE": "admin", "POST": "admin"}

    @extend_schema(operation_id="event_hooks_remove", responses={204: None, **problems(404)})
    def delete(self, request, name):
        """Remove a hook and its queue."""
        if not event_hooks.remove_hook(request.user.get_username(), name):
            raise Problem(404, "not-found", "No such event hook.")
        return Response(status=204)

    @extend_schema(
        operation_id="event_hooks_test", request=None, responses={202: None, **problems(404)}
    )
    def post(self, request, name):
        """Queue a test delivery to the hook (the worker sends it)."""
        hook = EventHook.objects.filter(name=name).first() if event_hooks.valid_name(name) else None
        if hook is None:
            raise Problem(404, "not-found", "No such event hook.")
        event_hooks.send_test(hook)
        return Response(status=202)
