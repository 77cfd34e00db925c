from django.core.management.base import BaseCommand

from ...pulls import rebuild


class Command(BaseCommand):
    help = (
        "Recompute the pull counters (last pull, pulls in 30 days, pullers per repository, tag "
        "and digest) from the audit log. Run it once after upgrading, or after changing "
        "PULL_IGNORE_USERS or PULL_IGNORE_USER_AGENTS; the webhook keeps them current."
    )

    def handle(self, *args, **options):
        last_id, rows = rebuild()
        self.stdout.write(
            f"Rebuilt {rows} pull counters from the audit log (events up to #{last_id})."
        )
