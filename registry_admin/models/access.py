"""Who may do what in the registry when the portal is its token server (REGISTRY_AUTH_MODE=token)."""

import re

from django.core.exceptions import ValidationError
from django.db import models

from ..references import RegistryAction
from .retention import validate_glob

PATTERN_MAX_LENGTH = 255
# A repository name's characters plus the wildcards * (one path segment), ** (any depth) and ?.
_PATTERN_RE = re.compile(r"[a-z0-9._/*?-]{1,255}")
# Registry user names (htpasswd.USERNAME_RE), a group as @name, or the two special subjects.
SUBJECT_RE = re.compile(r"(@?[A-Za-z0-9._-]{1,64}|\*|anonymous)")
EVERYONE = "*"
ANONYMOUS = "anonymous"
# Members of this group may list the catalog and do everything, like the service account.
ADMINS_GROUP = "admins"
# What a token may grant on a repository (every registry action but mount), in this order.
ACTIONS = (RegistryAction.PULL, RegistryAction.PUSH, RegistryAction.DELETE)


def validate_access_pattern(value):
    validate_glob(
        value,
        _PATTERN_RE,
        "Use lowercase letters, digits, . _ - / and the wildcards * (within one path part), "
        "** (any depth) and ? (for example team/*, team/** or **).",
    )


def validate_subject(value):
    if not SUBJECT_RE.fullmatch(value or ""):
        raise ValidationError(
            "A subject is a registry user name, @group, * (every registry user) or anonymous.",
            code="invalid_subject",
        )


class AccessRule(models.Model):
    subject = models.CharField(max_length=65, validators=[validate_subject])
    pattern = models.CharField(max_length=PATTERN_MAX_LENGTH, validators=[validate_access_pattern])
    # A comma-separated subset of pull,push,delete; empty denies (it still wins when most specific).
    actions = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["subject", "pattern"]
        constraints = [
            models.UniqueConstraint(fields=["subject", "pattern"], name="access_rule_unique")
        ]

    def __str__(self):
        return f"{self.subject} {self.pattern} {self.actions or 'none'}"

    def action_list(self):
        return [a for a in self.actions.split(",") if a]


class AccessGroup(models.Model):
    name = models.CharField(max_length=64, unique=True)
    # Registry user names, one per line (small lists; read whole on every token request).
    members = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"@{self.name}"

    def member_list(self):
        return [m for m in self.members.split() if m]


class RobotAccount(models.Model):
    """A registry user for machines: generated password; expiry enforced by the token endpoint
    and, for the htpasswd file, by the worker and the event batches
    (`access.disable_expired_robots`)."""

    username = models.CharField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["username"]

    def __str__(self):
        return self.username


class TokenAuthFailure(models.Model):
    """Wrong passwords at the token endpoint, per user name and client address (the throttle)."""

    username = models.CharField(max_length=64)
    ip_address = models.CharField(max_length=45)
    failures = models.PositiveIntegerField(default=0)
    last_failure = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["username", "ip_address"], name="token_failure_unique")
        ]

    def __str__(self):
        return f"{self.username} from {self.ip_address}"
