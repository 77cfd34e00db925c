"""Who pulls what: real pulls counted per repository, tag and digest, and what is unused.

The registry sends a `pull` event for every manifest and blob request, HEAD included, and the
portal's own reconcile and detail fetches read manifests as its service account. Only some of
those are someone using an image. A **real pull** here is:

- a `GET` of a manifest (by tag or by digest): a `HEAD` is a check ("is it still there?"), blob
  requests are the layers of a pull already counted;
- by anyone but the portal's service account (`REGISTRY_USERNAME`), the accounts in
  `PULL_IGNORE_USERS` and clients whose user agent contains one of `PULL_IGNORE_USER_AGENTS`;
- not the per-platform child of an index the same client has just pulled: a multi-platform
  pull counts once, for the tag (and the index's digest).

Clients that resolve a tag with a `HEAD` and then `GET` the manifest by digest (containerd,
docker) have that GET counted for the tag they resolved. Both look-backs read the audit log's
manifest events of the same repository and user, from the same address, at most
`CHAIN_SECONDS` before the event: so a count is a function of the audit log alone, and
`rebuild()` reproduces the live counters.

Counters (`PullCount`: one row per scope, repository, tag or digest, user and UTC day) are
bumped by `on_events_recorded`, a receiver of `signals.events_recorded`, inside the transaction
that applies a batch of stored events (`ingest`): one upsert statement per batch that holds a
real pull, nothing for the rest. The unused report built on these figures is `unused.py`.
"""

import json
import logging
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from . import db, ingest
from .models import AuditEvent, Manifest, PullCount, Repository, Tag
from .models.audit import unindexed
from .models.batches import pk_batches
from .models.pulls import last_pull_subquery
from .references import INDEX_MEDIA_TYPES, RegistryAction

logger = logging.getLogger(__name__)

Scope = PullCount.Scope
# How far back a GET by digest looks for the HEAD of a tag or the index pull it belongs to.
# Clients fetch every manifest of one pull within seconds, before any layer.
CHAIN_SECONDS = 120
RECENT_DAYS = 30
# Events a rebuild reads per query.
REBUILD_CHUNK = 5000


# --- What counts --------------------------------------------------------------------------


def is_own_read(action, actor):
    """A pull by the portal's service account: its reconcile and detail fetches, which the audit
    log's default view leaves out."""
    return action == RegistryAction.PULL and bool(actor) and actor == settings.REGISTRY_USERNAME


def is_ignored_client(actor, useragent):
    if actor and (actor == settings.REGISTRY_USERNAME or actor in settings.PULL_IGNORE_USERS):
        return True
    agent = (useragent or "").lower()
    return any(part in agent for part in settings.PULL_IGNORE_USER_AGENTS)


def _is_manifest_get(event):
    return (
        event.source == AuditEvent.Source.REGISTRY
        and event.action == RegistryAction.PULL
        and event.kind == AuditEvent.Kind.MANIFEST
        and event.request_method == "GET"
        and bool(event.digest or event.tag)
    )


def _client_host(addr):
    """The address without its port: `[::1]:5000` -> `::1`, `10.0.0.1:3411` -> `10.0.0.1`."""
    host = addr.rpartition(":")[0] if ":" in addr else addr
    return host.strip("[]")


def classify(event, earlier=None):
    """The tag a real pull counts for ("" for a pull by digest of no resolved tag), or None
    when the event is not a real pull. `earlier`: the event's look-back rows, as
    `_look_backs` reads them for a whole batch; read here for this event alone when not given."""
    if not _is_manifest_get(event) or is_ignored_client(event.actor, event.request_useragent):
        return None
    if event.tag:
        return event.tag
    if earlier is None:
        earlier = _look_backs([event]).get(event.pk, [])
    host = _client_host(event.request_addr)
    resolved = ""
    for pk, _, addr, method, tag, digest, media_type in earlier:
        if _client_host(addr) != host:
            continue
        if method == "GET" and media_type in INDEX_MEDIA_TYPES and digest != event.digest:
            # The raw JSON (the index's references) only for an index pull: rare, and large.
            raw = AuditEvent.objects.filter(pk=pk).values_list("raw", flat=True).first() or ""
            if event.digest in _children(digest, raw):
                return None
        elif method == "HEAD" and tag and digest == event.digest and not resolved:
            resolved = tag
    return resolved


# Rows one look-back reads at most: a client's manifest requests within CHAIN_SECONDS.
LOOK_BACK_ROWS = 200


