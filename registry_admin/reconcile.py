"""The reconcile: walk the registry and make the index match it; and the details job.

`reconcile_job(run)` (job kind "sync", also `manage.py sync_registry`) lists `_catalog`, then
the tags of every repository, HEADs every tag for its digest, and GETs manifest + config only
for digests whose details the index does not have yet. HTTP runs on `SYNC_CONCURRENCY` threads
(one registry client per thread); every database write happens on the calling thread, one
repository at a time, as soon as that repository's tags are known.

`details_job(run)` (job kind "details") fetches details for digests a notification added. What a
manifest says about its image is read by `image_details`; this module only stores it.

A reconcile never undoes what a notification wrote while it was running: tags changed after the
repository was listed, and repositories first seen after the catalog was read, are left alone.
"""

import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from . import references, registry
from .image_details import fetch_details
from .index import create_repositories, locked_repositories, locked_repository, refresh_stats_of
from .models import Manifest, Repository, Tag
from .models.batches import pk_batches
from .worker import report_progress

logger = logging.getLogger(__name__)

_PROGRESS_EVERY_SECONDS = 0.5
# Repositories in flight per HTTP thread (see _Reconcile.window).
REPOSITORIES_PER_THREAD = 8


# --- Storing details -----------------------------------------------------------------------


def store_details(digest, fields, refresh=True):
    """Write fetched details and (with `refresh`) the counters of every repository holding
    `digest`."""
    with transaction.atomic():
        Manifest.objects.update_or_create(digest=digest, defaults=fields)
        if refresh:
            refresh_stats_of(
                Tag.objects.filter(digest=digest).values_list("repository_id", flat=True)
            )


def store_details_error(digest, error):
    Manifest.objects.filter(digest=digest).update(details_error=str(error)[:500])


# --- Reconcile -----------------------------------------------------------------------------


@dataclass
class _RepositoryScan:
    name: str
    listed_at: object = None
    tags: dict = field(default_factory=dict)  # tag -> ManifestRef
    pending: int = 0
    error: str = ""


@dataclass
class ReconcileResult:
    repositories: int = 0
    tags: int = 0
    heads: int = 0
    details_fetched: int = 0
    configs_read: int = 0
    details_failed: int = 0
    repositories_removed: int = 0
    tags_added: int = 0
    tags_changed: int = 0
    tags_removed: int = 0
    skipped_names: int = 0
    errors: list = field(default_factory=list)

    def as_dict(self):
        return {**self.__dict__, "errors": self.errors[:20]}


def reconcile(run=None, concurrency=None):
    """Make the index match the registry; returns a ReconcileResult. Raises RegistryError when
    the catalog itself cannot be read (nothing is changed then)."""
    return _Reconcile(run, concurrency or settings.SYNC_CONCURRENCY).execute()


