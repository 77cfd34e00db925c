from django.db import models

# Snapshots older than this many keep their totals (the usage-over-time chart) but lose their
# per-repository rows, so a scan every 6 hours over 10,000 repositories does not pile up rows.
DETAILED_SNAPSHOTS_KEPT = 10


class StorageSnapshotQuerySet(models.QuerySet):
    def latest_snapshot(self):
        return self.order_by("-created_at", "-pk").first()

    def prune_details(self, keep=DETAILED_SNAPSHOTS_KEPT):
        """Drop per-repository rows of all but the newest `keep` snapshots."""
        kept = list(self.order_by("-created_at", "-pk").values_list("pk", flat=True)[:keep])
        return RepositoryStorage.objects.exclude(snapshot_id__in=kept).delete()[0]


class StorageSnapshot(models.Model):
    """The figures of one completed storage scan (`registry_admin.usage.storage_scan_job`).

    A failed scan leaves no snapshot (its Run records the error), so the page keeps showing
    the previous one.
    """

    run = models.ForeignKey(
        "registry_admin.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    backend = models.CharField(max_length=20)
    # Where it looked (a path, or account URL + container + prefix); never a key.
    location = models.CharField(max_length=500, blank=True)
    total_bytes = models.BigIntegerField()
    blob_count = models.BigIntegerField()
    linked_bytes = models.BigIntegerField(default=0)
    dedup_saved_bytes = models.BigIntegerField(default=0)
    reclaimable_bytes = models.BigIntegerField()
    reclaimable_count = models.BigIntegerField()
    # Unreferenced blobs the recycle bin keeps (not counted as reclaimable).
    held_bytes = models.BigIntegerField(default=0)
    held_count = models.BigIntegerField(default=0)
    upload_count = models.BigIntegerField(default=0)
    upload_bytes = models.BigIntegerField(default=0)
    oldest_upload_started_at = models.DateTimeField(null=True, blank=True)
    repository_count = models.PositiveIntegerField(default=0)
    manifest_count = models.BigIntegerField(default=0)
    unreadable_manifests = models.BigIntegerField(default=0)
    missing_blob_links = models.BigIntegerField(default=0)
    entry_count = models.BigIntegerField(default=0)
    duration_seconds = models.FloatField(default=0)

    objects = StorageSnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        get_latest_by = "created_at"

    def __str__(self):
        return f"storage snapshot #{self.pk} ({self.created_at:%Y-%m-%d %H:%M})"


class RepositoryStorage(models.Model):
    """One repository's figures in a snapshot (see storage.RepositoryUsage for definitions)."""

    snapshot = models.ForeignKey(
        StorageSnapshot, on_delete=models.CASCADE, related_name="repositories"
    )
    name = models.CharField(max_length=255)
    referenced_bytes = models.BigIntegerField()
    unique_bytes = models.BigIntegerField()
    shared_bytes = models.BigIntegerField()
    reclaimable_bytes = models.BigIntegerField()
    blob_count = models.PositiveIntegerField()
    manifest_count = models.PositiveIntegerField()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "name"], name="storage_repo_unique")
        ]

    def __str__(self):
        return f"{self.name} in snapshot #{self.snapshot_id}"


class ManifestReferences(models.Model):
    """What one manifest references (config and layers, or an index's children), by digest.

    Manifests are content-addressed, so a row never goes stale: each scan reads from storage
    only the linked manifests it has not seen, and drops rows of manifests no longer linked.
    """

    digest = models.CharField(max_length=64, unique=True)  # sha256 hex
    # The referenced sha256 digests, 32 raw bytes each, concatenated.
    references = models.BinaryField()

    def __str__(self):
        return f"sha256:{self.digest}"


class CollectedBlob(models.Model):
    """A blob the online collector (`registry_admin.online_gc`) is taking away, or took away,
    and where it stands: its checkpoint, so a run killed at any step is finished by the next.

    The trash itself lives on the registry's storage (`oyster-trash/...`), so what sits there is
    also known from a listing; these rows add which repositories' links the collector removed
    (to put them back when the blob turns out to be needed) and what a notification asked for.
    """

    class State(models.TextChoices):
        # Chosen by the mark; nothing touched yet.
        CANDIDATE = "candidate", "Candidate"
        # Its layer links removed: clients see it as unknown; the data is still in place.
        UNLINKED = "unlinked", "Unlinked"
        # A re-mark found it needed: links put back, data never moved.
        KEPT = "kept", "Kept (needed again)"
        # Its data moved to the trash: gone for the registry, recoverable.
        TRASHED = "trashed", "In the trash"
        # Back from the trash (a link or manifest needed it after all).
        RESTORED = "restored", "Restored"
        # Deleted from the trash for good.
        PURGED = "purged", "Purged"

    run = models.ForeignKey(
        "registry_admin.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    digest = models.CharField(max_length=71)  # sha256:<hex>
    size = models.BigIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.CANDIDATE)
    # The repositories whose `_layers` link the collector removed.
    unlinked_from = models.JSONField(default=list, blank=True)
    # Where the data went, relative to the registry's root directory (state TRASHED).
    trash_path = models.CharField(max_length=300, blank=True)
    trashed_at = models.DateTimeField(null=True, blank=True)
    # A push or mount notification named it while in the trash: restore at once.
    restore_requested = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["digest", "state"], name="gc_blob_digest_idx"),
            models.Index(fields=["state", "run"], name="gc_blob_state_idx"),
        ]

    def __str__(self):
        return f"{self.digest} ({self.state})"
