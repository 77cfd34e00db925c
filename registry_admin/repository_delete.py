"""Deleting a whole repository so that it leaves the registry's catalog (issue #29, part 2).

The protocol, race by race, is docs/recycle-bin.md "Delete a repository"; this module follows
it step by step:

0. the plan: live tags (the registry), every revision, layer link and upload (a storage
   listing of `repositories/<name>/`), unique bytes (the latest scan);
1. every revision, tagged or not, deleted through the one delete path (the recycle bin holds
   it, reason "repository delete"); an index's children go with their parent's item;
2. every layer link left: `DELETE /v2/<name>/blobs/<digest>` (the registry's cache forgets it);
3. the re-check: anything not deleted by us (a revision, tag or layer link) or an upload
   younger than GC_GRACE_MINUTES is a client pushing: stop, the repository stays;
4. what is left goes: on the filesystem `_manifests/`, `_layers/` and `_uploads/` are renamed
   into Oyster's trash, then the moved trees are inspected and any link in them (a client's,
   written after step 3's listing) is moved back, never over what a client wrote meanwhile, and
   the repository stays; on Azure the objects step 3 listed are deleted and the repository
   listed again: anything left is a client's;
5. the index drops the repository; the audit log gets `repository.deleted`.

One delete per repository at a time (a lease row, as the worker's jobs take theirs). It needs
write access to the registry's storage, as the online collector does.
"""

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from . import (
    deletes,
    index,
    online_gc,
    quotas,
    recycle_bin,
    references,
    registry,
    storage,
    usage,
    worker,
)
from .models import AuditEvent, JobKind, JobLease, PortalAction
from .storage.layout import REPOSITORIES

logger = logging.getLogger(__name__)

REASON = "repository delete"
TRASH = "oyster-trash/repositories/"
# The repository's own directories; anything else under its name is a nested repository's.
OWN = ("_manifests", "_layers", "_uploads")
LEASE_PREFIX = "repository_delete:"
# A trash batch this old was left by a delete that died between its moves and its inspection.
STALE_BATCH = timedelta(minutes=10)
WRITE_ACCESS = (
    "Deleting a repository needs write access to the registry's storage (STORAGE_BACKEND and, "
    "on the filesystem, a writable STORAGE_FILESYSTEM_ROOT; on Azure, Storage Blob Data "
    "Contributor or a SAS with sp=rwdl), as the online collector does."
)


class RepositoryDeleteError(Exception):
    """The delete cannot start or stopped; str() is a sentence for the page and the shell."""


class RepositoryBusy(RepositoryDeleteError):
    pass


@dataclass
class Contents:
    """What one listing of `repositories/<name>/` found (its own directories only)."""

    revisions: set = field(default_factory=set)
    tag_paths: list = field(default_factory=list)  # any file under _manifests/tags/
    tags: set = field(default_factory=set)  # tags with a current link
    layers: set = field(default_factory=set)
    uploads: dict = field(default_factory=dict)  # upload id -> newest modification time
    others: list = field(default_factory=list)  # (path, modified) of anything else
    paths: list = field(default_factory=list)  # every object, full paths

    @property
    def empty(self):
        return not self.paths


@dataclass
class Plan:
    repository: str
    tags: dict  # tag -> digest, as the registry says now
    images: int  # top manifests: an image, or an index with its children
    revisions: list  # every revision link in storage (and every tagged digest)
    layers: int
    uploads: int
    unique_bytes: int
    scanned_at: object = None
    # tag -> registry.ManifestRef, for the delete itself
    refs: dict = field(default_factory=dict, repr=False)

    def as_dict(self):
        return {
            "repository": self.repository,
            "tags": dict(sorted(self.tags.items())),
            "images": self.images,
            "revisions": self.revisions,
            "layer_links": self.layers,
            "uploads": self.uploads,
            "unique_bytes": self.unique_bytes,
            "scanned_at": self.scanned_at.isoformat() if self.scanned_at else None,
        }


@dataclass
class Outcome:
    repository: str
    dry_run: bool
    deleted: bool = False
    message: str = ""
    tags: list = field(default_factory=list)
    images: int = 0
    unique_bytes: int = 0
    held_items: int = 0
    unlinked_layers: int = 0
    moved_back: int = 0
    # Layer links step 2 took and a client's manifest needed: put back.
    relinked: int = 0
    seconds: float = 0.0
    plan: dict = field(default_factory=dict)

    def as_dict(self):
        return asdict(self)


def _prefix(repository):
    return f"{REPOSITORIES}{repository}/"


