"""The online collector: the blobs no manifest references go while the registry keeps serving.

The protocol, its phases and every race it closes are in docs/online-collector.md; this module
follows it step by step. In short: recover what a killed run left, mark (the registry
collector's rule, on one listing), take candidates' links away, settle and re-mark (a push may
have overtaken us), move the data into a trash on the registry's own storage, settle and
re-check (restore what turned out needed), and purge the trash only on a later run, after one
more check. `CollectedBlob` rows are the checkpoint; the trash is self-describing
(`oyster-trash/<batch>/sha256/<hex>`), so even without them nothing is lost.

Outside systems are reached only through `storage` (listings, reads, writes) and the registry
client (`forget_blob`, with a blob-descriptor cache).
"""

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q, Sum, Value
from django.db.models.functions import Concat, Substr
from django.utils import timezone

from . import quotas, recycle_bin, registry, storage, worker
from .models import AuditEvent, CollectedBlob, JobKind, PortalAction, Run
from .models.batches import batched
from .references import MANIFEST_MEDIA_TYPES, RegistryAction
from .storage.layout import REPOSITORIES, V2_PREFIX, blob_path
from .storage.scan import MANIFEST_MAX_BYTES, mark, relist, relist_pruner, unmarked
from .usage import ManifestReferenceCache

logger = logging.getLogger(__name__)

TRASH_PREFIX = "oyster-trash/"
PROBE_PATH = TRASH_PREFIX + ".write-probe"
# Objects moved, deleted or linked per storage call and per checkpoint.
BATCH = 500
# How often the settle phase looks for clients naming an unlinked blob.
SETTLE_POLL_SECONDS = 0.05
# What a client does with a blob it may rely on next: a HEAD or GET, an upload, a mount.
USES = (RegistryAction.PULL, RegistryAction.PUSH, RegistryAction.MOUNT)
# Audit rows below the last id seen that a later look reads again (see _events_since_watch).
EVENT_ID_SLACK = 1000
State = CollectedBlob.State


class OnlineGcError(Exception):
    """The online collector cannot run; str() says why and what to do."""


@dataclass
class OnlineGcResult:
    dry_run: bool
    # What the registry's collector would delete (the scan's "reclaimable").
    unreferenced_count: int = 0
    unreferenced_bytes: int = 0
    # Unreferenced but younger than GC_GRACE_MINUTES (data or a link): kept this time.
    young_count: int = 0
    young_bytes: int = 0
    candidate_count: int = 0
    candidate_bytes: int = 0
    # Unreferenced and old, but a client named them in the grace period (a HEAD before a push,
    # a pull, an upload or mount): in use, kept this time.
    in_use_count: int = 0
    # Unreferenced, but the recycle bin holds them (a delete still restorable): kept.
    held_count: int = 0
    held_bytes: int = 0
    # Unreferenced manifests left in place because the registry has a blob-descriptor cache:
    # it would accept the same manifest again without writing its bytes (docs: R4).
    manifest_kept_count: int = 0
    manifest_kept_bytes: int = 0
    # Candidates a re-mark found needed again (a push overtook the run).
    kept_count: int = 0
    trashed_count: int = 0
    trashed_bytes: int = 0
    restored_count: int = 0
    restored_bytes: int = 0
    # Needed again, but the registry had written the data anew itself (an upload): the trash
    # copy is dropped.
    rewritten_count: int = 0
    relinked: int = 0
    purged_count: int = 0
    purged_bytes: int = 0
    # What stays in the trash after this run (purged by a later one).
    trash_count: int = 0
    trash_bytes: int = 0
    phases: dict = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self):
        return asdict(self)


def looks_like_manifest(content):
    """Whether `content` is an image manifest, index or manifest list (not a config: those
    have no schemaVersion)."""
    try:
        document = json.loads(content or b"")
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(document, dict) or "schemaVersion" not in document:
        return False
    return document.get("mediaType") in MANIFEST_MEDIA_TYPES or any(
        key in document for key in ("layers", "manifests", "fsLayers")
    )


