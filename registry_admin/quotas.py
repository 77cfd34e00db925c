"""Storage quotas on repository patterns: their usage, their levels, and push refusals.

A repository counts towards its most specific quota only (the access rules' order:
`access.specificity`), so `team/special` with its own quota is not part of `team/*`'s.

Usage of a quota = every blob its repositories link, counted once however many of them link it
(from the latest storage scan, `scanned_bytes`) + the blobs pushed or mounted into them since
that scan started (from notifications, `pushed_bytes`) - the blobs Oyster's online collector took
from them since (`freed_bytes`). A layer linked by repositories of two quotas counts in both:
each namespace is charged for what it uses, as if it were stored alone. Before the first scan
the usage is the pushes seen so far, marked partial.

What a notification may influence: only `pushed_bytes`, an estimate until the next scan
(which reads storage alone). A forged push event with a large size can push a quota over its
limit until then; the notification endpoint needs its token, and the storage page shows how
much of each usage comes from notifications.

Enforcement (REGISTRY_AUTH_MODE=token): while a quota is exceeded, `withhold_push` takes
`push` out of every token for its repositories; `pull` and `delete` stay (deleting is how space
comes back), and the portal's own service account is exempt. A push that got its token before
the limit was reached finishes: the limit is soft by up to one push per client.
"""

import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from . import access, worker
from .models import AuditEvent, CollectedBlob, JobKind, PortalAction, Quota, QuotaSample
from .models.access import validate_access_pattern
from .models.quotas import MAX_QUOTA_BYTES
from .references import RegistryAction

logger = logging.getLogger(__name__)

# One audit row per quota and window for refused pushes, however many clients retry.
REFUSAL_WINDOW = timedelta(minutes=10)
# How long a process trusts its copy of the quotas for the token endpoint. Levels change when
# events arrive or a scan ends; a few seconds late is within the soft limit.
CACHE_SECONDS = 2.0
# Scans remembered per quota for its usage over time (one every 6 hours: 100 days).
HISTORY_SAMPLES = 400
# How far behind Oyster's clock a registry's event times may be and still be recounted.
EVENT_CLOCK_SLACK = timedelta(hours=1)


class QuotaError(ValueError):
    """Input a quota cannot take (pattern, size, threshold), with the sentence to show."""


# --- sizes -------------------------------------------------------------------------------------

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}
_SIZE_RE = re.compile(r"\s*(\d{1,20}(?:\.\d{1,6})?)\s*([a-zA-Z]{0,3})\s*")


def parse_size(text):
    """Bytes from "1048576", "500MB", "20 GB", "1.5TiB" (decimal and binary units)."""
    text = str(text or "")
    match = _SIZE_RE.fullmatch(text) if len(text) <= 40 else None
    unit = match and _UNITS.get(match.group(2).lower())
    if not unit:
        raise QuotaError(
            f"{text[:40]!r} is not a size: use bytes or a number with a unit "
            "(KB, MB, GB, TB, KiB, MiB, GiB, TiB), for example 500MB or 1.5TiB."
        )
    try:
        value = int(Decimal(match.group(1)) * unit)
    except InvalidOperation:  # pragma: no cover - the expression admits only decimals
        raise QuotaError(f"{text[:40]!r} is not a size.") from None
    if value < 1:
        raise QuotaError("A quota must be at least 1 byte.")
    if value > MAX_QUOTA_BYTES:
        raise QuotaError(f"A quota can be at most {MAX_QUOTA_BYTES:,} bytes.")
    return value


# --- which quota covers a repository -------------------------------------------------------------


@dataclass(frozen=True)
class Cover:
    id: int
    pattern: str
    prefix: str  # the literal part before the first wildcard: a cheap first test
    exceeded: bool


def _covers(rows):
    """Quotas most specific first (ties: by pattern, so the choice never depends on row order)."""
    covers = [
        Cover(pk, pattern, re.split(r"[*?]", pattern, maxsplit=1)[0], level == Quota.Level.EXCEEDED)
        for pk, pattern, level in rows
    ]
    covers.sort(key=lambda c: c.pattern)
    covers.sort(key=lambda c: access.specificity(c.pattern), reverse=True)
    return covers


def load_covers():
    return _covers(Quota.objects.values_list("pk", "pattern", "level"))


