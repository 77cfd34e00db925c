"""Deleting tags and images on behalf of a portal user: the registry call, the audit row and the
index update, in that order.

The registry client does the HTTP (`RegistryClient.delete_tag` removes one tag and keeps its
siblings; `delete_image` removes a digest with every tag on it). Here each successful delete is
recorded in the audit trail with the portal user and removed from the index at once, so the
pages are right before the registry's own notifications arrive (those are idempotent against it).
"""

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError

from . import index, recycle_bin, references, referrers, registry
from .models import AuditEvent, ManifestReferences, PortalAction, PortalPlaceholder, Tag
from .references import IMAGE_MEDIA_TYPES, INDEX_MEDIA_TYPES

logger = logging.getLogger(__name__)

GC_ADVICE = (
    "The bytes come back when garbage is collected (once the recycle bin, if on, lets them go): with the registry running, `python "
    "manage.py garbage_collect --online --dry-run`, then `python manage.py garbage_collect "
    "--online` (or the Storage page's online collector); or, with the registry read-only, "
    "`python manage.py garbage_collect --dry-run`, then `python manage.py garbage_collect`, "
    "then restart the registry. Never add --delete-untagged on registry 2.8: it deletes the "
    "per-platform manifests of multi-platform images."
)

# How one tag goes (TagPlan.method).
BY_DIGEST = "digest"  # the last tag on its image: the manifest goes, the space can come back
BY_PLACEHOLDER = "placeholder"  # other tags keep the image: only this tag goes, nothing is freed
METHOD_TEXT = {
    BY_DIGEST: "last tag on its image: the image is deleted",
    BY_PLACEHOLDER: "other tags keep the image: only the tag goes, no space is freed",
}

# Outcome states of one tag in a bulk or retention delete.
DELETED = "deleted"
ALREADY_GONE = "already gone"
FAILED = "failed"
NOT_ATTEMPTED = "not attempted"


@dataclass(frozen=True)
class TagOutcome:
    """What happened to one tag of a bulk or retention delete; `message` is for the page."""

    repository: str
    tag: str
    state: str
    message: str
    digest: str = ""
    # The RegistryError subclass's name when it failed ("RegistryDeleteUnsupported", ...).
    error_type: str = ""
    method: str = ""  # BY_DIGEST or BY_PLACEHOLDER once deleted
    reclaimable_bytes: int = 0

    @property
    def ok(self):
        return self.state in (DELETED, ALREADY_GONE)


class RecordedPlaceholders:
    """The placeholders the portal pushed (registry.RegistryClient.delete_tag's `placeholders`)."""

    def lookup(self, repository, digest):
        row = PortalPlaceholder.objects.filter(repository=repository, digest=digest).first()
        return row.replaces if row else None

    def record(self, repository, tag, digest, replaces):
        # IntegrityError: a concurrent retry recorded it (same digest, same meaning).
        with contextlib.suppress(IntegrityError):
            PortalPlaceholder.objects.get_or_create(
                repository=repository, digest=digest, defaults={"tag": tag, "replaces": replaces}
            )


PLACEHOLDERS = RecordedPlaceholders()