def _own(relative):
    return relative.split("/", 1)[0] in OWN


def _backend():
    problem = storage.configuration_problem()
    if problem:
        raise RepositoryDeleteError(f"{problem} {WRITE_ACCESS}")
    try:
        return storage.get_backend()
    except storage.StorageError as exc:
        raise RepositoryDeleteError(f"{exc} {WRITE_ACCESS}") from exc


def list_contents(backend, repository):
    """A Contents of `repository` from one storage listing (nested repositories left out)."""
    prefix = _prefix(repository)

    def prune(path):
        relative = path[len(prefix) :]
        return relative.count("/") == 1 and not _own(relative)

    found = Contents()
    for path, _size, modified in backend.list_entries(prefix, prune):
        relative = path[len(prefix) :]
        if not _own(relative):
            continue
        found.paths.append(path)
        parts = relative.split("/")
        modified = modified or 0
        if parts[0] == "_uploads" and len(parts) > 2:
            found.uploads[parts[1]] = max(found.uploads.get(parts[1], 0), modified)
        elif parts[:3] == ["_manifests", "revisions", "sha256"] and parts[-1] == "link":
            if len(parts) == 5 and len(parts[3]) == 64:
                found.revisions.add("sha256:" + parts[3])
            else:
                found.others.append((path, modified))
        elif parts[:2] == ["_manifests", "tags"]:
            found.tag_paths.append(path)
            if len(parts) == 5 and parts[3:] == ["current", "link"]:
                found.tags.add(parts[2])
        elif parts[:2] == ["_layers", "sha256"] and parts[-1] == "link" and len(parts) == 4:
            found.layers.add("sha256:" + parts[2])
        else:
            found.others.append((path, modified))
    return found


def plan(repository, backend=None):
    """What deleting `repository` would take (a Plan). Raises RepositoryDeleteError,
    InvalidReferenceError, RegistryError or StorageError."""
    references.check_repository(repository)
    backend = backend or _backend()
    contents = list_contents(backend, repository)
    client = registry.get_client()
    try:
        tags = client.list_tags(repository)
    except registry.RegistryNotFound:
        tags = []
    refs = deletes._head_all(repository, tags)
    if contents.empty and not refs:
        raise RepositoryDeleteError(f"The registry has no repository {repository}.")
    summary = usage.storage_summary_for_repository(repository) or {}
    revisions = sorted(contents.revisions | {ref.digest for ref in refs.values()})
    tops, _, _ = split_revisions(deletes.LiveRepository(repository, refs), revisions)
    return Plan(
        repository=repository,
        tags={tag: ref.digest for tag, ref in refs.items()},
        images=len(tops),
        revisions=revisions,
        layers=len(contents.layers),
        uploads=len(contents.uploads),
        unique_bytes=summary.get("unique_bytes", 0),
        scanned_at=summary.get("scanned_at"),
        refs=refs,
    )


def split_revisions(live, revisions):
    """(top manifests, their children, unreadable revisions) of `revisions`: a top is a
    manifest no other revision's index lists (or one a tag names); an unreadable revision is a
    link whose manifest the registry cannot serve (its data gone)."""
    unreadable, children = set(), set()
    for digest in revisions:
        if live.document(digest) is None:
            unreadable.add(digest)
        children.update(live.children_of(digest))
    tagged = {ref.digest for ref in live.refs.values()}
    tops = [d for d in revisions if d not in unreadable and (d not in children or d in tagged)]
    rest = [d for d in revisions if d not in unreadable and d not in tops]
    return tops, rest, unreadable


@contextmanager
def one_at_a_time(repository):
    """Hold the repository's delete lease (a JobLease row keyed by the name's hash, claimed
    with the worker's conditional UPDATE) for the block; RepositoryBusy when another process
    holds it. The row goes afterwards; a process killed mid-delete leaves it to expire."""
    key = LEASE_PREFIX + hashlib.sha256(repository.encode()).hexdigest()[:20]
    if not worker.claim_lease(key, owner=worker._owner()):
        raise RepositoryBusy(f"{repository} is being deleted by another process right now.")
    owner = worker._owner()
    try:
        yield key
    finally:
        # Only our own: a lease that expired meanwhile may be another process's now.
        JobLease.objects.filter(kind=key, owner=owner).delete()


def _renew(key):
    JobLease.objects.filter(kind=key).update(
        lease_until=timezone.now() + timedelta(seconds=worker.lease_seconds())
    )