def covering(covers, repository):
    """The quota (a Cover) that counts `repository`, or None."""
    for cover in covers:
        if repository.startswith(cover.prefix) and access.pattern_matches(
            cover.pattern, repository
        ):
            return cover
    return None


_cache_lock = threading.Lock()
_cache = {"at": -1e9, "covers": []}


def cached_covers():
    """The quotas as this process last read them, at most CACHE_SECONDS old."""
    now = time.monotonic()
    with _cache_lock:
        if now - _cache["at"] < CACHE_SECONDS:
            return _cache["covers"]
    covers = load_covers()
    with _cache_lock:
        _cache.update(at=now, covers=covers)
    return covers


def forget_cached():
    with _cache_lock:
        _cache["at"] = -1e9
    _refusal_checked.clear()


# --- changes by an admin -------------------------------------------------------------------------


def set_quota(actor, pattern, size, warn_percent=None):
    """Create or change the quota on `pattern`; returns it. Raises QuotaError."""
    pattern = str(pattern or "").strip()
    try:
        validate_access_pattern(pattern)
    except ValidationError as exc:
        raise QuotaError(f"{pattern[:80]!r}: {exc.messages[0]}") from None
    limit = parse_size(size)
    if warn_percent is not None:
        try:
            warn_percent = int(str(warn_percent).strip())
        except ValueError:
            raise QuotaError("The warning threshold is a whole percentage, 1 to 100.") from None
        if not 1 <= warn_percent <= 100:
            raise QuotaError("The warning threshold is a whole percentage, 1 to 100.")
    with transaction.atomic():
        quota, created = Quota.objects.select_for_update().get_or_create(
            pattern=pattern,
            defaults={
                "limit_bytes": limit,
                "warn_percent": warn_percent or 80,
                "created_by": actor[:150],
            },
        )
        if not created:
            quota.limit_bytes = limit
            if warn_percent is not None:
                quota.warn_percent = warn_percent
            quota.save(update_fields=["limit_bytes", "warn_percent"])
        AuditEvent.objects.log_portal_action(
            actor,
            PortalAction.QUOTA_SET,
            detail={"pattern": pattern, "limit_bytes": limit, "warn_percent": quota.warn_percent},
        )
    # A new quota takes repositories from a broader one: every usage is counted again.
    recount()
    return Quota.objects.get(pk=quota.pk)


def remove_quota(actor, pattern):
    """Remove the quota on `pattern`; False when there was none."""
    pattern = str(pattern or "").strip()
    try:
        validate_access_pattern(pattern)
    except ValidationError:
        return False  # never stored, so nothing to remove (and no NUL reaches PostgreSQL)
    with transaction.atomic():
        deleted, _ = Quota.objects.filter(pattern=pattern).delete()
        if deleted:
            AuditEvent.objects.log_portal_action(
                actor, PortalAction.QUOTA_REMOVED, detail={"pattern": str(pattern)[:255]}
            )
    if deleted:
        recount()
    return bool(deleted)


# --- usage ----------------------------------------------------------------------------------------


def scan_groups():
    """For the storage scan: (name -> quota id or None, the quota ids it knew), the quotas read
    once as the scan begins; (None, empty) without quotas."""
    covers = load_covers()
    if not covers:
        return None, frozenset()

    def group_of(name):
        cover = covering(covers, name)
        return cover.id if cover else None

    return group_of, frozenset(c.id for c in covers)


def record_scan(group_bytes, known, started):
    """A finished scan's per-quota bytes (`group_bytes`: quota id -> bytes, for the quota ids
    `known` when it began) become the new baseline; pushes and collections since `started`
    are counted again on top of it. A quota created during the scan keeps its old figures."""
    with transaction.atomic():
        for quota in Quota.objects.select_for_update().filter(pk__in=known):
            quota.scanned_bytes = group_bytes.get(quota.pk, 0)
            quota.scanned_since = started
            quota.save(update_fields=["scanned_bytes", "scanned_since"])
    recount()
    now = timezone.now()
    samples = [
        QuotaSample(quota=q, taken_at=now, usage_bytes=q.usage_bytes, limit_bytes=q.limit_bytes)
        for q in Quota.objects.filter(pk__in=known)
    ]
    QuotaSample.objects.bulk_create(samples)
    for sample in samples:
        oldest_kept = (
            QuotaSample.objects.filter(quota_id=sample.quota_id)
            .order_by("-taken_at")
            .values_list("taken_at", flat=True)[HISTORY_SAMPLES - 1 : HISTORY_SAMPLES]
        )
        QuotaSample.objects.filter(quota_id=sample.quota_id, taken_at__lt=oldest_kept).delete()


