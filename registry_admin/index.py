"""The local index of repositories, tags and manifests: writes from notifications and portal
actions. The reconcile that walks the registry lives in `registry_admin.reconcile`.

Every write goes through these functions so the repository's denormalised counters
(`tag_count`, `total_size`, `last_push_at`, `is_empty`) stay right.

`update_from_events(events)` receives `signals.events_recorded` (connected in apps.py): it
runs inside the transaction that applies a batch of stored events (`ingest`; the delivery's
own with NOTIFICATIONS_APPLY_DELAY=0), makes no outbound call, and asks the worker for a
"details" run when a pushed digest is new. What the pages read is in `registry_admin.browse`.
"""

import json
import logging
import threading
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Count, Exists, F, Func, Max, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import referrers
from .models import (
    AuditEvent,
    JobKind,
    Manifest,
    PortalPlaceholder,
    Repository,
    Run,
    Tag,
)
from .models.batches import batched, pk_batches
from .models.pulls import last_pull_subquery
from .references import RegistryAction, is_valid_digest, is_valid_repository, is_valid_tag

logger = logging.getLogger(__name__)


# Inside `update_from_events`: the repositories whose counters to refresh once at its end.
_deferred = threading.local()


def refresh_repository_stats(repository):
    """Recompute a repository's counters from its tags (one UPDATE)."""
    deferred = getattr(_deferred, "ids", None)
    if deferred is not None:
        deferred.add(repository.pk)
        return
    refresh_stats_of([repository.pk])


def refresh_stats_of(repository_ids):
    """`refresh_repository_stats` for many repositories at once: one UPDATE with correlated
    subqueries per 500 ids (the reconcile batches its counter updates this way)."""
    ids = list(repository_ids)
    # Which tags are signatures, SBOMs, attestations or fallback indexes: they are no versions
    # of their own, so the counters leave them out.
    referrers.classify_tags(ids)
    tags = (
        Tag.objects.filter(repository=OuterRef("pk"), referrer_kind="")
        .order_by()
        .values("repository")
    )
    tag_digests = Tag.objects.filter(repository=OuterRef(OuterRef("pk"))).values("digest")
    total = (
        Manifest.objects.filter(digest__in=Subquery(tag_digests))
        .order_by()
        .annotate(total=Func(F("size"), function="SUM"))
        .values("total")
    )
    for batch in pk_batches(Repository, ids):
        batch.update(
            tag_count=Coalesce(Subquery(tags.annotate(n=Count("pk")).values("n")), 0),
            last_push_at=Subquery(tags.annotate(last=Max("pushed_at")).values("last")),
            total_size=Coalesce(Subquery(total[:1]), 0),
            is_empty=~Exists(Tag.objects.filter(repository=OuterRef("pk"))),
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


def create_repositories(names):
    """Add the repositories among `names` that the index lacks; the names added.

    A name seen again after its repository went (deleted, then pushed anew) gets back the last
    pull its counters hold, as the list showed before it was kept on the row."""
    names = set(names)
    known = set(Repository.objects.filter(name__in=names).values_list("name", flat=True))
    missing = sorted(names - known)
    if missing:
        Repository.objects.bulk_create(
            [Repository(name=name) for name in missing], ignore_conflicts=True
        )
        Repository.objects.filter(name__in=missing, last_pulled_at__isnull=True).update(
            last_pulled_at=last_pull_subquery()
        )
    return missing


def locked_repository(name):
    """The repository's row, locked for this transaction before any of its tags: every writer
    of a repository's tags takes the repository first (upsert_tag, the batches), so a portal
    delete and a notification's upsert cannot each hold what the other waits for (PostgreSQL
    found that deadlock). None when the index has no such repository."""
    return Repository.objects.select_for_update().filter(name=name).first()


def locked_repositories(names):
    """{name: pk} of every repository in `names`, created when the index lacks it and locked
    for this transaction in pk order (so two writers never wait on each other crosswise).

    A repository deleted whole while this waited for its row (repository_delete, holding the
    row) is gone when the lock comes: PostgreSQL skips a row deleted meanwhile. The event being
    applied says the repository exists, so it is created again rather than a tag written
    against a row that no longer exists."""
    names = set(names)
    for _attempt in range(5):
        create_repositories(names)
        locked = dict(
            Repository.objects.select_for_update()
            .filter(name__in=names)
            .order_by("pk")
            .values_list("name", "pk")
        )
        if len(locked) == len(names):
            return locked
    raise RuntimeError(f"the index's repositories {sorted(names - set(locked))} kept vanishing")


def forget_repository(name):
    """Remove `name` and all its tags from the index (after the registry's storage lost it).

    Its row first, as every writer of its tags takes it: a notification upserting one of its
    tags meanwhile either finished before (its tag goes too) or waits and then creates the
    repository again (locked_repositories); without the lock, such a tag inserted between the
    delete's collection of tags and its delete of the row broke the foreign key at commit."""
    with transaction.atomic():
        repo = locked_repository(name)
        if repo is None:
            return False
        repo.delete()  # its tags with it (CASCADE), collected under the lock
    return True


def upsert_tag(repository, tag, digest, pushed_at, media_type="", manifest_size=None):
    """Point `repository:tag` at `digest` (creating the repository and a bare manifest row).

    Returns (tag, manifest); `manifest.details_fetched_at is None` means details are pending.
    An event older than the tag's current push (a late redelivery) changes nothing, and a
    repeated one writes nothing.
    """
    with transaction.atomic():
        # One writer per repository at a time: a notification and a portal action (or two
        # instances) upserting the same tag would otherwise both try to create it on PostgreSQL.
        locked_repositories([repository])
        repo = Repository.objects.get(name=repository)
        existing = Tag.objects.filter(repository=repo, name=tag).select_related("manifest").first()
        newer = bool(
            pushed_at
            and (existing is None or not existing.pushed_at or pushed_at > existing.pushed_at)
        )
        if existing is not None and existing.manifest is not None:
            if existing.digest == digest and not newer:
                return existing, existing.manifest
            if existing.digest != digest and pushed_at and not newer:
                return existing, existing.manifest
        manifest = ensure_manifest(digest, media_type, manifest_size)
        if existing is None:
            existing = Tag.objects.create(
                repository=repo, name=tag, digest=digest, manifest=manifest, pushed_at=pushed_at
            )
        else:
            existing.digest, existing.manifest = digest, manifest
            if newer:
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
        repo = locked_repository(repository)
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
        repo = locked_repository(repository)
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
        is_valid_repository(repository)
        and (not tag or is_valid_tag(tag))
        and (not digest or is_valid_digest(digest))
    )


