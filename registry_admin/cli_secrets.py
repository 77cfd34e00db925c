"""CLI secrets: passwords for `docker login` for people who sign in with the directory, in
token mode (REGISTRY_AUTH_MODE=token).

A person's registry name is derived from their portal name in the registry's user-name grammar
(`dana@example.org` -> `dana.example.org`) and fixed with their first secret; a name an htpasswd
user, a robot, the service account or another person has is refused. The token endpoint takes a
secret as that name's password; the access rules then apply to the name and to the person's
directory groups as `@group` subjects (the role-claim values read at their last sign-in).
A disabled portal account, a revoked or expired secret: refused at the next token request.
"""

import hashlib
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import access, htpasswd
from .models import AuditEvent, CliSecret, PortalAction, RobotAccount
from .models.access import ADMINS_GROUP, SUBJECT_RE

PREFIX = "oyc_"
MAX_DAYS = 365
# Several machines each; more is a sign of secrets being made instead of reused.
MAX_ACTIVE = 10
MAX_NAME = 64


class SecretError(Exception):
    """A request the page refuses, with the sentence to show."""


def registry_name_for(username):
    """The registry's user-name grammar for a portal name, or "" when nothing is left."""
    name = username.lower().replace("@", ".")
    name = re.sub(r"[^a-z0-9._-]+", "-", name).strip(".-_")[:64].strip(".-_")
    if not htpasswd.USERNAME_RE.fullmatch(name) or name.startswith(access.ROBOT_PREFIX):
        return ""
    return name


def _taken(name, identity):
    if name == settings.REGISTRY_USERNAME or RobotAccount.objects.filter(username=name).exists():
        return True
    if any(entry.username == name for entry in htpasswd.read_users().entries):
        return True
    return type(identity).objects.filter(registry_name=name).exclude(pk=identity.pk).exists()


def registry_name(identity):
    """The identity's registry name, given now if it has none; raises SecretError."""
    if identity.registry_name:
        return identity.registry_name
    name = registry_name_for(identity.user.get_username())
    if not name:
        raise SecretError("Your user name has nothing the registry accepts as a user name.")
    if _taken(name, identity):
        raise SecretError(
            f"The registry already has a user named {name}: ask an admin to rename or remove it "
            "before you create a CLI secret."
        )
    identity.registry_name = name
    identity.save(update_fields=["registry_name"])
    return name


def _digest(secret):
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def active(identity):
    now = timezone.now()
    return identity.secrets.filter(revoked_at__isnull=True, expires_at__gt=now)


def create(identity, name, days):
    """(CliSecret, the secret itself, shown once). Raises SecretError."""
    name = "".join(ch for ch in str(name or "") if ch.isprintable()).strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise SecretError(f"Name the secret (the machine it is for), 1 to {MAX_NAME} characters.")
    if not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise SecretError(f"A secret lasts 1 to {MAX_DAYS} days.")
    with transaction.atomic():
        user_name = registry_name(identity)
        if active(identity).count() >= MAX_ACTIVE:
            raise SecretError(f"You have {MAX_ACTIVE} secrets: revoke one first.")
        secret = PREFIX + secrets.token_urlsafe(32)
        row = CliSecret.objects.create(
            identity=identity,
            name=name,
            secret_hash=_digest(secret),
            expires_at=timezone.now() + timedelta(days=days),
        )
        AuditEvent.objects.log_portal_action(
            identity.user.get_username(),
            PortalAction.CLI_SECRET_CREATED,
            detail={"registry_name": user_name, "name": name, "days": days, "id": row.pk},
        )
    return row, secret


def revoke(identity, pk):
    """Revoke one of the identity's secrets; False when it has no such active secret."""
    with transaction.atomic():
        count = active(identity).filter(pk=pk).update(revoked_at=timezone.now())
        if count:
            AuditEvent.objects.log_portal_action(
                identity.user.get_username(),
                PortalAction.CLI_SECRET_REVOKED,
                detail={"registry_name": identity.registry_name, "id": pk},
            )
    return bool(count)


def principal(username, password, ip_address):
    """The access.Principal for a registry name and one of its live secrets, else None (the
    caller goes on with the htpasswd check, which counts the failure). A name or address out of
    wrong guesses is refused first (access.AuthRefused), as for a password."""
    if not password or not password.startswith(PREFIX) or len(password) > 100:
        return None
    if not htpasswd.USERNAME_RE.fullmatch(username or ""):
        return None
    access.check_limits(username, ip_address)
    row = (
        CliSecret.objects.select_related("identity")
        .filter(
            secret_hash=_digest(password),
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
            identity__registry_name=username,
            identity__user__is_active=True,
        )
        .first()
    )
    if row is None:
        return None
    CliSecret.objects.filter(pk=row.pk).update(last_used_at=timezone.now())
    found = access.principal_for(username)
    # Directory groups that fit the subject grammar (`@` + a registry user name's characters).
    # Not `admins`: that group is every right on every repository, given in Oyster only.
    directory_groups = [
        g
        for g in row.identity.groups
        if isinstance(g, str) and SUBJECT_RE.fullmatch("@" + g) and g != ADMINS_GROUP
    ]
    return access.Principal(username, tuple(dict.fromkeys([*found.groups, *directory_groups])))
