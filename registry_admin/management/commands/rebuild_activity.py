from ...activity import rebuild
from ..base import PortalCommand


class Command(PortalCommand):
    help = (
        "Recount the dashboard's per-day activity (pushes, pulls, busiest repositories and "
        "users) from the audit log. Run it after changing REGISTRY_USERNAME or TIME_ZONE; the "
        "webhook keeps it current otherwise."
    )
    database_failure = "Cannot recount the dashboard's activity ({error}); nothing was changed."

    def run(self, **options):
        rows = rebuild()
        self.stdout.write(f"Recounted the dashboard's activity from the audit log: {rows} rows.")