class LiveRepository:
    """A repository's tags and their digests as the registry says now, kept current.

    Resolved once per repository in a bulk or retention run (tags/list, then a HEAD per tag);
    each delete updates it, and `refresh()` right before a delete by digest picks up tags
    pushed since (so a sibling added behind the index's back is seen) and re-reads the tag
    being deleted (so a tag pushed again is never deleted with its old digest).
    """

    def __init__(self, repository, refs):
        self.repository = repository
        self.refs = dict(refs)  # tag -> registry.ManifestRef
        self._documents = {}
        self._child_types = {}  # digest -> the media type its parent index gives it

    @classmethod
    def resolve(cls, repository):
        references.check_repository(repository)
        tags = registry.get_client().list_tags(repository)
        return cls(repository, _head_all(repository, tags))

    def digest_of(self, tag):
        ref = self.refs.get(tag)
        return ref.digest if ref else None

    def tags_on(self, digest):
        return sorted(tag for tag, ref in self.refs.items() if ref.digest == digest)

    def refresh(self, tag):
        """Pick up new tags and re-read `tag`; returns its digest now (None: gone)."""
        client = registry.get_client()
        listed = set(client.list_tags(self.repository))
        for gone in set(self.refs) - listed:
            del self.refs[gone]
        new = [name for name in listed if name not in self.refs and name != tag]
        self.refs.update(_head_all(self.repository, new))
        if tag in listed:
            try:
                self.refs[tag] = client.head_manifest(self.repository, tag)
            except registry.RegistryNotFound:
                self.refs.pop(tag, None)
        else:
            self.refs.pop(tag, None)
        return self.digest_of(tag)

    def forget(self, tags):
        for tag in tags:
            self.refs.pop(tag, None)

    def referrers_of(self, digest):
        """The signatures, SBOMs, attestations (and fallback index) attached to `digest`, as the
        registry holds them now (`referrers.discover`): cosign's tags and the fallback index
        are found by name; tagged OCI referrers among the tags the index says refer to it."""
        candidates = set(
            Tag.objects.filter(repository__name=self.repository, subject_digest=digest)
            .exclude(referrer_kind="")
            .values_list("name", flat=True)
        )
        return referrers.discover(self.refs, digest, self.document, candidates)

    def document(self, digest):
        """The manifest `digest` (cached: content-addressed); None when it is gone."""
        if digest not in self._documents:
            try:
                self._documents[digest] = registry.get_client().get_manifest(
                    self.repository, digest
                )
            except registry.RegistryNotFound:
                self._documents[digest] = None
        return self._documents[digest]

    def children_of(self, digest):
        """The child manifests of an index or manifest list (empty for an image)."""
        document = self.document(digest)
        if document is None or not document.is_index:
            return []
        children = references.index_children(document.data)
        self._child_types.update(children)
        return list(children)

    def _nested_children(self, digest):
        """`children_of` for a digest read as an index; [] for one its parent says is an image
        (no registry read for it)."""
        if self._child_types.get(digest, "") in IMAGE_MEDIA_TYPES:
            return []
        return self.children_of(digest)

    def orphaned_children(self, digest, leaving=()):
        """Children of `digest` that nothing staying references: no tag, no other tagged index.

        `leaving` are tags about to go too (a bulk plan)."""
        children = self.children_of(digest)
        if not children:
            return []
        staying = {
            ref.digest: ref.media_type
            for tag, ref in self.refs.items()
            if tag not in leaving and ref.digest != digest
        }
        # What the staying tags reach, to any depth (an index inside another index keeps its
        # children too): the rule the untagged cleanup and the storage scan follow. Only
        # manifests that are (or may be) indexes are read for children.
        indexes = [d for d, kind in staying.items() if kind in INDEX_MEDIA_TYPES or not kind]
        kept = set(staying) | references.reachable(indexes, self._nested_children)
        return [child for child in children if child not in kept]


