"""Deleting tags and images on behalf of a portal user: the registry call, the audit row and the
index update, in that order.

The registry client does the HTTP (`RegistryClient.delete_tag` removes one tag and keeps its
siblings; `delete_image` removes a digest with every tag on it). Here each successful delete is
recorded in the audit trail with the portal user and removed from the index at once, so the
pages are right before the registry's own notifications arrive (those are idempotent against it).
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings

from . import audit, index, references, registry

logger = logging.getLogger(__name__)

TAG_DELETE_INCOMPLETE = "tag.delete_incomplete"

GC_COMMAND = "registry garbage-collect /etc/docker/registry/config.yml"
GC_ADVICE = (
    "Deleting frees no space by itself: the registry's garbage collection does. With the "
    f"registry stopped or read-only, run `{GC_COMMAND} --dry-run` first, then `{GC_COMMAND}`, "
    "then restart the registry. Never add --delete-untagged on registry 2.8: it deletes the "
    "per-platform manifests of multi-platform images."
)

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

    @property
    def ok(self):
        return self.state in (DELETED, ALREADY_GONE)


def delete_tag(actor, repository, tag, expected_digest=None, detail=None):
    """Delete one tag (its siblings stay), record it, drop it from the index.

    Returns the registry's TagDeletion. Raises references.InvalidReferenceError for a bad name
    and registry.RegistryError (with its readable message) when the registry refused or failed;
    a RegistryDeleteIncomplete is recorded in the audit trail, since the tag changed.
    """
    references.check_repository(repository)
    references.check_tag(tag)
    if expected_digest:
        references.check_digest(expected_digest)
    try:
        deletion = registry.get_client().delete_tag(repository, tag, expected_digest)
    except registry.RegistryDeleteIncomplete as exc:
        audit.record_portal_action(
            actor,
            TAG_DELETE_INCOMPLETE,
            repository,
            tag,
            detail={**(detail or {}), "error": str(exc)},
        )
        raise
    index.forget_tags(repository, [tag])
    audit.record_portal_action(
        actor,
        audit.TAG_DELETED,
        repository=repository,
        tag=tag,
        digest=deletion.digest,
        detail={
            **(detail or {}),
            "method": deletion.method,
            "placeholder": deletion.placeholder_digest,
        },
    )
    logger.info("tag %s:%s (%s) deleted by %s", repository, tag, deletion.digest, actor)
    return deletion


def delete_image(actor, repository, digest, confirmed_tags=()):
    """Delete `digest` from `repository` with every tag on it; record it; update the index.

    `confirmed_tags` are the tags the user saw on the confirmation page (kept in the audit row).
    Returns the tag names the index dropped. Raises InvalidReferenceError or RegistryError.
    """
    references.check_repository(repository)
    references.check_digest(digest)
    registry.get_client().delete_image(repository, digest)
    forgotten = index.forget_digest(repository, digest)
    tags = sorted(set(forgotten) | set(confirmed_tags))
    audit.record_portal_action(
        actor, audit.IMAGE_DELETED, repository=repository, digest=digest, detail={"tags": tags}
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


def delete_tags(actor, targets, on_progress=None):
    """Delete several tags (TagToDelete), one at a time; a list of TagOutcome in order.

    A failure of one tag does not stop the others, except when the registry refuses deletes,
    refuses the portal's credentials or cannot be reached: every following tag would fail the
    same way, so the rest are marked "not attempted". `on_progress(done, outcome)` is called
    after each tag.
    """
    outcomes, stop_reason = [], ""
    for number, target in enumerate(targets, start=1):
        if stop_reason:
            outcome = TagOutcome(target.repository, target.tag, NOT_ATTEMPTED, stop_reason)
        else:
            try:
                outcome = _delete_one(actor, target)
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


def _delete_one(actor, target):
    """One tag's TagOutcome; raises only the _STOPPERS errors."""
    repository, tag = target.repository, target.tag
    detail = {"reason": target.reason} if target.reason else None
    try:
        deletion = delete_tag(actor, repository, tag, target.expected_digest or None, detail)
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
    return TagOutcome(
        repository, tag, DELETED, f"Deleted {repository}:{tag}.", digest=deletion.digest
    )


def tags_pointing_at(repository, digest):
    """Every tag of `repository` whose manifest is `digest`, asked of the registry live.

    Sorted names. Raises InvalidReferenceError or RegistryError (the registry is the only
    source that can promise nothing else disappears with the digest).
    """
    references.check_repository(repository)
    references.check_digest(digest)
    client = registry.get_client()
    tags = client.list_tags(repository)
    workers = max(1, min(settings.SYNC_CONCURRENCY, len(tags) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(lambda tag: _tag_digest(repository, tag), tags))
    return sorted(
        tag for tag, tag_digest in zip(tags, digests, strict=True) if tag_digest == digest
    )


def _tag_digest(repository, tag):
    """The tag's digest, or None when it vanished meanwhile (HEAD in a worker thread)."""
    try:
        # get_client() is per thread: sessions are not thread-safe.
        return registry.get_client().head_manifest(repository, tag).digest
    except registry.RegistryNotFound:
        return None
