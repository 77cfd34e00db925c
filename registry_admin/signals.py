"""The app's signals (Django's idiom: one module that every sender and receiver imports).

`events_recorded` is sent with `events`, a list of newly stored registry `AuditEvent` rows
(an event is never passed twice; the list may be empty), inside a transaction:

- by default (`NOTIFICATIONS_APPLY_DELAY` > 0), the batch in which `ingest.apply_pending()`
  applies the pending events of many deliveries, in the worker's applier thread or the web
  process's fallback thread;
- with `NOTIFICATIONS_APPLY_DELAY=0`, the webhook's own transaction (`notifications.record()`).

Its receivers are connected in `apps.py`: the repository index (`index.on_events_recorded`),
the pull counters (`pulls.on_events_recorded`), the dashboard's per-day activity
(`activity.on_events_recorded`) and expired robots (`access.on_events_recorded`).

A receiver must only touch the database and must not raise for content it does not understand
(log and skip instead): whatever it raises rolls the batch (or the delivery) back, and the
events stay pending (or the registry retries the same event). Let database errors propagate:
that retry is then exactly what is wanted.
"""

from django.dispatch import Signal

events_recorded = Signal()
