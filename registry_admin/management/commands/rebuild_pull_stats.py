from ...pulls import rebuild
from ..base import PortalCommand


class Command(PortalCommand):
    help = (
        "Recompute the pull counters (last pull, pulls in 30 days, pullers per repository, tag "
        "and digest) from the audit log. Run it once after upgrading, or after changing "
        "PULL_IGNORE_USERS or PULL_IGNORE_USER_AGENTS; the webhook keeps them current."
    )
    database_failure = "Cannot rebuild the pull counters ({error}); nothing was changed."

    def run(self, **options):
        last_id, rows = rebuild()
        self.stdout.write(
            f"Rebuilt {rows} pull counters from the audit log (events up to #{last_id})."
        )
