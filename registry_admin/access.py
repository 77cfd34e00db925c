"""Access rules for registry users, robot accounts, and the token endpoint's decisions.

**Most specific wins.** For a user and a repository, every rule whose subject covers the user
(the user's own name, an `@group` they belong to, `*` for every registry user, `anonymous` for
everybody including those without credentials) and whose pattern matches the repository is a
candidate. The rule with the most specific pattern decides alone: an exact name beats any
pattern with a wildcard, then the pattern with more literal characters wins (`team/app/*` beats
`team/*` beats `**`). At equal specificity the user's own rule beats a group rule, which beats
`*`, which beats `anonymous`; rules still tied add their actions up. A rule with no actions
denies, so `alice team/secret none` takes back what `alice team/** pull` gives. No matching rule:
nothing. Order of creation never matters, so the CLI needs no positions.

Patterns: `*` matches within one path part, `**` across parts, `?` one character. The service
account (REGISTRY_USERNAME) and members of the group `@admins` may do everything, and they alone
get `registry:catalog:*` (the list of every repository name).
"""

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from . import accounts, htpasswd
from .models import AuditEvent, PortalAction
from .models.access import (
    ACTIONS,
    ADMINS_GROUP,
    ANONYMOUS,
    EVERYONE,
    AccessGroup,
    AccessRule,
    RobotAccount,
    TokenAuthFailure,
    validate_access_pattern,
    validate_subject,
)

logger = logging.getLogger(__name__)


ROBOT_PREFIX = "robot-"
ROBOT_MAX_DAYS = 3650

_SUBJECT_RANK = {"user": 3, "group": 2, EVERYONE: 1, ANONYMOUS: 0}


class AccessError(Exception):
    """A change refused with a sentence for the page or the command."""


def parse_actions(text):
    """ "pull,push" -> ["pull", "push"]; "none" or "" -> []; raises AccessError otherwise."""
    text = (text or "").strip().lower()
    if text in ("", "none"):
        return []
    actions = [a.strip() for a in text.split(",")]
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown or len(text) > 32:
        raise AccessError(
            "Actions are a comma-separated subset of pull,push,delete (or none), "
            f"not {text[:40]!r}."
        )
    return [a for a in ACTIONS if a in actions]


@lru_cache(maxsize=1024)
def _pattern_regex(pattern):
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    wild = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wild.get(p, re.escape(p)) for p in parts))


def pattern_matches(pattern, repository):
    return bool(_pattern_regex(pattern).fullmatch(repository))


def specificity(pattern):
    """Sort key: exact names first, then more literal characters."""
    literal = len(re.sub(r"\*|\?", "", pattern))
    return ("*" not in pattern and "?" not in pattern, literal)


def _subject_kind(subject):
    if subject in (EVERYONE, ANONYMOUS):
        return subject
    return "group" if subject.startswith("@") else "user"


@dataclass
class Decision:
    actions: list
    rules: list = field(default_factory=list)  # the rules that decided
    reason: str = ""


@dataclass
class Principal:
    """Who asks: a registry user name (with their groups) or anonymous ("")."""

    username: str
    groups: tuple = ()

    @property
    def is_anonymous(self):
        return not self.username

    @property
    def is_superuser(self):
        return bool(self.username) and (
            self.username == settings.REGISTRY_USERNAME or ADMINS_GROUP in self.groups
        )

    def subjects(self):
        if self.is_anonymous:
            return [ANONYMOUS]
        return [self.username, *(f"@{g}" for g in self.groups), EVERYONE, ANONYMOUS]


def principal_for(username):
    if not username:
        return Principal("")
    groups = tuple(
        g.name for g in AccessGroup.objects.all() if username in g.member_list()
    )  # few groups; a membership table would be premature
    return Principal(username, groups)


