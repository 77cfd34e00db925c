"""The recycle bin: every delete Oyster makes first records what puts it back; restore and purge.

Protocol in docs/recycle-bin.md ("One delete path", "Holding", "Restore"). A delete calls
`record()` before the registry's DELETE (the manifest re-read by digest, its bytes checked
against it, with every manifest an index reaches), then `settle()` with what the DELETE did.
While an item is held, `held_digests()` names its blobs and manifests: the online collector
never takes them and the storage scan counts them as held, not reclaimable. `restore()` PUTs the
manifests back byte-identical, deepest first, then the tags a client did not push again;
`purge()` releases items past `expires_at` so the next collection frees their bytes.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import references, registry, storage
from .models import (
    AuditEvent,
    BinBlob,
    BinItem,
    BinManifest,
    ManifestReferences,
    PortalAction,
    Tag,
)
from .storage.layout import REPOSITORIES

logger = logging.getLogger(__name__)

# A `deleting` item older than this had its process die between record and settle: the purge
# job asks the registry what happened.
STALE_DELETING = timedelta(minutes=10)
# Restores and lists name many items at most this many at once (a page, a command line).
MAX_ITEMS = 500


class BinError(Exception):
    """A restore or purge that could not be done; str(error) is a sentence for the page."""


@dataclass(frozen=True)
class RestoreOutcome:
    """What one restore did: `restored_tags` put back, `kept_tags` left alone because a client
    pushed them again since (tag -> its digest now), `message` the sentence for the page."""

    item: BinItem
    restored_tags: tuple
    kept_tags: dict
    message: str


def enabled():
    return settings.RECYCLE_BIN_DAYS > 0


def held_note():
    """What delays a delete's bytes, for the sentences that promise them back ("" when the bin
    is off): " after 7 days in the recycle bin (restorable until then)"."""
    if not enabled():
        return ""
    days = settings.RECYCLE_BIN_DAYS
    return f" after {days} day{'s' if days != 1 else ''} in the recycle bin (restorable until then)"


def read_manifests(repository, digest, read=None):
    """[(digest, ManifestDocument, depth)] for `digest` and every manifest it reaches (an index's
    children, nested indexes too: `references.reachable`), each at its greatest depth.

    `read(digest)` returns a registry.ManifestDocument or None (gone); by default the registry is
    asked by digest, which checks the bytes' sha256 against the digest, so nothing recorded can
    be forged. Raises RegistryNotFound when the top manifest is gone.
    """
    if read is None:
        client = registry.get_client()

        def read(wanted):
            try:
                return client.get_manifest(repository, wanted)
            except registry.RegistryNotFound:
                return None

    documents = {}

    def children(wanted):
        if wanted not in documents:
            documents[wanted] = read(wanted)
        document = documents[wanted]
        if document is None or not document.is_index:
            return []
        return list(references.index_children(document.data))

    reached = references.reachable([digest], children)
    if documents.get(digest) is None:
        raise registry.RegistryNotFound(f"The registry has no manifest {repository}@{digest}.")
    depth = {digest: 0}
    # Longest path from the top (a manifest reached twice is PUT before every parent).
    for _ in range(len(reached)):
        changed = False
        for parent in list(depth):
            for child in children(parent):
                if child in reached and depth.get(child, -1) < depth[parent] + 1 <= len(reached):
                    depth[child] = depth[parent] + 1
                    changed = True
        if not changed:
            break
    return [
        (d, documents[d], depth.get(d, 0))
        for d in sorted(reached, key=lambda d: depth.get(d, 0))
        if documents.get(d) is not None
    ]


def _blob_descriptors(data):
    """(digest, size) of an image manifest's config and layers."""
    items = []
    if isinstance(data.get("config"), dict):
        items.append(data["config"])
    items.extend(item for item in data.get("layers") or () if isinstance(item, dict))
    found = []
    for item in items:
        size = item.get("size")
        if references.is_valid_digest(item.get("digest")):
            found.append((item["digest"], size if isinstance(size, int) and size >= 0 else 0))
    return found