def hex_of(digest):
    return digest.split(":", 1)[1]


def data_path(digest):
    return blob_path(bytes.fromhex(hex_of(digest)))


def link_path(repository, digest):
    return f"{REPOSITORIES}{repository}/_layers/sha256/{hex_of(digest)}/link"


def safety_problem():
    """Why an online run would be unsafe here (a sentence), or ""."""
    if settings.REGISTRY_BLOB_CACHE == "inmemory" and settings.REGISTRY_INSTANCES > 1:
        return (
            f"REGISTRY_INSTANCES={settings.REGISTRY_INSTANCES} with REGISTRY_BLOB_CACHE=inmemory: "
            "each registry process keeps its own blob cache, and the collector can clear it in "
            "only one of them, so another could accept a push of a blob the collector took away. "
            "Give the registries a shared Redis cache (storage.cache.blobdescriptor: redis) or "
            "none, and set REGISTRY_BLOB_CACHE to match."
        )
    return ""


def check_can_write(backend):
    """Write and delete a probe object: the collector needs both (a StorageError if not)."""
    backend.write_object(PROBE_PATH, b"oyster online collector write probe\n")
    backend.delete_objects([PROBE_PATH])


class _Run:
    """One run of the protocol; `execute()` returns an OnlineGcResult."""

    def __init__(self, run, dry_run, actor, progress, backend=None, client=None):
        self.run = run
        self.dry_run = dry_run
        self.actor = actor
        self.report = progress or (lambda message, done=None, total=None: None)
        self.backend = backend or storage.get_backend()
        self.client = client
        self.result = OnlineGcResult(dry_run=dry_run)
        self.started = time.monotonic()
        self.now = timezone.now()
        stamp = self.now.strftime("%Y%m%dT%H%M%S")
        self.batch = f"{stamp}-{run.pk if run else 'direct'}"
        self.trash = {}  # sha256:<hex> -> [trash paths]
        self.trashed_ids = []

    # --- Reading, with the trash as a fallback ---

    def read(self, path, max_bytes):
        content = self.backend.read(path, max_bytes)
        if content is None and path.startswith(V2_PREFIX + "blobs/"):
            # A manifest whose bytes are in the trash (docs: R4) still has references.
            digest = "sha256:" + path.rsplit("/", 2)[-2]
            for trashed in self.trash.get(digest, ()):
                content = self.backend.read(trashed, max_bytes)
                if content is not None:
                    break
        return content

    def _phase(self, name):
        self.result.phases[name] = round(time.monotonic() - self.started, 2)
        self.report(name)

    def _relist(self, watched, known_revisions):
        """relist() over `repositories/`, for digests given as sha256:<hex> strings."""
        raw = {bytes.fromhex(hex_of(digest)) for digest in watched}
        found = relist(
            self.backend.list_entries(REPOSITORIES, relist_pruner(raw, known_revisions)),
            self.read,
            raw,
            known_revisions,
            read_concurrency=settings.STORAGE_READ_CONCURRENCY,
            cache=ManifestReferenceCache(),
        )
        linked = {"sha256:" + d.hex(): names for d, names in found.linked.items()}
        referenced = {"sha256:" + d.hex() for d in found.referenced}
        return linked, referenced

    # --- The run ---

    def execute(self):
        problem = safety_problem()
        if problem:
            raise OnlineGcError(f"{problem} Nothing was changed.")
        if not self.dry_run:
            check_can_write(self.backend)
        self._phase("Recovering what earlier runs left, purging the old trash")
        self.recover()
        self._phase("Marking: listing the storage and reading the linked manifests")
        candidates = self.mark()
        if self.dry_run:
            self._finish()
            return self.result
        self._phase(f"Unlinking {len(candidates):,} unreferenced blobs")
        rows = self.unlink(candidates)
        if rows:
            self._phase("Waiting for pushes in flight, then re-marking")
            rows = self.remark(self.settle(rows))
        self._phase(f"Moving {len(rows):,} blobs into the trash")
        self.sweep(rows)
        if self.trashed_ids:
            self._phase("Waiting, then checking nothing new needs what went")
            time.sleep(settings.GC_SETTLE_SECONDS)
            self.recheck()
        self._finish()
        AuditEvent.objects.log_portal_action(
            self.actor, PortalAction.ONLINE_GC, detail=self.result.as_dict()
        )
        return self.result

    def _finish(self):
        trash = CollectedBlob.objects.filter(state=State.TRASHED)
        self.result.trash_count = trash.count()
        self.result.trash_bytes = sum(trash.values_list("size", flat=True))
        self.result.seconds = round(time.monotonic() - self.started, 2)

    # Phase 0

    def recover(self):
        """Restore what is needed again, purge what waited long enough, put back links a
        killed run took from blobs that turned out needed."""
        trashed_at = {}
        for path, _, _ in self.backend.list_entries(TRASH_PREFIX):
            parts = path[len(TRASH_PREFIX) :].split("/")
            if len(parts) == 3 and parts[1] == "sha256" and len(parts[2]) == 64:
                digest = "sha256:" + parts[2]
                self.trash.setdefault(digest, []).append(path)
                # The batch's name starts with when it was made: the age even without a row.
                when = _batch_time(parts[0])
                trashed_at[digest] = max(trashed_at.get(digest, when), when)
        unlinked = list(CollectedBlob.objects.filter(state__in=[State.CANDIDATE, State.UNLINKED]))
        rows = {row.digest: row for row in CollectedBlob.objects.filter(state=State.TRASHED)}
        # Checkpointed as trashed, but the move never happened (killed in between).
        unmoved = [row for digest, row in rows.items() if digest not in self.trash]
        watched = set(self.trash) | {row.digest for row in unlinked + unmoved}
        if not watched:
            return
        self._watch_events()
        linked, referenced = self._relist(watched, {})
        needed = set(linked) | referenced
        purge_before = self.now - timedelta(hours=settings.GC_TRASH_HOURS)
        old = []
        for digest, paths in list(self.trash.items()):
            if digest in needed:
                if not self.dry_run:
                    self._restore(digest, paths, rows.get(digest), relink=digest in referenced)
            elif trashed_at[digest] < purge_before:
                old.append(digest)
        if self.dry_run:
            return
        self._purge(old, rows)
        for row in unmoved:
            if self.backend.object_exists(data_path(row.digest)):
                if row.digest in referenced:
                    self._relink(row)
                row.state = State.KEPT  # its data never left; the mark decides again
            else:
                row.state = State.PURGED  # neither in place nor in the trash
            row.save(update_fields=["state", "updated_at"])
        for row in unlinked:
            if row.digest in referenced:
                self._relink(row)
                row.state = State.KEPT
                row.save(update_fields=["state", "updated_at"])
            else:
                # Still garbage: this run's mark takes it up again.
                row.delete()

    def _purge(self, digests, rows):
        """Delete for good the trash of `digests` (old enough), BATCH at a time."""
        for batch in batched(digests, BATCH):
            # Gone for good in a moment: a client naming one right now keeps it (as R11), and
            # so does a restore asked for meanwhile.
            self._events_since_watch()
            ids = [rows[digest].pk for digest in batch if digest in rows]
            requested = set(
                CollectedBlob.objects.filter(pk__in=ids, restore_requested=True).values_list(
                    "digest", flat=True
                )
            )
            batch = [d for d in batch if d not in self.used and d not in requested]
            if not batch:
                continue
            self.backend.delete_objects(path for digest in batch for path in self.trash[digest])
            gone = [rows[digest] for digest in batch if digest in rows]
            self.result.purged_count += len(batch)
            self.result.purged_bytes += sum(row.size for row in gone)
            CollectedBlob.objects.filter(pk__in=[row.pk for row in gone]).update(
                state=State.PURGED, updated_at=timezone.now()
            )
            for row in gone:
                row.state = State.PURGED
            for digest in batch:
                del self.trash[digest]
            self.report("Purging the old trash", self.result.purged_count, len(digests))

    def _restore(self, digest, paths, row, relink):
        home = data_path(digest)
        if self.backend.object_exists(home):
            # The registry wrote it again itself (an upload after the move).
            self.backend.delete_objects(paths)
            self.result.rewritten_count += 1
        else:
            # The first copy that is still there goes home (a path can be stale: a blob
            # restored once and collected again has had two), the others are dropped.
            copies = list(paths)
            while copies and not self.backend.move_objects([(copies.pop(0), home)]):
                pass
            self.backend.delete_objects(copies)
            self.result.restored_count += 1
            self.result.restored_bytes += row.size if row is not None else 0
            logger.warning("online collector: %s was needed again: back from the trash", digest)
        self.trash.pop(digest, None)
        if row is not None:
            if relink:
                self._relink(row)
            row.state, row.restore_requested = State.RESTORED, False
            row.save(update_fields=["state", "restore_requested", "updated_at"])

    def _relink(self, row):
        for repository in row.unlinked_from:
            path = link_path(repository, row.digest)
            if not self.backend.object_exists(path):
                self.backend.write_object(path, row.digest.encode())
                self.result.relinked += 1

    # Phase 1

    def mark(self):
        def progress(done, total, message):
            self.report(message, done, total)

        self.marked = mark(
            self.backend.list_entries(V2_PREFIX, unmarked),
            self.read,
            read_concurrency=settings.STORAGE_READ_CONCURRENCY,
            cache=ManifestReferenceCache(),
            progress=progress,
        )
        young_before = (self.now - timedelta(minutes=settings.GC_GRACE_MINUTES)).timestamp()
        # Read after the listing: an item recorded since holds blobs a live revision still
        # marked at listing time (docs/recycle-bin.md, "Holding").
        held = recycle_bin.held_raw_digests()
        self._watch_events()
        candidates = []
        for blob in self.marked.unreferenced:
            self.result.unreferenced_count += 1
            self.result.unreferenced_bytes += blob.size
            if blob.modified >= young_before or any(t >= young_before for _, t in blob.links):
                self.result.young_count += 1
                self.result.young_bytes += blob.size
                continue
            if "sha256:" + blob.digest.hex() in self.used:
                self.result.in_use_count += 1
                continue
            if blob.digest in held:
                # The recycle bin keeps it: never a candidate, so its links stay too.
                self.result.held_count += 1
                self.result.held_bytes += blob.size
                continue
            candidates.append(blob)
            self.result.candidate_count += 1
            self.result.candidate_bytes += blob.size
        self.marked.unreferenced = None
        if settings.REGISTRY_BLOB_CACHE != "none":
            candidates = self._without_manifests(candidates)
        return candidates

    def _without_manifests(self, candidates):
        """The candidates that are not manifests. A registry with a blob-descriptor cache
        answers "exists" from it for a manifest's bytes long after they went, so a manifest
        pushed again would be stored without them, after any trash purge too: manifests (a few
        KB each) stay where they are."""
        small = [blob for blob in candidates if blob.size <= MANIFEST_MAX_BYTES]
        known = ManifestReferenceCache().lookup([blob.digest for blob in small])

        def is_manifest(blob):
            if blob.digest in known:
                return True
            return looks_like_manifest(self.backend.read(blob_path(blob.digest), blob.size))

        with ThreadPoolExecutor(max(1, settings.STORAGE_READ_CONCURRENCY)) as pool:
            manifests = {
                blob.digest
                for blob, yes in zip(small, pool.map(is_manifest, small), strict=True)
                if yes
            }
        for blob in candidates:
            if blob.digest in manifests:
                self.result.manifest_kept_count += 1
                self.result.manifest_kept_bytes += blob.size
                self.result.candidate_count -= 1
                self.result.candidate_bytes -= blob.size
        return [blob for blob in candidates if blob.digest not in manifests]

    # Phase 2

    def _watch_events(self):
        """The digests registry events named within the grace period (forged or not: an event
        can only make the collector keep more)."""
        since = self.now - timedelta(minutes=settings.GC_GRACE_MINUTES)
        self.last_event = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
        self.used = set(
            AuditEvent.objects.filter(
                timestamp__gte=since, source=AuditEvent.Source.REGISTRY, action__in=USES
            )
            .exclude(digest="")
            .values_list("digest", flat=True)
        )

    def _events_since_watch(self):
        """Add what arrived since: rows a little below the last id seen are read again, since
        concurrent inserts commit out of id order on PostgreSQL."""
        newer = AuditEvent.objects.filter(
            pk__gt=(self.last_event or 0) - EVENT_ID_SLACK,
            timestamp__gte=self.now - timedelta(minutes=settings.GC_GRACE_MINUTES),
            source=AuditEvent.Source.REGISTRY,
            action__in=USES,
        ).exclude(digest="")
        for pk, digest in newer.values_list("pk", "digest").iterator():
            self.used.add(digest)
            self.last_event = max(self.last_event or 0, pk)

    def unlink(self, candidates):
        rows = []
        for batch in batched(candidates, BATCH):
            # Right before its links go: a client that just saw the blob (a HEAD before its
            # manifest PUT) would find the link gone and fail its push (docs: R11).
            self._events_since_watch()
            in_use = [blob for blob in batch if "sha256:" + blob.digest.hex() in self.used]
            self.result.in_use_count += len(in_use)
            self.result.candidate_count -= len(in_use)
            self.result.candidate_bytes -= sum(blob.size for blob in in_use)
            batch = [blob for blob in batch if "sha256:" + blob.digest.hex() not in self.used]
            if not batch:
                continue
            created = CollectedBlob.objects.bulk_create(
                [
                    CollectedBlob(
                        run=self.run,
                        digest="sha256:" + blob.digest.hex(),
                        size=blob.size,
                        unlinked_from=sorted({name for name, _ in blob.links}),
                    )
                    for blob in batch
                ]
            )
            self.backend.delete_objects(
                link_path(name, row.digest) for row in created for name in row.unlinked_from
            )
            CollectedBlob.objects.filter(pk__in=[row.pk for row in created]).update(
                state=State.UNLINKED
            )
            rows.extend(created)
            self.report("Unlinking", len(rows), len(candidates))
        if settings.REGISTRY_BLOB_CACHE != "none":
            rows = self._forget_cached(rows)
        return rows

    def _forget_cached(self, rows):
        """One API DELETE per removed link: the registry's cached descriptor goes too. A blob
        whose cache could not be cleared keeps its data (and gets its links back)."""
        pairs = [(row, name) for row in rows for name in row.unlinked_from]

        def forget(pair):
            row, name = pair
            try:
                client = self.client or registry.get_client()
                client.forget_blob(name, row.digest)
                return None
            except registry.RegistryError as exc:
                return row, str(exc)

        failed = {}
        with ThreadPoolExecutor(max(1, settings.SYNC_CONCURRENCY)) as pool:
            for outcome in pool.map(forget, pairs):
                if outcome is not None:
                    failed[outcome[0].pk] = outcome
        for row, reason in failed.values():
            logger.warning("online collector: keeping %s (%s)", row.digest, reason)
            self._relink(row)
            row.state = State.KEPT
            row.save(update_fields=["state", "updated_at"])
            self.result.kept_count += 1
        return [row for row in rows if row.pk not in failed]

    # Phase 3

    def settle(self, rows):
        """Wait GC_SETTLE_SECONDS for manifest PUTs in flight, putting links back at once for
        any blob a client names meanwhile (a HEAD just before its link went: its push's
        manifest PUT is coming, and would fail without the link; docs: R11)."""
        deadline = time.monotonic() + settings.GC_SETTLE_SECONDS
        while True:
            self._events_since_watch()
            used = [row for row in rows if row.digest in self.used]
            for row in used:
                self._relink(row)
                row.state = State.KEPT
                row.save(update_fields=["state", "updated_at"])
                self.result.kept_count += 1
            if used:
                rows = [row for row in rows if row.digest not in self.used]
            left = deadline - time.monotonic()
            if left <= 0:
                return rows
            time.sleep(min(SETTLE_POLL_SECONDS, left))

    def remark(self, rows):
        if not rows:
            return rows
        linked, referenced = self._relist({row.digest for row in rows}, self.marked.revisions)
        remaining = []
        for row in rows:
            if row.digest in referenced or row.digest in linked:
                if row.digest in referenced:
                    self._relink(row)
                row.state = State.KEPT
                row.save(update_fields=["state", "updated_at"])
                self.result.kept_count += 1
            else:
                remaining.append(row)
        return remaining

    # Phase 4

    def sweep(self, rows):
        done = 0
        self.trashed_ids = [row.pk for row in rows]
        for batch in batched(rows, BATCH):
            # Right before the data goes: a client that just mounted or uploaded it (its
            # manifest PUT still to come) keeps it, with the links the run took put back.
            self._events_since_watch()
            for row in [row for row in batch if row.digest in self.used]:
                self._relink(row)
                row.state = State.KEPT
                row.save(update_fields=["state", "updated_at"])
                self.result.kept_count += 1
                self.trashed_ids.remove(row.pk)
            batch = [row for row in batch if row.digest not in self.used]
            if not batch:
                continue
            moves = []
            trash_prefix = f"{TRASH_PREFIX}{self.batch}/sha256/"
            moved_at = timezone.now()
            for row in batch:
                row.trash_path = trash_prefix + hex_of(row.digest)
                row.state, row.trashed_at = State.TRASHED, moved_at
                moves.append((data_path(row.digest), row.trash_path))
            # Checkpoint first: a run killed during the moves finds them in the trash listing.
            # One UPDATE computing each path from the digest ("sha256:" is 7 characters): a
            # bulk_update builds a CASE per row and field, 7 s of Python per 20,000 rows.
            CollectedBlob.objects.filter(pk__in=[row.pk for row in batch]).update(
                state=State.TRASHED,
                trashed_at=moved_at,
                updated_at=moved_at,
                trash_path=Concat(Value(trash_prefix), Substr("digest", len("sha256:") + 1)),
            )
            self.backend.move_objects(moves)
            for row in batch:
                self.trash.setdefault(row.digest, []).append(row.trash_path)
                self.result.trashed_count += 1
                self.result.trashed_bytes += row.size
            done += len(batch)
            self.report("Moving into the trash", done, len(rows))

    # Phase 5

    def recheck(self):
        rows = list(CollectedBlob.objects.filter(pk__in=self.trashed_ids, state=State.TRASHED))
        if not rows:
            return
        linked, referenced = self._relist({row.digest for row in rows}, self.marked.revisions)
        for row in rows:
            if row.digest in linked or row.digest in referenced:
                self._restore(
                    row.digest, self.trash[row.digest], row, relink=row.digest in referenced
                )
                self.result.trashed_bytes -= row.size
                self.result.trashed_count -= 1


