"""The local index of repositories, tags and manifests: writes from notifications and portal
actions. The reconcile that walks the registry lives in `registry_admin.sync`.

Every write goes through these functions so the repository's denormalised counters
(`tag_count`, `total_size`, `last_push_at`, `is_empty`) stay right.

`update_from_events(events)` is registered in `notifications.EVENT_HANDLERS` (see apps.py): it
runs inside the webhook's transaction, makes no outbound call, and asks the worker for a
"details" run when a pushed digest is new.
"""

import json
import logging

from django.db import transaction
from django.db.models import Count, Max, Q, Sum

from . import worker
from .models import AuditEvent, Manifest, Repository, Tag
from .references import DIGEST_RE, REPOSITORY_MAX_LENGTH, REPOSITORY_RE, TAG_RE

logger = logging.getLogger(__name__)


def refresh_repository_stats(repository):
    """Recompute a repository's counters from its tags (one aggregate query and one update)."""
    tags = Tag.objects.filter(repository=repository)
    stats = tags.aggregate(count=Count("id"), last_push=Max("pushed_at"))
    distinct_sizes = (
        Manifest.objects.filter(digest__in=tags.values("digest"))
        .aggregate(total=Sum("size"))
        .get("total")
    )
    Repository.objects.filter(pk=repository.pk).update(
        tag_count=stats["count"],
        is_empty=stats["count"] == 0,
        last_push_at=stats["last_push"],
        total_size=distinct_sizes or 0,
    )


def ensure_manifest(digest, media_type="", manifest_size=None):
    """The Manifest row for `digest`, created bare (details pending) when unknown."""
    manifest, created = Manifest.objects.get_or_create(
        digest=digest,
        defaults={"media_type": media_type or "", "manifest_size": manifest_size},
    )
    if not created and media_type and not manifest.media_type:
        manifest.media_type = media_type
        manifest.save(update_fields=["media_type"])
    return manifest


def upsert_tag(repository, tag, digest, pushed_at, media_type="", manifest_size=None):
    """Point `repository:tag` at `digest` (creating the repository and a bare manifest row).

    Returns (tag, manifest); `manifest.details_fetched_at is None` means details are pending.
    An event older than the tag's current push (a late redelivery) changes nothing.
    """
    with transaction.atomic():
        repo, _ = Repository.objects.get_or_create(name=repository)
        manifest = ensure_manifest(digest, media_type, manifest_size)
        existing = Tag.objects.filter(repository=repo, name=tag).first()
        if (
            existing is not None
            and existing.digest != digest
            and pushed_at
            and existing.pushed_at
            and pushed_at < existing.pushed_at
        ):
            return existing, existing.manifest or manifest
        if existing is None:
            existing = Tag.objects.create(
                repository=repo, name=tag, digest=digest, manifest=manifest, pushed_at=pushed_at
            )
        elif (
            existing.digest != digest
            or existing.manifest_id != manifest.pk
            or (pushed_at and (existing.pushed_at is None or pushed_at > existing.pushed_at))
        ):
            existing.digest, existing.manifest = digest, manifest
            if pushed_at and (existing.pushed_at is None or pushed_at > existing.pushed_at):
                existing.pushed_at = pushed_at
            existing.save()
        refresh_repository_stats(repo)
    return existing, manifest


def _pushed_by(before):
    """Tags whose current digest was pushed no later than `before` (None: all of them)."""
    if before is None:
        return Q()
    return Q(pushed_at__isnull=True) | Q(pushed_at__lte=before)


def forget_tags(repository, tags, before=None):
    """Remove `tags` of `repository` from the index (after the registry deleted them).

    Unknown names are ignored. With `before` (a delete event's time), a tag pushed again after
    it stays. Returns the names actually removed.
    """
    with transaction.atomic():
        repo = Repository.objects.filter(name=repository).first()
        if repo is None:
            return []
        doomed = Tag.objects.filter(_pushed_by(before), repository=repo, name__in=list(tags))
        names = sorted(doomed.values_list("name", flat=True))
        doomed.delete()
        refresh_repository_stats(repo)
    return names


def forget_digest(repository, digest, before=None):
    """Remove every tag of `repository` pointing at `digest` (the registry's DELETE by digest
    does exactly that). Returns the removed tag names, sorted."""
    with transaction.atomic():
        repo = Repository.objects.filter(name=repository).first()
        if repo is None:
            return []
        doomed = Tag.objects.filter(_pushed_by(before), repository=repo, digest=digest)
        names = sorted(doomed.values_list("name", flat=True))
        doomed.delete()
        refresh_repository_stats(repo)
    return names


def _as_sent(event):
    """True when the event's names are exactly what the registry sent: the audit trail cleans
    (cuts, strips NULs) what it stores, and a cleaned name may be another repository's."""
    try:
        target = json.loads(event.raw).get("target") or {}
    except (ValueError, AttributeError):
        return False
    return all(
        (target.get(key) or "") == value
        for key, value in (
            ("repository", event.repository),
            ("tag", event.tag),
            ("digest", event.digest),
        )
    )


def _valid(repository, tag="", digest=""):
    return (
        len(repository) <= REPOSITORY_MAX_LENGTH
        and REPOSITORY_RE.fullmatch(repository) is not None
        and (not tag or TAG_RE.fullmatch(tag) is not None)
        and (not digest or DIGEST_RE.fullmatch(digest) is not None)
    )


def update_from_events(events):
    """Apply newly stored notification events (AuditEvent rows) to the index.

    A manifest push with a tag upserts the tag; a delete by digest removes that digest's tags,
    a delete naming a tag removes the tag. Untagged pushes (index children, pushes by digest),
    pulls, mounts and blob events do not change the index. Events that do not fit the
    registry's grammar are logged and skipped, never raised (that would wedge the registry's
    delivery queue).
    """
    wants_details = False
    for event in events:
        if event.source != AuditEvent.Source.REGISTRY or event.kind == AuditEvent.Kind.BLOB:
            continue
        if event.action not in ("push", "delete"):
            continue
        if not (_valid(event.repository, event.tag, event.digest) and _as_sent(event)):
            logger.warning("index: skipped %s event %s: invalid names", event.action, event.pk)
            continue
        if event.action == "push" and event.tag and event.digest:
            _, manifest = upsert_tag(
                event.repository,
                event.tag,
                event.digest,
                event.timestamp,
                media_type=event.media_type,
                manifest_size=event.size,
            )
            wants_details |= manifest.details_fetched_at is None
        elif event.action == "delete":
            if event.digest:
                forget_digest(event.repository, event.digest, before=event.timestamp)
            elif event.tag:
                forget_tags(event.repository, [event.tag], before=event.timestamp)
    if wants_details:
        worker.request_run("details")