def record(
    actor,
    repository,
    digest,
    tags,
    reason,
    kind=BinItem.Kind.IMAGE,
    unique_bytes=0,
    read=None,
    now=None,
):
    """Step 1 and 2 of a delete: read what puts `repository@digest` back and store it as
    `deleting`, committed before the caller's DELETE. Returns the BinItem, or None when the bin
    is off (RECYCLE_BIN_DAYS=0). Raises RegistryError when the manifest cannot be read: the
    caller then deletes nothing (a delete the bin could not record is not made)."""
    if not enabled():
        return None
    manifests = read_manifests(repository, digest, read)
    blobs = {}
    for _, document, _ in manifests:
        for blob, size in _blob_descriptors(document.data):
            blobs.setdefault(blob, size)
    now = now or timezone.now()
    size = sum(blobs.values()) + sum(len(doc.raw) for _, doc, _ in manifests)
    with transaction.atomic():
        item = BinItem.objects.create(
            repository=repository,
            digest=digest,
            kind=kind,
            tags=sorted(set(tags)),
            reason=str(reason)[:200],
            actor=str(actor)[:150],
            deleted_at=now,
            expires_at=now + timedelta(days=settings.RECYCLE_BIN_DAYS),
            size_bytes=size,
            unique_bytes=max(0, int(unique_bytes or 0)),
        )
        BinManifest.objects.bulk_create(
            BinManifest(
                item=item,
                digest=manifest_digest,
                media_type=document.media_type[:200],
                content=document.raw,
                depth=depth,
            )
            for manifest_digest, document, depth in manifests
        )
        BinBlob.objects.bulk_create(
            BinBlob(item=item, digest=blob, size=size) for blob, size in blobs.items()
        )
    return item


def settle(item, deleted=None):
    """Step 4: `deleted` True (the DELETE succeeded) → held; False (refused: nothing changed) →
    the item goes. None (the answer was lost) → asked of the registry with a HEAD; when that
    fails too the item stays `deleting` for the purge job to settle. Returns the state."""
    if item is None:
        return None
    if deleted is None:
        deleted = _manifest_gone(item)
        if deleted is None:
            return item.state
    if not deleted:
        item.delete()
        return None
    updated = BinItem.objects.filter(pk=item.pk, state=BinItem.State.DELETING).update(
        state=BinItem.State.HELD
    )
    if updated:
        item.state = BinItem.State.HELD
        AuditEvent.objects.log_portal_action(
            item.actor,
            PortalAction.BIN_HELD,
            repository=item.repository,
            digest=item.digest,
            detail={
                "item": item.pk,
                "kind": item.kind,
                "tags": item.tags,
                "reason": item.reason,
                "expires_at": item.expires_at.isoformat(),
            },
        )
    return item.state


def _manifest_gone(item):
    """Did the delete happen? For an image: its manifest is gone; for a tag: the tag no longer
    points at the digest. None when the registry cannot tell now."""
    client = registry.get_client()
    try:
        if item.kind == BinItem.Kind.IMAGE:
            client.head_manifest(item.repository, item.digest)
            return False
        for tag in item.tags:
            if client.head_manifest(item.repository, tag).digest == item.digest:
                return False
        return True
    except registry.RegistryNotFound:
        return True
    except registry.RegistryError as exc:
        logger.warning("bin item %s: the registry cannot tell now: %s", item.pk, exc)
        return None


_REFUSALS = (
    # A tag delete that stopped halfway: the tag points at a placeholder, the image is as it
    # was; the retry that finishes it records the item anew.
    registry.RegistryDeleteIncomplete,
    registry.RegistryNotFound,
    registry.RegistryDeleteUnsupported,
    registry.RegistryTagMoved,
    registry.RegistryUnauthorized,
)


class Deleting:
    """`with Deleting(...) as item:` around a registry DELETE: records the item before (see
    `record`), settles it after: held on success, removed on a refusal, asked of the registry
    when the answer was lost."""

    def __init__(self, actor, repository, digest, tags, reason, **kwargs):
        self.args = (actor, repository, digest, tags, reason)
        self.kwargs = kwargs
        self.item = None

    def __enter__(self):
        self.item = record(*self.args, **self.kwargs)
        return self.item

    def __exit__(self, kind, exc, traceback):
        if self.item is None:
            return False
        if kind is None:
            settle(self.item, deleted=True)
        elif isinstance(exc, _REFUSALS):
            # Nothing changed (or someone else deleted it first, outside the bin).
            settle(self.item, deleted=False)
        else:
            # The DELETE may have reached the registry before the answer was lost: ask it.
            settle(self.item, deleted=None)
        return False