class _Reconcile:
    def __init__(self, run, concurrency):
        self.run = run
        self.concurrency = max(1, int(concurrency))
        self.result = ReconcileResult()
        self.events = queue.Queue()
        self.known = set(
            Manifest.objects.filter(details_fetched_at__isnull=False).values_list(
                "digest", flat=True
            )
        )
        self.fetching = set()
        # Shared by the pool's threads: a dict's get and set are atomic, and a config read
        # twice by a race is only a wasted request.
        self.configs = {}
        # Counters are recomputed in batches (one UPDATE per 500 repositories), not per change.
        self.stale_counters = set()
        self.synced = []
        self.repositories_by_digest = {}
        self.outstanding = 0
        self.done_repositories = 0
        self.last_progress = 0.0
        # Repositories listed but not yet applied. Bounded, so the queued HEADs (and their
        # results) stay a few hundred whether the registry holds 1,000 or 100,000 of them.
        self.in_flight = 0
        self.window = self.concurrency * REPOSITORIES_PER_THREAD

    def execute(self):
        started = timezone.now()
        self._progress(message="reading the catalog")
        names = registry.get_client().list_repositories()
        valid = [name for name in dict.fromkeys(names) if references.is_valid_repository(name)]
        self.result.skipped_names = len(names) - len(valid)
        self.result.repositories = len(valid)
        self.total = len(valid)
        self._progress(message="listing tags", force=True)
        self.waiting = iter(valid)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="sync") as self.pool:
            self._feed()
            self._drain()
        self._flush()
        self.result.configs_read = len(self.configs)
        self._remove_vanished(set(valid), started)
        self._prune_manifests(started)
        errors = self.result.errors
        if errors and len(errors) == len(valid):
            # Nothing could be read (the registry went away after the catalog): a failed run.
            raise registry.RegistryError(f"No repository could be read: {errors[0]}")
        self._progress(
            message=f"done; {len(errors)} repositories could not be read, first: {errors[0]}"
            if errors
            else "done",
            force=True,
        )
        return self.result

    def _feed(self):
        """Start listing more repositories while fewer than `window` are in flight."""
        while self.in_flight < self.window:
            name = next(self.waiting, None)
            if name is None:
                return
            self.in_flight += 1
            self._submit(self._list_tags, _RepositoryScan(name))

    # Work items run on pool threads and only speak HTTP; their results come back through
    # self.events and are applied here, on the calling thread.
    def _submit(self, function, *args):
        self.outstanding += 1
        future = self.pool.submit(function, *args)
        future.add_done_callback(lambda f: self.events.put((function, args, f)))

    def _drain(self):
        while self.outstanding:
            function, args, future = self.events.get()
            self.outstanding -= 1
            error = future.exception()
            if function == self._list_tags:
                self._on_tags_listed(args[0], future.result() if error is None else error)
            elif function == self._head:
                self._on_head(args[0], args[1], future.result() if error is None else error)
            else:
                self._on_details(args[1], future.result() if error is None else error)

    @staticmethod
    def _list_tags(scan):
        scan.listed_at = timezone.now()
        return registry.get_client().list_tags(scan.name)

    @staticmethod
    def _head(scan, tag):
        return registry.get_client().head_manifest(scan.name, tag)

    def _details(self, repository, digest):
        return fetch_details(registry.get_client(), repository, digest, self.configs)

    def _on_tags_listed(self, scan, tags):
        if isinstance(tags, registry.RegistryNotFound):
            tags = []  # distribution v3 answers NAME_UNKNOWN for a repository without tags
        if isinstance(tags, Exception):
            self._fail(scan, tags)
            return
        valid = [tag for tag in dict.fromkeys(tags) if references.is_valid_tag(tag)]
        self.result.skipped_names += len(tags) - len(valid)
        self.result.tags += len(valid)
        scan.pending = len(valid)
        if not valid:
            self._apply(scan)
        for tag in valid:
            self._submit(self._head, scan, tag)

    def _on_head(self, scan, tag, ref):
        self.result.heads += 1
        if isinstance(ref, registry.RegistryNotFound):
            pass  # deleted between the listing and the HEAD: absent
        elif isinstance(ref, Exception):
            scan.error = scan.error or str(ref)
        else:
            scan.tags[tag] = ref
        scan.pending -= 1
        if scan.pending == 0:
            if scan.error:
                self._fail(scan, scan.error)
            else:
                self._apply(scan)

    def _fail(self, scan, error):
        # A repository that could not be read completely keeps its index rows as they were.
        self.result.errors.append(f"{scan.name}: {error}")
        logger.warning("reconcile of %s incomplete: %s", scan.name, error)
        self._repository_done()

    def _apply(self, scan):
        changes = apply_repository(scan.name, scan.tags, scan.listed_at, refresh=False)
        self.synced.append(changes["repository_id"])
        if changes["stale"]:
            self.stale_counters.add(changes["repository_id"])
        for ref in scan.tags.values():
            # Only digests still to fetch: their details change these repositories' sizes.
            if ref.digest not in self.known:
                holders = self.repositories_by_digest.setdefault(ref.digest, set())
                holders.add(changes["repository_id"])
        self.result.tags_added += changes["added"]
        self.result.tags_changed += changes["changed"]
        self.result.tags_removed += changes["removed"]
        for ref in scan.tags.values():
            if ref.digest not in self.known and ref.digest not in self.fetching:
                self.fetching.add(ref.digest)
                self._submit(self._details, scan.name, ref.digest)
        self._repository_done()

    def _on_details(self, digest, fields):
        self.fetching.discard(digest)
        if isinstance(fields, Exception):
            self.result.details_failed += 1
            store_details_error(digest, fields)
            logger.warning("details of %s failed: %s", digest, fields)
            return
        self.known.add(digest)
        self.result.details_fetched += 1
        store_details(digest, fields, refresh=False)
        self.stale_counters |= self.repositories_by_digest.pop(digest, set())

    def _repository_done(self):
        self.done_repositories += 1
        self.in_flight -= 1
        self._feed()
        self._progress()

    def _flush(self):
        """Write the batched counters and `synced_at` stamps."""
        if self.stale_counters:
            refresh_stats_of(self.stale_counters)
            self.stale_counters = set()
        now = timezone.now()
        for batch in pk_batches(Repository, self.synced):
            batch.update(synced_at=now)
        self.synced = []

    def _progress(self, message=None, force=False):
        now = time.monotonic()
        if not force and now - self.last_progress < _PROGRESS_EVERY_SECONDS:
            return
        self.last_progress = now
        self._flush()
        if self.run is None:
            return
        report_progress(
            self.run,
            done=self.done_repositories,
            total=getattr(self, "total", None),
            message=message or f"{self.done_repositories} of {self.total} repositories",
        )

    def _remove_vanished(self, names, started):
        # Repositories a notification created after the catalog was read stay.
        vanished = [
            pk
            for pk, name in Repository.objects.filter(first_seen_at__lt=started).values_list(
                "pk", "name"
            )
            if name not in names
        ]
        for batch in pk_batches(Repository, vanished):
            with transaction.atomic():
                # Their rows before their tags, as every writer of tags takes them; a push
                # notification indexed since the catalog was read means the repository is back.
                locked = list(batch.select_for_update().order_by("pk").values_list("pk", flat=True))
                pushed_since = set(
                    Tag.objects.filter(repository_id__in=locked, updated_at__gte=started)
                    .values_list("repository_id", flat=True)
                    .distinct()
                )
                doomed = [pk for pk in locked if pk not in pushed_since]
                Repository.objects.filter(pk__in=doomed).delete()  # tags by CASCADE
            self.result.repositories_removed += len(doomed)

    def _prune_manifests(self, started):
        """Drop manifests no tag points at any more (not ones a notification just added)."""
        # The database compares (the tag digest index), not a set of every digest in memory.
        orphans = list(
            Manifest.objects.filter(first_seen_at__lt=started)
            .filter(~Exists(Tag.objects.filter(digest=OuterRef("digest"))))
            .values_list("pk", flat=True)
        )
        for batch in pk_batches(Manifest, orphans):
            batch.delete()


