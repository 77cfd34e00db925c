"""The audit trail's retention: the daily job (`prune_audit`, `manage.py prune_audit`) that
deletes events older than AUDIT_RETENTION_DAYS, with what is derived from them (the
dashboard's per-day figures, old rejected deliveries), and folds old pull counters. Being the
daily housekeeping, it also clears expired sign-in sessions.

Portal actions are written with `AuditEvent.objects.log_portal_action()`; their names are
`models.PortalAction`.
"""

import logging
from datetime import timedelta
from importlib import import_module

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import activity, pulls, worker
from .models import AuditEvent, PortalAction, RejectedDelivery

logger = logging.getLogger(__name__)

# Rows deleted per transaction when pruning: short write locks, so the webhook never waits long.
PRUNE_BATCH = 2000


def prune_audit_events(run=None, days=None, batch_size=PRUNE_BATCH, actor=""):
    """Delete audit events (and rejected deliveries) older than `days` (AUDIT_RETENTION_DAYS).

    Deletes in batches of `batch_size`, one short transaction each; `run` (a worker Run) gets
    progress reports. 0 days disables pruning. Returns a summary dict; when something was
    deleted, the pruning itself is recorded in the trail.
    """
    days = settings.AUDIT_RETENTION_DAYS if days is None else days
    # Pull counters older than their 30-day window fold into one row each, retention or not.
    folded = pulls.compact()
    # Django never removes an expired session row by itself (that is `clearsessions`); every
    # sign-in, and every visit to the identity provider's sign-in link, leaves one.
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()
    if days <= 0:
        return {"deleted": 0, "rejected_deleted": 0, "disabled": True, "pull_rows_folded": folded}
    cutoff = timezone.now() - timedelta(days=days)
    old = AuditEvent.objects.filter(timestamp__lt=cutoff)
    deleted = 0
    while True:
        ids = list(old.order_by("timestamp", "id").values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        with transaction.atomic():
            deleted += AuditEvent.objects.filter(id__in=ids).delete()[0]
        if run is not None:
            _report(run, deleted)
    # The dashboard's per-day counts go with the events they count.
    activity.prune(timezone.localdate(cutoff))
    rejected = 0
    while True:
        ids = list(
            RejectedDelivery.objects.filter(received_at__lt=cutoff).values_list("id", flat=True)[
                :batch_size
            ]
        )
        if not ids:
            break
        rejected += RejectedDelivery.objects.filter(id__in=ids).delete()[0]
    summary = {"deleted": deleted, "rejected_deleted": rejected, "cutoff": cutoff.isoformat()}
    if deleted or rejected:
        actor = actor or (getattr(run, "requested_by", "") if run else "") or "system"
        AuditEvent.objects.log_portal_action(
            actor, PortalAction.AUDIT_PRUNED, detail={**summary, "days": days}
        )
        logger.info("pruned %d audit events and %d rejected deliveries", deleted, rejected)
    return summary | {"pull_rows_folded": folded}


def _report(run, deleted):
    worker.report_progress(run, done=deleted, message=f"{deleted} old audit events deleted")