def decide(principal, repository, rules=None):
    """What `principal` may do on `repository`, and the rules that said so."""
    if principal.is_superuser:
        reason = (
            "the portal's service account"
            if principal.username == settings.REGISTRY_USERNAME
            else f"member of @{ADMINS_GROUP}"
        )
        return Decision(list(ACTIONS), [], reason)
    if rules is None:
        rules = AccessRule.objects.filter(subject__in=principal.subjects())
    subjects = set(principal.subjects())
    candidates = [
        r for r in rules if r.subject in subjects and pattern_matches(r.pattern, repository)
    ]
    if not candidates:
        return Decision([], [], "no rule matches")

    def key(rule):
        return (specificity(rule.pattern), _SUBJECT_RANK[_subject_kind(rule.subject)])

    best = max(key(r) for r in candidates)
    winners = [r for r in candidates if key(r) == best]
    granted = {a for r in winners for a in r.action_list()}
    return Decision([a for a in ACTIONS if a in granted], winners, "most specific rule")


def grant_access(principal, scopes):
    """[{type, name, actions}] for the token: each scope cut down to what is allowed."""
    rules = (
        None
        if principal.is_superuser
        else list(AccessRule.objects.filter(subject__in=principal.subjects()))
    )
    granted = []
    for scope in scopes:
        if scope.type == "registry":
            actions = ["*"] if principal.is_superuser else []
        else:
            allowed = decide(principal, scope.name, rules).actions
            wanted = ACTIONS if "*" in scope.actions else scope.actions
            actions = [a for a in wanted if a in allowed]
            if "*" in scope.actions and set(actions) == set(ACTIONS):
                actions = [*actions, "*"]
        entry = next(
            (g for g in granted if (g["type"], g["name"]) == (scope.type, scope.name)), None
        )
        if entry is None:
            entry = {"type": scope.type, "name": scope.name, "actions": []}
            granted.append(entry)
        entry["actions"] += [a for a in actions if a not in entry["actions"]]
    return [g for g in granted if g["actions"]]


# --- credentials and the throttle ----------------------------------------------------------
#
# TokenAuthFailure rows count per client address: under a user name, that name's wrong
# passwords; under ADDRESS_KEY, the address's wrong passwords under any names; under
# REFUSALS_KEY, the address's refusals in the current minute (the audit log's cap). Neither key
# is a registry user name (those are never empty and have no "*"), so they cannot collide.
ADDRESS_KEY = ""
REFUSALS_KEY = "*refusals"
# Failed or anonymous refusals from one address written to the audit log per minute; the rest
# are counted, and the first row of the next minute says how many.
REFUSALS_RECORDED_PER_MINUTE = 3
REFUSAL_WINDOW = timedelta(minutes=1)
# What one refusal row keeps of the request: a client may send TOKEN_MAX_SCOPES scopes of 512
# characters each, and each row is full-text indexed.
RECORDED_SCOPES = 4
RECORDED_SCOPE_LENGTH = 128
RECORDED_NAME_LENGTH = 64


class AuthRefused(Exception):
    def __init__(self, reason, status=401, retry_after=None, audit_reason=None, recorded=True):
        super().__init__(reason)
        self.reason = reason  # what the client is told
        self.audit_reason = audit_reason or reason  # what the audit log says
        self.status = status
        self.retry_after = retry_after
        self.recorded = recorded  # False: nothing was decided about the credentials


def _cooloff():
    return timedelta(seconds=settings.AXES_COOLOFF_TIME * 3600)


def _rows(key, ip_address):
    return TokenAuthFailure.objects.filter(username=key, ip_address=ip_address)