def apply_repository(name, found, listed_at, refresh=True):
    """Make the index's tags of `name` equal `found` ({tag: ManifestRef}); returns counts, the
    repository's id and whether its counters are stale (then refreshed here with `refresh`,
    else left to the caller, who batches them).

    Tags a notification wrote after `listed_at` are newer than what we saw and stay as they are.
    """
    now = timezone.now()
    counts = {"added": 0, "changed": 0, "removed": 0}
    with transaction.atomic():
        created = bool(create_repositories([name]))
        # Its row before its tags, as every writer of tags takes them.
        repository = locked_repository(name)
        if repository is None:
            # Deleted whole (repository_delete) in between: recorded again as listed, as a late
            # event would be; the next reconcile finds the registry without it.
            locked_repositories([name])
            repository, created = locked_repository(name), True
        # The first reconcile of a repository cannot know when its tags were pushed.
        first_look = created or (repository.synced_at is None and not repository.tags.exists())
        existing = {tag.name: tag for tag in Tag.objects.filter(repository=repository)}
        manifests = _ensure_manifests(found.values())
        new_tags, moved = [], []
        for tag_name, ref in found.items():
            tag = existing.get(tag_name)
            if tag is None:
                new_tags.append(
                    Tag(
                        repository=repository,
                        name=tag_name,
                        digest=ref.digest,
                        manifest=manifests[ref.digest],
                        pushed_at=None if first_look else now,
                    )
                )
            elif tag.digest != ref.digest and (listed_at is None or tag.updated_at < listed_at):
                tag.digest, tag.manifest, tag.pushed_at = ref.digest, manifests[ref.digest], now
                tag.updated_at = now
                moved.append(tag)
            elif tag.manifest_id is None:
                tag.manifest, tag.updated_at = manifests[ref.digest], now
                moved.append(tag)
        gone = [
            tag.pk
            for tag_name, tag in existing.items()
            if tag_name not in found and (listed_at is None or tag.updated_at < listed_at)
        ]
        Tag.objects.bulk_create(new_tags, ignore_conflicts=True)
        Tag.objects.bulk_update(moved, ["digest", "manifest", "pushed_at", "updated_at"])
        Tag.objects.filter(pk__in=gone).delete()
        stale = bool(new_tags or moved or gone or created or repository.is_empty != (not found))
        counts.update(added=len(new_tags), changed=len(moved), removed=len(gone))
        if refresh:
            if stale:
                refresh_stats_of([repository.pk])
            Repository.objects.filter(pk=repository.pk).update(synced_at=now)
    return {**counts, "repository_id": repository.pk, "stale": stale}


