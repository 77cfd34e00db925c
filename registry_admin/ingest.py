"""Stored notification events applied to the repository index and the pull counters in batches.

The webhook's request stores each event (its audit row plus a `PendingEvent` row) and answers;
`apply_pending()` then hands every pending event to the `events_recorded` receivers in one
transaction and deletes their pending rows in the same one. So:

- nothing is applied twice: the pending rows go with the changes they caused, and appliers
  take turns (SQLite: the write lock its IMMEDIATE transactions take at BEGIN; PostgreSQL: a
  transaction-level advisory lock), each reading the pending rows only once it holds the lock;
- nothing is lost: a process that dies before or while applying leaves its rows pending, and
  the next batch anywhere (another delivery, or the worker's loop) takes them;
- pages lag the registry by about `NOTIFICATIONS_APPLY_DELAY` (at most twice that plus one
  batch): each web process runs one applier thread, woken by its deliveries, that waits that
  long to let a burst gather.

Batching is what makes the webhook cheap: the request does one INSERT for the event, and one
batch refreshes a repository's counters once for all the pushes it received meanwhile.
"""

import logging
import os
import threading
import time

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction

from .models import AuditEvent, PendingEvent

logger = logging.getLogger(__name__)

# Events one batch applies (one transaction); a longer backlog takes several in a row.
BATCH_SIZE = 1000
# Any fixed number shared by every instance; only PostgreSQL uses it.
ADVISORY_LOCK_KEY = 0x0157E816
# After a failed batch (database locked or down), the thread tries again this much later.
RETRY_SECONDS = 2.0


def apply_pending(limit=BATCH_SIZE):
    """Apply up to `limit` pending events, oldest first, in one transaction; how many."""
    from .notifications import events_recorded  # notifications imports this module lazily

    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
        pending = PendingEvent.objects.order_by("event_id").values_list("event_id", flat=True)
        ids = list(pending[:limit])
        if not ids:
            return 0
        events = list(AuditEvent.objects.filter(pk__in=ids).order_by("id"))
        events_recorded.send(sender=AuditEvent, events=events)
        PendingEvent.objects.filter(event_id__in=ids).delete()
    return len(ids)


def catch_up():
    """Apply every pending event (several batches if need be); how many."""
    total = 0
    while applied := apply_pending():
        total += applied
    return total


class _Applier:
    """One daemon thread per process (found again after a fork), woken by `wake()`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.wanted = threading.Event()
        self.thread = None
        self.pid = None

    def wake(self):
        with self.lock:
            if self.pid != os.getpid() or self.thread is None or not self.thread.is_alive():
                self.pid, self.wanted = os.getpid(), threading.Event()
                self.thread = threading.Thread(
                    target=self._run, args=(self.wanted,), name="oyster-ingest", daemon=True
                )
                self.thread.start()
        self.wanted.set()

    def _run(self, wanted):
        while True:
            wanted.wait()
            time.sleep(settings.NOTIFICATIONS_APPLY_DELAY)
            wanted.clear()
            close_old_connections()
            try:
                catch_up()
            except DatabaseError as exc:
                # The events stay pending: this thread, another process or the worker retries.
                logger.warning("could not apply stored notification events yet: %s", exc)
                time.sleep(RETRY_SECONDS)
                wanted.set()
            except Exception:
                # A receiver's bug must not stop the thread; the events stay pending.
                logger.exception("applying stored notification events failed")
                time.sleep(RETRY_SECONDS)
                wanted.set()


_applier = _Applier()


def wake():
    """Ask this process's applier thread to apply pending events shortly."""
    _applier.wake()
