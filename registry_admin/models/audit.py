import json
import uuid
from datetime import UTC, datetime, timedelta

from django.db import connection, models
from django.db.models import Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A repository prefix with at least this many events is "busy" (see repository_prefix).
BUSY_PREFIX_ROWS = 2000


# What free text is searched in (besides a portal action's raw detail).
SEARCHED_FIELDS = (
    "repository",
    "tag",
    "digest",
    "actor",
    "action",
    "event_id",
    "request_id",
    "request_addr",
    "request_useragent",
    "media_type",
)
# The searched fields joined by U+001F, exactly as migration 0008 indexes them (PostgreSQL uses
# an expression index only for the same expression).
SEARCH_DOCUMENT = (
    " || chr(31) || ".join("{p}" + name for name in SEARCHED_FIELDS)
    + " || chr(31) || CASE WHEN {p}source = 'portal' THEN {p}raw ELSE '' END"
)
# The text index's table: SQLite's FTS5 table of migration 0008, PostgreSQL's trigram-indexed
# table of migration 0014; filled in batches (index_new_events) since 0012 and 0014.
SEARCH_TABLE = "registry_admin_auditevent_search"
SQLITE_DOCUMENT = SEARCH_DOCUMENT.replace("chr(31)", "char(31)")
# Rows above the index's highest rowid: stored since the last batch, not in the index yet.
_SQLITE_INDEXED_UP_TO = f"(SELECT coalesce(max(rowid), 0) FROM {SEARCH_TABLE})"  # noqa: S608
# PostgreSQL: the ids of rows stored since the last batch (queued by 0014's insert trigger). Ids
# do not commit in order there, so a highest indexed id could not tell what is new.
POSTGRESQL_SEARCH_QUEUE = "registry_admin_auditevent_search_queue"


# The ids of the events whose text matches the two parameters: those in the index, and those in
# the tail not indexed yet, which is scanned.
_INDEX_OR_TAIL = {
    "sqlite": (
        f"SELECT rowid FROM {SEARCH_TABLE} WHERE doc LIKE %s UNION ALL "  # noqa: S608
        "SELECT tail.id FROM registry_admin_auditevent AS tail WHERE tail.id > "
        f"{_SQLITE_INDEXED_UP_TO} AND ({SQLITE_DOCUMENT.format(p='tail.')}) LIKE %s"
    ),
    "postgresql": (
        f"SELECT id FROM {SEARCH_TABLE} WHERE doc ILIKE %s UNION ALL "  # noqa: S608
        f"SELECT tail.id FROM {POSTGRESQL_SEARCH_QUEUE} AS queued JOIN registry_admin_auditevent "
        f"AS tail ON tail.id = queued.id WHERE ({SEARCH_DOCUMENT.format(p='tail.')}) ILIKE %s"
    ),
}


def unindexed(field):
    """`field` as an expression no index serves: SQLite's planner (no statistics) otherwise
    picks an index that matches far more rows than another one would."""
    return Concat(field, Value(""), output_field=models.CharField())