def _take(key, ip_address, limit, now):
    """Count one attempt for (key, address) unless `limit` attempts are counted within the
    cool-off; True when counted. Each step is one conditional UPDATE (or an INSERT the unique
    constraint decides), so concurrent requests cannot all pass a check made before any of
    them counted: the attempt is recorded before its password is checked."""
    rows = _rows(key, ip_address)
    if rows.filter(last_failure__lt=now - _cooloff()).update(failures=1, last_failure=now):
        return True
    if rows.filter(failures__lt=limit).update(failures=F("failures") + 1, last_failure=now):
        return True
    try:
        with transaction.atomic():
            TokenAuthFailure.objects.create(
                username=key, ip_address=ip_address, failures=1, last_failure=now
            )
        return True
    except IntegrityError:  # another request created it first
        return bool(
            rows.filter(failures__lt=limit).update(failures=F("failures") + 1, last_failure=now)
        )


def _give_back(key, ip_address, count=1):
    _rows(key, ip_address).update(failures=Greatest(F("failures") - count, 0))


def _locked(key, ip_address, now):
    last = _rows(key, ip_address).values_list("last_failure", flat=True).first()
    seconds = int(((last or now) + _cooloff() - now).total_seconds()) + 1
    return AuthRefused(
        "too many wrong passwords; try again later", 429, max(1, seconds), audit_reason=None
    )


def _limits(username):
    """(key, limit) pairs: the address's under any names, then the name's from the address."""
    limits = [(username, settings.AXES_FAILURE_LIMIT)]
    if settings.LOGIN_ADDRESS_FAILURE_LIMIT > 0:
        limits.insert(0, (ADDRESS_KEY, settings.LOGIN_ADDRESS_FAILURE_LIMIT))
    return limits


def check_limits(username, ip_address):
    """Raise AuthRefused (429) when this address (LOGIN_ADDRESS_FAILURE_LIMIT under any names) or
    this user name from this address (LOGIN_FAILURE_LIMIT) has used up its wrong passwords
    within LOGIN_COOLOFF_MINUTES: the portal login's limits. A read, so that a locked-out guess
    costs neither a hash nor a wait for a slot; `reserve_attempt` decides for good."""
    now = timezone.now()
    limits = _limits(username)
    counts = dict(
        TokenAuthFailure.objects.filter(
            username__in=[key for key, _ in limits],
            ip_address=ip_address,
            last_failure__gte=now - _cooloff(),
        ).values_list("username", "failures")
    )
    for key, limit in limits:
        if counts.get(key, 0) >= limit:
            raise _locked(key, ip_address, now)


def reserve_attempt(username, ip_address):
    """Count a password check before it runs, or raise AuthRefused (429) as `check_limits`
    does. Counting first is what keeps concurrent guesses from passing the limit together."""
    now = timezone.now()
    taken = []
    for key, limit in _limits(username):
        if not _take(key, ip_address, limit, now):
            for earlier in taken:
                _give_back(earlier, ip_address)
            raise _locked(key, ip_address, now)
        taken.append(key)


def release_attempt(username, ip_address, succeeded):
    """Undo a reservation: the check did not run (`succeeded` False), or the password was right,
    which clears the name's wrong passwords from this address as a portal login does."""
    count = 1
    if succeeded:
        count = _rows(username, ip_address).values_list("failures", flat=True).first() or 1
        _rows(username, ip_address).delete()
    else:
        _give_back(username, ip_address)
    if settings.LOGIN_ADDRESS_FAILURE_LIMIT > 0:
        _give_back(ADDRESS_KEY, ip_address, count)