def recount():
    """Count every quota's pushes and collections since its scan again, from the audit log and
    the collector's rows, and update the levels. Run after quota changes, scans and collections
    (not per notification: `on_events_recorded` adds to the figures instead)."""
    covers = load_covers()
    by_id = {c.id: c for c in covers}
    if not covers:
        return
    quotas = {q.pk: q for q in Quota.objects.all()}
    oldest = min((q.scanned_since or q.created_at for q in quotas.values()), default=None)
    pushed = dict.fromkeys(quotas, 0)
    seen = set()
    events = (
        AuditEvent.objects.filter(
            source=AuditEvent.Source.REGISTRY,
            kind=AuditEvent.Kind.BLOB,
            action__in=[RegistryAction.PUSH, RegistryAction.MOUNT],
            # When Oyster received it decides (a registry's clock, or a forged time, does not);
            # the registry's time only narrows the search through its index, with slack for a
            # registry clock behind ours.
            timestamp__gte=oldest - EVENT_CLOCK_SLACK,
            received_at__gte=oldest,
        )
        .order_by()
        .values_list("repository", "digest", "size", "received_at")
        .iterator(chunk_size=2000)
    )
    for repository, digest, size, when in events:
        cover = covering(covers, repository)
        if cover is None or (cover.id, digest) in seen:
            continue
        quota = quotas[cover.id]
        if when >= (quota.scanned_since or quota.created_at):
            seen.add((cover.id, digest))
            pushed[cover.id] += max(0, size or 0)
    freed = dict.fromkeys(quotas, 0)
    collected = CollectedBlob.objects.filter(
        state__in=[CollectedBlob.State.TRASHED, CollectedBlob.State.PURGED],
        trashed_at__gte=oldest,
    ).values_list("size", "unlinked_from", "trashed_at")
    for size, unlinked_from, trashed_at in collected.iterator(chunk_size=2000):
        hit = {covering(covers, name) for name in unlinked_from or []} - {None}
        for cover in hit:
            quota = quotas[cover.id]
            if quota.scanned_since and trashed_at >= quota.scanned_since:
                freed[cover.id] += size
    with transaction.atomic():
        for pk in quotas:
            if pk in by_id:
                Quota.objects.filter(pk=pk).update(pushed_bytes=pushed[pk], freed_bytes=freed[pk])
    update_levels()


def on_events_recorded(sender, events, **kwargs):
    """Receiver of `signals.events_recorded`: blob pushes and mounts add to their quota's usage
    (in the delivery's transaction, so a retried delivery is not counted twice)."""
    added = {}
    seen = set()
    covers = None
    for event in events:
        if (
            event.kind != AuditEvent.Kind.BLOB
            or event.action not in (RegistryAction.PUSH, RegistryAction.MOUNT)
            or not event.size
            or event.size < 0
        ):
            continue
        if covers is None:
            covers = load_covers()
            if not covers:
                return
        cover = covering(covers, event.repository)
        if cover is None or (cover.id, event.digest) in seen:
            continue
        seen.add((cover.id, event.digest))
        added[cover.id] = added.get(cover.id, 0) + event.size
    for pk, size in added.items():
        Quota.objects.filter(pk=pk).update(pushed_bytes=F("pushed_bytes") + size)
    if added:
        update_levels(Quota.objects.filter(pk__in=added))


def update_levels(queryset=None):
    """Store each quota's level; a crossing gets an audit row (the warning channel)."""
    changed = []
    with transaction.atomic():
        for quota in (queryset or Quota.objects.all()).select_for_update():
            level = quota.level_for_usage()
            if level != quota.level:
                previous, quota.level = quota.level, level
                quota.level_changed_at = timezone.now()
                quota.save(update_fields=["level", "level_changed_at"])
                changed.append(quota)
                AuditEvent.objects.log_portal_action(
                    "oyster",
                    PortalAction.QUOTA_LEVEL,
                    detail={
                        "pattern": quota.pattern,
                        "from": previous,
                        "to": level,
                        "usage_bytes": quota.usage_bytes,
                        "limit_bytes": quota.limit_bytes,
                        "partial": quota.is_partial,
                    },
                )
    if changed:
        forget_cached()
    return changed