REFERRER_REASON = "referrer of "


def referrer_reason(subject):
    """The bin reason of a referrer deleted with its image (restored with it)."""
    return f"{REFERRER_REASON}{subject}"


def held_digests():
    """Every blob and manifest digest ("sha256:…") a holding item keeps from the collector."""
    holding = BinItem.objects.holding()
    found = set(BinBlob.objects.filter(item__in=holding).values_list("digest", flat=True))
    found.update(BinManifest.objects.filter(item__in=holding).values_list("digest", flat=True))
    return found


def held_raw_digests():
    """`held_digests()` as the storage scan's 32-byte digests."""
    return {bytes.fromhex(d[7:]) for d in held_digests() if d.startswith("sha256:")}


def offline_gc_warning():
    """The sentence to show before the registry's own garbage-collect runs ("" when the bin
    holds nothing): that collector does not know the bin and deletes the held images' data."""
    holding = BinItem.objects.holding().filter(kind=BinItem.Kind.IMAGE)
    count = holding.count()
    if not count:
        return ""
    names = [item.reference for item in holding[:3]]
    more = f" and {count - 3} more" if count > 3 else ""
    return (
        f"The registry's own garbage-collect does not know the recycle bin: it deletes the data "
        f"of the {count} deleted image{'s' if count != 1 else ''} held there "
        f"({', '.join(names)}{more}), which then can never be restored. Oyster's online "
        "collector keeps them until they expire."
    )


# --- Restore ---


def restore(actor, item):
    """Put `item` back: its blobs checked, its manifests PUT by digest deepest first (each answer
    must be the same digest), then each tag that is absent; a tag a client pushed again since is
    left alone. Returns a RestoreOutcome; raises BinError (nothing restored: the item is not
    held, a blob is lost, the registry refused) with a sentence."""
    claimed = BinItem.objects.filter(pk=item.pk, state=BinItem.State.HELD).update(
        state=BinItem.State.RESTORING, claimed_at=timezone.now()
    )
    if not claimed:
        item.refresh_from_db()
        raise BinError(
            f"{item.reference} is {item.get_state_display().lower()}, not held: nothing restored."
        )
    try:
        restored, kept = _put_back(item)
    except _Lost as exc:
        _finish(item, BinItem.State.LOST, actor, str(exc))
        raise BinError(str(exc)) from exc
    except registry.RegistryError as exc:
        BinItem.objects.filter(pk=item.pk).update(state=BinItem.State.HELD)
        raise BinError(f"{item.reference} was not restored: {exc}") from exc
    except BaseException:
        # Anything unexpected (a database error, a signal): held again, restorable anew.
        BinItem.objects.filter(pk=item.pk).update(state=BinItem.State.HELD)
        raise
    message = _restored_message(item, restored, kept)
    if item.kind == BinItem.Kind.IMAGE:
        message += _restore_referrers(actor, item)
    _finish(item, BinItem.State.RESTORED, actor, message)
    AuditEvent.objects.log_portal_action(
        actor,
        PortalAction.BIN_RESTORED,
        repository=item.repository,
        digest=item.digest,
        detail={"item": item.pk, "tags": list(restored), "kept": kept, "reason": item.reason},
    )
    logger.info("bin item %s (%s) restored by %s", item.pk, item.reference, actor)
    return RestoreOutcome(item, tuple(restored), kept, message)