def _head_all(repository, tags):
    """{tag: ManifestRef} for the tags that still exist (HEADs in parallel)."""
    tags = list(tags)
    if not tags:
        return {}
    workers = max(1, min(settings.SYNC_CONCURRENCY, len(tags)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        refs = list(pool.map(lambda tag: _head(repository, tag), tags))
    return {tag: ref for tag, ref in zip(tags, refs, strict=True) if ref is not None}


def _head(repository, tag):
    try:
        # get_client() is per thread: sessions are not thread-safe.
        return registry.get_client().head_manifest(repository, tag)
    except registry.RegistryNotFound:
        return None


@dataclass(frozen=True)
class TagPlan:
    """How one tag would go now: BY_DIGEST (with `children`) or BY_PLACEHOLDER (`siblings`
    stay); `reclaimable_bytes` is the estimate from the latest scan. `method` is "" when the
    tag does not exist."""

    repository: str
    tag: str
    digest: str
    method: str
    siblings: tuple = ()
    children: tuple = ()
    reclaimable_bytes: int = 0
    # referrers.Referrer: signatures, SBOMs, attestations going with the image (BY_DIGEST).
    referrers: tuple = ()

    @property
    def method_text(self):
        return METHOD_TEXT.get(self.method, "not in the registry any more")

    @property
    def referrers_text(self):
        """ "with its signature sha256-….sig, SBOM sha256:…" ("" when none)."""
        if not self.referrers:
            return ""
        parts = [
            f"{referrers.KIND_LABELS.get(r.kind, 'referrers index')} {r.tag or r.digest}"
            for r in self.referrers
        ]
        return "with its attached " + ", ".join(parts)


def plan_tags(live, tags):
    """TagPlans for deleting `tags` of `live` one after the other (live is not changed)."""
    remaining = dict(live.refs)
    plans, freed_digests = [], []
    for tag in tags:
        ref = remaining.pop(tag, None)
        if ref is None:
            plans.append(TagPlan(live.repository, tag, "", ""))
            continue
        siblings = tuple(sorted(t for t, r in remaining.items() if r.digest == ref.digest))
        if siblings:
            plans.append(TagPlan(live.repository, tag, ref.digest, BY_PLACEHOLDER, siblings))
            continue
        attached = tuple(live.referrers_of(ref.digest))
        # Its referrers' tags go with it: they neither keep the image nor its children.
        for referrer in attached:
            remaining.pop(referrer.tag, None)
        leaving = set(live.refs) - set(remaining)
        children = tuple(live.orphaned_children(ref.digest, leaving=leaving))
        freed_digests.append((ref.digest, children))
        plans.append(
            TagPlan(live.repository, tag, ref.digest, BY_DIGEST, (), children, 0, attached)
        )
    if not freed_digests:
        return plans
    estimates = estimate_reclaimable(live, freed_digests)
    return [
        TagPlan(**{**p.__dict__, "reclaimable_bytes": estimates.get(p.digest, 0)})
        if p.method == BY_DIGEST
        else p
        for p in plans
    ]


def estimate_reclaimable(live, freed):
    """{digest: bytes} the collector frees once each (digest, children) is deleted.

    A blob counts when no other manifest the latest scan saw linked references it and no
    other repository's tag points at its manifest; sizes come from the manifests' own
    descriptors. An estimate: a scan older than recent pushes misses their sharing.
    """
    leaving = set()
    closures = {}
    for digest, children in freed:
        leaving.add(digest)
        leaving.update(children)
    for digest, children in freed:
        blobs = {}
        for manifest_digest in (digest, *children):
            document = live.document(manifest_digest)
            if document is None:
                continue
            blobs[manifest_digest] = len(document.raw)
            for descriptor in _blob_descriptors(document.data):
                blobs.setdefault(descriptor[0], descriptor[1])
        closures[digest] = blobs
    wanted = {d for blobs in closures.values() for d in blobs}
    shared = _referenced_elsewhere(wanted, leaving)
    elsewhere = set(
        Tag.objects.filter(digest__in=leaving)
        .exclude(repository__name=live.repository)
        .values_list("digest", flat=True)
    )
    estimates, counted = {}, set()
    for digest, blobs in closures.items():
        if digest in elsewhere:
            estimates[digest] = 0
            continue
        total = 0
        for blob, size in blobs.items():
            if blob in shared or blob in counted or blob in elsewhere:
                continue
            counted.add(blob)
            total += size
        estimates[digest] = total
    return estimates


def _blob_descriptors(data):
    items = []
    if isinstance(data.get("config"), dict):
        items.append(data["config"])
    items.extend(item for item in data.get("layers") or () if isinstance(item, dict))
    return [
        (item["digest"], item["size"])
        for item in items
        if references.is_valid_digest(item.get("digest"))
        and isinstance(item.get("size"), int)
        and item["size"] >= 0
    ]


def _referenced_elsewhere(wanted, leaving):
    """The digests of `wanted` that a manifest outside `leaving` references (scan cache)."""
    raw_wanted = {bytes.fromhex(d[7:]): d for d in wanted if d.startswith("sha256:")}
    raw_leaving = {d[7:] for d in leaving if d.startswith("sha256:")}
    found = set()
    rows = ManifestReferences.objects.values_list("digest", "references").iterator(chunk_size=2000)
    for manifest_hex, refs in rows:
        if manifest_hex in raw_leaving:
            continue
        refs = bytes(refs)
        for position in range(0, len(refs), 32):
            digest = raw_wanted.get(refs[position : position + 32])
            if digest is not None:
                found.add(digest)
    return found


def delete_tag(
    actor, repository, tag, expected_digest=None, detail=None, live=None, bin_reason="manual"
):
    """Delete one tag the way that frees space when it can; record it; update the index.

    The last tag on its image (checked live, right before): the image's manifest is deleted by
    digest, with the children of an index that nothing staying references. Other tags on the
    image: only this tag goes (placeholder), since they keep its layers in use. `live` is the
    repository's LiveRepository when the caller deletes several tags of it. Either way the
    recycle bin records first what puts it back (`bin_reason` says why: manual, bulk,
    retention:<rule>).

    Returns a TagPlan saying which happened. Raises references.InvalidReferenceError for a bad
    name and registry.RegistryError (with its readable message) when the registry refused or
    failed; a RegistryDeleteIncomplete is recorded in the audit trail, since the tag changed.
    """
    references.check_repository(repository)
    references.check_tag(tag)
    if expected_digest:
        references.check_digest(expected_digest)
    if live is None:
        live = LiveRepository.resolve(repository)
    current = live.refresh(tag)
    if current is None:
        raise registry.RegistryNotFound(f"The registry has no manifest {repository}:{tag}.")
    replaced = PLACEHOLDERS.lookup(repository, current)
    if expected_digest and current != expected_digest and replaced is None:
        raise registry.RegistryTagMoved(
            f"{repository}:{tag} now points at {current}, not {expected_digest}: it was pushed "
            "again since the page was shown. Nothing was deleted."
        )
    plan = plan_tags(live, [tag])[0]
    if plan.method == BY_DIGEST and replaced is None:
        _delete_by_digest(actor, live, plan, detail, bin_reason)
    else:
        plan = _delete_by_placeholder(actor, live, plan, detail, bin_reason, replaced)
    return plan


def _delete_by_digest(actor, live, plan, detail, bin_reason):
    repository, tag = live.repository, plan.tag
    client = registry.get_client()
    with recycle_bin.Deleting(
        actor,
        repository,
        plan.digest,
        live.tags_on(plan.digest) or [tag],
        bin_reason,
        unique_bytes=plan.reclaimable_bytes,
        read=live.document,
    ):
        client.delete_image(repository, plan.digest)
    live.forget([tag])
    index.forget_tags(repository, [tag])
    removed_children = []
    for child in plan.children:
        try:
            client.delete_image(repository, child)
            removed_children.append(child)
        except registry.RegistryNotFound:
            pass
        except registry.RegistryError as exc:
            # The image is gone already; a child left over shows up as untagged later.
            logger.warning("child %s of %s@%s stayed: %s", child, repository, plan.digest, exc)
    removed_referrers = _delete_referrers(actor, live, plan.digest, plan.referrers)
    _record_tag_deleted(
        actor,
        repository,
        tag,
        plan.digest,
        detail,
        method=BY_DIGEST,
        children=removed_children,
        reclaimable_bytes=plan.reclaimable_bytes,
        **({"referrers": removed_referrers} if removed_referrers else {}),
    )
    logger.info("tag %s:%s deleted by digest %s by %s", repository, tag, plan.digest, actor)


def _delete_referrers(actor, live, subject, attached):
    """Delete the referrers of `subject` (already deleted) by digest, each held in the recycle
    bin as a referrer of it (restored with it); returns [{"digest", "tag", "kind"}] of those
    deleted. One failing is logged and left: an orphan, which the untagged cleanup removes."""
    client = registry.get_client()
    removed = []
    for referrer in attached:
        tags = [referrer.tag] if referrer.tag else []
        try:
            with recycle_bin.Deleting(
                actor,
                live.repository,
                referrer.digest,
                tags,
                recycle_bin.referrer_reason(subject),
                read=live.document,
            ):
                client.delete_image(live.repository, referrer.digest)
        except registry.RegistryNotFound:
            continue
        except registry.RegistryError as exc:
            logger.warning(
                "referrer %s of %s@%s stayed: %s", referrer.digest, live.repository, subject, exc
            )
            continue
        if tags:
            live.forget(tags)
            index.forget_tags(live.repository, tags)
        removed.append({"digest": referrer.digest, "tag": referrer.tag, "kind": referrer.kind})
    return removed


def _record_tag_deleted(actor, repository, tag, digest, detail, **how):
    """The audit row of a tag delete: the caller's `detail`, then how the tag went."""
    AuditEvent.objects.log_portal_action(
        actor,
        PortalAction.TAG_DELETED,
        repository=repository,
        tag=tag,
        digest=digest,
        detail={**(detail or {}), **how},
    )


def _delete_by_placeholder(actor, live, plan, detail, bin_reason, replaced=None):
    repository, tag = live.repository, plan.tag
    try:
        # Only the tag goes, the manifest stays for its other tags: the bin keeps the tag
        # (`replaced`: a retry finishing a delete whose tag already points at a placeholder).
        with recycle_bin.Deleting(
            actor,
            repository,
            replaced or plan.digest,
            [tag],
            bin_reason,
            kind=recycle_bin.BinItem.Kind.TAG,
            read=live.document,
        ):
            deletion = registry.get_client().delete_tag(
                repository, tag, plan.digest, placeholders=PLACEHOLDERS
            )
    except registry.RegistryDeleteIncomplete as exc:
        AuditEvent.objects.log_portal_action(
            actor,
            PortalAction.TAG_DELETE_INCOMPLETE,
            repository,
            tag,
            detail={**(detail or {}), "error": str(exc)},
        )
        raise
    # The placeholder's record stays: the registry's notification of its push arrives after
    # this, and the index must not take the deleted tag back from it (see index.py).
    live.forget([tag])
    index.forget_tags(repository, [tag])
    _record_tag_deleted(
        actor,
        repository,
        tag,
        deletion.digest,
        detail,
        method=BY_PLACEHOLDER,
        placeholder=deletion.placeholder_digest,
        reclaimable_bytes=0,
    )
    logger.info("tag %s:%s (%s) deleted by %s", repository, tag, deletion.digest, actor)
    return TagPlan(repository, tag, deletion.digest, BY_PLACEHOLDER, plan.siblings)


def delete_image(actor, repository, digest, confirmed_tags=()):
    """Delete `digest` from `repository` with every tag on it; record it; update the index.

    `confirmed_tags` are the tags the user saw on the confirmation page (kept in the audit row).
    Returns the tag names the index dropped. Raises InvalidReferenceError or RegistryError.
    """
    references.check_repository(repository)
    references.check_digest(digest)
    live = LiveRepository.resolve(repository)
    attached = live.referrers_of(digest)
    with recycle_bin.Deleting(actor, repository, digest, confirmed_tags, "digest"):
        registry.get_client().delete_image(repository, digest)
    forgotten = index.forget_digest(repository, digest)
    tags = sorted(set(forgotten) | set(confirmed_tags))
    removed_referrers = _delete_referrers(actor, live, digest, attached)
    AuditEvent.objects.log_portal_action(
        actor,
        PortalAction.IMAGE_DELETED,
        repository=repository,
        digest=digest,
        detail={"tags": tags, **({"referrers": removed_referrers} if removed_referrers else {})},
    )
    logger.info("image %s@%s (tags %s) deleted by %s", repository, digest, tags, actor)
    return tags


@dataclass(frozen=True)
class TagToDelete:
    """One tag for delete_tags(); `reason` goes into its audit row (e.g. the retention rule)."""

    repository: str
    tag: str
    expected_digest: str = ""
    reason: str = ""
    # Why, for the recycle bin: manual (one tag), bulk, retention:<rule name>.
    bin_reason: str = "manual"


class LiveRepositories:
    """One LiveRepository per repository for the length of a bulk or retention run."""

    def __init__(self):
        self._live = {}

    def get(self, repository):
        if repository not in self._live:
            self._live[repository] = LiveRepository.resolve(repository)
        return self._live[repository]


def delete_tags(actor, targets, on_progress=None, live=None):
    """Delete several tags (TagToDelete), one at a time; a list of TagOutcome in order.

    Each repository is resolved live once (`live`, a LiveRepositories, may carry what a plan
    already resolved) and kept current as its tags go. A failure of one tag does not stop the
    others, except when the registry refuses deletes, refuses the portal's credentials or
    cannot be reached: every following tag would fail the same way, so the rest are marked
    "not attempted". `on_progress(done, outcome)` is called after each tag.
    """
    live = live or LiveRepositories()
    outcomes, stop_reason = [], ""
    for number, target in enumerate(targets, start=1):
        if stop_reason:
            outcome = TagOutcome(target.repository, target.tag, NOT_ATTEMPTED, stop_reason)
        else:
            try:
                outcome = _delete_one(actor, target, live)
            except _STOPPERS as exc:
                outcome = TagOutcome(
                    target.repository, target.tag, FAILED, str(exc), error_type=type(exc).__name__
                )
                stop_reason = f"Not attempted: {exc}"
        outcomes.append(outcome)
        if on_progress:
            on_progress(number, outcome)
    return outcomes


_STOPPERS = (
    registry.RegistryDeleteUnsupported,
    registry.RegistryUnreachable,
    registry.RegistryUnauthorized,
)


def _delete_one(actor, target, live):
    """One tag's TagOutcome; raises only the _STOPPERS errors."""
    repository, tag = target.repository, target.tag
    detail = {"reason": target.reason} if target.reason else None
    try:
        references.check_repository(repository)
        references.check_tag(tag)
        plan = delete_tag(
            actor,
            repository,
            tag,
            target.expected_digest or None,
            detail,
            live.get(repository),
            target.bin_reason or "manual",
        )
    except references.InvalidReferenceError as exc:
        return TagOutcome(str(repository)[:300], str(tag)[:200], FAILED, str(exc))
    except registry.RegistryNotFound as exc:
        # Gone from the registry already (someone else, or a stale page): the index follows.
        index.forget_tags(repository, [tag])
        return TagOutcome(repository, tag, ALREADY_GONE, str(exc))
    except _STOPPERS:
        raise
    except registry.RegistryError as exc:
        return TagOutcome(repository, tag, FAILED, str(exc), error_type=type(exc).__name__)
    if plan.method == BY_DIGEST:
        message = (
            f"Deleted {repository}:{tag} with its image (the last tag on it): "
            f"≈ {_human(plan.reclaimable_bytes)} become reclaimable{recycle_bin.held_note()}."
        )
        if plan.referrers:
            count = len(plan.referrers)
            message += f" {count} attached artifact{'s' if count != 1 else ''} went with it."
    else:
        message = (
            f"Deleted {repository}:{tag}; the image stays for {', '.join(plan.siblings)} "
            "(no space freed)."
        )
    return TagOutcome(
        repository,
        tag,
        DELETED,
        message,
        digest=plan.digest,
        method=plan.method,
        reclaimable_bytes=plan.reclaimable_bytes,
    )


def _human(size):
    from django.template.defaultfilters import filesizeformat

    return filesizeformat(size)


def referrers_pointing_at(repository, digest):
    """The referrers `delete_image(repository, digest)` deletes with it, asked of the registry
    live (for the confirmation page). Raises InvalidReferenceError or RegistryError."""
    references.check_digest(digest)
    return LiveRepository.resolve(repository).referrers_of(digest)


def tags_pointing_at(repository, digest):
    """Every tag of `repository` whose manifest is `digest`, asked of the registry live.

    Sorted names. Raises InvalidReferenceError or RegistryError (the registry is the only
    source that can promise nothing else disappears with the digest).
    """
    references.check_digest(digest)
    return LiveRepository.resolve(repository).tags_on(digest)
