from django.db import models


class PortalPlaceholder(models.Model):
    """A placeholder manifest the portal itself pushed while deleting one tag.

    Only a digest recorded here is treated as a leftover placeholder: an annotation inside a
    manifest can be pushed by anyone with push rights, so it proves nothing.
    """

    repository = models.CharField(max_length=255)
    digest = models.CharField(max_length=150)
    tag = models.CharField(max_length=128)
    # The image the tag pointed at before it was re-pointed at the placeholder.
    replaces = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "digest"], name="deletes_placeholder_unique"
            )
        ]

    def __str__(self):
        return f"placeholder {self.repository}@{self.digest}"


class UntaggedManifest(models.Model):
    """A manifest revision no tag reaches, as a storage scan found it (see storage.py)."""

    snapshot = models.ForeignKey(
        "registry_admin.StorageSnapshot", on_delete=models.CASCADE, related_name="untagged"
    )
    repository = models.CharField(max_length=255)
    digest = models.CharField(max_length=150)
    # When the registry linked the revision (the link's modification time).
    linked_at = models.DateTimeField(null=True, blank=True)
    # Bytes the collector frees once this revision (and its untagged children) are removed.
    reclaimable_bytes = models.BigIntegerField(default=0)
    # A child of an untagged index: removed with its parent, not on its own.
    is_child = models.BooleanField(default=False)

    class Meta:
        ordering = ["repository", "digest"]
        indexes = [models.Index(fields=["snapshot", "repository"], name="untagged_repo_idx")]

    def __str__(self):
        return f"untagged {self.repository}@{self.digest}"
