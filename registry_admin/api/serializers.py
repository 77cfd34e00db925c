"""What the API reads (query parameters, bodies) and answers; the OpenAPI document is built
from these."""

from rest_framework import serializers

from .. import browse, deletes, references
from ..models import AuditEvent, JobKind, Repository, Run, UntaggedManifest

MAX_PER_PAGE = 200
MAX_BULK_TAGS = 1000


def _printable(value):
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise serializers.ValidationError("Control characters are not allowed.")
    return value.strip()


# --- query parameters ---------------------------------------------------------------------------


class RepositoryQuery(serializers.Serializer):
    q = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=browse.MAX_FILTER_LENGTH,
        help_text="Names containing this text.",
    )  # fmt: skip
    sort = serializers.ChoiceField(
        choices=list(browse.REPOSITORY_SORTS), required=False, default="name"
    )
    empty = serializers.BooleanField(
        required=False, default=False, help_text="Include repositories without tags."
    )
    cursor = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=browse.PageCursor.MAX_LENGTH,
        help_text="`next_cursor` of the previous page (made for the same sort).",
    )  # fmt: skip
    limit = serializers.IntegerField(
        required=False, default=50, min_value=1, max_value=MAX_PER_PAGE
    )

    def validate_q(self, value):
        return _printable(value)

    def validate(self, data):
        if data.get("cursor"):
            try:
                browse.PageCursor.decode(data.get("sort", "name"), data["cursor"])
            except ValueError:
                raise serializers.ValidationError(
                    {"cursor": "This cursor is not valid (cut short, or made for another sort)."}
                ) from None
        return data


class TagQuery(serializers.Serializer):
    q = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=browse.MAX_FILTER_LENGTH,
        help_text="Tags containing this text.",
    )  # fmt: skip
    sort = serializers.ChoiceField(
        choices=list(browse.TAG_SORTS), required=False, default="created"
    )
    page = serializers.IntegerField(required=False, default=1, min_value=1, max_value=10**6)
    per_page = serializers.IntegerField(
        required=False, default=50, min_value=1, max_value=MAX_PER_PAGE
    )
    referrers = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Include the signature, SBOM and attestation tags (cosign's `sha256-…` tags, "
        "the referrers tag schema's index), left out by default as on the repository page.",
    )

    def validate_q(self, value):
        return _printable(value)


class DeleteQuery(serializers.Serializer):
    expected_digest = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=150,
        help_text="The digest the tag must still point at; if it moved, nothing is deleted (409).",
    )  # fmt: skip

    def validate_expected_digest(self, value):
        if value and not references.is_valid_digest(value):
            raise serializers.ValidationError("Not a digest (sha256:<64 hex digits>).")
        return value


class BulkItem(serializers.Serializer):
    tag = serializers.CharField(max_length=128)
    expected_digest = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=150
    )

    def validate_tag(self, value):
        if not references.is_valid_tag(value):
            raise serializers.ValidationError("Not a valid tag.")
        return value

    def validate_expected_digest(self, value):
        if value and not references.is_valid_digest(value):
            raise serializers.ValidationError("Not a digest (sha256:<64 hex digits>).")
        return value


class BulkDeleteRequest(serializers.Serializer):
    tags = serializers.ListField(
        child=BulkItem(), min_length=1, max_length=MAX_BULK_TAGS,
        help_text=f"At most {MAX_BULK_TAGS} tags, each deleted alone, in this order.",
    )  # fmt: skip

    def validate_tags(self, value):
        names = [item["tag"] for item in value]
        if len(set(names)) != len(names):
            raise serializers.ValidationError("A tag is named twice.")
        return value


class PruneRequest(serializers.Serializer):
    repository = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=255,
        help_text="Shell-style pattern of repositories (team/*); empty: all.",
    )  # fmt: skip
    dry_run = serializers.BooleanField(
        required=False, default=True,
        help_text="true: what the latest storage scan found, nothing removed; false: the "
        "worker's prune job, each manifest checked against the registry again first.",
    )  # fmt: skip

    def validate_repository(self, value):
        if not value.isprintable():
            raise serializers.ValidationError("Control characters are not allowed.")
        return value.strip()