def on_events_recorded(sender, events, **kwargs):
    update_from_events(events)


def update_from_events(events):
    """Apply newly stored notification events (AuditEvent rows) to the index.

    A manifest push with a tag upserts the tag; a delete by digest removes that digest's tags,
    a delete naming a tag removes the tag. Untagged pushes (index children, pushes by digest),
    pulls, mounts and blob events do not change the index. Events that do not fit the
    registry's grammar are logged and skipped, never raised (that would wedge the registry's
    delivery queue).
    """
    # A batch of a hundred pushes to one repository refreshes its counters once.
    _deferred.ids = set()
    try:
        wants_details = _apply_events(events)
        touched = _deferred.ids
    finally:
        _deferred.ids = None
    if touched:
        refresh_stats_of(sorted(touched))
    if wants_details:
        request_details()


def _apply_events(events):
    """Apply the events in order; True when a pushed digest still lacks its details.

    Pushes wait in `latest` until a delete of their repository (or the end) needs them
    applied: of several pushes of one tag only the newest can win (`upsert_tag` ignores an
    older one; of equal times the first applied stays), so a batch of CI pushes of `latest`
    costs one upsert.
    """
    latest = {}
    wants_details = False
    placeholders = _portal_placeholders(events)

    def flush(repository=None):
        nonlocal wants_details
        keys = [k for k in latest if repository is None or k[0] == repository]
        wants_details |= _upsert_pushes([latest.pop(key) for key in keys])

    for event in events:
        if event.source != AuditEvent.Source.REGISTRY or event.kind == AuditEvent.Kind.BLOB:
            continue
        if event.action not in (RegistryAction.PUSH, RegistryAction.DELETE):
            continue
        if not (_valid(event.repository, event.tag, event.digest) and _as_sent(event)):
            logger.warning("index: skipped %s event %s: invalid names", event.action, event.pk)
            continue
        if event.action == RegistryAction.PUSH and event.tag and event.digest:
            if (event.repository, event.digest) in placeholders:
                # The portal's own placeholder from deleting one tag: the tag is already gone
                # from the index, and the registry's delete of the placeholder follows.
                continue
            key = (event.repository, event.tag)
            if key not in latest or event.timestamp > latest[key].timestamp:
                latest[key] = event
        elif event.action == RegistryAction.DELETE:
            flush(event.repository)
            if event.digest:
                forget_digest(event.repository, event.digest, before=event_time(event))
            elif event.tag:
                forget_tags(event.repository, [event.tag], before=event_time(event))
    flush()
    return wants_details


# How much earlier than its receipt an event's own time is believed: deliveries that waited in
# the registry's queue (the portal down for a while) arrive a little late, but a time older
# than this is what a forged event would claim to make a tag look old to retention.
EVENT_TIME_TOLERANCE = timedelta(hours=1)