def _look_backs(events):
    """{event pk: rows} for the events `classify` looks back from (GETs of a manifest by digest):
    the same user's manifest events in the same repository, at most CHAIN_SECONDS before the
    event and before it in the log's order, newest first, at most LOOK_BACK_ROWS of them.

    One query per repository for the whole batch, not one per event: a cluster's pull burst
    is a GET by digest per node, all in one repository.
    """
    by_repository = defaultdict(list)
    for event in events:
        # Only where `classify` gets that far: not for the portal's own reads (a reconcile's
        # GETs by digest) or other ignored clients.
        if (
            _is_manifest_get(event)
            and not event.tag
            and not is_ignored_client(event.actor, event.request_useragent)
        ):
            by_repository[event.repository].append(event)
    found = {}
    for repository, group in by_repository.items():
        rows = defaultdict(list)
        history = (
            # action and kind compared as expressions: SQLite's planner would otherwise walk
            # every pull of the window in the action index instead of these clients' rows in
            # this repository (audit_repo_actor_idx).
            AuditEvent.objects.alias(action_value=unindexed("action"), kind_value=unindexed("kind"))
            .filter(
                repository=repository,
                actor__in={event.actor for event in group},
                action_value=RegistryAction.PULL,
                kind_value=AuditEvent.Kind.MANIFEST,
                timestamp__gte=min(event.timestamp for event in group)
                - timedelta(seconds=CHAIN_SECONDS),
                timestamp__lte=max(event.timestamp for event in group),
            )
            .order_by("actor", "-timestamp", "-id")  # the index's own order
            .values_list(
                "actor",
                "pk",
                "timestamp",
                "request_addr",
                "request_method",
                "tag",
                "digest",
                "media_type",
            )
        )
        for actor, *row in history:
            rows[actor].append(row)
        for own in rows.values():
            own.reverse()  # oldest first, for the bisection
        for event in group:
            own = rows[event.actor]
            # Where the event's place in the log's order (timestamp, id) falls among them.
            before = bisect_left(own, (event.timestamp, event.pk), key=lambda row: (row[1], row[0]))
            oldest = event.timestamp - timedelta(seconds=CHAIN_SECONDS)
            found[event.pk] = [
                row
                for row in reversed(own[max(0, before - LOOK_BACK_ROWS) : before])
                if row[1] >= oldest
            ]
    return found


def _children(digest, raw):
    """The child manifests of an index pull: the event's `references` (the registry sends them
    with `includereferences`), else the platforms the index has read."""
    try:
        references = json.loads(raw).get("target", {}).get("references") or []
        found = {r.get("digest") for r in references if isinstance(r, dict)}
    except (ValueError, AttributeError):
        found = set()
    if not found:
        manifest = Manifest.objects.filter(digest=digest).values_list("platforms", flat=True)
        for platforms in manifest[:1]:
            found = {p.get("digest") for p in platforms or [] if isinstance(p, dict)}
    return found


def _keys(event, tag):
    day = event.timestamp.astimezone(UTC).date()
    keys = [(Scope.REPOSITORY, event.repository, "", event.actor, day)]
    if tag:
        keys.append((Scope.TAG, event.repository, tag, event.actor, day))
    if event.digest:
        keys.append((Scope.DIGEST, event.repository, event.digest, event.actor, day))
    return keys


def count_events(events, totals=None):
    """{key: [pulls, last_pulled_at]} for the real pulls among `events` (added to `totals`)."""
    totals = {} if totals is None else totals
    earlier = _look_backs(events)
    for event in events:
        tag = classify(event, earlier.get(event.pk))
        if tag is None:
            continue
        for key in _keys(event, tag):
            entry = totals.get(key)
            if entry is None:
                totals[key] = [1, event.timestamp]
            else:
                entry[0] += 1
                entry[1] = max(entry[1], event.timestamp)
    return totals


# --- Keeping the counters ------------------------------------------------------------------


def on_events_recorded(sender, events, **kwargs):
    """Receiver of `signals.events_recorded`: bump the counters of the real pulls."""
    # Most events of a pull burst are blob requests: leave before any query.
    pulls = [event for event in events if _is_manifest_get(event)]
    if pulls:
        add(count_events(pulls))