def delete_repository(actor, repository, dry_run=False, backend=None, progress=None):
    """Delete `repository` (or only plan it with `dry_run`). Returns an Outcome whose
    `deleted` says whether it left the catalog and `message` says why not. Raises
    RepositoryDeleteError (nothing started, or a step failed: the sentence says where),
    InvalidReferenceError for a bad name."""
    started = time.monotonic()
    report = progress or (lambda message: None)
    references.check_repository(repository)
    backend = backend or _backend()
    try:
        the_plan = plan(repository, backend)
    except (registry.RegistryError, storage.StorageError) as exc:
        raise RepositoryDeleteError(f"Nothing was deleted: {exc}") from exc
    outcome = Outcome(
        repository,
        dry_run,
        tags=sorted(the_plan.tags),
        images=the_plan.images,
        unique_bytes=the_plan.unique_bytes,
        plan=the_plan.as_dict(),
    )
    if dry_run:
        outcome.message = _plan_sentence(the_plan)
        outcome.seconds = round(time.monotonic() - started, 2)
        return outcome
    try:
        online_gc.check_can_write(backend)
        recover_trash(backend)
    except storage.StorageError as exc:
        raise RepositoryDeleteError(f"Nothing was deleted: {exc} {WRITE_ACCESS}") from exc
    with one_at_a_time(repository) as key:
        run = _Delete(actor, repository, backend, the_plan.refs, outcome, report, key)
        try:
            run.execute()
        except (registry.RegistryError, storage.StorageError) as exc:
            with suppress(registry.RegistryError, storage.StorageError):
                run.relink_what_stays()
            outcome.message = (
                f"{repository} was not deleted: {exc} It stays with what it still holds; what "
                f"was deleted already ({outcome.held_items} image(s)) is in the recycle bin."
            )
            _audit_stopped(actor, outcome)
            raise RepositoryDeleteError(outcome.message) from exc
    outcome.seconds = round(time.monotonic() - started, 2)
    return outcome


def _plan_sentence(the_plan):
    tags = len(the_plan.tags)
    return (
        f"Deleting {the_plan.repository} would delete {tags} tag{'s' if tags != 1 else ''} and "
        f"{the_plan.images} image{'s' if the_plan.images != 1 else ''} (held in the recycle bin"
        f"{'' if recycle_bin.enabled() else ': off, RECYCLE_BIN_DAYS=0'}), "
        f"{the_plan.layers} layer link{'s' if the_plan.layers != 1 else ''} and "
        f"{the_plan.uploads} upload{'s' if the_plan.uploads != 1 else ''}; "
        f"unique bytes by the latest scan: {the_plan.unique_bytes:,}. Nothing was changed."
    )


def recover_trash(backend):
    """Finish what a delete killed between its moves and its inspection left in the trash
    (filesystem only): every link in `oyster-trash/repositories/<batch>/` was written by a client
    after that delete's re-check, so it goes back to its repository (never over a file written
    there since); the rest of the batch (emptied directories, abandoned uploads) goes. Only
    batches older than STALE_BATCH: a live delete inspects its own within seconds of its moves.
    Returns how many links went back."""
    if backend.kind != "filesystem":
        return 0
    stale = timezone.now() - STALE_BATCH
    batches, back = set(), []
    for path, _size, _modified in backend.list_entries(TRASH):
        batch, _, rest = path[len(TRASH) :].partition("/")
        if online_gc._batch_time(batch) >= stale:
            continue
        batches.add(batch)
        # rest is "<repository name>/<_manifests|_layers|_uploads>/..."
        parts = rest.split("/")
        own = next((i for i, part in enumerate(parts) if part in OWN), None)
        if own and path.endswith("/link"):
            back.append((path, REPOSITORIES + rest))
    moved = backend.move_back(back) if back else 0
    for batch in sorted(batches):
        backend.remove_trash_tree(TRASH + batch)
    if moved:
        logger.warning("repository delete: %d links a killed delete had moved put back", moved)
    return moved


