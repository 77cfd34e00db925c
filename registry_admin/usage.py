"""Storage usage over time: the scan job, its snapshots, and what pages read from them.

The scan itself (listing, manifest reads, the arithmetic) lives in `registry_admin.storage`;
this module stores its result and answers questions about the latest one.
"""

import time
from dataclasses import fields
from datetime import UTC, datetime

from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from . import quotas, recycle_bin, storage, worker
from .models import (
    JobKind,
    ManifestReferences,
    RepositoryStorage,
    StorageSnapshot,
    UntaggedManifest,
)
from .models.batches import BATCH_SIZE, pk_batches

# Seconds between progress writes to the database during a scan.
PROGRESS_SECONDS = 1.0
# Points on the usage-over-time chart.
HISTORY_POINTS = 400


def storage_scan_job(run):
    """Worker job: scan the configured storage and store a snapshot. Raises StorageError."""
    last_write = 0.0

    def progress(done, total, message):
        nonlocal last_write
        now = time.monotonic()
        if total is not None or now - last_write >= PROGRESS_SECONDS:
            last_write = now
            worker.report_progress(run, done=done, total=total, message=message)

    result, snapshot = _scan_and_record(run=run, progress=progress)
    worker.report_progress(run, message=f"Stored snapshot #{snapshot.pk}")
    return {
        "snapshot_id": snapshot.pk,
        "total_bytes": result.total_bytes,
        "blob_count": result.blob_count,
        "reclaimable_bytes": result.reclaimable_bytes,
        "repository_count": len(result.repositories),
        "manifests_read": result.manifests_read,
    }


def run_scan():
    """Scan now in this process (no Run row: a caller's own job holds the worker lease);
    returns the stored snapshot. Raises StorageError."""
    return _scan_and_record()[1]


def _scan_and_record(run=None, progress=None):
    """One scan with what it must know (the bin's held blobs, the quotas' patterns), stored as a
    snapshot, the quotas' baselines updated; (ScanResult, snapshot)."""
    group_of, known_quotas = quotas.scan_groups()
    started = timezone.now()
    backend, result = storage.scan_storage(
        progress=progress,
        cache=ManifestReferenceCache(),
        held=recycle_bin.held_raw_digests(),
        groups=group_of,
    )
    snapshot = record_snapshot(result, backend, run=run)
    if known_quotas:
        quotas.record_scan(result.group_bytes, known_quotas, started)
    return result, snapshot


class ManifestReferenceCache:
    """The scan's manifest-reference cache (see storage.scan) in the ManifestReferences table."""

    def lookup(self, digests):
        rows = ManifestReferences.objects.filter(
            digest__in=[digest.hex() for digest in digests]
        ).values_list("digest", "references")
        return {bytes.fromhex(digest): bytes(references) for digest, references in rows}

    def store(self, fresh):
        ManifestReferences.objects.bulk_create(
            [
                ManifestReferences(digest=digest.hex(), references=references)
                for digest, references in fresh.items()
            ],
            batch_size=BATCH_SIZE,
            ignore_conflicts=True,
        )

    def prune(self, live):
        stale = [
            pk
            for pk, digest in ManifestReferences.objects.values_list("pk", "digest").iterator(
                chunk_size=5000
            )
            if bytes.fromhex(digest) not in live
        ]
        for batch in pk_batches(ManifestReferences, stale):
            batch.delete()


def remember_manifest(digest, raw):
    """Keep what a manifest read through the registry API references, for the storage scan.

    The registry serves a manifest's stored bytes, and the client checks them against the
    digest, so these are the very bytes the scan would read from storage: a portal that has
    fetched its images' details (it does for every pushed and reconciled tag) sends its first
    scan to storage only for the manifests it has not seen (untagged ones, mostly).
    """
    raw_digest = storage.digest_bytes(digest)
    references = storage.packed_references(raw)
    if raw_digest is not None and references is not None:
        ManifestReferenceCache().store({raw_digest: references})


def _shared_fields(result_class, model):
    """Fields a scan result class and its model share: copied as they are, named once."""
    columns = {field.name for field in model._meta.concrete_fields}
    return tuple(field.name for field in fields(result_class) if field.name in columns)


# The scan's figures, defined by storage.ScanResult / RepositoryUsage / UntaggedRevision and
# the models; a figure added to both is stored and exported without touching this module.
SNAPSHOT_FIGURES = _shared_fields(storage.ScanResult, StorageSnapshot)
REPOSITORY_FIGURES = _shared_fields(storage.RepositoryUsage, RepositoryStorage)
UNTAGGED_FIELDS = _shared_fields(storage.UntaggedRevision, UntaggedManifest)


def record_snapshot(result, backend, run=None):
    """Store a ScanResult as a snapshot with one row per repository; prune old detail rows."""
    with transaction.atomic():
        snapshot = StorageSnapshot.objects.create(
            run=run,
            backend=backend.kind,
            location=backend.location[:500],
            oldest_upload_started_at=_datetime(result.oldest_upload_started),
            repository_count=len(result.repositories),
            **_copied(result, SNAPSHOT_FIGURES),
        )
        RepositoryStorage.objects.bulk_create(
            (
                RepositoryStorage(snapshot=snapshot, **_copied(usage, REPOSITORY_FIGURES))
                for usage in result.repositories
            ),
            batch_size=BATCH_SIZE,
        )
        UntaggedManifest.objects.bulk_create(
            (
                UntaggedManifest(
                    snapshot=snapshot,
                    # linked_at: a timestamp in the result, a datetime in the table.
                    **{**_copied(item, UNTAGGED_FIELDS), "linked_at": _datetime(item.linked_at)},
                )
                for item in result.untagged
            ),
            batch_size=BATCH_SIZE,
        )
        # Only the latest scan's list is acted on; older lists would only mislead.
        UntaggedManifest.objects.exclude(snapshot=snapshot).delete()
        StorageSnapshot.objects.prune_details()
    return snapshot