def _restore_referrers(actor, item):
    """Restore the signatures, SBOMs and attestations deleted with `item` (held as its
    referrers); a sentence saying how many came back ("" when none were held)."""
    held = BinItem.objects.filter(
        repository=item.repository,
        reason=referrer_reason(item.digest),
        state=BinItem.State.HELD,
    ).order_by("pk")
    back, failed = 0, []
    for referrer in held:
        try:
            restore(actor, referrer)
            back += 1
        except BinError as exc:
            failed.append(str(exc))
    if not back and not failed:
        return ""
    text = f" With it {back} attached artifact{'s' if back != 1 else ''} (signatures, SBOMs, attestations)."
    if failed:
        text += f" Not restored: {'; '.join(failed)[:300]}"
    return text


class _Lost(Exception):
    pass


def _put_back(item):
    client = registry.get_client()
    repository = item.repository
    missing = [
        blob.digest
        for blob in item.blobs.order_by("digest")
        if not client.blob_exists(repository, blob.digest)
    ]
    if missing:
        missing = _relink(item, missing)
    if missing:
        # Data gone: the registry's own garbage-collect deleted it (it ignores the bin).
        raise _Lost(
            f"{item.reference} cannot be restored: {len(missing)} of its blobs are gone from "
            f"the registry ({', '.join(missing[:3])}{'…' if len(missing) > 3 else ''}), "
            "collected by the registry's own garbage-collect, which does not know the recycle "
            "bin."
        )
    top = None
    for manifest in item.manifests.order_by("-depth", "digest"):
        content = bytes(manifest.content)
        answered = client.put_manifest(repository, manifest.digest, content, manifest.media_type)
        if answered and answered != manifest.digest:
            raise registry.RegistryError(
                f"the registry stored {manifest.digest} as {answered}; the restore stopped."
            )
        if manifest.digest == item.digest:
            top = (content, manifest.media_type)
    restored, kept = [], {}
    for tag in item.tags:
        theirs = _put_tag(client, item, tag, top)
        if theirs:
            kept[tag] = theirs
        else:
            restored.append(tag)
    return restored, kept


def _relink(item, missing):
    """Link again the blobs of `missing` (a repository delete took their links): a
    cross-repository mount from a repository the index and the latest scan say still uses the
    blob, else the link file written into the repository's `_layers/` when the data is stored,
    as the registry itself writes it (safe beside its blob-descriptor cache: the repository
    delete cleared those entries through the API, and a cache miss reads the link from storage).
    Returns the digests whose data is gone. Raises RegistryError (with a sentence) when the
    storage cannot be read or written: the item is then held again, restorable once it can."""
    client = registry.get_client()
    sources = _mount_sources(missing, item.repository)
    unmounted = []
    for digest in missing:
        if not any(_mounted(client, item.repository, digest, s) for s in sources.get(digest, ())):
            unmounted.append(digest)
    try:
        backend = storage.get_backend() if unmounted else None
        gone = []
        for digest in unmounted:
            if backend.blob_size(digest) is None:
                gone.append(digest)
                continue
            backend.write_object(
                f"{REPOSITORIES}{item.repository}/_layers/sha256/{digest[7:]}/link",
                digest.encode(),
            )
    except storage.StorageError as exc:
        raise registry.RegistryError(
            f"{len(unmounted)} of its blobs are not linked in {item.repository} any more (a "
            f"repository delete), and they could not be linked again: {exc}"
        ) from exc
    logger.info(
        "restore of %s: %d blobs mounted, %d links written, %d gone",
        item,
        len(missing) - len(unmounted),
        len(unmounted) - len(gone),
        len(gone),
    )
    return gone


# Repositories a blob is mounted from at most (each try that fails costs a request).
MOUNT_TRIES = 3


def _mounted(client, repository, digest, source):
    try:
        return client.mount_blob(repository, digest, source)
    except registry.RegistryError as exc:
        logger.warning("mount of %s from %s into %s failed: %s", digest, source, repository, exc)
        return False