def add(totals):
    """Add `totals` ({key: [pulls, last]}) to the counters in one statement."""
    rows = [
        {
            "scope": str(scope),
            "repository": repository,
            "ref": ref,
            "actor": actor,
            "day": day,
            "pulls": pulls,
            "last_pulled_at": last,
        }
        for (scope, repository, ref, actor, day), (pulls, last) in totals.items()
    ]
    db.insert_or_add(
        PullCount,
        rows,
        key=("scope", "repository", "ref", "actor", "day"),
        add=("pulls",),
        latest=("last_pulled_at",),
    )
    repositories = sorted({row["repository"] for row in rows if row["scope"] == Scope.REPOSITORY})
    if repositories:
        # After the commit, in its own statement: the applying transaction already holds other
        # repositories' rows and manifests, and waiting for one more row there could close a
        # cycle with a portal action holding that row (a deadlock on PostgreSQL).
        transaction.on_commit(lambda: refresh_last_pulls(repositories), robust=True)


def _candidates():
    return AuditEvent.objects.filter(
        source=AuditEvent.Source.REGISTRY,
        action=RegistryAction.PULL,
        kind=AuditEvent.Kind.MANIFEST,
        request_method="GET",
    ).order_by("id")


def _count_from(after_id, totals, progress=None):
    """Count the candidate events with id > after_id into `totals`; the last id read."""
    last = after_id
    while True:
        chunk = list(_candidates().filter(id__gt=last)[:REBUILD_CHUNK])
        if not chunk:
            return last
        count_events(chunk, totals)
        last = chunk[-1].pk
        if progress:
            progress(last)


def rebuild(progress=None):
    """Recompute every counter from the audit log; returns (events read up to id, rows).

    The bulk is counted outside any transaction; then, in one, the events that arrived
    meanwhile are counted too and the table is replaced, so no live pull is lost or doubled.
    """
    totals = {}
    last = _count_from(0, totals, progress)
    with transaction.atomic():
        # Events still pending would be counted here and again when a batch applies them.
        ingest.settle()
        # No delivery may commit between counting the newest events and replacing the table.
        db.lock_table_writes(PullCount)
        last = _count_from(last, totals)
        PullCount.objects.all().delete()
        PullCount.objects.bulk_create(
            [
                PullCount(
                    scope=scope,
                    repository=repository,
                    ref=ref,
                    actor=actor,
                    day=day,
                    pulls=pulls,
                    last_pulled_at=when,
                )
                for (scope, repository, ref, actor, day), (pulls, when) in totals.items()
            ],
            batch_size=1000,
        )
        transaction.on_commit(refresh_last_pulls, robust=True)
    return last, len(totals)


def compact(now=None):
    """Fold the counter rows of days before the "last 30 days" window into one row per scope,
    repository, tag or digest, and user: the newest of those days keeps the sum of their pulls
    and the latest pull time. Every figure the pages and retention read stays the same (last
    pull, pulls in 30 days, a puller's total, distinct pullers); the table stops growing with
    time (a row per active puller and day otherwise). Returns how many rows went.

    One repository per transaction, with the counters locked as in `rebuild()`, so a late
    event that bumps an old day's row meanwhile is not lost (it is folded next time).
    """
    cutoff = recent_since(now)
    groups = (
        PullCount.objects.filter(day__lt=cutoff)
        .values("scope", "repository", "ref", "actor")
        .annotate(rows=Count("id"))
        .filter(rows__gt=1)
    )
    repositories = sorted({group["repository"] for group in groups.iterator()})
    removed = 0
    for repository in repositories:
        with transaction.atomic():
            db.lock_table_writes(PullCount)
            rows = PullCount.objects.filter(repository=repository, day__lt=cutoff).order_by(
                "scope", "ref", "actor", "-day"
            )
            gone = []
            for _, group in groupby(rows, key=lambda row: (row.scope, row.ref, row.actor)):
                kept, *others = group  # the newest day stays
                if not others:
                    continue
                kept.pulls += sum(other.pulls for other in others)
                kept.last_pulled_at = max(row.last_pulled_at for row in (kept, *others))
                kept.save(update_fields=["pulls", "last_pulled_at"])
                gone += [other.pk for other in others]
            for batch in pk_batches(PullCount, gone):
                removed += batch.delete()[0]
    return removed


def snapshot_counters():
    """Every counter as {key: (pulls, last_pulled_at)}: what tests and the command compare."""
    return {
        (row.scope, row.repository, row.ref, row.actor, row.day): (row.pulls, row.last_pulled_at)
        for row in PullCount.objects.all()
    }


# --- Reading them --------------------------------------------------------------------------