class _Delete:
    def __init__(self, actor, repository, backend, refs, outcome, report, key):
        self.actor, self.repository, self.backend = actor, repository, backend
        self.refs, self.outcome, self.report, self.key = refs, outcome, report, key
        self.client = registry.get_client()
        # Revision links whose manifest the registry cannot serve (its data gone): no API
        # delete can remove them, so step 4 does.
        self.unreadable = set()
        self.unlinked = set()

    def execute(self):
        self.report("Deleting every image through the recycle bin")
        self.delete_revisions()
        self.report("Unlinking the layers")
        self.unlink_layers()
        self.report("Checking that nobody pushed meanwhile")
        contents = list_contents(self.backend, self.repository)
        problem = self.pushed_meanwhile(contents)
        if problem:
            return self.keep(problem)
        self.report("Removing the repository's directory")
        if self.backend.kind == "filesystem":
            problem = self.remove_filesystem()
        else:
            problem = self.remove_objects(contents)
        if problem:
            return self.keep(problem)
        return self.finish()

    # Step 1

    def delete_revisions(self):
        listed = list_contents(self.backend, self.repository)
        live = deletes.LiveRepository(self.repository, self.refs)
        revisions = sorted(listed.revisions | {ref.digest for ref in self.refs.values()})
        tops, rest, self.unreadable = split_revisions(live, revisions)
        estimates = deletes.estimate_reclaimable(
            live, [(d, tuple(c for c in live.children_of(d) if c in rest)) for d in tops]
        )
        for number, digest in enumerate(tops, start=1):
            try:
                with recycle_bin.Deleting(
                    self.actor,
                    self.repository,
                    digest,
                    live.tags_on(digest),
                    REASON,
                    unique_bytes=estimates.get(digest, 0),
                    read=live.document,
                ) as item:
                    self.client.delete_image(self.repository, digest)
            except registry.RegistryNotFound:
                item = None  # gone meanwhile (another delete): nothing to hold
            if item is not None and item.state == recycle_bin.BinItem.State.HELD:
                self.outcome.held_items += 1
            index.forget_digest(self.repository, digest)
            _renew(self.key)
            self.report(f"Deleted {number} of {len(tops)} images")
        # An index's children: their bytes are in their parent's item already.
        for digest in rest:
            with suppress(registry.RegistryNotFound):
                self.client.delete_image(self.repository, digest)

    # Step 2

    def unlink_layers(self):
        layers = sorted(list_contents(self.backend, self.repository).layers)

        def forget(digest):
            return registry.get_client().forget_blob(self.repository, digest)

        self.unlinked = set()
        with ThreadPoolExecutor(max(1, min(settings.SYNC_CONCURRENCY, len(layers) or 1))) as pool:
            for digest, _ in zip(layers, pool.map(forget, layers), strict=True):
                self.unlinked.add(digest)
                self.outcome.unlinked_layers += 1
        _renew(self.key)

    # Step 3

    def pushed_meanwhile(self, contents):
        """The sentence saying what a client pushed since step 1 began, or ""."""
        young = time.time() - settings.GC_GRACE_MINUTES * 60
        found = []
        revisions = contents.revisions - self.unreadable
        if revisions:
            found.append(f"{len(revisions)} image(s) ({', '.join(sorted(revisions)[:2])})")
        if contents.tags or contents.tag_paths:
            names = sorted(contents.tags) or ["a tag's history"]
            found.append(f"tag(s) {', '.join(names[:5])}")
        if contents.layers:
            found.append(f"{len(contents.layers)} layer link(s)")
        uploads = [upload for upload, when in contents.uploads.items() if when >= young]
        if uploads:
            found.append(
                f"{len(uploads)} upload(s) started or written within GC_GRACE_MINUTES "
                f"({settings.GC_GRACE_MINUTES} min)"
            )
        others = [path for path, when in contents.others if when >= young]
        if others:
            found.append(f"{len(others)} recent file(s)")
        if not found:
            return ""
        return "a client pushed to it meanwhile: " + "; ".join(found)

    # Step 4

    def remove_filesystem(self):
        prefix = _prefix(self.repository)
        batch = (
            timezone.now().strftime("%Y%m%dT%H%M%S")
            + "-"
            + hashlib.sha256(f"{self.repository}{time.time_ns()}".encode()).hexdigest()[:8]
        )
        trash = f"{TRASH}{batch}/{self.repository}/"
        for own in OWN:
            self.backend.move_directory(prefix + own, trash + own)
        # Any link in the moved trees landed after step 3's listing (which found none left but
        # the unreadable revisions): a client's. It goes back, with the uploads in flight.
        young = time.time() - settings.GC_GRACE_MINUTES * 60
        unreadable = {f"_manifests/revisions/sha256/{d[7:]}/link" for d in self.unreadable}
        moved = list(self.backend.list_entries(trash))
        back = [
            (path, prefix + path[len(trash) :])
            for path, _size, modified in moved
            if (path.endswith("/link") and path[len(trash) :] not in unreadable)
            or (path[len(trash) :].startswith("_uploads/") and (modified or 0) >= young)
        ]
        pushed = [path for path, _ in back if path.endswith("/link")]
        if pushed:
            self.outcome.moved_back = self.backend.move_back(back)
            self.backend.remove_trash_tree(TRASH + batch)
            return (
                f"a client pushed to it while its directory was moved away ({len(pushed)} "
                "link(s) written meanwhile, put back)"
            )
        self.backend.remove_trash_tree(TRASH + batch)
        self.backend.remove_empty_directories(prefix, REPOSITORIES)
        return ""

    def remove_objects(self, contents):
        self.backend.delete_objects(contents.paths)
        left = list_contents(self.backend, self.repository)
        if not left.empty:
            return (
                f"a client wrote {len(left.paths)} object(s) to it meanwhile "
                f"({', '.join(p.rsplit('/', 1)[0][-60:] for p in left.paths[:2])})"
            )
        return ""

    def relink_what_stays(self):
        """A manifest a client PUT between step 1's listing and step 2's unlinks was accepted
        while its layers were linked, and step 2 then took those links: every blob a manifest
        staying in the repository references and step 2 unlinked is linked again (written into
        storage as the online collector puts links back; its data was never touched)."""
        if not self.unlinked:
            return
        staying = list_contents(self.backend, self.repository).revisions - self.unreadable
        needed = set()
        client = registry.get_client()
        for digest in staying:
            try:
                document = client.get_manifest(self.repository, digest)
            except registry.RegistryNotFound:
                continue
            needed.update(blob for blob, _size in recycle_bin._blob_descriptors(document.data))
        for digest in sorted(needed & self.unlinked):
            path = online_gc.link_path(self.repository, digest)
            if not self.backend.object_exists(path):
                self.backend.write_object(path, digest.encode())
                self.outcome.relinked += 1

    # Step 5

    def keep(self, problem):
        self.relink_what_stays()
        self.outcome.deleted = False
        self.outcome.message = (
            f"{self.repository} was not removed: {problem}. It stays with what the client "
            f"pushed; the {self.outcome.held_items} image(s) deleted before are in the recycle "
            "bin and can be restored."
        )
        logger.warning("repository delete of %s stopped: %s", self.repository, problem)
        _audit_stopped(self.actor, self.outcome)

    def finish(self):
        index.forget_repository(self.repository)
        self.outcome.deleted = True
        days = settings.RECYCLE_BIN_DAYS
        held = (
            f" Its images stay restorable in Recently deleted for {days} day"
            f"{'s' if days != 1 else ''}; restoring one brings the repository back."
            if recycle_bin.enabled()
            else ""
        )
        self.outcome.message = (
            f"Deleted {self.repository}: {len(self.outcome.tags)} tag(s), "
            f"{self.outcome.images} image(s); the registry's catalog no longer lists it.{held}"
        )
        AuditEvent.objects.log_portal_action(
            self.actor,
            PortalAction.REPOSITORY_DELETED,
            repository=self.repository,
            detail={
                "tags": self.outcome.tags[:1000],
                "images": self.outcome.images,
                "unique_bytes": self.outcome.unique_bytes,
                "held_items": self.outcome.held_items,
            },
        )
        logger.info("repository %s deleted by %s", self.repository, self.actor)
        quotas.after_repository_delete(self.repository)