def after_repository_delete(repository):
    """A repository under a quota went whole: its links are gone, so the blobs it linked no
    longer count for the quota, but only a scan can say which of them other repositories of
    the quota still link. Ask the worker for one (`storage_scan`)."""
    if covering(load_covers(), repository) is not None:
        worker.request_run(JobKind.STORAGE_SCAN)
        return True
    return False


def after_collection():
    """After a real online collection: what it took counts off the quotas."""
    if Quota.objects.exists():
        recount()


# --- enforcement at the token endpoint -------------------------------------------------------------


def withhold_push(principal, granted):
    """`granted` without `push` on repositories whose quota is exceeded; returns
    (granted, [Cover refused]). The portal's own service account is exempt."""
    if principal.username == settings.REGISTRY_USERNAME and principal.username:
        return granted, []
    if not any("push" in g["actions"] for g in granted if g["type"] == "repository"):
        return granted, []
    covers = cached_covers()
    if not any(c.exceeded for c in covers):
        return granted, []
    refused = []
    kept = []
    for entry in granted:
        if entry["type"] == "repository" and "push" in entry["actions"]:
            cover = covering(covers, entry["name"])
            if cover is not None and cover.exceeded:
                actions = [a for a in entry["actions"] if a not in ("push", "*")]
                entry = {**entry, "actions": actions}
                if cover not in refused:
                    refused.append(cover)
        if entry["actions"]:
            kept.append(entry)
    return kept, refused


# Per process: quota id -> monotonic time before which no refusal needs the database again
# (the conditional UPDATE below decides who writes the row; this only spares a write per token
# request while a pusher retries in a loop).
_refusal_checked = {}
REFUSAL_RECHECK_SECONDS = 60.0


def record_refusals(username, refused, repository):
    """One audit row per quota and REFUSAL_WINDOW, whoever asks and however often."""
    now = timezone.now()
    for cover in refused:
        moment = time.monotonic()
        if _refusal_checked.get(cover.id, 0.0) > moment:
            continue
        _refusal_checked[cover.id] = moment + REFUSAL_RECHECK_SECONDS
        claimed = (
            Quota.objects.filter(pk=cover.id)
            .filter(
                Q(refusal_logged_at__isnull=True) | Q(refusal_logged_at__lt=now - REFUSAL_WINDOW)
            )
            .update(refusal_logged_at=now)
        )
        if not claimed:
            continue
        quota = Quota.objects.filter(pk=cover.id).first()
        if quota is None:
            continue
        AuditEvent.objects.log_portal_action(
            (username or access.ANONYMOUS)[:64],
            PortalAction.QUOTA_REFUSED,
            repository=repository,
            detail={
                "pattern": quota.pattern,
                "usage_bytes": quota.usage_bytes,
                "limit_bytes": quota.limit_bytes,
                "reason": f"quota {quota.pattern} exceeded",
                "window_minutes": int(REFUSAL_WINDOW.total_seconds() // 60),
            },
        )


# --- what pages show ---------------------------------------------------------------------------------


def for_repository(name):
    """The quota that counts repository `name`, or None."""
    cover = covering(load_covers(), name)
    return Quota.objects.filter(pk=cover.id).first() if cover else None


def sparkline(quota, points=60, width=160, height=28):
    """SVG polyline points of the quota's usage at its last `points` scans (and the limit's
    height), or None with fewer than two scans: the Quotas page's usage over time."""
    rows = list(
        quota.samples.order_by("-taken_at").values_list("usage_bytes", "limit_bytes")[:points]
    )[::-1]
    if len(rows) < 2:
        return None
    top = max(max(u for u, _ in rows), max(limit for _, limit in rows), 1)
    step = width / (len(rows) - 1)

    def y(value):
        return round(height - value * height / top, 1)

    return {
        "points": " ".join(f"{round(i * step, 1)},{y(u)}" for i, (u, _) in enumerate(rows)),
        "limit_y": y(rows[-1][1]),
        "width": width,
        "height": height,
        "count": len(rows),
        "first": rows[0][0],
        "last": rows[-1][0],
    }


def alerts():
    """Quotas at or over their warning threshold, worst first."""
    return sorted(
        Quota.objects.exclude(level=Quota.Level.OK),
        key=lambda q: (q.level != Quota.Level.EXCEEDED, -q.percent, q.pattern),
    )