def authenticate(username, password, ip_address):
    """The Principal for valid credentials; raises AuthRefused. One bcrypt check at most, in one
    of the hashing slots the login page uses, and counted against the login's limits first.

    An unknown name costs a bcrypt check at the cost its kind of account is hashed at (people
    HTPASSWD_BCRYPT_ROUNDS, robots HTPASSWD_SERVICE_BCRYPT_ROUNDS), so timing does not tell it
    from a wrong password. An expired robot is refused like a wrong password; the audit log says
    "expired" when its password was right."""
    if not htpasswd.USERNAME_RE.fullmatch(username or "") or password is None:
        raise AuthRefused("invalid credentials")
    check_limits(username, ip_address)
    # Over 1024 bytes is not a password anyone was given: refused without a hash, but counted.
    too_long = len(password.encode("utf-8", "replace")) > 1024
    rounds = (
        settings.HTPASSWD_SERVICE_BCRYPT_ROUNDS
        if username.startswith(ROBOT_PREFIX)
        else settings.HTPASSWD_BCRYPT_ROUNDS
    )
    with accounts.hashing_slot() as acquired:
        if not acquired:
            # Not audited: nothing was learnt about the credentials, and a flood from many
            # addresses would otherwise write a row per request.
            raise AuthRefused(
                "the server is busy checking passwords; try again", 429, 1, recorded=False
            )
        reserve_attempt(username, ip_address)
        try:
            right = not too_long and htpasswd.check_password(
                username, password, dummy_rounds=rounds
            )
        except Exception:
            release_attempt(username, ip_address, succeeded=False)
            raise
    if not right:
        raise AuthRefused("invalid credentials")
    robot = RobotAccount.objects.filter(username=username).first()
    if robot is not None and robot.expires_at <= timezone.now():
        # Counted as a failure and answered as one, as Django's login answers an inactive
        # account: only the audit log, read by admins, tells the two apart.
        raise AuthRefused("invalid credentials", audit_reason="robot account expired")
    release_attempt(username, ip_address, succeeded=True)
    return principal_for(username)


def refusal_slot(ip_address, key=REFUSALS_KEY):
    """(record, unrecorded): whether this refusal from `ip_address` gets an audit row, and how
    many refusals from there the previous minute counted without one (for that row to say).

    One row per address counts the minute's refusals (`failures`) from its start
    (`last_failure`); each step is one conditional UPDATE, so concurrent requests cannot
    record more than REFUSALS_RECORDED_PER_MINUTE between them. `key` keeps another endpoint's
    refusals (the API's, api_tokens.API_REFUSALS_KEY) in a budget of their own."""
    now = timezone.now()
    limit = REFUSALS_RECORDED_PER_MINUTE
    rows = _rows(key, ip_address)
    stale = rows.filter(last_failure__lt=now - REFUSAL_WINDOW)
    previous = stale.values_list("failures", flat=True).first()
    if previous is not None and stale.update(failures=1, last_failure=now):
        _prune(now)
        return True, max(0, previous - limit)
    if rows.filter(failures__lt=limit).update(failures=F("failures") + 1):
        return True, 0
    if rows.update(failures=F("failures") + 1):
        return False, 0
    try:
        with transaction.atomic():
            TokenAuthFailure.objects.create(
                username=key, ip_address=ip_address, failures=1, last_failure=now
            )
    except IntegrityError:  # another request created it first
        return bool(rows.filter(failures__lt=limit).update(failures=F("failures") + 1)), 0
    _prune(now)
    return True, 0


_prune_lock = threading.Lock()
_next_prune = 0.0


def _prune(now):
    """Drop counters no longer counting (past the cool-off); at most once a minute per process,
    as it scans the table and a flood from many addresses opens a window per request."""
    global _next_prune
    with _prune_lock:
        if time.monotonic() < _next_prune:
            return
        _next_prune = time.monotonic() + REFUSAL_WINDOW.total_seconds()
    TokenAuthFailure.objects.filter(last_failure__lt=now - max(_cooloff(), REFUSAL_WINDOW)).delete()