def _ensure_manifests(refs):
    """{digest: Manifest} for the refs, creating bare rows for digests never seen."""
    by_digest = {ref.digest: ref for ref in refs}
    manifests = {m.digest: m for m in Manifest.objects.filter(digest__in=list(by_digest))}
    missing = [
        Manifest(digest=digest, media_type=ref.media_type, manifest_size=ref.size)
        for digest, ref in by_digest.items()
        if digest not in manifests
    ]
    if missing:
        Manifest.objects.bulk_create(missing, ignore_conflicts=True)
        manifests.update(
            {m.digest: m for m in Manifest.objects.filter(digest__in=[m.digest for m in missing])}
        )
    return manifests


def reconcile_job(run):
    """Job kind "sync": the reconcile, with progress on the run."""
    concurrency = (run.options or {}).get("concurrency")
    if not isinstance(concurrency, int) or not 1 <= concurrency <= 64:
        concurrency = None
    return reconcile(run, concurrency).as_dict()


# --- Details for digests added by notifications --------------------------------------------


def _pending_details(limit=500):
    return list(
        Manifest.objects.filter(
            details_fetched_at__isnull=True, details_error="", tags__isnull=False
        )
        .values_list("digest", flat=True)
        .distinct()[:limit]
    )


def details_job(run):
    """Job kind "details": fetch manifest + config for tagged digests that lack them, until
    none is left (pushes arriving meanwhile are picked up by the next batch)."""
    fetched = failed = 0
    configs, seen = {}, set()
    client = registry.get_client()
    while pending := [digest for digest in _pending_details() if digest not in seen]:
        seen.update(pending)
        for digest in pending:
            tag = Tag.objects.filter(digest=digest).select_related("repository").first()
            if tag is None:
                continue
            try:
                fields = fetch_details(client, tag.repository.name, digest, configs)
            except registry.RegistryNotFound as exc:
                store_details_error(digest, exc)
                failed += 1
            except registry.RegistryError as exc:
                # Registry down: leave the rest pending for the next run or reconcile.
                logger.warning("details of %s failed: %s", digest, exc)
                report_progress(run, done=fetched + failed, message=str(exc))
                return {"fetched": fetched, "failed": failed + 1, "error": str(exc)}
            else:
                store_details(digest, fields)
                fetched += 1
            report_progress(run, done=fetched + failed)
    return {"fetched": fetched, "failed": failed}
