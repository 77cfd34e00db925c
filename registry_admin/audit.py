"""Portal actions in the audit trail, beside the registry's own events.

Call `record_portal_action()` right after the action succeeded (inside the same transaction when
there is one), with the portal user's name as `actor`:

    from registry_admin import audit
    audit.record_portal_action(request.user.get_username(), audit.TAG_DELETED,
                               repository="team/app", tag="v1", digest=digest)

The row has `source="portal"`, so the audit log can show or filter portal actions apart from
registry events (`?source=portal`). `action` is one of the constants below or another short
dotted name; `detail` is any JSON-able dict (never put a password or token in it).
"""

import json
import uuid

from django.utils import timezone

from .models import AuditEvent

USER_CREATED = "user.created"
USER_PASSWORD_CHANGED = "user.password_changed"
USER_DELETED = "user.deleted"
TAG_DELETED = "tag.deleted"
IMAGE_DELETED = "image.deleted"
RETENTION_RUN = "retention.run"
AUDIT_PRUNED = "audit.pruned"


def clean_text(value, field_name):
    """`value` as a string the database accepts in `field_name`: no NUL, cut to its max_length.

    PostgreSQL refuses NUL characters in text and over-long values in varchar columns; the audit
    trail must take whatever a caller or the registry sends, so both are trimmed here.
    """
    if value is None:
        return ""
    text = str(value).replace("\x00", "")
    max_length = AuditEvent._meta.get_field(field_name).max_length
    return text[:max_length] if max_length else text


def portal_kind(repository, tag, digest):
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
        kind=portal_kind(repository, tag, digest),
        repository=repository,
        tag=tag,
        digest=digest,
        actor=clean_text(actor, "actor"),
        # ensure_ascii escapes NUL and every non-ASCII character, so any detail fits any database.
        raw=json.dumps(detail or {}, default=str, sort_keys=True),
    )