@dataclass
class PullStats:
    last_pulled_at: datetime | None = None
    recent_pulls: int = 0
    pullers: int = 0


def recent_since(now=None):
    """The first UTC day of the "last 30 days" window (today included)."""
    return (now or timezone.now()).astimezone(UTC).date() - timedelta(days=RECENT_DAYS - 1)


def stats(scope, repository=None, refs=None, repositories=None):
    """{ref or repository: PullStats} for the given refs of one repository, or (scope
    repository) for the given repository names."""
    rows = PullCount.objects.filter(scope=scope)
    if repositories is not None:
        rows = rows.filter(repository__in=list(repositories))
        group = "repository"
    else:
        rows = rows.filter(repository=repository)
        if refs is not None:
            rows = rows.filter(ref__in=list(refs))
        group = "ref"
    since = recent_since()
    result = {}
    for row in rows.values(group).annotate(
        last=Max("last_pulled_at"),
        recent=Sum("pulls", filter=Q(day__gte=since)),
        pullers=Count("actor", distinct=True),
    ):
        result[row[group]] = PullStats(row["last"], row["recent"] or 0, row["pullers"])
    return result


def refresh_last_pulls(repositories=None):
    """Copy the newest pull from the counters into `Repository.last_pulled_at` (what the list
    sorts by), for the named repositories or all of them (a rebuild), 500 rows a statement."""
    rows = Repository.objects.all()
    if repositories is not None:
        rows = rows.filter(name__in=list(repositories))
    ids = list(rows.order_by("pk").values_list("pk", flat=True))
    for batch in pk_batches(Repository, ids):
        batch.update(last_pulled_at=last_pull_subquery())


@dataclass
class Puller:
    actor: str
    last_pulled_at: datetime
    pulls: int
    recent_pulls: int


def pullers(repository, tag):
    """Who pulled `repository:tag`, most recent first."""
    since = recent_since()
    rows = (
        PullCount.objects.filter(scope=Scope.TAG, repository=repository, ref=tag)
        .values("actor")
        .annotate(
            last=Max("last_pulled_at"),
            total=Sum("pulls"),
            recent=Sum("pulls", filter=Q(day__gte=since)),
        )
        .order_by("-last", "actor")
    )
    return [Puller(r["actor"], r["last"], r["total"], r["recent"] or 0) for r in rows]


def watching_since():
    """When the portal started receiving the registry's events: the receipt of the oldest one
    it keeps. Not the events' own times: anyone holding the notifications token can date one
    in 2001, and "no pull data before" must not move back with it. Ids grow as rows arrive,
    so the first registry row by id is the earliest received (the primary key serves it)."""
    return (
        AuditEvent.objects.filter(source=AuditEvent.Source.REGISTRY)
        .order_by("id")
        .values_list("received_at", flat=True)
        .first()
    )


def last_pull_verdict(repository, days, now=None):
    """For retention's "not pulled for `days` days": a function (tag, digest) -> (unused, why)
    over one repository. Unused means no real pull of the tag or its digest within `days`;
    never pulled, the push time counts instead; pushed before the portal watched (or at an
    unknown time) and never pulled, only when the portal has watched for `days` already."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    since = watching_since()
    rows = PullCount.objects.filter(repository=repository, scope__in=[Scope.TAG, Scope.DIGEST])
    last = {
        (row["scope"], row["ref"]): row["last"]
        for row in rows.values("scope", "ref").annotate(last=Max("last_pulled_at"))
    }
    pushed = dict(Tag.objects.filter(repository__name=repository).values_list("name", "pushed_at"))

    def verdict(tag, digest):
        found = [w for w in (last.get((Scope.TAG, tag)), last.get((Scope.DIGEST, digest))) if w]
        if found:
            latest = max(found)
            age = (now - latest).days
            if latest > cutoff:
                return False, f"pulled {age} days ago, within {days} days"
            return True, f"last pulled {age} days ago, not within {days} days"
        push = pushed.get(tag)
        if push is not None and since is not None and push >= since:
            age = (now - push).days
            if push > cutoff:
                return False, f"never pulled, pushed {age} days ago, within {days} days"
            return True, f"never pulled since its push {age} days ago"
        if since is not None and since <= cutoff:
            return True, f"not pulled since the portal started watching on {since:%Y-%m-%d}"
        before = f"{since:%Y-%m-%d}" if since else "now"
        return False, f"pushed before the portal watched: no pull data before {before}"

    return verdict
