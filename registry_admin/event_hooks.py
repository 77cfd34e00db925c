"""Outgoing event hooks: what happened in the registry and the portal, sent to endpoints admins
configure (generic JSON signed with HMAC-SHA256, CloudEvents 1.0, Slack, Microsoft Teams).

The one module that calls hook endpoints. Delivery is at least once and in order per hook:

- An event is queued (`HookDelivery`, one per matching hook) in the transaction that records it:
  registry events where they are applied (`signals.events_recorded`), portal actions where their
  audit row is written (`post_save`). Queuing is an INSERT; nothing here ever makes the
  notification endpoint wait for a hook.
- The worker's sender thread (`run_sender`) takes each hook's oldest pending delivery, claims it
  (a conditional UPDATE, so two workers never send the same one at once), sends it and marks it
  delivered. A failure is retried with exponential backoff (1 s, 2 s, 4 s ... at most
  RETRY_CAP_SECONDS apart); later deliveries of that hook wait behind it, so a receiver sees
  them in order. After MAX_ATTEMPTS the delivery gives up (shown on the page, retryable) and the
  next one goes. A worker that dies after sending and before marking sends it again: receivers
  de-duplicate by the event's `id`.
- Endpoints are http(s) URLs; an address that is loopback, private, link-local or otherwise not
  public is refused, when saved and again before every send (the name may resolve elsewhere
  later), unless EVENT_HOOKS_ALLOW_PRIVATE=1: the portal must not become a way into its own
  network. Redirects are not followed, for the same reason.
"""

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Q
from django.db.models.signals import post_save
from django.utils import timezone
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from . import access
from .models import AuditEvent, EventHook, EventKind, HookDelivery, PortalAction
from .references import RegistryAction

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 20
RETRY_CAP_SECONDS = 600
# How long a sender may work on one delivery before another may take it over.
CLAIM_SECONDS = 60
# An event's description beyond this many bytes of JSON loses its detail (said in the event).
MAX_EVENT_BYTES = 64 * 1024
# The sender's poll when nothing woke it (events queued by another process).
POLL_SECONDS = 1.0
# How many of a hook's deliveries one pass sends before going on to the next hook.
PER_HOOK_PER_PASS = 50

PORTAL_KINDS = {
    PortalAction.USER_CREATED: EventKind.USER,
    PortalAction.USER_PASSWORD_CHANGED: EventKind.USER,
    PortalAction.USER_DELETED: EventKind.USER,
    PortalAction.TAG_DELETED: EventKind.DELETE,
    PortalAction.IMAGE_DELETED: EventKind.DELETE,
    PortalAction.UNTAGGED_DELETED: EventKind.DELETE,
    PortalAction.REPOSITORY_DELETED: EventKind.DELETE,
    PortalAction.RETENTION_RUN: EventKind.RETENTION,
    PortalAction.GARBAGE_COLLECTED: EventKind.COLLECTION,
    PortalAction.ONLINE_GC: EventKind.COLLECTION,
    PortalAction.ACCESS_GRANTED: EventKind.ACCESS,
    PortalAction.ACCESS_REVOKED: EventKind.ACCESS,
    PortalAction.GROUP_CHANGED: EventKind.ACCESS,
    PortalAction.ROBOT_CREATED: EventKind.ACCESS,
    PortalAction.ROBOT_DELETED: EventKind.ACCESS,
    PortalAction.ROBOT_EXPIRED: EventKind.ACCESS,
    PortalAction.QUOTA_LEVEL: EventKind.QUOTA,
}
HOOK_KINDS = [k for k in EventKind.values if k != EventKind.TEST]


class HookError(ValueError):
    """A hook that cannot be saved or an endpoint that may not be called, with the sentence."""


# --- what an event says ------------------------------------------------------------------------


