"""The registry's notification envelopes, parsed and stored as audit events.

Reference: https://distribution.github.io/distribution/about/notifications/

The registry (distribution 2.8) delivers one event per POST from an in-memory queue and retries a
failed delivery forever with the same event id, holding every later event behind it. So:

- `parse_envelope(body)` is pure and total: it never raises for an event it does not understand.
  It returns the events it could read and one error line per event it could not; it raises
  `EnvelopeError` only when the body as a whole is not an envelope (not JSON, no `events` list).
- `record(envelope, ...)` stores the events of one delivery in one transaction: rows whose event
  id is already stored are skipped (redeliveries are acknowledged and stored once), and when the
  body had errors it is kept as a `RejectedDelivery` for admins to read. Database errors propagate,
  so the endpoint answers non-2xx and the registry retries.

The new events reach the repository index, the pull counters and the dashboard through the
`signals.events_recorded` signal: sent here, inside the delivery's transaction, with
`NOTIFICATIONS_APPLY_DELAY=0`; by default the events are queued (`PendingEvent`) and `ingest`
sends it for a batch of deliveries moments later (see registry_admin/signals.py).
"""

import functools
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC

from django.conf import settings
from django.db import connection, transaction
from django.db.models import CharField
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import db, ingest
from .models import AuditEvent, MetricCounter, PendingEvent, RejectedDelivery
from .models.audit import clean_text, index_new_events, target_kind
from .models.batches import pk_batches
from .pulls import is_own_read
from .references import MANIFEST_MEDIA_TYPES, RegistryAction
from .signals import events_recorded

logger = logging.getLogger(__name__)


class EnvelopeError(ValueError):
    """The body is not a notification envelope; str(error) says why."""


@dataclass(frozen=True)
class Envelope:
    """What `parse_envelope` read: the events as unsaved AuditEvent rows, and one error per
    event it had to leave out."""

    events: list = field(default_factory=list)
    errors: list = field(default_factory=list)