def _copied(item, names):
    return {name: getattr(item, name) for name in names}


def _datetime(timestamp):
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC)


def latest_snapshot():
    return StorageSnapshot.objects.latest_snapshot()


def storage_summary_for_repository(name):
    """The latest snapshot's figures for one repository, or None (never scanned, or absent).

    Returns a dict: referenced_bytes, unique_bytes, shared_bytes, reclaimable_bytes,
    blob_count, manifest_count, scanned_at (the snapshot's datetime), snapshot_id.
    """
    snapshot = latest_snapshot()
    if snapshot is None:
        return None
    row = RepositoryStorage.objects.filter(snapshot=snapshot, name=name).first()
    if row is None:
        return None
    return {
        "name": name,
        "referenced_bytes": row.referenced_bytes,
        "unique_bytes": row.unique_bytes,
        "shared_bytes": row.shared_bytes,
        "reclaimable_bytes": row.reclaimable_bytes,
        "blob_count": row.blob_count,
        "manifest_count": row.manifest_count,
        "scanned_at": snapshot.created_at,
        "snapshot_id": snapshot.pk,
        **_untagged_figures(snapshot, name),
    }


def _untagged_figures(snapshot, name):
    figures = UntaggedManifest.objects.filter(snapshot=snapshot, repository=name).aggregate(
        count=Count("id"), size=Sum("reclaimable_bytes")
    )
    return {"untagged_count": figures["count"], "untagged_bytes": figures["size"] or 0}


def gc_guidance_context(snapshot=None):
    """Context for templates/registry_admin/storage/_gc_guidance.html from the latest snapshot."""
    snapshot = snapshot or latest_snapshot()
    if snapshot is None:
        return {"reclaimable_bytes": None, "reclaimable_count": None, "snapshot_at": None}
    return {
        "reclaimable_bytes": snapshot.reclaimable_bytes,
        "reclaimable_count": snapshot.reclaimable_count,
        "snapshot_at": snapshot.created_at,
    }


def failed_run_since(snapshot):
    """The latest storage scan run if it failed after `snapshot` was taken, else None."""
    run = worker.latest_run(JobKind.STORAGE_SCAN)
    if run is None or run.state != run.State.FAILED:
        return None
    if snapshot is not None and run.finished_at and run.finished_at < snapshot.created_at:
        return None
    return run


def chart_data(snapshot, top=10):
    """What the storage page's charts draw: top repositories (unique vs shared) and history."""
    top_rows = (
        snapshot.repositories.order_by("-referenced_bytes", "name").values(
            "name", "unique_bytes", "shared_bytes"
        )[:top]
        if snapshot
        else []
    )
    history = list(
        StorageSnapshot.objects.order_by("-created_at").values_list(
            "created_at", "total_bytes", "reclaimable_bytes"
        )[:HISTORY_POINTS]
    )
    history.reverse()
    return {
        "top": {
            "labels": [row["name"] for row in top_rows],
            "unique": [row["unique_bytes"] for row in top_rows],
            "shared": [row["shared_bytes"] for row in top_rows],
        },
        "history": {
            "labels": [created.isoformat() for created, _, _ in history],
            "total": [total for _, total, _ in history],
            "reclaimable": [reclaimable for _, _, reclaimable in history],
        },
    }


def snapshot_as_dict(snapshot):
    """A snapshot with all its repository rows, JSON-ready (`manage.py scan_storage --json`)."""
    return {
        "snapshot_id": snapshot.pk,
        "run_id": snapshot.run_id,
        "scanned_at": snapshot.created_at.isoformat(),
        "backend": snapshot.backend,
        "location": snapshot.location,
        "total_bytes": snapshot.total_bytes,
        "blob_count": snapshot.blob_count,
        "linked_bytes": snapshot.linked_bytes,
        "dedup_saved_bytes": snapshot.dedup_saved_bytes,
        "reclaimable": {
            "bytes": snapshot.reclaimable_bytes,
            "count": snapshot.reclaimable_count,
        },
        "uploads": {
            "count": snapshot.upload_count,
            "bytes": snapshot.upload_bytes,
            "oldest_started_at": snapshot.oldest_upload_started_at.isoformat()
            if snapshot.oldest_upload_started_at
            else None,
        },
        "manifest_count": snapshot.manifest_count,
        "unreadable_manifests": snapshot.unreadable_manifests,
        "missing_blob_links": snapshot.missing_blob_links,
        "duration_seconds": snapshot.duration_seconds,
        "untagged": [
            {
                **_copied(row, UNTAGGED_FIELDS),
                "linked_at": row.linked_at.isoformat() if row.linked_at else None,
            }
            for row in snapshot.untagged.order_by("repository", "digest")
        ],
        "repositories": list(snapshot.repositories.order_by("name").values(*REPOSITORY_FIGURES)),
    }
