"""Portal accounts: the client address and name behind a login attempt, and the limits that keep
failed logins from costing more than a few password hashes."""

import threading
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.db.models import Sum
from django.utils import timezone
from ipware.ip import get_client_ip

# Django's username column is 150 characters; axes stores the submitted name in a 255-character
# column, which PostgreSQL enforces (SQLite does not), so an oversized or NUL-carrying name
# from a hostile form must be cut before axes writes it.
MAX_USERNAME = 150


def throttling_username(request, credentials=None):
    """The submitted username, printable characters only, at most 150 of them."""
    source = credentials if credentials else getattr(request, "POST", {})
    raw = source.get("username", "") if hasattr(source, "get") else ""
    return "".join(ch for ch in str(raw or "") if ch.isprintable())[:MAX_USERNAME]


def client_ip(request):
    """The client's address, as django-ipware reads it behind PROXY_COUNT proxies.

    Each proxy appends the address it was reached from to X-Forwarded-For, so only the last
    PROXY_COUNT entries are trustworthy and the client is the PROXY_COUNT-th from the right;
    anything further left was written by the client. ipware counts the proxy nearest to us as
    part of the chain, hence PROXY_COUNT - 1. With no proxy, headers are never read (a client
    could forge them); a request that reached us without passing every proxy falls back to
    the socket address.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    count = settings.PROXY_COUNT
    if count <= 0:
        return remote
    ip, _routable = get_client_ip(
        request,
        proxy_order="left-most",
        proxy_count=count - 1,
        request_header_order=["HTTP_X_FORWARDED_FOR"],
        strict=False,
    )
    return ip or remote


def address_failures(ip):
    """Failed logins from one address, under any user names, within the cool-off period."""
    from axes.models import AccessAttempt

    if not ip:
        return 0
    since = timezone.now() - timedelta(hours=settings.AXES_COOLOFF_TIME)
    total = AccessAttempt.objects.filter(ip_address=ip, attempt_time__gte=since).aggregate(
        n=Sum("failures_since_start")
    )["n"]
    return total or 0


def address_locked(request):
    """True once an address has used up LOGIN_ADDRESS_FAILURE_LIMIT: it gets no more hashes."""
    limit = settings.LOGIN_ADDRESS_FAILURE_LIMIT
    return limit > 0 and address_failures(client_ip(request)) >= limit


# Password hashing is the only CPU-heavy thing a stranger can make the portal do; letting at most
# LOGIN_CONCURRENCY hashes run per process leaves the other threads free for pages and webhook.
# The login and the token endpoint share these slots. One semaphore per LOGIN_CONCURRENCY value,
# made on first use: reading the setting at import time left override_settings without effect.
_slots_lock = threading.Lock()
_slots_by_size = {}


def hash_slots():
    """The process's semaphore for the current LOGIN_CONCURRENCY."""
    size = max(1, settings.LOGIN_CONCURRENCY)
    with _slots_lock:
        slots = _slots_by_size.get(size)
        if slots is None:
            slots = _slots_by_size[size] = threading.BoundedSemaphore(size)
        return slots


@contextmanager
def hashing_slot():
    """Yields True with a slot held, or False when none came free within LOGIN_QUEUE_SECONDS."""
    slots = hash_slots()
    acquired = slots.acquire(timeout=settings.LOGIN_QUEUE_SECONDS)
    try:
        yield acquired
    finally:
        if acquired:
            slots.release()


# The session of a person signed in by the directory names this backend too: it is the one that
# loads portal accounts and their permissions.
PASSWORD_BACKEND = "registry_admin.accounts.PasswordBackend"


class PasswordBackend(ModelBackend):
    """Django's accounts backend, with password login limited to the break-glass admin when
    LOCAL_LOGIN is off. Refused before the hash: a turned-off login costs nothing."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not settings.LOCAL_LOGIN:
            allowed = settings.LOCAL_LOGIN_BREAK_GLASS
            if not allowed or username is None or str(username) != allowed:
                return None
        return super().authenticate(request, username=username, password=password, **kwargs)
