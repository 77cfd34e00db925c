from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ...audit import PRUNE_BATCH, prune_audit_events


class Command(BaseCommand):
    help = (
        "Delete audit events older than AUDIT_RETENTION_DAYS (or --days), in batches. "
        "The worker runs this daily."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            help=f"Keep this many days (default {settings.AUDIT_RETENTION_DAYS}).",
        )
        parser.add_argument(
            "--batch-size", type=int, default=PRUNE_BATCH, help="Rows deleted per transaction."
        )

    def handle(self, *args, **options):
        days = settings.AUDIT_RETENTION_DAYS if options["days"] is None else options["days"]
        if days < 0:
            raise CommandError("--days must be 0 (keep everything) or more.")
        if not 1 <= options["batch_size"] <= 50000:
            raise CommandError("--batch-size must be between 1 and 50000.")
        result = prune_audit_events(
            days=days, batch_size=options["batch_size"], actor="manage.py prune_audit"
        )
        if result.get("disabled"):
            self.stdout.write("Retention is 0 days: no audit event is pruned.")
        else:
            self.stdout.write(
                f"Deleted {result['deleted']} audit events and {result['rejected_deleted']} "
                f"rejected deliveries older than {result['cutoff']} ({days} days)."
            )
        self.stdout.write(
            f"Folded {result['pull_rows_folded']} pull counter rows older than 30 days into "
            "one row per image and user."
        )
