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
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from . import htpasswd
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


class AuthRefused(Exception):
    def __init__(self, reason, status=401, retry_after=None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def _cooloff():
    return timedelta(seconds=settings.AXES_COOLOFF_TIME * 3600)


def check_throttle(username, ip_address):
    """Raise AuthRefused (429) while this user name from this address is locked out.

    The same limit as portal logins (LOGIN_FAILURE_LIMIT wrong passwords, LOGIN_COOLOFF_MINUTES),
    checked before bcrypt so a guesser also gets no CPU time.
    """
    row = TokenAuthFailure.objects.filter(username=username, ip_address=ip_address).first()
    if row is None or row.failures < settings.AXES_FAILURE_LIMIT:
        return
    until = row.last_failure + _cooloff()
    if timezone.now() < until:
        seconds = int((until - timezone.now()).total_seconds()) + 1
        raise AuthRefused("too many wrong passwords; try again later", 429, seconds)


def _note_failure(username, ip_address):
    now = timezone.now()
    updated = TokenAuthFailure.objects.filter(username=username, ip_address=ip_address)
    stale = updated.filter(last_failure__lt=now - _cooloff())
    if stale.update(failures=1, last_failure=now):
        return
    if updated.update(failures=F("failures") + 1, last_failure=now):
        return
    try:
        with transaction.atomic():
            TokenAuthFailure.objects.create(
                username=username, ip_address=ip_address, failures=1, last_failure=now
            )
    except IntegrityError:
        updated.update(failures=F("failures") + 1, last_failure=now)


def authenticate(username, password, ip_address):
    """The Principal for valid credentials; raises AuthRefused. One bcrypt check at most."""
    if not htpasswd.USERNAME_RE.fullmatch(username or "") or password is None:
        raise AuthRefused("invalid credentials")
    check_throttle(username, ip_address)
    robot = RobotAccount.objects.filter(username=username).first()
    if robot is not None and robot.expires_at <= timezone.now():
        raise AuthRefused("robot account expired")
    if len(password.encode("utf-8", "replace")) > 1024 or not htpasswd.check_password(
        username, password
    ):
        _note_failure(username, ip_address)
        raise AuthRefused("invalid credentials")
    TokenAuthFailure.objects.filter(username=username, ip_address=ip_address).delete()
    return principal_for(username)


def record_refusal(username, ip_address, requested, granted, reason):
    """An audit row naming who asked for what and what was refused (never the password)."""
    try:
        AuditEvent.objects.log_portal_action(
            username or ANONYMOUS,
            PortalAction.TOKEN_REFUSED,
            repository=next((s.name for s in requested if s.type == "repository"), ""),
            detail={
                "requested": [str(s) for s in requested][:32],
                "granted": [f"{g['type']}:{g['name']}:{','.join(g['actions'])}" for g in granted],
                "reason": reason,
                "address": ip_address,
            },
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
