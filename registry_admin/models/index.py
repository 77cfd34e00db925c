from django.db import models
from django.db.models import Q

# The repository list's sorts by a column (browse.REPOSITORY_SORTS), for their indexes' names.
SORT_INDEXES = (
    ("push", "last_push_at"),
    ("size", "total_size"),
    ("tags", "tag_count"),
    ("pull", "last_pulled_at"),
)


class Repository(models.Model):
    """One repository of the registry as last seen by a reconcile or a notification.

    The aggregate columns (`tag_count`, `total_size`, `last_push_at`, `is_empty`) are
    denormalised by `registry_admin.index.refresh_repository_stats()` (and `last_pulled_at` by
    `registry_admin.pulls`) so the repositories page sorts a million rows on an index instead of
    aggregating tags on every view. Database triggers (migration 0016) keep the header's totals
    and the name search index as rows come and go.
    """

    name = models.CharField(max_length=255, unique=True)
    # No tags left (the registry keeps such repositories in `_catalog`): hidden by default.
    is_empty = models.BooleanField(default=True)
    tag_count = models.PositiveIntegerField(default=0)
    # Sum of the sizes of the distinct images its tags point at (config + compressed layers;
    # layers shared between images count once per image).
    total_size = models.BigIntegerField(default=0)
    last_push_at = models.DateTimeField(null=True, blank=True)
    # The newest real pull (`pulls`): its counters keep it, so the list sorts by it on an index.
    last_pulled_at = models.DateTimeField(null=True, blank=True)
    # When a reconcile last listed its tags (None: known from notifications only).
    synced_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "repositories"
        indexes = [
            models.Index(fields=["is_empty", "name"], name="index_repo_name_idx"),
            # The status line's "last reconciled" when no sync run is on record: one seek.
            models.Index(fields=["-synced_at"], name="repo_synced_idx"),
            # Two per sort of the list, the name breaking ties, so a page after a cursor is one
            # index range even inside a long run of equal values (browse.repository_page): one
            # over the repositories with tags (the default view: empty ones, all at the end of
            # "tags" and "size", would otherwise be stepped over on the way to the last page),
            # one over all of them ("show empty repositories").
            *(
                models.Index(
                    fields=[f"-{column}", "name"],
                    name=f"repo_{short}_order_idx",
                    condition=Q(is_empty=False),
                )
                for short, column in SORT_INDEXES
            ),
            *(
                models.Index(fields=[f"-{column}", "name"], name=f"repo_{short}_all_idx")
                for short, column in SORT_INDEXES
            ),
        ]

    def __str__(self):
        return self.name


class Manifest(models.Model):
    """An image manifest, OCI index or Docker manifest list, keyed by its digest.

    Content-addressed, so one row serves every repository and tag pointing at the digest.
    Rows created from a notification carry only digest, media type and manifest length until
    the worker's details job fills the rest (`details_fetched_at` stays None until then).
    """

    digest = models.CharField(max_length=150, unique=True)
    media_type = models.CharField(max_length=255, blank=True)
    # Length of the manifest document itself.
    manifest_size = models.BigIntegerField(null=True, blank=True)
    # Image: config + compressed layers. Index/list: sum of its children's image sizes.
    size = models.BigIntegerField(null=True, blank=True)
    # From the image config (for an index: the newest child's).
    created = models.DateTimeField(null=True, blank=True)
    config_digest = models.CharField(max_length=150, blank=True)
    is_index = models.BooleanField(default=False)
    # One entry per platform: {"os", "architecture", "variant", "digest", "size",
    # "media_type", "created"}; an image manifest has one entry from its config.
    platforms = models.JSONField(default=list, blank=True)
    layer_count = models.PositiveIntegerField(null=True, blank=True)
    # [{"digest", "size", "media_type"}]
    layers = models.JSONField(default=list, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    # The parts of the config the pages show: author, env, entrypoint, cmd, working_dir,
    # exposed_ports, history ...
    config = models.JSONField(default=dict, blank=True)
    # Why the details could not be fetched (last attempt), shown on the tag page.
    details_error = models.CharField(max_length=500, blank=True)
    details_fetched_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    # An OCI 1.1 referrer (`registry_admin.referrers`): the digest its `subject` names, what it
    # is (signature, sbom, attestation, other; "" for an image), its artifactType (or config
    # media type) and its annotations with its layers' (cosign's signature, certificate ...).
    subject_digest = models.CharField(max_length=150, blank=True)
    artifact_kind = models.CharField(max_length=16, blank=True)
    artifact_type = models.CharField(max_length=255, blank=True)
    annotations = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["details_fetched_at"], name="index_manifest_details_idx")]

    def __str__(self):
        return self.digest

    @property
    def short_digest(self):
        return short_digest(self.digest)

    @property
    def platform_labels(self):
        """["linux/amd64", "linux/arm64/v8"]: runnable platforms (attestations left out)."""
        return [
            "/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant"))))
            for p in self.platforms or []
            if isinstance(p, dict) and not p.get("attestation")
        ]


class Tag(models.Model):
    """A tag of a repository pointing at a digest.

    `manifest` is always set by the index functions (a bare Manifest row is created for an
    unknown digest); it is nullable so a manifest row can be pruned without cascading tags.
    """

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=128)
    digest = models.CharField(max_length=150)
    manifest = models.ForeignKey(
        Manifest, null=True, blank=True, on_delete=models.SET_NULL, related_name="tags"
    )
    # When the tag got its current digest: the push notification's timestamp, or for tags a
    # reconcile discovered, the time it first saw that digest under this tag.
    pushed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # A referrer tag (`registry_admin.referrers.classify_tags`): what it is attached to and
    # what it is (signature, sbom, attestation, other, or "index" for the referrers tag
    # schema's fallback index); "" for a real tag. Kept by the index's counter refresh.
    subject_digest = models.CharField(max_length=150, blank=True)
    referrer_kind = models.CharField(max_length=16, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["repository", "name"], name="index_tag_unique_name")
        ]
        indexes = [
            models.Index(fields=["repository", "digest"], name="index_tag_digest_idx"),
            # Which repositories hold a digest: details fetches refresh their counters.
            models.Index(fields=["digest"], name="index_tag_any_repo_digest_idx"),
            # The artifacts attached to an image of a repository (badges, the tag page).
            models.Index(
                fields=["repository", "subject_digest"],
                name="index_tag_subject_idx",
                condition=~Q(subject_digest=""),
            ),
        ]

    def __str__(self):
        return f"{self.repository.name}:{self.name}" if self.repository_id else self.name

    @property
    def short_digest(self):
        return short_digest(self.digest)

    @property
    def is_referrer(self):
        return bool(self.referrer_kind)


def short_digest(digest):
    """`sha256:0123456789ab` (12 hex characters, as docker prints them)."""
    algorithm, _, hexpart = (digest or "").partition(":")
    return f"{algorithm}:{hexpart[:12]}" if hexpart else digest or ""
