"""Portal actions in the audit trail, beside the registry's own events.

Call `record_portal_action()` right after the action succeeded (inside the same transaction when
there is one), with the portal user's name as `actor`:

    from registry_admin import audit
    audit.record_portal_action(request.user.get_username(), audit.TAG_DELETED,
                               repository="team/app", tag="v1", digest=digest)

The row has `source="portal"`, so the audit log can show or filter portal actions apart from
registry events (`?source=portal`). `action` is one of the constants below, the one home of
the portal's action names; `detail` is any JSON-able dict (never put a password or token in it).
"""

import json
import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import activity, pulls
from .models import AuditEvent, RejectedDelivery

logger = logging.getLogger(__name__)

# Rows deleted per transaction when pruning: short write locks, so the webhook never waits long.
PRUNE_BATCH = 2000

USER_CREATED = "user.created"
USER_PASSWORD_CHANGED = "user.password_changed"
USER_DELETED = "user.deleted"
TAG_DELETED = "tag.deleted"
# A tag delete that stopped halfway (the placeholder re-point); retrying finishes it.
TAG_DELETE_INCOMPLETE = "tag.delete_incomplete"
IMAGE_DELETED = "image.deleted"
RETENTION_RUN = "retention.run"
RETENTION_RULE_SAVED = "retention.rule_saved"
RETENTION_RULE_DELETED = "retention.rule_deleted"
UNTAGGED_DELETED = "image.untagged_deleted"
GARBAGE_COLLECTED = "storage.garbage_collected"
AUDIT_PRUNED = "audit.pruned"


def clean_text(value, field_name):
    """`value` as a string the database accepts in `field_name`: valid UTF-8, no NUL, cut to its
    max_length.

    PostgreSQL refuses NUL characters in text and over-long values in varchar columns; the audit
    trail must take whatever a caller or the registry sends, so both are trimmed here.
    """
    if value is None:
        return ""
    # Lone surrogates (JSON may escape one, e.g. "\ud800") cannot be encoded for any database.
    text = str(value).encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    max_length = AuditEvent._meta.get_field(field_name).max_length
    return text[:max_length] if max_length else text


def target_kind(repository, tag, digest):
    """The kind of an event known only by what it names (a portal action, a bare registry event)."""
    if tag and not digest:
        return AuditEvent.Kind.TAG
    if digest:
        return AuditEvent.Kind.MANIFEST
    if repository:
        return AuditEvent.Kind.REPOSITORY
    return AuditEvent.Kind.OTHER


def record_portal_action(
    actor: str,
    action: str,
    repository: str = "",
    tag: str = "",
    digest: str = "",
    detail: dict | None = None,
) -> AuditEvent:
    """Store one portal action in the audit trail and return the saved row.

    Raises ValueError when `action` is empty; database errors propagate (the caller's transaction
    decides what to roll back).
    """
    action = clean_text(action, "action").strip()
    if not action:
        raise ValueError("an audit action needs a name")
    repository = clean_text(repository, "repository")
    tag = clean_text(tag, "tag")
    digest = clean_text(digest, "digest")
    return AuditEvent.objects.create(
        source=AuditEvent.Source.PORTAL,
        event_id=f"portal-{uuid.uuid4()}",
        timestamp=timezone.now(),
        action=action,
        kind=target_kind(repository, tag, digest),
        repository=repository,
        tag=tag,
        digest=digest,
        actor=clean_text(actor, "actor"),
        # ensure_ascii escapes NUL and every non-ASCII character, so any detail fits any database.
        raw=json.dumps(detail or {}, default=str, sort_keys=True),
    )


def prune_audit_events(run=None, days=None, batch_size=PRUNE_BATCH, actor=""):
    """Delete audit events (and rejected deliveries) older than `days` (AUDIT_RETENTION_DAYS).

    Deletes in batches of `batch_size`, one short transaction each; `run` (a worker Run) gets
    progress reports. 0 days disables pruning. Returns a summary dict; when something was
    deleted, the pruning itself is recorded in the trail.
    """
    days = settings.AUDIT_RETENTION_DAYS if days is None else days
    # Pull counters older than their 30-day window fold into one row each, retention or not.
    folded = pulls.compact()
    if days <= 0:
        return {"deleted": 0, "rejected_deleted": 0, "disabled": True, "pull_rows_folded": folded}
    cutoff = timezone.now() - timedelta(days=days)
    old = AuditEvent.objects.filter(timestamp__lt=cutoff)
    deleted = 0
    while True:
        ids = list(old.order_by("timestamp", "id").values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        with transaction.atomic():
            deleted += AuditEvent.objects.filter(id__in=ids).delete()[0]
        if run is not None:
            _report(run, deleted)
    # The dashboard's per-day counts go with the events they count.
    activity.prune(timezone.localdate(cutoff))
    rejected = 0
    while True:
        ids = list(
            RejectedDelivery.objects.filter(received_at__lt=cutoff).values_list("id", flat=True)[
                :batch_size
            ]
        )
        if not ids:
            break
        rejected += RejectedDelivery.objects.filter(id__in=ids).delete()[0]
    summary = {"deleted": deleted, "rejected_deleted": rejected, "cutoff": cutoff.isoformat()}
    if deleted or rejected:
        actor = actor or (getattr(run, "requested_by", "") if run else "") or "system"
        record_portal_action(actor, AUDIT_PRUNED, detail={**summary, "days": days})
        logger.info("pruned %d audit events and %d rejected deliveries", deleted, rejected)
    return summary | {"pull_rows_folded": folded}


def _report(run, deleted):
    # Imported here: the worker module loads job functions by name, not the other way round.
    from .worker import report_progress

    report_progress(run, done=deleted, message=f"{deleted} old audit events deleted")