def describe_registry_event(event):
    """(kind, description) of a registry notification worth sending, else None: manifest
    pushes, real manifest pulls (not HEADs, not the portal's own reads), deletes by anyone but
    the portal (whose deletes are sent as its own actions, with the person and the tags)."""
    if event.source != AuditEvent.Source.REGISTRY or event.kind != AuditEvent.Kind.MANIFEST:
        return None
    service = settings.REGISTRY_USERNAME
    if event.action == RegistryAction.PUSH:
        kind = EventKind.PUSH
    elif event.action == RegistryAction.PULL and not event.is_head and event.actor != service:
        kind = EventKind.PULL
    elif event.action == RegistryAction.DELETE and event.actor != service:
        kind = EventKind.DELETE
    else:
        return None
    return kind, _description(
        kind,
        event.action,
        event.timestamp,
        repository=event.repository,
        tag=event.tag,
        digest=event.digest,
        actor=event.actor,
        media_type=event.media_type,
        size=event.size,
    )


def describe_portal_action(row):
    kind = PORTAL_KINDS.get(row.action)
    if kind is None:
        return None
    try:
        detail = json.loads(row.raw or "{}")
    except ValueError:
        detail = {}
    return kind, _description(
        kind,
        row.action,
        row.timestamp,
        repository=row.repository,
        tag=row.tag,
        digest=row.digest,
        actor=row.actor,
        detail=detail,
    )


def _description(kind, action, when, detail=None, **fields):
    described = {
        "id": str(uuid.uuid4()),
        "kind": str(kind),
        "action": str(action),
        "time": when.isoformat() if when else timezone.now().isoformat(),
        **{name: value for name, value in fields.items() if value not in (None, "")},
    }
    if detail:
        described["detail"] = detail
        if len(json.dumps(described, default=str)) > MAX_EVENT_BYTES:
            del described["detail"]
            described["detail_truncated"] = True
    return json.loads(json.dumps(described, default=str))


# --- queuing -----------------------------------------------------------------------------------

_hooks_lock = threading.Lock()
_hooks_cache = {"at": -1e9, "hooks": []}
HOOKS_CACHE_SECONDS = 2.0


def _enabled_hooks():
    """(pk, kinds, pattern) of the enabled hooks, read at most every HOOKS_CACHE_SECONDS per
    process: most events match no hook, and a batch of events must not read the table each."""
    now = time.monotonic()
    with _hooks_lock:
        if now - _hooks_cache["at"] < HOOKS_CACHE_SECONDS:
            return _hooks_cache["hooks"]
    hooks = [
        (pk, set(k for k in events.split(",") if k), pattern)
        for pk, events, pattern in EventHook.objects.filter(enabled=True).values_list(
            "pk", "events", "repository_pattern"
        )
    ]
    with _hooks_lock:
        _hooks_cache.update(at=now, hooks=hooks)
    return hooks


def forget_cached():
    with _hooks_lock:
        _hooks_cache["at"] = -1e9


def _matches(kinds, pattern, kind, event):
    if kinds and kind not in kinds:
        return False
    repository = event.get("repository")
    return not (pattern and repository and not access.pattern_matches(pattern, repository))


def queue(described):
    """Queue [(kind, description)] for every enabled hook that wants them; returns the count."""
    hooks = _enabled_hooks() if described else []
    if not hooks:
        return 0
    now = timezone.now()
    rows = [
        HookDelivery(hook_id=pk, kind=kind, event=event, next_attempt_at=now)
        for kind, event in described
        for pk, kinds, pattern in hooks
        if _matches(kinds, pattern, kind, event)
    ]
    if rows:
        HookDelivery.objects.bulk_create(rows)
        transaction.on_commit(wake)
    return len(rows)


def on_events_recorded(sender, events, **kwargs):
    """Receiver of `signals.events_recorded`: the registry's events worth sending."""
    if not _enabled_hooks():
        return
    queue([d for d in (describe_registry_event(e) for e in events) if d])


def on_audit_saved(sender, instance, created, **kwargs):
    """post_save of AuditEvent: a portal action worth sending (registry events are inserted in
    bulk, without this signal, and come through `on_events_recorded`)."""
    if created and instance.source == AuditEvent.Source.PORTAL and instance.action in PORTAL_KINDS:
        described = describe_portal_action(instance)
        if described:
            queue([described])


def connect():
    post_save.connect(on_audit_saved, sender=AuditEvent, dispatch_uid="event_hooks")


# --- the endpoint rules ------------------------------------------------------------------------