def parse_envelope(body):
    """Parse a notification body (bytes or str) into an `Envelope`.

    Raises EnvelopeError when the body is not JSON or not an object with an `events` list.
    Events with an unknown action or shape land in `errors`; duplicate ids keep the first.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        # ValueError covers JSONDecodeError and over-long integers; RecursionError deep nesting.
        raise EnvelopeError(f"the body is not JSON: {_short(exc)}") from None
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise EnvelopeError('the body is not an envelope: expected an object with an "events" list')

    envelope = Envelope()
    seen = set()
    for position, item in enumerate(document["events"]):
        try:
            event = parse_event(item)
        except EventError as exc:
            envelope.errors.append(f"event {position}: {exc}")
            continue
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        envelope.events.append(event)
    if not document["events"]:
        envelope.errors.append("the envelope has no events")
    return envelope


def first_event_id(body):
    """The id of the first event in a body, or "" (read from refused deliveries, so no error)."""
    try:
        events = json.loads(body).get("events")
        event_id = events[0].get("id")
    except (ValueError, AttributeError, TypeError, IndexError, KeyError, RecursionError):
        return ""
    return event_id[:100] if isinstance(event_id, str) else ""


class EventError(ValueError):
    """One event of an envelope cannot be stored; str(error) says why."""


def parse_event(item):
    """One event object of an envelope as an unsaved `AuditEvent`; raises EventError."""
    if not isinstance(item, dict):
        raise EventError("not an object")
    event_id = _text(item, "id")
    if not event_id.strip():
        raise EventError("no id")
    if len(event_id) > AuditEvent._meta.get_field("event_id").max_length:
        raise EventError("the id is too long")
    if clean_text(event_id, "event_id") != event_id or not event_id.isprintable():
        # Cleaning an id could make two events one; an id the registry never makes is refused.
        raise EventError(f"the id has unprintable characters: {event_id[:80]!r}")
    action = _text(item, "action")
    if action not in RegistryAction.values:
        raise EventError(f"unknown action {action[:40]!r} (id {event_id[:80]})")
    timestamp = _timestamp(item.get("timestamp"), event_id)
    target = _object(item, "target", event_id)
    request = _object(item, "request", event_id)
    repository = _text(target, "repository")
    if not repository:
        raise EventError(f"no target.repository (id {event_id[:80]})")

    actor = _text(_object(item, "actor", event_id), "name")
    media_type = _text(target, "mediaType")
    tag = _text(target, "tag")
    digest = _text(target, "digest")
    method = _text(request, "method").upper()
    kind = derive_kind(
        action, media_type, _text(target, "url"), repository=repository, tag=tag, digest=digest
    )
    is_head = method == "HEAD"
    row = AuditEvent(
        source=AuditEvent.Source.REGISTRY,
        event_id=event_id,
        timestamp=timestamp,
        action=action,
        kind=kind,
        is_head=is_head,
        # The portal's own reads (reconcile, detail fetches) are noise too.
        noise=is_head or kind == AuditEvent.Kind.BLOB or is_own_read(action, actor),
        repository=repository,
        from_repository=_text(target, "fromRepository"),
        tag=tag,
        digest=digest,
        media_type=media_type,
        size=_size(target),
        actor=actor,
        request_id=_text(request, "id"),
        request_addr=_text(request, "addr"),
        request_host=_text(request, "host"),
        request_method=method,
        request_useragent=_text(request, "useragent"),
        source_addr=_text(_object(item, "source", event_id), "addr"),
        source_instance=_text(_object(item, "source", event_id), "instanceID"),
        # ensure_ascii keeps NUL and any odd character storable on every database.
        raw=json.dumps(item, separators=(",", ":")),
    )
    for name in _TEXT_FIELDS:
        setattr(row, name, clean_text(getattr(row, name), name))
    return row


# What the registry sends as free text: every optional text column of the audit table.
_TEXT_FIELDS = tuple(
    column.name
    for column in AuditEvent._meta.concrete_fields
    if isinstance(column, CharField) and column.blank
)


def derive_kind(action, media_type, url="", repository="", tag="", digest=""):
    """manifest, blob, tag, repository or other, from what the event's target says.

    The URL's path (`.../manifests/<ref>` or `.../blobs/<digest>`) decides when present; then the
    media type. Deletes carry neither: `{repository, tag}` is a tag removed by a manifest delete,
    `{repository, digest}` a manifest or blob deleted by digest (2.8 sends the same shape for
    both; blob deletes are rare API calls, so it counts as a manifest), `{repository}` alone a
    repository delete (distribution v3).
    """
    segments = url.split("?", 1)[0].rstrip("/").split("/")
    if len(segments) >= 2 and segments[-2] == "manifests":
        return AuditEvent.Kind.MANIFEST
    if len(segments) >= 2 and segments[-2] == "blobs":
        return AuditEvent.Kind.BLOB
    if media_type:
        if media_type in MANIFEST_MEDIA_TYPES or "manifest" in media_type or "index" in media_type:
            return AuditEvent.Kind.MANIFEST
        return AuditEvent.Kind.BLOB
    if action == RegistryAction.MOUNT:
        return AuditEvent.Kind.BLOB
    return target_kind(repository, tag, digest)


def record(envelope, raw_body=b"", content_type="", remote_addr="", error=""):
    """Store one delivery atomically; return the AuditEvent rows newly stored.

    `error` is the parse error of a body that was not an envelope at all (then `envelope` is
    None); it and any per-event errors are kept as one RejectedDelivery with the raw body.
    With `NOTIFICATIONS_APPLY_DELAY` at 0 the `events_recorded` receivers run in this
    transaction; otherwise the new events are queued (`PendingEvent`) here and `ingest` applies
    them, and adds them to the text index, in a batch moments later. Database errors propagate.
    """
    events = envelope.events if envelope else []
    errors = ([error] if error else []) + (envelope.errors if envelope else [])
    batched = settings.NOTIFICATIONS_APPLY_DELAY > 0
    if batched and not errors and len(events) <= INSERT_CHUNK:
        # One statement stores and queues (atomic by itself): PostgreSQL queues in the same
        # statement, SQLite by its trigger (migration 0012). No BEGIN/COMMIT round: the
        # registry's one-event delivery is a single write.
        stored = _store_new(events, queue=connection.vendor == "postgresql")
        if stored:
            ingest.wake()
        return stored
    with transaction.atomic():
        stored = _store_new(events)
        if errors:
            RejectedDelivery.objects.create(
                content_type=_clip(content_type, 255),
                remote_addr=_clip(remote_addr, 255),
                error=_clip("\n".join(errors), 10000),
                body=bytes(raw_body),
                stored_events=len(stored),
            )
            MetricCounter.objects.add({"notifications_rejected:unreadable": 1})
            logger.warning(
                "notification delivery partly rejected (%d stored): %s", len(stored), errors[0]
            )
        if batched:
            if stored and connection.vendor == "postgresql":
                PendingEvent.objects.bulk_create([PendingEvent(event_id=e.pk) for e in stored])
        else:
            # send(), not send_robust(): a receiver's failure must roll the delivery back.
            events_recorded.send(sender=AuditEvent, events=stored)
            # Applied here: off the queue SQLite's trigger put them on, in the same transaction.
            for queued in pk_batches(PendingEvent, [e.pk for e in stored]):
                queued.delete()
            if stored:
                index_new_events()
    if batched and stored:
        ingest.wake()
    return stored


# Rows per INSERT: SQLite allows 32,766 parameters per statement, an event takes 23.
INSERT_CHUNK = 500


@functools.cache
def _insert_parts(vendor):
    """(fields, table, column list, one row's placeholders) of the audit INSERT, per backend."""
    fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    return fields, table, columns, "(" + ", ".join(["%s"] * len(fields)) + ")"


def _store_new(events, queue=False):
    """Insert the events whose id is not stored yet and return them (with their pk), in order.

    One `INSERT .. ON CONFLICT (event_id) DO NOTHING RETURNING` per chunk: a redelivery, or the
    same event delivered to another instance at the same moment (PostgreSQL), is skipped by the
    unique index itself, and the registry's one-event delivery costs a single statement. With
    `queue` (PostgreSQL only) the same statement adds their `PendingEvent` rows.
    """
    fields, table, columns, row = _insert_parts(connection.vendor)
    stored = []
    for start in range(0, len(events), INSERT_CHUNK):
        chunk = events[start : start + INSERT_CHUNK]
        params = []
        for event in chunk:
            params += [f.get_db_prep_save(f.pre_save(event, True), connection) for f in fields]
        # Only names from the model and placeholders are formatted in; values are parameters.
        sql = (
            f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(chunk))} "  # noqa: S608
            "ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id"
        )
        if queue:
            pending = connection.ops.quote_name(PendingEvent._meta.db_table)
            sql = (
                f"WITH new AS ({sql}), queued AS "  # noqa: S608
                f"(INSERT INTO {pending} (event_id) SELECT id FROM new) SELECT id, event_id FROM new"
            )
        ids = dict((event_id, pk) for pk, event_id in db.fetch_prepared(sql, params))
        for event in chunk:
            pk = ids.pop(event.event_id, None)
            if pk is not None:
                event.pk = pk
                event._state.adding, event._state.db = False, connection.alias
                stored.append(event)
    return stored


def _short(exc):
    return str(exc)[:200]


def _clip(value, length):
    return str(value).encode("utf-8", "replace").decode("utf-8").replace("\x00", "")[:length]


def _text(mapping, key):
    value = mapping.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise EventError(f"{key} is not a string")


def _object(mapping, key, event_id):
    value = mapping.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventError(f"{key} is not an object (id {event_id[:80]})")
    return value


def _timestamp(value, event_id):
    if not isinstance(value, str):
        raise EventError(f"no timestamp (id {event_id[:80]})")
    try:
        parsed = parse_datetime(value.strip())
        if parsed is not None:
            if timezone.is_naive(parsed):
                parsed = parsed.replace(tzinfo=UTC)
            # Stored in UTC: an offset that pushes the moment out of range fails here, not in SQL.
            parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None:
        raise EventError(f"unreadable timestamp {value[:40]!r} (id {event_id[:80]})")
    # A time in the future can only be forged (or a wrong clock): stored as the receipt time,
    # so nobody holding the token can make a tag look like the newest to retention.
    return min(parsed, timezone.now())


def _size(target):
    # Prefer `size`; 2.8 sends `length` too (the same value). Anything not a sane integer is None.
    for key in ("size", "length"):
        value = target.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
            return value
    return None