class UntaggedSerializer(serializers.ModelSerializer):
    class Meta:
        model = UntaggedManifest
        fields = ["repository", "digest", "is_child", "linked_at", "reclaimable_bytes"]


class RunRequest(serializers.Serializer):
    dry_run = serializers.BooleanField(
        required=False, default=True,
        help_text="Kinds that delete (retention, prune_untagged, garbage_collect, online_gc) "
        "start only as a dry run here.",
    )  # fmt: skip


# --- answers ----------------------------------------------------------------------------------


class RepositorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Repository
        fields = ["name", "is_empty", "tag_count", "total_size", "last_push_at", "last_pulled_at"]


class RepositoryPageSerializer(serializers.Serializer):
    results = RepositorySerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)
    matches = serializers.IntegerField(
        allow_null=True, help_text="Repositories the filter selects; null above 1,000 matches."
    )


class TagSerializer(serializers.Serializer):
    name = serializers.CharField()
    digest = serializers.CharField()
    size = serializers.IntegerField(allow_null=True)
    created = serializers.DateTimeField(allow_null=True)
    pushed_at = serializers.DateTimeField(allow_null=True)
    platforms = serializers.ListField(child=serializers.CharField())
    siblings = serializers.ListField(
        child=serializers.CharField(), help_text="Other tags on the same image."
    )


class TagPageSerializer(serializers.Serializer):
    results = TagSerializer(many=True)
    page = serializers.IntegerField()
    pages = serializers.IntegerField()
    count = serializers.IntegerField()
    next_page = serializers.IntegerField(allow_null=True)


class TagDetailSerializer(serializers.Serializer):
    repository = serializers.CharField()
    tag = serializers.CharField()
    digest = serializers.CharField()
    source = serializers.ChoiceField(
        choices=["registry", "index"],
        help_text="index: the registry could not answer; `error` says why.",
    )
    error = serializers.CharField(allow_blank=True)
    media_type = serializers.CharField(allow_blank=True)
    size = serializers.IntegerField(allow_null=True)
    created = serializers.DateTimeField(allow_null=True)
    is_index = serializers.BooleanField()
    platforms = serializers.ListField(child=serializers.JSONField())
    layers = serializers.ListField(child=serializers.JSONField())
    labels = serializers.DictField(child=serializers.JSONField())


class DeleteOutcomeSerializer(serializers.Serializer):
    repository = serializers.CharField()
    tag = serializers.CharField()
    state = serializers.ChoiceField(
        choices=[deletes.DELETED, deletes.ALREADY_GONE, deletes.FAILED, deletes.NOT_ATTEMPTED]
    )
    message = serializers.CharField()
    digest = serializers.CharField(allow_blank=True)
    method = serializers.ChoiceField(
        choices=[deletes.BY_DIGEST, deletes.BY_PLACEHOLDER, ""],
        help_text="digest: the last tag, its image went; placeholder: only the tag went.",
    )
    error_type = serializers.CharField(allow_blank=True)
    reclaimable_bytes = serializers.IntegerField()


class BulkDeleteResultSerializer(serializers.Serializer):
    results = DeleteOutcomeSerializer(many=True)
    deleted = serializers.IntegerField()
    failed = serializers.IntegerField()


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "timestamp",
            "received_at",
            "source",
            "action",
            "kind",
            "repository",
            "tag",
            "digest",
            "media_type",
            "size",
            "actor",
            "request_id",
            "request_addr",
            "request_method",
            "request_useragent",
        ]


class AuditPageSerializer(serializers.Serializer):
    results = AuditEventSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class RunSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=JobKind.choices)
    percent = serializers.IntegerField(allow_null=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "kind",
            "state",
            "options",
            "done",
            "total",
            "percent",
            "message",
            "error",
            "result",
            "requested_by",
            "requested_at",
            "started_at",
            "finished_at",
        ]


class LatestRunSerializer(serializers.Serializer):
    run = RunSerializer(allow_null=True)


class PrunePlanSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    results = UntaggedSerializer(many=True, help_text="At most 1,000 (dry run).")
    total = serializers.IntegerField()
    reclaimable_bytes = serializers.IntegerField()
    run = RunSerializer(allow_null=True, help_text="The prune job (real run).")


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = serializers.DictField(required=False, help_text="Per field, what is wrong.")