def _public(address):
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url, resolve=True):
    """Raise HookError unless `url` is an http(s) URL this portal may call; with `resolve`,
    every address its host resolves to must be public (or EVENT_HOOKS_ALLOW_PRIVATE)."""
    url = str(url or "")
    if len(url) > 2000:
        raise HookError("The URL is longer than 2,000 characters.")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise HookError("A URL has no spaces or control characters (encode them: %20).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise HookError(f"{url[:80]!r} is not a URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HookError("A hook's URL must start with http:// or https:// and name a host.")
    if parts.username or parts.password:
        raise HookError("Put credentials in the URL's path or query, not before the host.")
    if not resolve or settings.EVENT_HOOKS_ALLOW_PRIVATE:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise HookError(f"{parts.hostname[:80]!r} does not resolve.") from None
    blocked = sorted({info[4][0] for info in infos if not _public(info[4][0])})
    if blocked:
        raise HookError(
            f"{parts.hostname[:80]} resolves to a loopback, private or reserved address "
            f"({', '.join(blocked[:3])}); set EVENT_HOOKS_ALLOW_PRIVATE=1 to allow it."
        )


class PrivatePeer(NewConnectionError):
    def __init__(self, conn, sentence):
        super().__init__(conn, sentence)
        self.sentence = sentence


class _PeerChecked:
    """check_url resolves the host, and the connection resolves it again a moment later: a name
    whose DNS answers a public address first and 127.0.0.1 or the metadata service next (DNS
    rebinding) would pass the check and reach the inside. So the address actually connected to
    is checked too. Through an HTTP(S) proxy the peer is the proxy, which the operator chose;
    there check_url's resolution is the only check."""

    def _new_conn(self):
        sock = super()._new_conn()
        if not settings.EVENT_HOOKS_ALLOW_PRIVATE:
            peer = sock.getpeername()[0]
            if not _public(peer):
                sock.close()
                raise PrivatePeer(
                    self,
                    f"{self.host} resolved to {peer} when connecting, a loopback, private or "
                    "reserved address; set EVENT_HOOKS_ALLOW_PRIVATE=1 to allow it.",
                )
        return sock


class _CheckedHTTPConnection(_PeerChecked, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_PeerChecked, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _PublicOnlyAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _CheckedHTTPPool,
            "https": _CheckedHTTPSPool,
        }


def hook_session():
    """A requests session whose connections refuse a peer check_url would have refused."""
    session = requests.Session()
    adapter = _PublicOnlyAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def display_url(url):
    """The URL without its path and query, which often hold the endpoint's key."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unreadable URL)"
    return f"{parts.scheme}://{host}{port}/…"


def save_hook(actor, name, url, fmt, events=(), repository_pattern=""):
    """Create a hook; returns (hook, secret) — the secret, for the generic format, is shown
    once. Raises HookError."""
    name = str(name or "").strip()
    if not valid_name(name):
        raise HookError("A hook's name is 1 to 64 letters, digits, '.', '_' or '-'.")
    if fmt not in EventHook.Format.values:
        raise HookError(f"The format is one of {', '.join(EventHook.Format.values)}.")
    events = [str(e).strip() for e in events if str(e).strip()]
    unknown = [e for e in events if e not in HOOK_KINDS]
    if unknown:
        raise HookError(f"Unknown event kind {unknown[0][:40]!r}: use {', '.join(HOOK_KINDS)}.")
    pattern = str(repository_pattern or "").strip()
    if pattern:
        try:
            EventHook._meta.get_field("repository_pattern").run_validators(pattern)
        except ValidationError as exc:
            raise HookError(exc.messages[0]) from None
    check_url(url)
    if EventHook.objects.filter(name=name).exists():
        raise HookError(f"A hook named {name} exists; remove it first.")
    secret = secrets.token_urlsafe(32) if fmt == EventHook.Format.GENERIC else ""
    with transaction.atomic():
        hook = EventHook.objects.create(
            name=name,
            url=url,
            format=fmt,
            events=",".join(dict.fromkeys(events)),
            repository_pattern=pattern,
            secret=secret,
            created_by=actor[:150],
        )
        AuditEvent.objects.log_portal_action(
            actor,
            PortalAction.HOOK_SAVED,
            detail={"name": name, "format": fmt, "events": hook.kinds(), "pattern": pattern},
        )
    forget_cached()
    return hook, secret


def valid_name(name):
    name = str(name or "")
    return 0 < len(name) <= 64 and all(c.isalnum() or c in "._-" for c in name)


def remove_hook(actor, name):
    if not valid_name(name):
        return False
    with transaction.atomic():
        deleted, _ = EventHook.objects.filter(name=name).delete()
        if deleted:
            AuditEvent.objects.log_portal_action(
                actor, PortalAction.HOOK_REMOVED, detail={"name": str(name)[:64]}
            )
    forget_cached()
    return bool(deleted)


def send_test(hook):
    """Queue a test delivery to `hook` (whatever its filters)."""
    event = _description(EventKind.TEST, "test", timezone.now(), actor="oyster")
    with transaction.atomic():
        HookDelivery.objects.create(
            hook=hook, kind=EventKind.TEST, event=event, next_attempt_at=timezone.now()
        )
        transaction.on_commit(wake)


def retry(delivery_ids):
    """Failed deliveries back in the queue (at its end for their hook's order: sent next)."""
    count = HookDelivery.objects.filter(
        pk__in=delivery_ids, state=HookDelivery.State.FAILED
    ).update(
        state=HookDelivery.State.PENDING,
        attempts=0,
        next_attempt_at=timezone.now(),
        claimed_until=None,
    )
    if count:
        wake()
    return count


# --- formats -----------------------------------------------------------------------------------


def _headline(event):
    target = event.get("repository", "")
    if event.get("tag"):
        target += f":{event['tag']}"
    elif event.get("digest"):
        target += f"@{event['digest'][:19]}"
    actor = event.get("actor") or "someone"
    verbs = {
        "push": "pushed",
        "pull": "pulled",
        "delete": "deleted",
        "test": "test delivery from Oyster",
    }
    verb = verbs.get(event["kind"], event["action"])
    if event["kind"] in ("push", "pull", "delete"):
        return f"{target} {verb} by {actor}"
    if event["kind"] == "quota":
        detail = event.get("detail", {})
        return (
            f"Quota {detail.get('pattern', '?')} is now {detail.get('to', '?')}: "
            f"{detail.get('usage_bytes', '?')} of {detail.get('limit_bytes', '?')} bytes"
        )
    if event["kind"] == "test":
        return verb
    return f"{event['action']} by {actor}" + (f" on {target}" if target else "")


def render(hook, event):
    """(body bytes, headers) for `event` in `hook`'s format."""
    if hook.format == EventHook.Format.CLOUDEVENTS:
        body = {
            "specversion": "1.0",
            "id": event["id"],
            "source": settings.EVENT_HOOKS_SOURCE,
            "type": f"io.oyster.{event['kind']}",
            "time": event["time"],
            "datacontenttype": "application/json",
            "data": event,
        }
        if event.get("repository"):
            body["subject"] = event["repository"] + (f":{event['tag']}" if event.get("tag") else "")
        return _json(body), {"Content-Type": "application/cloudevents+json; charset=utf-8"}
    if hook.format == EventHook.Format.SLACK:
        return _json({"text": _headline(event)}), {"Content-Type": "application/json"}
    if hook.format == EventHook.Format.TEAMS:
        card = {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": _headline(event)[:200],
            "text": _headline(event),
        }
        return _json(card), {"Content-Type": "application/json"}
    body = _json(event)
    stamp = str(int(time.time()))
    signature = hmac.new(hook.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    return body, {
        "Content-Type": "application/json",
        "X-Oyster-Event": event["kind"],
        "X-Oyster-Delivery": event["id"],
        "X-Oyster-Signature": f"t={stamp},v1={signature.hexdigest()}",
    }


def _json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


# --- sending -----------------------------------------------------------------------------------


def _send(hook, event, session):
    """(status, "") when the endpoint took it (2xx), else (status or None, the reason)."""
    try:
        check_url(hook.url)
    except HookError as exc:
        return None, str(exc)
    body, headers = render(hook, event)
    headers["User-Agent"] = "Oyster-Event-Hooks/1"
    try:
        answer = session.post(
            hook.url,
            data=body,
            headers=headers,
            timeout=(settings.EVENT_HOOKS_TIMEOUT, settings.EVENT_HOOKS_TIMEOUT),
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        reason = getattr(exc.args[0] if exc.args else None, "reason", None)
        if isinstance(reason, PrivatePeer):
            return None, reason.sentence
        return None, f"{type(exc).__name__}: {str(exc)[:300]}"
    answer.close()
    if 200 <= answer.status_code < 300:
        return answer.status_code, ""
    if 300 <= answer.status_code < 400:
        return answer.status_code, f"answered {answer.status_code}; redirects are not followed"
    return answer.status_code, f"answered {answer.status_code}"


def _backoff(attempts):
    return min(RETRY_CAP_SECONDS, 2 ** max(0, attempts - 1))


def send_due():
    """One pass: for each hook, its due deliveries in queue order until one fails. Returns how
    many were delivered."""
    delivered = 0
    # One pass, one connection pool: a backlog to one endpoint goes over kept-alive connections.
    with hook_session() as session:
        delivered = _send_pass(session)
    return delivered


def _send_pass(session):
    delivered = 0
    hook_ids = (
        HookDelivery.objects.filter(state=HookDelivery.State.PENDING)
        .order_by()  # the model's ordering would put `id` in the DISTINCT: a hook per row
        .values_list("hook_id", flat=True)
        .distinct()
    )
    for hook_id in list(hook_ids):
        hook = EventHook.objects.filter(pk=hook_id).first()
        if hook is None or not hook.enabled:
            continue
        for _ in range(PER_HOOK_PER_PASS):
            head = (
                HookDelivery.objects.filter(hook_id=hook_id, state=HookDelivery.State.PENDING)
                .order_by("id")
                .first()
            )
            now = timezone.now()
            if head is None or head.next_attempt_at > now:
                break  # nothing due; later ones wait behind the head: order per hook
            claimed = (
                HookDelivery.objects.filter(pk=head.pk, state=HookDelivery.State.PENDING)
                .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
                .update(claimed_until=now + timedelta(seconds=CLAIM_SECONDS))
            )
            if not claimed:
                break  # another sender has this hook's head
            status, error = _send(hook, head.event, session)
            head.attempts += 1
            head.last_status, head.last_error, head.claimed_until = status, error[:500], None
            if not error:
                head.state, head.delivered_at = HookDelivery.State.DELIVERED, timezone.now()
                delivered += 1
            elif head.attempts >= MAX_ATTEMPTS:
                head.state = HookDelivery.State.FAILED
                logger.warning("hook %s gave up on delivery #%s: %s", hook.name, head.pk, error)
            else:
                head.next_attempt_at = timezone.now() + timedelta(seconds=_backoff(head.attempts))
            head.save(
                update_fields=[
                    "attempts",
                    "last_status",
                    "last_error",
                    "claimed_until",
                    "state",
                    "delivered_at",
                    "next_attempt_at",
                ]
            )
            if error:
                break
    return delivered


_wake = threading.Event()


def wake():
    _wake.set()


PRUNE_EVERY_SECONDS = 3600


def run_sender(stop_event):
    """The worker's sender thread: a pass when woken (an event queued in this process) or
    every POLL_SECONDS, until `stop_event` is set; old delivered rows pruned hourly."""
    next_prune = time.monotonic()
    try:
        while not stop_event.is_set():
            _wake.clear()
            close_old_connections()
            try:
                send_due()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                    prune()
            except DatabaseError as exc:
                logger.warning("event hooks: pass failed: %s", exc)
            _wake.wait(POLL_SECONDS)
            if stop_event.is_set():
                break
    finally:
        connection.close()


def prune(days=None):
    """Delivered deliveries older than EVENT_HOOKS_KEEP_DAYS go (failed ones stay until
    retried or their hook is removed)."""
    days = settings.EVENT_HOOKS_KEEP_DAYS if days is None else days
    cutoff = timezone.now() - timedelta(days=days)
    return HookDelivery.objects.filter(
        state=HookDelivery.State.DELIVERED, delivered_at__lt=cutoff
    ).delete()[0]