def _batch_time(name):
    """When a trash batch was made, from its name (`20261207T021500-<run>`); now for a name that
    does not start with a time (so it is never purged early)."""
    try:
        return datetime.strptime(name[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return timezone.now()


def collect_online(actor, dry_run=True, run=None, progress=None, backend=None):
    """One online collection (or its dry run). Returns an OnlineGcResult; raises OnlineGcError
    or storage.StorageError with the reason."""
    result = _Run(run, dry_run, actor, progress, backend=backend).execute()
    if not dry_run:
        quotas.after_collection()
    return result


def online_gc_job(run):
    """Worker job "online_gc": options {"dry_run": bool} (scheduled runs collect for real)."""
    options = run.options or {}

    def progress(message, done=None, total=None):
        worker.report_progress(run, done=done, total=total, message=message)

    result = collect_online(
        run.requested_by or JobKind.ONLINE_GC,
        dry_run=bool(options.get("dry_run", False)),
        run=run,
        progress=progress,
    )
    return result.as_dict()


# --- Restores asked for by notifications ---


def on_events_recorded(sender, events, **kwargs):
    """Receiver of `signals.events_recorded`: a push or mount naming a blob in the trash (an
    upload that found the data just before it moved, a manifest the cache let through) asks
    for its restore at once."""
    digests = {
        event.digest
        for event in events
        if event.digest and event.action in (RegistryAction.PUSH, RegistryAction.MOUNT)
    }
    if not digests:
        return
    flagged = CollectedBlob.objects.filter(
        Q(digest__in=digests), state=State.TRASHED, restore_requested=False
    ).update(restore_requested=True)
    if flagged:
        worker.request_run(JobKind.GC_RESTORE)


def restore_job(run):
    """Worker job "gc_restore": bring back every trashed blob a notification asked for."""
    backend = storage.get_backend()
    restorer = _Run(run, False, run.requested_by or JobKind.GC_RESTORE, None, backend=backend)
    for row in CollectedBlob.objects.filter(state=State.TRASHED, restore_requested=True):
        restorer._restore(row.digest, [row.trash_path], row, relink=False)
    return {
        "restored": restorer.result.restored_count,
        "restored_bytes": restorer.result.restored_bytes,
        "rewritten": restorer.result.rewritten_count,
    }


# --- What the Storage page and the dashboard show ---

# A real run started from the Storage page needs a dry run this recent: its figures are what the
# admin looked at before collecting.
DRY_RUN_FRESH = timedelta(hours=1)


def _runs(dry_run):
    runs = Run.objects.filter(kind=JobKind.ONLINE_GC)
    if dry_run:
        return runs.filter(options__dry_run=True)
    # Scheduled runs carry no options at all: they collect.
    return runs.filter(Q(options__dry_run=False) | ~Q(options__has_key="dry_run"))


def latest_run(dry_run):
    """The latest online dry run (or real run), whatever its state, or None."""
    return _runs(dry_run).order_by("-requested_at").first()


def last_finished(dry_run):
    """The latest online dry run (or real run) that finished without error, or None."""
    return _runs(dry_run).filter(state=Run.State.DONE).order_by("-finished_at").first()


def trash_totals():
    """(count, bytes) of the blobs in the trash now, by their rows."""
    totals = CollectedBlob.objects.filter(state=State.TRASHED).aggregate(
        count=Count("pk"), size=Sum("size")
    )
    return totals["count"], totals["size"] or 0


def dry_run_refusal(now=None):
    """Why the latest dry run does not let a real run start from the Storage page (a sentence),
    or "" when it finished without error within DRY_RUN_FRESH."""
    dry = latest_run(dry_run=True)
    if dry is None:
        return "Run a dry run first: it shows what the collection would take away."
    if dry.is_active:
        return "The dry run has not finished yet: collect once its figures are shown."
    if dry.state != Run.State.DONE:
        return "The last dry run failed: run it again, and collect once it has finished."
    if dry.finished_at < (now or timezone.now()) - DRY_RUN_FRESH:
        return "The last dry run finished more than an hour ago: run it again before collecting."
    return ""


def collect_refusal(now=None):
    """Why the Storage page must not start a real run now (a sentence), or "": the setup is
    unsafe (safety_problem), or no dry run finished within DRY_RUN_FRESH (dry_run_refusal)."""
    return safety_problem() or dry_run_refusal(now)
