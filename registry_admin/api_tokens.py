"""API tokens for /api/v1/: made, checked, revoked, for the profile page, the command and the API
alike (each change with its audit row).

A token is `oyster_<prefix>_<secret>`: the prefix finds the row, the SHA-256 of the secret is
compared in constant time. Scopes never exceed the owner's role, when the token is made and at
every use: a demoted owner's token loses at once what the new role does not allow.
"""

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from . import access, roles
from .models import ApiToken, AuditEvent, PortalAction

logger = logging.getLogger(__name__)

# Each scope and the role permission it needs, in this order everywhere.
SCOPES = {
    "read": roles.VIEW,
    "delete": roles.DELETE_IMAGES,
    "users": roles.MANAGE_USERS,
    "admin": roles.RUN_JOBS,
}
TOKEN_START = "oyster_"
PREFIX_LENGTH = 12
# token_urlsafe(32): 43 characters, 256 random bits.
SECRET_BYTES = 32
# A real token is 7 + 12 + 1 + 43 = 63 characters; anything much longer is not one of ours.
MAX_TOKEN_LENGTH = 100
MAX_NAME_LENGTH = 100
MAX_DAYS = 3650
DEFAULT_DAYS = 90
MAX_TOKENS_PER_USER = 100
# last_used_at is written when it is older than this, so a busy token updates its row once a
# minute, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Refusals of requests whose token names nobody (anyone can send those at will) share the token
# endpoint's audit budget per address, under a key of their own.
API_REFUSALS_KEY = "*api-refusals"


class TokenError(Exception):
    """A token cannot be made or revoked as asked; the message says why, for page and shell."""


class Refused(Exception):
    """A request's token is not accepted; `reason` is for the audit row and the answer."""

    def __init__(self, reason, token=None):
        super().__init__(reason)
        self.reason = reason
        self.token = token


def allowed_scopes(user):
    """The scopes `user`'s role allows now, in SCOPES' order."""
    if user is None or not user.is_active:
        return []
    return [scope for scope, perm in SCOPES.items() if user.has_perm(perm)]


def parse_scopes(text):
    """`read,delete` as a list in SCOPES' order; TokenError names an unknown one."""
    names = [part.strip() for part in str(text or "").split(",") if part.strip()]
    unknown = sorted(set(names) - set(SCOPES))
    if unknown:
        raise TokenError(
            f"Unknown scope {', '.join(repr(n[:20]) for n in unknown[:3])}: "
            f"choose from {', '.join(SCOPES)}."
        )
    if not names:
        raise TokenError(f"Give at least one scope: {', '.join(SCOPES)}.")
    return [scope for scope in SCOPES if scope in names]


def _hash(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def create(actor, owner, name, scopes, days=DEFAULT_DAYS):
    """Make a token for `owner`; returns (ApiToken, the whole token text, shown once)."""
    name = str(name or "").strip()
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise TokenError(
            f"A token's name is 1 to {MAX_NAME_LENGTH} printable characters (what it is for)."
        )
    scopes = parse_scopes(",".join(scopes) if isinstance(scopes, list | tuple) else scopes)
    beyond = [s for s in scopes if s not in allowed_scopes(owner)]
    if beyond:
        raise TokenError(
            f"{owner.get_username()}'s role does not allow the scope {', '.join(beyond)}: "
            f"a token may have at most {', '.join(allowed_scopes(owner)) or 'nothing'}."
        )
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise TokenError(f"A token lasts 1 to {MAX_DAYS} days.")
    with transaction.atomic():
        if ApiToken.objects.filter(owner=owner, revoked_at=None).count() >= MAX_TOKENS_PER_USER:
            raise TokenError(
                f"{owner.get_username()} has {MAX_TOKENS_PER_USER} tokens already: revoke one."
            )
        prefix = secrets.token_hex(PREFIX_LENGTH // 2)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        token = ApiToken.objects.create(
            owner=owner,
            name=name,
            prefix=prefix,
            secret_sha256=_hash(secret),
            scopes=",".join(scopes),
            expires_at=timezone.now() + timedelta(days=days),
        )
        AuditEvent.objects.log_portal_action(
            actor,
            PortalAction.API_TOKEN_CREATED,
            detail=_detail(token),
        )
    logger.info("API token %s (%s) made for %s by %s", prefix, name, owner, actor)
    return token, f"{TOKEN_START}{prefix}_{secret}"


def revoke(actor, token):
    """Revoke `token` (an ApiToken); revoking a revoked token changes nothing."""
    with transaction.atomic():
        changed = ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(
            revoked_at=timezone.now(), revoked_by=str(actor)[:255]
        )
        if changed:
            AuditEvent.objects.log_portal_action(
                actor, PortalAction.API_TOKEN_REVOKED, detail=_detail(token)
            )
    return bool(changed)


def _detail(token):
    return {
        "owner": token.owner.get_username(),
        "token": token.prefix,
        "name": token.name,
        "scopes": token.scope_list,
        "expires_at": token.expires_at.isoformat(),
    }


def find(owner, prefix):
    """`owner`'s token with `prefix`, or None (any owner when `owner` is None)."""
    tokens = ApiToken.objects.select_related("owner").filter(prefix=str(prefix)[:16])
    if owner is not None:
        tokens = tokens.filter(owner=owner)
    return tokens.first()


def authenticate(text):
    """The ApiToken `text` is, with its owner; Refused says why not. Every failure costs the
    same hash and comparison, found or not."""
    text = str(text or "")
    if len(text) > MAX_TOKEN_LENGTH or not text.startswith(TOKEN_START):
        raise Refused("not an Oyster API token")
    prefix, _, secret = text[len(TOKEN_START) :].partition("_")
    token = (
        ApiToken.objects.select_related("owner").filter(prefix=prefix).first()
        if len(prefix) == PREFIX_LENGTH and secret
        else None
    )
    expected = token.secret_sha256 if token else _hash("")
    if not hmac.compare_digest(_hash(secret), expected) or token is None:
        raise Refused("unknown token")
    now = timezone.now()
    if token.revoked_at is not None:
        raise Refused("token revoked", token)
    if token.expires_at <= now:
        raise Refused("token expired", token)
    if not token.owner.is_active:
        raise Refused("owner's account disabled", token)
    if not effective_scopes(token):
        raise Refused("the owner's role allows none of the token's scopes", token)
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def effective_scopes(token):
    """The token's scopes that its owner's role still allows."""
    allowed = allowed_scopes(token.owner)
    return [scope for scope in token.scope_list if scope in allowed]


def record_refusal(reason, token=None, address="", method="", path=""):
    """An audit row for a refused API request: always when the token is known (its owner is
    the actor), else at most a few per address and minute (anyone can send those)."""
    try:
        unrecorded = 0
        if token is None:
            record, unrecorded = access.refusal_slot(address or "", API_REFUSALS_KEY)
            if not record:
                return
        detail = {
            "reason": reason,
            "address": address,
            "method": str(method)[:16],
            "path": str(path)[:300],
        }
        if token is not None:
            detail |= {"token": token.prefix, "name": token.name}
        if unrecorded:
            detail["unrecorded_refusals_previous_minute"] = unrecorded
        AuditEvent.objects.log_portal_action(
            token.owner.get_username() if token else "anonymous",
            PortalAction.API_REFUSED,
            detail=detail,
        )
    except Exception:  # noqa: BLE001  (a refusal must be answered even when the audit cannot record)
        logger.exception("could not record an API refusal")