def index_new_events():
    """Add the audit events stored since the last call to the text index; how many.

    Called with each batch of stored notifications (ingest) and by the worker's loop, so the
    unindexed tail a search scans stays a few seconds long.

    SQLite: one statement, and SQLite's single writer keeps two callers from indexing the same
    rows. Ids only grow (AUTOINCREMENT), so every row above the index's highest rowid is new.
    PostgreSQL: the queued rows move into the index in one statement; a row another caller is
    moving right now is skipped (SKIP LOCKED: no waiting, no deadlock), it is that caller's.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The rows are fetched by `= ANY(ARRAY(..))`, which only the primary key serves: a
            # join with the queue could be planned as a hash of the whole audit table.
            cursor.execute(
                f"WITH moved AS (DELETE FROM {POSTGRESQL_SEARCH_QUEUE} WHERE id IN "  # noqa: S608
                f"(SELECT id FROM {POSTGRESQL_SEARCH_QUEUE} ORDER BY id FOR UPDATE SKIP LOCKED) "
                f"RETURNING id) INSERT INTO {SEARCH_TABLE} (id, doc) "
                f"SELECT event.id, {SEARCH_DOCUMENT.format(p='event.')} FROM "
                "registry_admin_auditevent AS event "
                "WHERE event.id = ANY(ARRAY(SELECT id FROM moved)) "
                "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc"
            )
            return cursor.rowcount
        if connection.vendor != "sqlite":
            return 0
        # Most calls find nothing: answer that without taking SQLite's write lock.
        cursor.execute(f"SELECT max(id) > {_SQLITE_INDEXED_UP_TO} FROM registry_admin_auditevent")  # noqa: S608
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute(
            f"INSERT INTO {SEARCH_TABLE} (rowid, doc) "  # noqa: S608  (constants only)
            f"SELECT id, {SQLITE_DOCUMENT.format(p='')} FROM registry_admin_auditevent "
            f"WHERE id > {_SQLITE_INDEXED_UP_TO}"
        )
        return cursor.rowcount


class AuditEventQuerySet(models.QuerySet):
    """Reads of the audit trail: the log's filters, keyset pages and the dashboard's counts."""

    def newest_first(self):
        return self.order_by("-timestamp", "-id")

    def manifest_level(self):
        """Without blob-level events and HEAD requests (the log's default view)."""
        return self.filter(noise=False)

    def repository_prefix(self, prefix, whole=False):
        """Events whose repository starts with `prefix`; `whole` when every match is wanted
        (an export) rather than the newest page."""
        if connection.vendor != "sqlite":
            return self.filter(repository__startswith=prefix)
        # A range instead of LIKE: with SQLite's binary collation it is exactly "starts with",
        # and the repository index can serve it. But for a busy prefix, sorting its rows by time
        # costs more than walking the time-ordered index until a page is full, and SQLite's
        # planner cannot tell the two apart: count up to a bound in the index (cheap) and, for a
        # busy prefix, compare an expression the repository index cannot serve.
        end = prefix + "\U0010ffff"
        in_range = AuditEvent.objects.filter(repository__gte=prefix, repository__lt=end)
        if whole or in_range.values("id")[:BUSY_PREFIX_ROWS].count() < BUSY_PREFIX_ROWS:
            return self.filter(repository__gte=prefix, repository__lt=end)
        return self.alias(repository_scan=unindexed("repository")).filter(
            repository_scan__gte=prefix, repository_scan__lt=end
        )

    def client_address(self, address):
        """Events from `address` (an IP, with or without port)."""
        return self.filter(
            Q(request_addr=address)
            | Q(request_addr__startswith=address + ":")
            | Q(request_addr__startswith=f"[{address}]:")
        )

    def matching_text(self, text):
        """Events with `text` inside one of the searched fields, ignoring (ASCII) case.

        Three characters or more are answered by the text index of migrations 0008 and 0014 (a
        trigram index on each database); shorter ones, which no trigram index can serve, scan as
        before.
        """
        # Wildcards and their escape would need LIKE's ESCAPE clause, which FTS5 cannot serve
        # from its index: such searches scan as before.
        if len(text) >= 3 and not set(text) & {"\x1f", "%", "_", "\\"}:
            pattern = f"%{text}%"
            if connection.vendor in ("sqlite", "postgresql") and not _busy_text(pattern):
                # SQLite: the trigram tokenizer folds case for all of Unicode, SQLite's LIKE only
                # for ASCII: there "É" also finds "é" (README, Audit log).
                # Events stored since the last batch are not in the index yet: their short
                # tail is scanned (on SQLite with ASCII case folding only, for those seconds).
                return self.extra(  # noqa: S610  (constant SQL, the text is a parameter)
                    # One IN list: an OR here would make SQLite walk the time index.
                    where=[
                        f"registry_admin_auditevent.id IN ({_INDEX_OR_TAIL[connection.vendor]})"
                    ],
                    params=[pattern, pattern],
                )
            if connection.vendor == "postgresql":
                # A common text: walking the time index until a page is full; migration 0014's
                # statistics on this expression tell the planner that many rows match.
                document = SEARCH_DOCUMENT.format(p="registry_admin_auditevent.")
                return self.extra(  # noqa: S610  (constant SQL, the text is a parameter)
                    where=[f"({document}) ILIKE %s"], params=[pattern]
                )
        condition = Q()
        for name in SEARCHED_FIELDS:
            condition |= Q(**{f"{name}__icontains": text})
        # A portal action's detail (its raw JSON) is short and meant to be searched.
        condition |= Q(source=AuditEvent.Source.PORTAL, raw__icontains=text)
        return self.filter(condition)

    def older_than(self, cursor):
        """Keyset: rows after `cursor` (timestamp, id) in newest-first order."""
        timestamp, pk = cursor
        # The plain bound is redundant but lets the database seek in its time index; with the
        # OR alone SQLite walks the index from the newest row down to the cursor.
        return self.filter(timestamp__lte=timestamp).filter(
            Q(timestamp__lt=timestamp) | Q(timestamp=timestamp, id__lt=pk)
        )

    def newer_than(self, cursor):
        timestamp, pk = cursor
        return self.filter(timestamp__gte=timestamp).filter(
            Q(timestamp__gt=timestamp) | Q(timestamp=timestamp, id__gt=pk)
        )

    def last_received(self):
        # Ids grow in the order rows arrive, and the primary key needs no extra index: walked
        # from the newest id down to the first registry event (portal actions are few). Through
        # the source index instead, as SQLite's planner chose, every registry event was sorted
        # (60 ms at 300,000 events, 170 ms at 1,000,000; bench/metrics_scrape.py).
        return (
            self.alias(source_scan=unindexed("source"))
            .filter(source_scan=AuditEvent.Source.REGISTRY)
            .order_by("-id")
            .values_list("received_at", flat=True)
            .first()
        )


class PortalAction(models.TextChoices):
    """What the portal itself records in the audit trail (`source="portal"`): the one home of
    the portal's action names. `detail` is any JSON-able dict; never a password or token."""

    USER_CREATED = "user.created"
    USER_PASSWORD_CHANGED = "user.password_changed"
    USER_DELETED = "user.deleted"
    TAG_DELETED = "tag.deleted"
    # A tag delete that stopped halfway (the placeholder re-point); retrying finishes it.
    TAG_DELETE_INCOMPLETE = "tag.delete_incomplete"
    IMAGE_DELETED = "image.deleted"
    UNTAGGED_DELETED = "image.untagged_deleted"
    RETENTION_RUN = "retention.run"
    RETENTION_RULE_SAVED = "retention.rule_saved"
    RETENTION_RULE_DELETED = "retention.rule_deleted"
    GARBAGE_COLLECTED = "storage.garbage_collected"
    ONLINE_GC = "storage.online_collected"
    AUDIT_PRUNED = "audit.pruned"
    ACCESS_GRANTED = "access.granted"
    ACCESS_REVOKED = "access.revoked"
    GROUP_CHANGED = "access.group_changed"
    ROBOT_CREATED = "robot.created"
    ROBOT_DELETED = "robot.deleted"
    ROBOT_EXPIRED = "robot.expired"
    TOKEN_REFUSED = "token.refused"
    # The recycle bin (recycle_bin.py): a delete's item held, put back, purged for good.
    BIN_HELD = "bin.held"
    BIN_RESTORED = "bin.restored"
    BIN_PURGED = "bin.purged"
    # Quotas (quotas.py): set and removed by an admin; a level crossed; pushes refused.
    QUOTA_SET = "quota.set"
    QUOTA_REMOVED = "quota.removed"
    QUOTA_LEVEL = "quota.level"
    QUOTA_REFUSED = "quota.refused"
    # Outgoing event hooks (event_hooks.py): an endpoint added or removed.
    HOOK_SAVED = "hook.saved"
    HOOK_REMOVED = "hook.removed"
    # A whole repository deleted (repository_delete.py), or its delete stopped by a push.
    REPOSITORY_DELETED = "repository.deleted"
    REPOSITORY_DELETE_STOPPED = "repository.delete_stopped"
    # API tokens (api_tokens.py): made and revoked by their owner or an admin; a request with a
    # bad, expired or revoked token, or beyond the token's scopes, refused.
    API_TOKEN_CREATED = "api_token.created"
    API_TOKEN_REVOKED = "api_token.revoked"
    API_REFUSED = "api.refused"
    # Sign-in with the organisation's identity (directory.py): the role given, or why not.
    SIGNED_IN = "auth.signed_in"
    SIGN_IN_REFUSED = "auth.sign_in_refused"
    # CLI secrets for docker login (cli_secrets.py).
    CLI_SECRET_CREATED = "cli_secret.created"
    CLI_SECRET_REVOKED = "cli_secret.revoked"


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


class AuditEventManager(models.Manager.from_queryset(AuditEventQuerySet)):
    def log_portal_action(self, actor, action, repository="", tag="", digest="", detail=None):
        """Store one portal action (a `PortalAction`) and return the saved row; call it right
        after the action succeeded, inside the same transaction when there is one:

            AuditEvent.objects.log_portal_action(request.user.get_username(),
                PortalAction.TAG_DELETED, repository="team/app", tag="v1", digest=digest)

        Raises ValueError when `action` is empty; database errors propagate (the caller's
        transaction decides what to roll back).
        """
        action = clean_text(action, "action").strip()
        if not action:
            raise ValueError("an audit action needs a name")
        repository = clean_text(repository, "repository")
        tag = clean_text(tag, "tag")
        digest = clean_text(digest, "digest")
        return self.create(
            source=AuditEvent.Source.PORTAL,
            event_id=f"portal-{uuid.uuid4()}",
            timestamp=timezone.now(),
            action=action,
            kind=target_kind(repository, tag, digest),
            repository=repository,
            tag=tag,
            digest=digest,
            actor=clean_text(actor, "actor"),
            # ensure_ascii escapes NUL and every non-ASCII character, so any detail fits any
            # database.
            raw=json.dumps(detail or {}, default=str, sort_keys=True),
        )


def _busy_text(pattern):
    """Text matching many events: walking the time index until a page is full beats sorting
    every match the text index returns (measured on 1,000,000 events for "docker/27": SQLite
    1.9 s through the index, 17 ms by the scan; PostgreSQL 5.7 s and 13 ms). Counting up to a
    bound in the index is cheap."""
    like = "LIKE" if connection.vendor == "sqlite" else "ILIKE"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {SEARCH_TABLE} "  # noqa: S608  (constants)
            f"WHERE doc {like} %s LIMIT %s) AS matches",
            [pattern, BUSY_PREFIX_ROWS],
        )
        return cursor.fetchone()[0] >= BUSY_PREFIX_ROWS