def _audit_stopped(actor, outcome):
    AuditEvent.objects.log_portal_action(
        actor,
        PortalAction.REPOSITORY_DELETE_STOPPED,
        repository=outcome.repository,
        detail={"message": outcome.message[:1000], "held_items": outcome.held_items},
    )


def delete_repository_job(run):
    """Worker job "delete_repository": options {"repository": NAME, "dry_run": bool}, requested
    by the repository page's confirmation. It runs in the worker because the worker is what
    holds write access to the registry's storage (the compose files give it to the worker only).
    A delete a push stopped fails the run with the sentence saying so."""
    options = run.options or {}
    repository = options.get("repository")
    if not isinstance(repository, str) or not repository:
        raise RepositoryDeleteError(
            "A repository delete needs the repository's name: start it from the repository's "
            "page (Delete repository) or with manage.py delete_repository NAME."
        )

    def progress(message):
        worker.report_progress(run, message=message)

    outcome = delete_repository(
        run.requested_by or JobKind.DELETE_REPOSITORY,
        repository,
        dry_run=bool(options.get("dry_run", False)),
        progress=progress,
    )
    if not outcome.dry_run and not outcome.deleted:
        raise RepositoryDeleteError(outcome.message)
    worker.report_progress(run, message=outcome.message)
    return outcome.as_dict()