def _mount_sources(digests, exclude):
    """{blob digest: [repository, ...]} of repositories other than `exclude` whose tags (the
    index) name a manifest that references the blob (the latest scan's ManifestReferences),
    directly or through an index's child."""
    wanted = {bytes.fromhex(d[7:]): d for d in digests if d.startswith("sha256:")}
    holders = {m: {wanted[raw] for raw in raws} for m, raws in _referencing(set(wanted)).items()}
    children = {bytes.fromhex(m[7:]): m for m in holders}
    for parent, raws in _referencing(set(children)).items():
        for raw in raws:
            holders.setdefault(parent, set()).update(holders[children[raw]])
    sources = {}
    tagged = (
        Tag.objects.filter(digest__in=list(holders))
        .exclude(repository__name=exclude)
        .values_list("repository__name", "digest")
        .distinct()
    )
    for repository, manifest in tagged:
        for blob in holders[manifest]:
            names = sources.setdefault(blob, [])
            if repository not in names and len(names) < MOUNT_TRIES:
                names.append(repository)
    return sources


def _referencing(wanted):
    """{manifest digest: the 32-byte digests of `wanted` it references}, from the latest
    scan's references (one pass over them)."""
    found = {}
    if not wanted:
        return found
    rows = ManifestReferences.objects.values_list("digest", "references").iterator(chunk_size=2000)
    for manifest_hex, refs in rows:
        refs = bytes(refs)
        for position in range(0, len(refs), 32):
            raw = refs[position : position + 32]
            if raw in wanted:
                found.setdefault("sha256:" + manifest_hex, set()).add(raw)
    return found


def _put_tag(client, item, tag, top):
    """Point `tag` at the item again unless a client pushed it since; returns the client's
    digest when it did ("" when the tag is ours now).

    The registry has no conditional PUT, so a push landing between our HEAD and our PUT is found
    after the fact: the tag's index entries (`tags/<tag>/index/`, one per digest the tag ever
    pointed at) listed before the HEAD and after the PUT show a digest that is neither ours nor
    known before; if the tag is ours now, the client's push came first and gets the tag back.
    """
    repository = item.repository
    before = _tag_history(repository, tag)
    try:
        current = client.head_manifest(repository, tag).digest
    except registry.RegistryNotFound:
        current = None
    if current == item.digest:
        return ""
    if current:
        # A client pushed this tag again since the delete: its image wins.
        return current
    client.put_manifest(repository, tag, top[0], top[1])
    after = _tag_history(repository, tag)
    if before is None or after is None:
        return ""
    pushed = sorted(after - before - {item.digest})
    if not pushed:
        return ""
    current = client.head_manifest(repository, tag).digest
    if current != item.digest:
        return current
    # Their manifest is still a revision (moving a tag deletes nothing): put it back under the
    # tag. With several, the one whose index entry was written last.
    theirs = pushed[-1] if len(pushed) == 1 else _newest(repository, tag, pushed)
    document = client.get_manifest(repository, theirs)
    client.put_manifest(repository, tag, document.raw, document.media_type)
    logger.warning(
        "restore of %s: %s:%s was pushed meanwhile; kept %s", item, repository, tag, theirs
    )
    return theirs


def _tag_prefix(repository, tag):
    return f"{REPOSITORIES}{repository}/_manifests/tags/{tag}/index/sha256/"


def _tag_history(repository, tag, with_times=False):
    """{digest} (or {digest: time}) the tag's index entries name, from the registry's storage;
    None when the storage cannot be read (no guard then, only the HEAD before the PUT)."""
    prefix = _tag_prefix(repository, tag)
    try:
        entries = list(storage.get_backend().list_entries(prefix))
    except storage.StorageError as exc:
        logger.warning("tag index of %s:%s not readable: %s", repository, tag, exc)
        return None
    found = {}
    for path, _size, modified in entries:
        hex_digest, _, rest = path[len(prefix) :].partition("/")
        if rest == "link" and len(hex_digest) == 64:
            found["sha256:" + hex_digest] = modified or 0
    return found if with_times else set(found)


def _newest(repository, tag, digests):
    times = _tag_history(repository, tag, with_times=True) or {}
    return max(digests, key=lambda digest: times.get(digest, 0))


def _restored_message(item, restored, kept):
    parts = [f"Restored {item.reference}"]
    if restored:
        parts.append(f" with {', '.join(f'{item.repository}:{t}' for t in restored)}")
    parts.append(".")
    for tag, digest in kept.items():
        parts.append(
            f" {item.repository}:{tag} was pushed again since (now {digest}) and was left alone."
        )
    return "".join(parts)