def encode_cursor(event):
    """The keyset position of `event` as a short URL-safe string."""
    micros = (event.timestamp - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{event.pk}"


def decode_cursor(text):
    """(timestamp, id) from `encode_cursor`'s text; ValueError when it is not one."""
    micros, _, pk = text.rpartition(".")
    if not micros.lstrip("-").isdigit() or not pk.isdigit() or len(text) > 40:
        raise ValueError("not a page cursor")
    try:
        return EPOCH + timedelta(microseconds=int(micros)), int(pk)
    except OverflowError:
        raise ValueError("not a page cursor") from None


class AuditEvent(models.Model):
    """One entry of the audit trail: a registry notification event or a portal action.

    Registry events come from `registry_admin.notifications.record()` (unique `event_id`, so a
    redelivery stores nothing); portal actions from `AuditEvent.objects.log_portal_action()`.
    `kind` and `noise` are derived when the row is built, so the log's default view (everything
    but blob-level and HEAD "pull" events) is one indexed scan.
    """

    class Source(models.TextChoices):
        REGISTRY = "registry", "Registry"
        PORTAL = "portal", "Portal"

    class Kind(models.TextChoices):
        MANIFEST = "manifest", "Manifest"
        BLOB = "blob", "Blob"
        TAG = "tag", "Tag"
        REPOSITORY = "repository", "Repository"
        OTHER = "other", "Other"

    source = models.CharField(max_length=10, choices=Source.choices)
    # The registry's event id; portal actions get "portal-<uuid>".
    event_id = models.CharField(max_length=255, unique=True)
    # When it happened (the registry's event timestamp); the log sorts by it.
    timestamp = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    action = models.CharField(max_length=64)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    # HEAD requests ("does this exist?") fire pull events too; kept but hidden by default.
    is_head = models.BooleanField(default=False)
    # Blob-level or HEAD: hidden from the default view (`all=1` shows it).
    noise = models.BooleanField(default=False)
    repository = models.CharField(max_length=255, blank=True)
    from_repository = models.CharField(max_length=255, blank=True)
    tag = models.CharField(max_length=255, blank=True)
    digest = models.CharField(max_length=200, blank=True)
    media_type = models.CharField(max_length=255, blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    # The htpasswd user for registry events, the portal user for portal actions.
    actor = models.CharField(max_length=255, blank=True)
    request_id = models.CharField(max_length=255, blank=True)
    request_addr = models.CharField(max_length=255, blank=True)
    request_host = models.CharField(max_length=255, blank=True)
    request_method = models.CharField(max_length=16, blank=True)
    request_useragent = models.CharField(max_length=500, blank=True)
    source_addr = models.CharField(max_length=255, blank=True)
    source_instance = models.CharField(max_length=255, blank=True)
    # Registry events: the event exactly as received (JSON). Portal actions: the detail (JSON).
    raw = models.TextField(blank=True)

    objects = AuditEventManager()

    class Meta:
        # Each filter's index ends with the log's full order (timestamp, id), so a filtered page
        # is read in order from the index and stops after one page.
        indexes = [
            models.Index(fields=["noise", "-timestamp", "-id"], name="audit_listing_idx"),
            models.Index(fields=["-timestamp", "-id"], name="audit_time_idx"),
            models.Index(fields=["repository", "-timestamp", "-id"], name="audit_repo_idx"),
            models.Index(fields=["actor", "-timestamp", "-id"], name="audit_actor_idx"),
            models.Index(fields=["action", "-timestamp", "-id"], name="audit_action_idx"),
            models.Index(fields=["tag", "-timestamp", "-id"], name="audit_tag_idx"),
            models.Index(fields=["request_id"], name="audit_request_idx"),
            models.Index(fields=["source", "-timestamp", "-id"], name="audit_source_idx"),
            # The pull counters' look-back (pulls._look_backs): one client's recent events in one
            # repository. Without it the look-back walked every pull in its 2-minute window.
            models.Index(
                fields=["repository", "actor", "-timestamp", "-id"], name="audit_repo_actor_idx"
            ),
        ]

    def __str__(self):
        target = self.repository + (f":{self.tag}" if self.tag else "")
        return (
            f"{self.action} {target} by {self.actor or '?'} at {self.timestamp:%Y-%m-%d %H:%M:%S}"
        )


class RejectedDelivery(models.Model):
    """An authenticated notification body that could not be (fully) stored as events.

    It was acknowledged anyway (2xx) so the registry's queue moves on; admins read the error and
    the body here. `stored_events` counts the events of the same body that were fine.
    """

    received_at = models.DateTimeField(auto_now_add=True)
    content_type = models.CharField(max_length=255, blank=True)
    remote_addr = models.CharField(max_length=255, blank=True)
    error = models.TextField()
    body = models.BinaryField()
    stored_events = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["-received_at"], name="rejected_received_idx")]

    def __str__(self):
        return f"rejected delivery at {self.received_at:%Y-%m-%d %H:%M:%S}: {self.error[:80]}"


