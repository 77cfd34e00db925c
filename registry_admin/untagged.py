"""Removing the manifests no tag reaches: the safe `--delete-untagged` that registry 2.8 lacks.

The storage scan lists them (storage.UntaggedRevision, stored as UntaggedManifest rows of the
latest snapshot). Before each `DELETE /manifests/<digest>` the repository is re-read live: a
digest some tag points at again, or that a tagged index or manifest list references at any
depth (`references.reachable`, the scan's rule too), stays, and so does anything the registry
linked within UNTAGGED_GRACE_MINUTES (a multi-platform push uploads its children before the
index that tags them). Parents go before their children, so a
child is never left referenced by an untagged index that is still there.
"""

import fnmatch
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone

from . import deletes, recycle_bin, references, referrers, registry, worker
from .models import AuditEvent, JobKind, PortalAction, StorageSnapshot, UntaggedManifest
from .references import INDEX_MEDIA_TYPES

logger = logging.getLogger(__name__)

REMOVED = "removed"
KEPT = "kept"
FAILED = "failed"


def latest_rows(repository_glob=""):
    """The latest snapshot's UntaggedManifest rows (optionally for repositories matching the
    shell-style `repository_glob`), parents before children."""
    snapshot = StorageSnapshot.objects.latest_snapshot()
    if snapshot is None:
        return []
    rows = UntaggedManifest.objects.filter(snapshot=snapshot).order_by(
        "repository", "is_child", "digest"
    )
    if repository_glob:
        rows = [row for row in rows if fnmatch.fnmatchcase(row.repository, repository_glob)]
    return list(rows)


def summary_by_repository(snapshot=None, repository=None):
    """[{repository, count, reclaimable_bytes}] of the latest snapshot, largest first."""
    snapshot = snapshot or StorageSnapshot.objects.latest_snapshot()
    if snapshot is None:
        return []
    rows = UntaggedManifest.objects.filter(snapshot=snapshot)
    if repository is not None:
        rows = rows.filter(repository=repository)
    return list(
        rows.values("repository")
        .annotate(count=Count("id"), reclaimable_bytes=Sum("reclaimable_bytes"))
        .order_by("-reclaimable_bytes", "repository")
    )


def grace_cutoff(now=None):
    return (now or timezone.now()) - timedelta(minutes=settings.UNTAGGED_GRACE_MINUTES)


@dataclass
class PruneResult:
    dry_run: bool
    items: list = field(default_factory=list)  # {repository, digest, state, message, bytes}

    @property
    def removed(self):
        return [i for i in self.items if i["state"] == REMOVED]

    @property
    def reclaimable_bytes(self):
        return sum(i["bytes"] for i in self.removed)

    def as_dict(self):
        return {
            "dry_run": self.dry_run,
            "removed": len(self.removed),
            "kept": sum(1 for i in self.items if i["state"] == KEPT),
            "failed": sum(1 for i in self.items if i["state"] == FAILED),
            "reclaimable_bytes": self.reclaimable_bytes,
            "items": self.items[:2000],
        }


def prune(actor, repository_glob="", dry_run=False, on_progress=None, now=None):
    """Remove (or with `dry_run`, check) the latest scan's untagged manifests; a PruneResult.

    Each one is checked live right before; a registry that refuses deletes or cannot be
    reached stops the run (every following delete would fail the same way).
    """
    cutoff = grace_cutoff(now)
    result = PruneResult(dry_run=dry_run)
    live_repositories = {}
    rows = latest_rows(repository_glob)
    for number, row in enumerate(rows, start=1):
        item = {"repository": row.repository, "digest": row.digest, "bytes": 0}
        try:
            live = live_repositories.get(row.repository)
            if live is None:
                live = live_repositories[row.repository] = deletes.LiveRepository.resolve(
                    row.repository
                )
            reason = _reason_to_keep(live, row, cutoff)
            if reason:
                item.update(state=KEPT, message=reason)
            elif dry_run:
                item.update(state=REMOVED, message="would be removed", bytes=row.reclaimable_bytes)
            else:
                _remove(actor, row)
                item.update(state=REMOVED, message="removed", bytes=row.reclaimable_bytes)
        except registry.RegistryNotFound:
            item.update(state=KEPT, message="gone from the registry already")
        except (
            registry.RegistryDeleteUnsupported,
            registry.RegistryUnreachable,
            registry.RegistryUnauthorized,
        ) as exc:
            item.update(state=FAILED, message=str(exc))
            result.items.append(item)
            break
        except registry.RegistryError as exc:
            item.update(state=FAILED, message=str(exc))
        result.items.append(item)
        if on_progress:
            on_progress(number, len(rows), item)
    return result


