"""The recycle bin's tables (docs/recycle-bin.md, "Model"): what each delete Oyster makes needs
to be put back, and which blobs the online collector must keep meanwhile."""

from django.db import models


class BinItemQuerySet(models.QuerySet):
    def holding(self):
        """Items whose blobs the collector keeps: a delete under way, held, being restored."""
        return self.filter(state__in=BinItem.HOLDING_STATES)


class BinItem(models.Model):
    """One delete: a manifest (`kind=image`) or only tags of it (`kind=tag`: the manifest stays
    for other tags), with the tags that pointed at it right before."""

    class Kind(models.TextChoices):
        IMAGE = "image", "Image"
        TAG = "tag", "Tag only"

    class State(models.TextChoices):
        # Recorded before the registry's DELETE; settled by the delete itself or, when the
        # process died in between, by the worker's purge job with a HEAD.
        DELETING = "deleting", "Deleting"
        HELD = "held", "Held"
        RESTORING = "restoring", "Restoring"
        RESTORED = "restored", "Restored"
        PURGED = "purged", "Purged"
        # Blob data gone (the registry's own offline collector): can never come back.
        LOST = "lost", "Lost"

    HOLDING_STATES = (State.DELETING, State.HELD, State.RESTORING)

    repository = models.CharField(max_length=255, db_index=True)
    digest = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.IMAGE)
    tags = models.JSONField(default=list, blank=True)
    # manual, bulk, retention:<rule>, prune, digest
    reason = models.CharField(max_length=200, blank=True)
    actor = models.CharField(max_length=150, blank=True)
    deleted_at = models.DateTimeField(db_index=True)
    expires_at = models.DateTimeField(db_index=True)
    state = models.CharField(
        max_length=12, choices=State.choices, default=State.DELETING, db_index=True
    )
    # Bytes of every blob and manifest the item holds, and the estimate of what only it uses
    # (what a collection frees once it is purged), both at delete time.
    size_bytes = models.BigIntegerField(default=0)
    unique_bytes = models.BigIntegerField(default=0)
    # When a restore claimed it (held → restoring): one that died midway is handed back later.
    claimed_at = models.DateTimeField(null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    settled_by = models.CharField(max_length=150, blank=True)
    # The last restore's or settle's sentence (tags left alone, blobs lost, ...).
    note = models.TextField(blank=True)

    objects = BinItemQuerySet.as_manager()

    class Meta:
        ordering = ["-deleted_at", "-pk"]

    def __str__(self):
        return f"{self.repository}@{self.digest} ({self.state})"

    @property
    def reference(self):
        return f"{self.repository}@{self.digest}"


class BinManifest(models.Model):
    """A manifest an item needs back, byte for byte: its top manifest and, for an index, every
    manifest it reaches. `depth` 0 is the top; restores PUT the deepest first."""

    item = models.ForeignKey(BinItem, on_delete=models.CASCADE, related_name="manifests")
    digest = models.CharField(max_length=100)
    media_type = models.CharField(max_length=200)
    content = models.BinaryField()
    depth = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "digest"], name="bin_manifest_unique")
        ]

    def __str__(self):
        return f"{self.digest} of bin item #{self.item_id}"


class BinBlob(models.Model):
    """A config or layer an item's manifests reference: the collector keeps it ("held")."""

    item = models.ForeignKey(BinItem, on_delete=models.CASCADE, related_name="blobs")
    digest = models.CharField(max_length=100, db_index=True)
    size = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "digest"], name="bin_blob_unique")]

    def __str__(self):
        return f"{self.digest} of bin item #{self.item_id}"