class DeliveryCounter(models.Model):
    """Counters of deliveries that never reach the event table, one row per name.

    Unauthenticated deliveries (wrong or missing token) bump the "unauthorized" row in place, so
    anyone can knock on the endpoint without growing the database.
    """

    UNAUTHORIZED = "unauthorized"

    name = models.CharField(max_length=40, primary_key=True)
    count = models.BigIntegerField(default=0)
    last_seen = models.DateTimeField(null=True, blank=True)
    last_addr = models.CharField(max_length=255, blank=True)
    # The event id of the latest refused delivery and how many refused deliveries in a row carried
    # it: a registry with a wrong token retries the same event, a stranger's POST is one-off.
    last_event_id = models.CharField(max_length=100, blank=True, default="")
    repeats = models.PositiveIntegerField(default=0)

    def __str__(self):
        return f"{self.name}: {self.count}"


class PendingEvent(models.Model):
    """An audit event stored but not yet applied to the index and the counters (the webhook's
    batched mode, `NOTIFICATIONS_APPLY_DELAY` > 0). The audit row is the durable record; this
    row only says "still to apply", and goes in the transaction that applies it.

    A plain id, not a foreign key: the webhook inserts it beside the audit row in one
    statement each, and a pruned event (never a pending one in practice) only drops out.
    """

    event_id = models.BigIntegerField(primary_key=True)

    def __str__(self):
        return f"pending event #{self.event_id}"


class DailyActivity(models.Model):
    """The dashboard's 30-day figures, counted per day as registry events arrive (an
    `events_recorded` receiver, see registry_admin/activity.py): pushes and pulls of manifests
    (`key` empty) and events per repository and per user. The portal's service account is left
    out when counted, as the dashboard leaves it out; `manage.py rebuild_activity` recounts
    from the audit log (after changing REGISTRY_USERNAME or TIME_ZONE)."""

    class Kind(models.TextChoices):
        PUSH = "push"
        PULL = "pull"
        REPOSITORY = "repository"
        ACTOR = "actor"

    # The day in the portal's TIME_ZONE, as the dashboard's chart shows it.
    day = models.DateField()
    kind = models.CharField(max_length=10, choices=Kind.choices)
    key = models.CharField(max_length=255, blank=True)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "kind", "key"], name="daily_activity_unique")
        ]
        indexes = [models.Index(fields=["kind", "day"], name="daily_activity_kind_day_idx")]

    def __str__(self):
        return f"{self.day} {self.kind} {self.key}: {self.count}"