def _reason_to_keep(live, row, cutoff):
    """Why `row` must stay, asked of the registry now; "" when it may go."""
    if row.linked_at is None or row.linked_at > cutoff:
        return (
            f"linked within the last {settings.UNTAGGED_GRACE_MINUTES} minutes "
            "(UNTAGGED_GRACE_MINUTES): a push may still be tagging it"
        )
    tags = live.tags_on(row.digest)
    if tags:
        return f"tagged again: {', '.join(tags[:5])}"
    # A signature, SBOM or attestation (OCI 1.1 `subject`) stays while its image does; one
    # whose image is gone is an orphan and goes like any untagged manifest.
    subject = _subject_of(live, row.digest)
    if subject and live.document(subject) is not None:
        return f"attached to {subject}, which is still present"
    # What the tags reach, to any depth (an index inside an index keeps its children), by the
    # scan's rule. A tag on an image manifest (the registry's own Content-Type) has no children
    # to read; an index's children are read whatever type they claim. A referrers tag schema's
    # index whose image is gone keeps nothing: its referrers are orphans.
    indexes = sorted(
        {
            ref.digest
            for tag, ref in live.refs.items()
            if (ref.media_type in INDEX_MEDIA_TYPES or not ref.media_type)
            and not _orphaned_fallback(live, tag)
        }
    )
    if row.digest not in references.reachable(indexes, live.children_of):
        return ""
    for digest in indexes:
        if row.digest in live.children_of(digest):
            return f"a child of the tagged {digest}"
    for digest in indexes:
        if row.digest in references.reachable([digest], live.children_of):
            return f"inside an index that the tagged {digest} references"
    return "referenced by a tagged index"


def _subject_of(live, digest):
    document = live.document(digest)
    return referrers.subject_of(document.data) if document is not None else ""


def _orphaned_fallback(live, tag):
    """True for a fallback index tag (`sha256-<hex>`) whose subject the registry has no more."""
    parts = referrers.referrer_tag_parts(tag)
    return bool(parts and not parts[1] and live.document(parts[0]) is None)


def _remove(actor, row):
    with recycle_bin.Deleting(
        actor, row.repository, row.digest, (), "prune", unique_bytes=row.reclaimable_bytes
    ):
        registry.get_client().delete_image(row.repository, row.digest)
    AuditEvent.objects.log_portal_action(
        actor,
        PortalAction.UNTAGGED_DELETED,
        repository=row.repository,
        digest=row.digest,
        detail={"reclaimable_bytes": row.reclaimable_bytes, "child": row.is_child},
    )
    row.delete()
    logger.info("untagged %s@%s removed by %s", row.repository, row.digest, actor)


def prune_job(run):
    """Worker job "prune_untagged": options {"repository": glob, "dry_run": bool}."""

    options = run.options or {}
    total = len(latest_rows(options.get("repository", "")))
    worker.report_progress(run, done=0, total=total, message=f"{total} untagged manifests")

    def progress(done, _total, item):
        worker.report_progress(run, done=done, message=f"{item['repository']}@{item['digest']}")

    actor = run.requested_by or JobKind.PRUNE_UNTAGGED
    result = prune(
        actor, options.get("repository", ""), bool(options.get("dry_run")), on_progress=progress
    )
    return result.as_dict()