def record_refusal(username, ip_address, requested, granted, reason, bounded=True):
    """An audit row naming who asked for what and what was refused (never the password), of a
    bounded size. `bounded` (failed or anonymous requests, which anyone can repeat at will):
    at most REFUSALS_RECORDED_PER_MINUTE rows per client address and minute; the others are
    counted, and the next recorded row from that address gives the count."""
    try:
        unrecorded = 0
        if bounded:
            record, unrecorded = refusal_slot(ip_address)
            if not record:
                return
        detail = {
            "requested": [str(s)[:RECORDED_SCOPE_LENGTH] for s in requested[:RECORDED_SCOPES]],
            "granted": [
                f"{g['type']}:{g['name']}:{','.join(g['actions'])}"[:RECORDED_SCOPE_LENGTH]
                for g in granted[:RECORDED_SCOPES]
            ],
            "reason": reason,
            "address": ip_address,
        }
        if len(requested) > RECORDED_SCOPES:
            detail["requested_total"] = len(requested)
        if unrecorded:
            detail["unrecorded_refusals_previous_minute"] = unrecorded
        AuditEvent.objects.log_portal_action(
            (username or ANONYMOUS)[:RECORDED_NAME_LENGTH],
            PortalAction.TOKEN_REFUSED,
            repository=next((s.name for s in requested if s.type == "repository"), ""),
            detail=detail,
        )
    except Exception:  # noqa: BLE001  (a refusal must be answered even when the audit cannot record)
        logger.exception("could not record a token refusal")


# --- changes, each with its audit row --------------------------------------------------------


def grant(actor, subject, pattern, actions):
    """Create or replace the rule for (subject, pattern); returns it."""
    subject, pattern = (subject or "").strip(), (pattern or "").strip()
    try:
        validate_subject(subject)
        validate_access_pattern(pattern)
    except ValidationError as exc:
        raise AccessError(" ".join(exc.messages)) from None
    actions = (
        parse_actions(actions) if isinstance(actions, str) else parse_actions(",".join(actions))
    )
    with transaction.atomic():
        rule, created = AccessRule.objects.update_or_create(
            subject=subject,
            pattern=pattern,
            defaults={"actions": ",".join(actions), "created_by": str(actor)[:150]},
        )
        AuditEvent.objects.log_portal_action(
            actor,
            PortalAction.ACCESS_GRANTED,
            detail={
                "subject": subject,
                "pattern": pattern,
                "actions": actions,
                "replaced": not created,
            },
        )
    return rule


def revoke(actor, subject, pattern):
    """Delete the rule for (subject, pattern); False when there was none."""
    try:
        validate_subject(subject)
        validate_access_pattern(pattern)
    except ValidationError:
        return False  # never stored, so nothing to remove (and no NUL reaches PostgreSQL)
    with transaction.atomic():
        deleted, _ = AccessRule.objects.filter(subject=subject, pattern=pattern).delete()
        if deleted:
            AuditEvent.objects.log_portal_action(
                actor, PortalAction.ACCESS_REVOKED, detail={"subject": subject, "pattern": pattern}
            )
    return bool(deleted)


def set_group(actor, name, members):
    """Create, change or (with no members) delete the group `name`."""
    name = (name or "").strip().lstrip("@")
    if not htpasswd.USERNAME_RE.fullmatch(name):
        raise AccessError("A group name is 1 to 64 characters from A-Z a-z 0-9 . _ -.")
    members = sorted({m for m in (members or []) if m})
    bad = [m for m in members if not htpasswd.USERNAME_RE.fullmatch(m)]
    if bad:
        raise AccessError(f"{bad[0][:40]!r} is not a registry user name.")
    if len(members) > 1000:
        raise AccessError("A group has at most 1000 members.")
    with transaction.atomic():
        if members:
            AccessGroup.objects.update_or_create(
                name=name, defaults={"members": "\n".join(members)}
            )
        else:
            AccessGroup.objects.filter(name=name).delete()
        AuditEvent.objects.log_portal_action(
            actor, PortalAction.GROUP_CHANGED, detail={"group": name, "members": members}
        )


