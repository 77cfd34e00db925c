"""Stored notification events applied to the repository index and the pull counters in batches.

The webhook's request stores each event (its audit row plus a `PendingEvent` row) and answers;
`apply_pending()` then hands every pending event to the `events_recorded` receivers in one
transaction and deletes their pending rows in the same one. So:

- nothing is applied twice: the pending rows go with the changes they caused, and appliers
  take turns (SQLite: the write lock its IMMEDIATE transactions take at BEGIN; PostgreSQL: a
  transaction-level advisory lock), each reading the pending rows only once it holds the lock;
- nothing is lost: a process that dies before or while applying leaves its rows pending, and
  the next batch anywhere (another delivery, or the worker's loop) takes them;
- pages lag the registry by about `NOTIFICATIONS_APPLY_DELAY` plus one batch: the worker
  (`run_worker`) applies what is pending every that many seconds, from a thread of its own so
  that a long job does not hold it up, and in a process of its own, so the batches never
  compete with the web requests for Python's interpreter lock;
- without a running worker the web process applies its own deliveries: each one wakes a
  thread there that waits `fallback_seconds()` (the worker's turn) and applies what is still
  pending, so pages stay fresh within about a second with no worker at all. With a worker
  keeping up, that thread only looks (`overdue()`) and leaves the batches to the worker: a
  batch in the web process would hold Python's interpreter lock against the requests.

Batching is what makes the webhook cheap: the request does one INSERT for the event, and one
batch refreshes a repository's counters once for all the pushes it received meanwhile.
"""

import logging
import os
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.utils import timezone

from . import db
from .models import AuditEvent, PendingEvent
from .models.audit import index_new_events
from .signals import events_recorded

logger = logging.getLogger(__name__)

# Events one batch applies (one transaction); a longer backlog takes several in a row.
BATCH_SIZE = 1000
# After a failed batch (database locked or down), the thread tries again this much later.
RETRY_SECONDS = 2.0


def apply_pending(limit=BATCH_SIZE):
    """Apply up to `limit` pending events, oldest first, in one transaction; how many."""
    with transaction.atomic():
        hold_appliers()
        pending = PendingEvent.objects.order_by("event_id").values_list("event_id", flat=True)
        ids = list(pending[:limit])
        if not ids:
            return 0
        events = list(AuditEvent.objects.filter(pk__in=ids).order_by("id"))
        events_recorded.send(sender=AuditEvent, events=events)
        PendingEvent.objects.filter(event_id__in=ids).delete()
        index_new_events()
    return len(ids)


def fallback_seconds():
    """How long a web process leaves its deliveries to the worker before applying them."""
    return 2 * settings.NOTIFICATIONS_APPLY_DELAY + 0.5


def hold_appliers():
    """Keep every other applier out until the current transaction ends. SQLite: its
    transactions begin IMMEDIATE (settings), which already holds the only write lock."""
    db.hold_transaction_lock(single=db.APPLIERS_KEY)


def settle():
    """For a recount from the audit log, inside its transaction: apply what is pending and keep
    appliers out, so every stored event is counted once (by the recount) and never again."""
    hold_appliers()
    catch_up()


def overdue(age):
    """Whether the oldest pending event was stored more than `age` seconds ago (nobody is
    applying the batches); a cheap look, no lock taken."""
    oldest = PendingEvent.objects.order_by("event_id").values_list("event_id", flat=True)[:1]
    if not oldest:
        return False
    received = AuditEvent.objects.filter(pk=oldest[0]).values_list("received_at", flat=True)
    # A pending row whose audit row is gone (pruned) is overdue by definition.
    return not received or received[0] < timezone.now() - timedelta(seconds=age)


def catch_up(chase=True):
    """Apply every pending event (several batches if need be); how many.

    With `chase` off, stop after a batch that was not full: what arrived while it ran waits for
    the next round. The periodic appliers work that way, so under a steady stream of events a
    round takes what `NOTIFICATIONS_APPLY_DELAY` gathered, instead of chasing each arrival
    with a batch of a few events (a batch's cost is mostly per repository, not per event).
    """
    # Most calls find nothing: answer that without taking SQLite's write lock.
    if not PendingEvent.objects.exists():
        # The portal's own events (and any other row) join the text index here too.
        index_new_events()
        return 0
    total = 0
    while applied := apply_pending():
        total += applied
        if not chase and applied < BATCH_SIZE:
            break
    return total


class _Applier:
    """The web process's fallback: one daemon thread per process (found again after a fork),
    woken by `wake()`."""

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

    def stop(self, timeout=10):
        """Apply what is pending, close the thread's connection and end it (tests, shutdown)."""
        with self.lock:
            thread, self.thread = self.thread, None
            if thread is None or not thread.is_alive():
                return
            self.stopping = True
            self.wanted.set()
        thread.join(timeout)
        self.stopping = False

    stopping = False

    def _run(self, wanted):
        while True:
            wanted.wait()
            time.sleep(fallback_seconds())
            wanted.clear()
            close_old_connections()
            if self.stopping:
                try:
                    catch_up()
                finally:
                    connection.close()
                return
            try:
                # The worker applies every NOTIFICATIONS_APPLY_DELAY seconds: an event older
                # than half this thread's wait means it is not there (or not keeping up).
                if overdue(fallback_seconds() / 2):
                    catch_up(chase=False)
                if PendingEvent.objects.exists():
                    wanted.set()  # look again after another wait, until nothing is pending
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
    """Ask this process's applier thread to apply, shortly, what the worker has not."""
    _applier.wake()


def stop():
    _applier.stop()


def run_applier(stop_event):
    """The worker's applier loop (a thread of `run_worker`): a batch every
    `NOTIFICATIONS_APPLY_DELAY` seconds until `stop_event` is set."""
    try:
        while not stop_event.wait(settings.NOTIFICATIONS_APPLY_DELAY):
            close_old_connections()
            try:
                catch_up(chase=False)
            except DatabaseError as exc:
                logger.warning("could not apply stored notification events yet: %s", exc)
                stop_event.wait(RETRY_SECONDS)
            except Exception:
                logger.exception("applying stored notification events failed")
                stop_event.wait(RETRY_SECONDS)
    finally:
        connection.close()
