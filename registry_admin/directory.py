"""Portal accounts for people signed in by the organisation's directory (OpenID Connect or App
Service authentication): the account found by issuer and subject, created on first sign-in, and
its role set from the role claim at every sign-in through OIDC_ROLE_MAP.

A sign-in whose claim names no mapped value is refused, and the account loses its role there and
then: permissions are read from the database on each request, so the person's other sessions
stop seeing pages at once, not only at SESSION_COOKIE_AGE.
"""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .models import AuditEvent, DirectoryIdentity, PortalAction
from .roles import ADMIN_GROUP, VIEWER_GROUP

# Kept in the identity row and the audit trail: a directory may send hundreds of groups.
MAX_GROUPS_KEPT = 50
MAX_CLAIM_TEXT = 255


@dataclass
class Refused(Exception):
    """A sign-in that did not happen: `code` for the audit trail, `sentence` for the person."""

    code: str
    sentence: str
    # Already in the audit trail (refusals found by sign_in are written with their detail).
    audited: bool = False

    def __str__(self):
        return self.sentence


def _text(value, limit=MAX_CLAIM_TEXT):
    if not isinstance(value, str):
        return ""
    return "".join(ch for ch in value if ch.isprintable())[:limit].strip()


def claim_values(claims, name):
    """The role claim's values: a string or a list of strings (Entra ID, Keycloak, GitLab send a
    list; App Service repeats the claim), anything else is nothing."""
    value = claims.get(name)
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [v for v in values if isinstance(v, str) and v]


def role_for(values):
    """admin when any value maps to admin, else viewer when any maps to viewer, else None."""
    roles = {settings.OIDC_ROLE_MAP.get(v) for v in values}
    if "admin" in roles:
        return ADMIN_GROUP
    if "viewer" in roles:
        return VIEWER_GROUP
    return None


def _username(claims):
    for name in (settings.OIDC_USERNAME_CLAIM, "preferred_username", "email", "sub"):
        candidate = _text(claims.get(name), 150)
        if candidate:
            try:
                UnicodeUsernameValidator()(candidate)
            except ValidationError:
                continue
            return candidate
    return ""


def _refuse(code, sentence, *, via, actor="", detail=None):
    AuditEvent.objects.log_portal_action(
        actor or "anonymous",
        PortalAction.SIGN_IN_REFUSED,
        detail={"via": via, "reason": code, **(detail or {})},
    )
    return Refused(code, sentence, audited=True)


def audit_refusal(refused, *, via, actor=""):
    """Record a refusal found before the claims were known (a spoiled token, a replayed state)."""
    AuditEvent.objects.log_portal_action(
        actor or "anonymous",
        PortalAction.SIGN_IN_REFUSED,
        detail={"via": via, "reason": refused.code},
    )


def sign_in(issuer, claims, *, via):
    """The portal account for these (already verified) claims, with its role set; raises
    Refused, with the refusal in the audit trail."""
    # Refusals are returned, not raised, inside the transaction: the audit row and the role
    # taken away must be committed with it.
    with transaction.atomic():
        outcome = _sign_in(issuer, claims, via)
    if isinstance(outcome, Refused):
        raise outcome
    return outcome


def _sign_in(issuer, claims, via):
    subject = _text(claims.get("sub"))
    if not subject:
        return _refuse("no-subject", "The identity provider did not say who you are.", via=via)
    values = claim_values(claims, settings.OIDC_ROLE_CLAIM)
    role = role_for(values)
    kept = [_text(v) for v in values[:MAX_GROUPS_KEPT]]
    User = get_user_model()
    identity = (
        DirectoryIdentity.objects.select_for_update()
        .select_related("user")
        .filter(issuer=issuer, subject=subject)
        .first()
    )
    user = identity.user if identity else None
    name = user.get_username() if user else _username(claims)
    if role is None:
        if user is not None:
            # Their other sessions lose the pages now, not at SESSION_COOKIE_AGE.
            user.groups.remove(*Group.objects.filter(name__in=[ADMIN_GROUP, VIEWER_GROUP]))
            identity.groups = kept
            identity.save(update_fields=["groups"])
        return _refuse(
            "no-role",
            "Your account is in none of the groups that give a role in Oyster; ask the "
            "people who run it to add you to one.",
            via=via,
            actor=name,
            detail={"values": kept},
        )
    created = False
    if user is None:
        if not name:
            return _refuse(
                "no-username", "The identity provider sent no usable user name for you.", via=via
            )
        if User.objects.filter(username__iexact=name).exists():
            return _refuse(
                "name-taken",
                f"A portal account named {name} exists already and is not linked to your "
                "directory account; ask an admin to rename or remove it.",
                via=via,
                actor=name,
            )
        user = User(username=name, email=_text(claims.get("email"), 254))
        user.set_unusable_password()
        user.save()
        identity = DirectoryIdentity(user=user, issuer=issuer, subject=subject)
        created = True
    if not user.is_active:
        return _refuse(
            "disabled", "Your portal account is disabled.", via=via, actor=user.get_username()
        )
    others = Group.objects.filter(name__in=[ADMIN_GROUP, VIEWER_GROUP]).exclude(name=role)
    user.groups.remove(*others)
    user.groups.add(Group.objects.get(name=role))
    identity.groups = kept
    identity.last_sign_in = timezone.now()
    identity.save()
    AuditEvent.objects.log_portal_action(
        user.get_username(),
        PortalAction.SIGNED_IN,
        detail={"via": via, "role": role, "created": created},
    )
    return user