def create_robot(actor, name, days, description=""):
    """(RobotAccount, password): the password exists only in this return value."""
    name = (name or "").strip()
    username = name if name.startswith(ROBOT_PREFIX) else ROBOT_PREFIX + name
    try:
        htpasswd.validate_username(username)
    except htpasswd.CredentialsError as exc:
        raise AccessError(str(exc)) from None
    if not isinstance(days, int) or not 1 <= days <= ROBOT_MAX_DAYS:
        raise AccessError(f"A robot expires after 1 to {ROBOT_MAX_DAYS} days.")
    if htpasswd.read_users().get(username) is not None:
        raise AccessError(f"A registry user named {username} already exists.")
    # Generated and long, like the service account's: entropy protects it, so the low cost applies.
    password = htpasswd.generate_password(htpasswd.SERVICE_PASSWORD_LENGTH)
    description = str(description or "").replace("\x00", "")[:200]
    with transaction.atomic():
        robot = RobotAccount.objects.create(
            username=username,
            description=description,
            expires_at=timezone.now() + timedelta(days=days),
            created_by=str(actor)[:150],
        )
        AuditEvent.objects.log_portal_action(
            actor,
            PortalAction.ROBOT_CREATED,
            detail={"registry_user": username, "expires_at": robot.expires_at.isoformat()},
        )
        htpasswd.add_user(username, password, rounds=settings.HTPASSWD_SERVICE_BCRYPT_ROUNDS)
    return robot, password


def disable_expired_robots(now=None):
    """Remove the htpasswd line of every robot past its expiry; the usernames removed.

    The token endpoint refuses an expired robot by itself, but in htpasswd mode the registry
    reads the file and knows nothing of expiry: without its line it refuses the robot (and
    picks the change up without a restart). The robot stays listed, as expired, until an admin
    deletes it. The worker calls this with each heartbeat, and a batch of events does when an
    expired robot used the registry (`on_events_recorded`); a failure is logged and retried at
    the next call.
    """
    expired = list(
        RobotAccount.objects.filter(expires_at__lte=now or timezone.now()).values_list(
            "username", flat=True
        )
    )
    if not expired:
        return []
    present = htpasswd.read_users()
    removed = []
    for username in expired:
        if present.get(username) is None:
            continue
        try:
            htpasswd.delete_user(username)
        except htpasswd.CredentialsError:
            continue  # another worker removed it first
        AuditEvent.objects.log_portal_action(
            "system", PortalAction.ROBOT_EXPIRED, detail={"registry_user": username}
        )
        logger.info("robot account %s expired: removed from the htpasswd file", username)
        removed.append(username)
    return removed


def on_events_recorded(sender, events, **kwargs):
    """A registry event by a robot past its expiry: remove its htpasswd line once the batch
    is stored. The worker's heartbeat does that within seconds anyway; this covers a portal
    that runs without its worker, where the web process applies the events: the robot's first
    use after its expiry gets through, the next ones are refused. An event's actor may be
    forged; it can only make the portal remove what is expired by the portal's own records."""
    actors = {event.actor for event in events if event.source == "registry" and event.actor}
    if (
        actors
        and RobotAccount.objects.filter(
            username__in=actors, expires_at__lte=timezone.now()
        ).exists()
    ):
        transaction.on_commit(disable_expired_robots_or_log)


def disable_expired_robots_or_log():
    """`disable_expired_robots`, where a failure (an unreadable file, the database away) is
    logged and left to the next call."""
    try:
        disable_expired_robots()
    except (DatabaseError, OSError, htpasswd.CredentialsError) as exc:
        logger.warning("could not disable expired robot accounts yet: %s", exc)


def delete_robot(actor, username):
    if not htpasswd.USERNAME_RE.fullmatch(str(username or "")):
        raise AccessError(f"There is no robot account named {str(username)[:64]!r}.")
    with transaction.atomic():
        deleted, _ = RobotAccount.objects.filter(username=username).delete()
        if not deleted:
            raise AccessError(f"There is no robot account named {username[:64]!r}.")
        AccessRule.objects.filter(subject=username).delete()
        AuditEvent.objects.log_portal_action(
            actor, PortalAction.ROBOT_DELETED, detail={"registry_user": username}
        )
        if htpasswd.read_users().get(username) is not None:
            htpasswd.delete_user(username)