def _finish(item, state, actor, note):
    BinItem.objects.filter(pk=item.pk).update(
        state=state, settled_at=timezone.now(), settled_by=str(actor)[:150], note=note
    )
    item.refresh_from_db()


def find(reference):
    """The newest held item for "REPOSITORY:TAG" or "REPOSITORY@DIGEST". Raises BinError."""
    reference = str(reference)
    if len(reference) > 600:
        raise BinError("That reference is too long.")
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        _check(references.check_repository, repository)
        _check(references.check_digest, digest)
        rows = BinItem.objects.filter(repository=repository, digest=digest)
    else:
        repository, _, tag = reference.rpartition(":")
        if not repository or "/" in tag:
            raise BinError(f"{reference[:200]!r} is not REPOSITORY:TAG or REPOSITORY@DIGEST.")
        _check(references.check_repository, repository)
        _check(references.check_tag, tag)
        rows = [
            row
            for row in BinItem.objects.filter(repository=repository, state=BinItem.State.HELD)
            if tag in row.tags
        ]
        if rows:
            return rows[0]
        raise BinError(f"The recycle bin holds no {repository}:{tag}.")
    row = rows.filter(state=BinItem.State.HELD).first() or rows.first()
    if row is None:
        raise BinError(f"The recycle bin holds no {reference}.")
    return row


def _check(check, value):
    try:
        check(value)
    except references.InvalidReferenceError as exc:
        raise BinError(str(exc)) from exc


# --- Purge ---


def purge(actor, older_than_days=None, now=None):
    """Release held items past `expires_at` (or deleted more than `older_than_days` ago): they
    become `purged`, their recorded manifests and blob rows go, and the next collection frees
    their bytes. Also settles `deleting` items whose process died. Returns the purged items."""
    now = now or timezone.now()
    settle_stale(now)
    held = BinItem.objects.filter(state=BinItem.State.HELD)
    if older_than_days is None:
        due = held.filter(expires_at__lte=now)
    else:
        due = held.filter(deleted_at__lte=now - timedelta(days=older_than_days))
    purged = []
    with transaction.atomic():
        # A restore that claimed an item first (held → restoring) wins: it is no longer held.
        for item in due.select_for_update().order_by("pk")[:10000]:
            # Conditional, like the restore's claim: SQLite has no row locks.
            taken = BinItem.objects.filter(pk=item.pk, state=BinItem.State.HELD).update(
                state=BinItem.State.PURGED, settled_at=now, settled_by=str(actor)[:150]
            )
            if not taken:
                continue
            BinManifest.objects.filter(item=item).delete()
            BinBlob.objects.filter(item=item).delete()
            AuditEvent.objects.log_portal_action(
                actor,
                PortalAction.BIN_PURGED,
                repository=item.repository,
                digest=item.digest,
                detail={"item": item.pk, "tags": item.tags, "unique_bytes": item.unique_bytes},
            )
            purged.append(item)
    # Restored items hold nothing any more (their manifests are linked again): drop the copies.
    BinManifest.objects.filter(item__state=BinItem.State.RESTORED).delete()
    BinBlob.objects.filter(item__state=BinItem.State.RESTORED).delete()
    return purged


def settle_stale(now=None):
    """Settle `deleting` items older than STALE_DELETING (their process died mid-delete), and
    hand back `restoring` items a restore claimed that long ago (it died midway: restoring is
    idempotent, so the item is held again and can be restored anew)."""
    cutoff = (now or timezone.now()) - STALE_DELETING
    for item in BinItem.objects.filter(state=BinItem.State.DELETING, deleted_at__lte=cutoff):
        settle(item, deleted=None)
    BinItem.objects.filter(state=BinItem.State.RESTORING, claimed_at__lte=cutoff).update(
        state=BinItem.State.HELD
    )


def purge_job(run):
    """Worker job "bin_purge" (daily, BIN_PURGE_INTERVAL)."""
    purged = purge(run.requested_by or "bin_purge")
    return {"purged": len(purged), "unique_bytes": sum(i.unique_bytes for i in purged)}