def event_time(event):
    """The time a push or delete event may give the index: its own, but never more than
    EVENT_TIME_TOLERANCE before the portal received it. Anyone holding the notifications token
    can date an event in 2001; a tag must not look older to retention than the registry's own
    facts say (its image's created date, read from the registry, still counts first). Events
    of one batch are still ordered by their own times; against what the index holds, events
    older than the tolerance count in the order they arrive (a registry delivers its queue in
    order)."""
    received = event.received_at or timezone.now()
    return max(event.timestamp, received - EVENT_TIME_TOLERANCE)


def _upsert_pushes(pushes):
    """`upsert_tag` for push events of distinct tags, in a few set-wide statements; True when a
    tag now points at a manifest whose details are pending."""
    if not pushes:
        return False
    # The same per-repository row lock as upsert_tag: a portal action creating one of these
    # tags meanwhile would otherwise collide with the bulk insert on PostgreSQL.
    repositories = locked_repositories({event.repository for event in pushes})
    tags = {
        (tag.repository_id, tag.name): tag
        for tag in Tag.objects.filter(
            repository_id__in=repositories.values(), name__in={event.tag for event in pushes}
        ).select_related("manifest")
    }
    wants_details, applied = False, []
    for event in pushes:
        existing = tags.get((repositories[event.repository], event.tag))
        pushed_at = event_time(event)
        newer = bool(
            pushed_at
            and (existing is None or not existing.pushed_at or pushed_at > existing.pushed_at)
        )
        # An older push (a late redelivery) or a repeated one changes nothing.
        stays = existing is not None and existing.manifest is not None and not newer
        if stays and (existing.digest == event.digest or pushed_at):
            wants_details |= existing.manifest.details_fetched_at is None
            continue
        applied.append((event, existing, newer))
    if not applied:
        return wants_details
    manifests = _ensure_manifests(event for event, _, _ in applied)
    now = timezone.now()
    created, updated = [], []
    for event, existing, newer in applied:
        manifest = manifests[event.digest]
        wants_details |= manifest.details_fetched_at is None
        if existing is None:
            created.append(
                Tag(
                    repository_id=repositories[event.repository],
                    name=event.tag,
                    digest=event.digest,
                    manifest=manifest,
                    pushed_at=event_time(event),
                )
            )
        else:
            existing.digest, existing.manifest, existing.updated_at = event.digest, manifest, now
            if newer:
                existing.pushed_at = event_time(event)
            updated.append(existing)
        refresh_repository_stats(Repository(pk=repositories[event.repository]))
    Tag.objects.bulk_create(created)
    if updated:
        # One prepared statement run per row: the ORM's bulk_update builds a CASE per column
        # per row, which cost more than everything else in a batch.
        ops, table = connection.ops, connection.ops.quote_name(Tag._meta.db_table)
        with connection.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {table} SET digest = %s, manifest_id = %s, pushed_at = %s, "  # noqa: S608
                "updated_at = %s WHERE id = %s",
                [
                    (
                        tag.digest,
                        tag.manifest_id,
                        ops.adapt_datetimefield_value(tag.pushed_at),
                        ops.adapt_datetimefield_value(tag.updated_at),
                        tag.pk,
                    )
                    for tag in updated
                ],
            )
    return wants_details


def _ensure_manifests(events):
    """`ensure_manifest` for the digests of `events`: {digest: Manifest}."""
    wanted = {}
    for event in events:
        wanted.setdefault(event.digest, event)
    manifests = {m.digest: m for m in Manifest.objects.filter(digest__in=wanted)}
    missing = [
        Manifest(digest=digest, media_type=event.media_type or "", manifest_size=event.size)
        for digest, event in wanted.items()
        if digest not in manifests
    ]
    if missing:
        Manifest.objects.bulk_create(missing, ignore_conflicts=True)
        manifests = {m.digest: m for m in Manifest.objects.filter(digest__in=wanted)}
    for digest, event in wanted.items():
        manifest = manifests[digest]
        if event.media_type and not manifest.media_type:
            manifest.media_type = event.media_type
            manifest.save(update_fields=["media_type"])
    return manifests


def _portal_placeholders(events):
    """{(repository, digest)} of the portal's own placeholders among the pushes in `events`:
    one query per batch (a query per push was most of a batch's time)."""
    digests = {e.digest for e in events if e.action == RegistryAction.PUSH and e.tag and e.digest}
    found = set()
    for chunk in batched(sorted(digests)):
        found.update(
            PortalPlaceholder.objects.filter(digest__in=chunk).values_list("repository", "digest")
        )
    return found


def request_details():
    """Ask the worker for a "details" run unless one is already waiting. (`worker.request_run`
    would hand back a running one, which may have listed its digests before this push.)"""
    if not Run.objects.filter(kind=JobKind.DETAILS, state=Run.State.REQUESTED).exists():
        Run.objects.create(kind=JobKind.DETAILS, requested_by="notifications")
